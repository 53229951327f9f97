"""A chain NIR graph as a Lava process graph, run in the Lava simulator.

Mapping (Lava keeps tensors in (X, Y, C) = (W, H, C) order, torch in (C, H, W)):

- ``Conv2d`` -> ``lava.proc.conv.process.Conv``, weight ``(C_out, C_in, H, W)`` transposed to
  ``(C_out, W, H, C_in)`` and spatially flipped (Lava convolves, torch correlates); its bias
  becomes the next LIF's ``bias_mant``.
- ``Affine`` / ``Linear`` -> ``Dense``, or ``Sparse`` (CSR) when the kept units still have pruned
  synapses (zeros in the weight); columns that follow a flattened conv map are permuted from
  torch's ``(c, h, w)`` order to Lava's ``(w, h, c)``.
- ``Flatten`` -> a reshape of the output port.
- ``LIF`` -> ``LIFReset`` (CUBA) with ``du = 1`` (no synaptic current memory), ``dv = 1 - lambda``
  (``lambda = 1 - dt / tau``), ``vth = v_threshold``: ``v[t] = lambda v[t-1] + a_in + bias``,
  spike when ``v > vth``, then ``v = 0``, the paper's Eq 1-2.

Samples are presented back to back, ``T`` steps each, by a ``RingBuffer`` source (graded
values: direct encoding); every Conv / Dense adds one step of delay, so the ``k``-th LIF layer
sees sample ``n``'s first step at time step ``n*T + 1 + k`` and resets its state exactly then
(``reset_interval = T``, ``reset_offset = (1 + k) mod T``). The output spikes of input step
``i`` are read from the sink at index ``i + L`` (``L`` LIF layers). Lava is always stopped,
also on errors and Ctrl-C.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir
import numpy as np

from ..errors import UnsupportedModelError
from ..lava_compat import import_lava_runtime
from .nir_graph import DT, chain

MESSAGE_BITS = 24   # graded (non-binary) messages for the direct-encoded first layer


@dataclass
class LavaLayer:
    name: str
    kind: str          # conv / dense / sparse / lif
    shape: tuple       # output shape in Lava order


def _chw_to_whc_columns(c: int, h: int, w: int) -> np.ndarray:
    """``perm[j_lava] = j_torch``: Lava flattens (w, h, c) where torch flattens (c, h, w)."""
    idx = np.arange(c * h * w).reshape(c, h, w)          # torch flat index of (c, h, w)
    return idx.transpose(2, 1, 0).reshape(-1)              # in (w, h, c) order


def input_schedule(x: np.ndarray, time_steps: int, extra_steps: int, dtype=np.float64) -> np.ndarray:
    """RingBuffer data in Lava order ``(W, H, C, steps)`` (or ``(F, steps)``): each sample for
    ``time_steps`` steps, back to back, then ``extra_steps`` of zeros for the pipeline to drain.
    Static inputs ``[N, C, H, W]`` repeat every step; event frames ``[N, T, C, H, W]`` give
    frame ``t`` at step ``t``."""
    n = len(x)
    if x.ndim == 5:
        if x.shape[1] != time_steps:
            raise UnsupportedModelError(f"inputs have {x.shape[1]} frames, the run {time_steps} steps")
        seq = x.transpose(0, 1, 4, 3, 2)                              # N, T, W, H, C
    elif x.ndim == 4:
        seq = np.repeat(x.transpose(0, 3, 2, 1)[:, None], time_steps, axis=1)
    else:
        seq = np.repeat(x[:, None], time_steps, axis=1)
    flat = seq.reshape((n * time_steps,) + seq.shape[2:])             # steps first
    data = np.zeros(seq.shape[2:] + (n * time_steps + extra_steps,), dtype=dtype)
    data[..., :n * time_steps] = np.moveaxis(flat, 0, -1)
    return data


class LavaNetwork:
    """Builds the processes; ``run(x, T)`` returns output spikes ``[N, T, classes]``."""

    def __init__(self, graph: nir.NIRGraph, time_steps: int):
        self.graph = graph
        self.T = int(time_steps)
        self.dt = float(graph.metadata.get("dt", DT)) if isinstance(graph.metadata, dict) else DT
        self.nodes = chain(graph)
        if not isinstance(self.nodes[0][1], nir.Input):
            raise UnsupportedModelError("the NIR graph does not start with an Input node")
        self.layers: list[LavaLayer] = []

    def _build(self, source_shape: tuple, total_steps: int, data: np.ndarray):
        import_lava_runtime()
        from lava.proc.conv.process import Conv
        from lava.proc.dense.process import Dense
        from lava.proc.io.sink import RingBuffer as Sink
        from lava.proc.io.source import RingBuffer as Source
        from lava.proc.lif.process import LIFReset
        from lava.proc.sparse.process import Sparse
        from scipy.sparse import csr_matrix

        src = Source(data=data)
        port, shape = src.s_out, source_shape          # current port and its Lava shape
        torch_chw = None                               # (c, h, w) when the port carries a conv map
        first, pending_bias, n_lif = True, None, 0
        procs = [src]
        for name, node in self.nodes[1:]:
            bits = MESSAGE_BITS if first else 0
            if isinstance(node, nir.Conv2d):
                w = np.asarray(node.weight, dtype=np.float64)
                if int(node.groups) != 1 or tuple(np.atleast_1d(node.dilation)) not in ((1,), (1, 1)):
                    raise UnsupportedModelError(f"Lava Conv of '{name}': groups and dilation must be 1")
                stride, pad = np.atleast_1d(node.stride), np.atleast_1d(node.padding)
                # Lava's conv flips the kernel (a true convolution, torch correlates): pass
                # it pre-flipped so that both compute the same thing.
                p = Conv(weight=w.transpose(0, 3, 2, 1)[:, ::-1, ::-1, :].copy(), input_shape=shape,
                         stride=(int(stride[-1]), int(stride[0])), padding=(int(pad[-1]), int(pad[0])),
                         num_message_bits=bits)
                port.connect(p.s_in)
                port, shape = p.a_out, tuple(p.a_out.shape)
                pending_bias = np.broadcast_to(np.asarray(node.bias, np.float64)[None, None, :], shape)
                torch_chw = (shape[2], shape[1], shape[0])
                self.layers.append(LavaLayer(name, "conv", shape))
            elif isinstance(node, (nir.Affine, nir.Linear)):
                w = np.asarray(node.weight, dtype=np.float64)
                if torch_chw is not None and w.shape[1] == int(np.prod(torch_chw)):
                    w = w[:, _chw_to_whc_columns(*torch_chw)]
                sparse = bool((w == 0).any())
                p = Sparse(weights=csr_matrix(w), num_message_bits=bits) if sparse \
                    else Dense(weights=w, num_message_bits=bits)
                port.connect(p.s_in)
                port, shape = p.a_out, (w.shape[0],)
                pending_bias = np.asarray(node.bias, np.float64) if isinstance(node, nir.Affine) \
                    else np.zeros(w.shape[0])
                torch_chw = None
                self.layers.append(LavaLayer(name, "sparse" if sparse else "dense", shape))
            elif isinstance(node, nir.Flatten):
                port = port.flatten()
                shape = (int(np.prod(shape)),)
                continue
            elif isinstance(node, nir.LIF):
                if pending_bias is None:
                    raise UnsupportedModelError(f"LIF '{name}' does not follow a Conv2d / Affine")
                n_lif += 1
                lam = 1.0 - self.dt / float(np.asarray(node.tau).flat[0])
                p = LIFReset(shape=shape, du=1.0, dv=1.0 - lam, bias_mant=pending_bias,
                             vth=float(np.asarray(node.v_threshold).flat[0]),
                             reset_interval=self.T, reset_offset=(1 + n_lif) % self.T)
                port.connect(p.a_in)
                port = p.s_out
                pending_bias = None
                self.layers.append(LavaLayer(name, "lif", shape))
            elif isinstance(node, nir.Output):
                break
            elif isinstance(node, nir.AvgPool2d):
                raise UnsupportedModelError(
                    f"NIR node '{name}' is AvgPool2d: Lava has no pooling process; export the "
                    "pool-folded graph (dpap_deploy.compaction.deployment_graph)")
            else:
                raise UnsupportedModelError(f"NIR node '{name}' ({type(node).__name__}) has no "
                                            "Lava mapping here")
            procs.append(p)
            first = False
        sink = Sink(shape=shape, buffer=total_steps)
        port.connect(sink.a_in)
        return src, sink, n_lif

    def run(self, x: np.ndarray, select_tag: str = "floating_pt") -> np.ndarray:
        """``x``: torch-layout inputs ``[N, C, H, W]``, ``[N, T, C, H, W]`` or ``[N, F]``;
        returns output spikes ``[N, T, out]``."""
        from lava.magma.core.run_configs import Loihi2SimCfg
        from lava.magma.core.run_conditions import RunSteps

        n = len(x)
        depth = sum(1 for _, nd in self.nodes if isinstance(nd, nir.LIF))
        data = input_schedule(x, self.T, depth)
        total = data.shape[-1]
        src, sink, n_lif = self._build(tuple(data.shape[:-1]), total, data)
        try:
            src.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag=select_tag))
            out = sink.data.get()
        finally:
            src.stop()
        spikes = out[..., n_lif:n_lif + n * self.T]                  # [classes, N*T]
        return spikes.reshape(spikes.shape[0], n, self.T).transpose(1, 2, 0)
