"""``netx``: the compacted SNN as a Lava-DL netx HDF5 file for Loihi 2 (``network.net``),
loaded with ``lava.lib.dl.netx.hdf5.Network`` and run in Lava fixed point.

The file holds the layers ``netx_plan`` makes of the deployment graph (BatchNorm and average
pooling folded into the weights, max pooling over spikes as a conv layer: the netx loader has
no pooling layer): ``layer/0`` is ``input`` (shape ``C, H, W``), then ``conv`` / ``flatten`` /
``dense`` layers, each synaptic layer with a ``neuron`` group of type ``CUBA``. ``blockers``
lists every reason netx refuses a model, before any training.

**Quantisation**, per synaptic layer ``l`` with float weights ``W``, bias ``b``:
- weights become even integers in ``[-256, 254]`` (Loihi's 8-bit mixed-sign synapse keeps
  even values, as slayer's export does): ``W_q = 2 round(W s / 2)``;
- the scale is ``s = 254 / max|W|``: full weight resolution, unless the largest synaptic
  input ``I_max`` (measured at the neuron's input on calibration samples, in float, bias
  excluded; a max-pool layer's is its window size) would then overflow the neuron's 16-bit
  input: ``s`` is then the largest power of two at most ``0.9 * 32767 / I_max``;
- the first layer gets the image as graded spikes ``x_q = round(x 2^q)`` (``q = INPUT_BITS``),
  so its effective scale is ``s 2^q``;
- the threshold and the bias carry the same scale: ``vThMant = round(V_th s)``,
  ``bias = round(b s)`` (13-bit), where ``V_th`` is 1 (each row of ``W`` and ``b`` already
  divided by its neuron's threshold, ``netx_neurons``) or 1/2 (a max-pool layer);
- the current ``u`` of a ``Synaptic`` layer sums its inputs over time, up to
  ``I_max / (1 - alpha)``, and Lava wraps it at ``2^23`` (inputs shifted left by 6): the
  limit also keeps ``s I_max / (1 - alpha) <= 0.9 * 2^17``;
- CUBA decays on 12 bits (4096 = full decay): ``iDecay = round((1 - alpha) 4096)`` (4096, no
  current memory, for ``snn.Leaky``), ``vDecay = round((1 - beta) 4096)``.
In fixed point a neuron then computes ``u = u (4096 - iDecay) / 4096 + sum W_q s_in``,
``v = v (4096 - vDecay) / 4096 + u + bias`` and spikes when ``v > vThMant`` (Lava scales
``u``, bias and threshold by 2^6 alike), i.e. the float network with every quantity
multiplied by ``s``, up to rounding.

``quantise`` computes these integers once; ``write_netx`` writes them and ``emulate`` runs them
through ``fixed_point.emulate`` (Lava's bit-accurate synapse and ``LIFReset`` steps in torch):
the spikes Lava computes from the file, bit for bit (``export`` reports the fraction of
identical trains as ``emulation_identical``, and each layer's ``u_wrapped`` / ``v_clipped``
counts over the samples), which ``qat`` fine-tunes through.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_buffer
from ..errors import UnsupportedModelError
from ..executor.run import outputs
from ..fixed_point import emulate as E
from ..graph import ModelGraph, batch_slice, build_graph
from ..lava_compat import import_lava_runtime
from ._compare import spike_parity, torch_spikes
from .base import ExportJob, ExportResult
from .hdf5_safety import check_self_contained
from .netx_loading import loading_parameters, write_loading_files
from .netx_plan import NetxLayer, plan
from .nir_to_lava import input_schedule

TARGET = "netx"
KINDS = ("snn",)
DEFAULT_MAX_SAMPLES = 1000     # test samples run in the simulator unless asked otherwise
SIMULATOR = True              # runs in Lava: its memory is checked first
INPUT_BITS = 4           # graded input x_q = round(x * 16): exact for the 0..16 digits pixels
MAX_ACCURACY_DROP = 0.02
A_IN_LIMIT = 32767 * 0.9
U_LIMIT = 2 ** 17 * 0.9   # Lava wraps the current u (24 bits, inputs shifted left by 6) at 2^23
BIAS_LIMIT = 4095


def blockers(graph: ModelGraph, time_steps: int | None = None) -> list[str]:
    """Every reason netx would refuse the model of ``graph`` (the user's graph: a BatchNorm
    between a synapse and its neuron counts as folded), one line each with its fix, found
    without running the model; ``[]`` if netx takes it. ``time_steps`` is accepted for the
    common interface of the targets: netx takes any ``T`` (it resets every ``T`` steps)."""
    return plan(graph, folded=False)[1]


def _layers(graph: ModelGraph) -> list[NetxLayer]:
    """The netx layers of the deployment ``graph`` (``netx_plan``), or one
    ``UnsupportedModelError`` line with every reason netx refuses it."""
    layers, reasons = plan(graph, folded=True)
    if len(reasons) == 1:
        raise UnsupportedModelError(f"netx cannot take this model: {reasons[0]}")
    if reasons:
        raise UnsupportedModelError(f"netx cannot take this model, {len(reasons)} reasons: "
                                    + " | ".join(f"({i}) {r}" for i, r in
                                                 enumerate(reasons, start=1)))
    return layers


@torch.no_grad()
def _max_input_currents(graph: ModelGraph, layers: list[NetxLayer], x: torch.Tensor,
                        time_steps: int) -> dict[int, float]:  # id(layer) -> peak
    """Largest ``|I - b| / V_th`` (the bias excluded, rows divided by their threshold as the
    file holds them) per layer over ``x`` and all steps, measured at each neuron's input;
    layers that know their peak (pooling) are not measured."""
    peaks: dict[int, float] = {}
    hooks = []
    for layer in layers:
        if layer.neuron is None:
            continue
        b, r = layer.raw_bias.float(), torch.as_tensor(layer.row_scale).float()

        def hook(mod, args, i=id(layer), b=b, r=r):
            inp = args[0].detach().float().cpu()             # [B, C, ...]: per-row on dim 1
            shape = (-1,) + (1,) * (inp.dim() - 2)
            cur = ((inp - b.view(shape)) * r.view(shape)).abs().max()
            peaks[i] = max(peaks.get(i, 0.0), float(cur))
        hooks.append(layer.neuron.register_forward_pre_hook(hook))
    try:                                # the step loop: the multi-step executor calls no hooks
        outputs(graph, x, time_steps, multistep=False)
    finally:
        for h in hooks:
            h.remove()
    return peaks


@dataclass
class QuantLayer:
    """One netx layer in Lava's integers (the module docstring's rules): what the file holds
    and what the fixed-point models compute, with what the rounding cost."""
    layer: NetxLayer
    weight: np.ndarray          # even int32 in [-256, 254], the synapse's shape
    bias: np.ndarray            # int32 in [-BIAS_LIMIT, BIAS_LIMIT]
    vth: int
    i_decay: int                # 4096 - i_decay: the current kept per step, of 4096
    v_decay: int
    scale: float                # float -> integer factor of the layer (the input's 2^q included)
    weights_clipped: int        # weights beyond [-256, 254] before clipping
    bias_clipped: int
    peak: float = 0.0           # the largest input current measured (``layer_scale``)
    in_scale: float = 1.0       # the input's factor: 2^INPUT_BITS for the first layer

    def summary(self, index: int) -> dict:
        import_lava_runtime()
        from lava.lib.dl.netx.utils import optimize_weight_bits
        _, bits, exp, _ = optimize_weight_bits(self.weight)   # what the netx loader makes of it
        return {"layer": index, "type": self.layer.kind, "name": self.layer.name,
                "scale": self.scale, "vThMant": self.vth, "weight_exponent": int(exp),
                "weight_bits": int(bits),
                "weight_range": [int(self.weight.min()), int(self.weight.max())],
                "weights_clipped": self.weights_clipped, "bias_clipped": self.bias_clipped,
                "pools_folded": self.layer.pooled,
                "synapses": int(np.count_nonzero(self.weight))}


def layer_scale(w_max: float, peak: float, in_scale: float, alpha: float) -> float:
    """The float -> integer factor ``s`` of a layer's weights (module docstring): the largest
    weight on 254, unless the peak input current would overflow the neuron's input or, with
    current memory, its 24-bit current: then the largest power of two below that limit, so
    that a network fine-tuned on the integers (``qat``), whose peaks then move a little, or
    calibrated on other samples, keeps the same scale (the weights' rule keeps it too: the
    largest weight stays on 254)."""
    p = max(peak * in_scale, 1e-12)
    by_weight, by_peak = 254.0 / (w_max or 1.0), min(A_IN_LIMIT / p, U_LIMIT * (1.0 - alpha) / p)
    return by_weight if by_weight <= by_peak else 2.0 ** math.floor(math.log2(by_peak))


def input_layout(graph: ModelGraph, seq: list) -> tuple[bool, list[int]]:
    """``(flat, shape)`` of the file's input: a network that flattens its input first takes
    it flat (torch's ``(c, h, w)`` order: its dense weights need no permutation from Lava's
    ``(w, h, c)``); a 1-D input ``(C, L)`` of a Conv1d is the map ``(C, 1, L)`` netx convolves."""
    flat = bool(seq) and isinstance(seq[0], NetxLayer) and seq[0].kind == "flatten"
    first = next((q.layer for q in seq if isinstance(q, QuantLayer)), None)
    if flat:
        return True, [int(np.prod(graph.input_shape))]
    return False, list(first.in_shape if first is not None and first.kind == "conv"
                       else graph.input_shape)


def quantise(graph: ModelGraph, x: torch.Tensor, time_steps: int,
             layers: list[NetxLayer] | None = None) -> list[QuantLayer | NetxLayer]:
    """The netx layers of the deployment ``graph`` in Lava's integers (``flatten`` steps
    left as they are), scales set from the input currents measured on ``x``."""
    seq = _layers(graph) if layers is None else layers
    peaks = _max_input_currents(graph, seq, x, time_steps)
    out, in_scale = [], 2.0 ** INPUT_BITS
    for i, layer in enumerate(seq, start=1):
        if layer.kind == "flatten":
            out.append(layer)
            continue
        w, b = layer.weight.numpy(), layer.bias.numpy()
        peak = layer.peak if layer.peak is not None else peaks.get(id(layer), 0.0)
        s = layer_scale(float(np.abs(w).max()), peak, in_scale, layer.alpha)
        w_even = 2 * np.round(w * s / 2)
        eff = s * in_scale
        vth = int(round(layer.threshold * eff))
        bias_q = np.round(b * eff)
        if not 0 < vth <= 131071:
            raise UnsupportedModelError(f"netx threshold {vth} of layer {i} ('{layer.name}') "
                                        "is outside Loihi's 17-bit range")
        out.append(QuantLayer(
            layer, np.clip(w_even, -256, 254).astype(np.int32),
            np.clip(bias_q, -BIAS_LIMIT, BIAS_LIMIT).astype(np.int32), vth,
            int(round((1 - layer.alpha) * 4096)), int(round((1 - layer.beta) * 4096)), eff,
            int(((w_even < -256) | (w_even > 254)).sum()),
            int((np.abs(bias_q) > BIAS_LIMIT).sum()), peak, in_scale))
        in_scale = 1.0
    return out


def stages(seq: list[QuantLayer | NetxLayer]) -> list[tuple[E.Synapse, E.Neurons] | None]:
    """The integer synapse and neurons of each layer as ``fixed_point.emulate`` runs them
    (``None`` for a flatten step): netx's ``Dense`` keeps the even weights exactly (its
    ``weight_exponent`` only drops their zero low bits), its ``Conv`` takes them as they are;
    the CUBA neuron is Lava's ``LIFReset`` with ``du = iDecay - 1`` (effective decay
    ``iDecay``), ``dv = vDecay``, ``bias_exp = 6`` (effective bias ``64 bias``)."""
    out = []
    for q in seq:
        if not isinstance(q, QuantLayer):
            out.append(None)
            continue
        l, rows = q.layer, (-1,) + (1,) * (len(q.layer.out_shape) - 1)
        t = E.tensor64
        syn = (E.Synapse("dense", t(q.weight)) if l.kind == "dense" else
               E.Synapse("conv", t(q.weight), args={"stride": l.stride, "padding": l.padding,
                                                    "dilation": l.dilation, "groups": l.groups}))
        out.append((syn, E.Neurons(t(q.i_decay), t(q.v_decay), t(q.vth),
                                   t(q.bias).view(rows) * 64, t(0.0))))
    return out


def run_stages(stages_, x: torch.Tensor, time_steps: int, frames: bool = False,
               step=E.neuron_step, stats: list[dict] | None = None) -> torch.Tensor:
    """The layers' output spikes ``[N, T, out]`` for integer inputs ``x`` (``[N, ...]``
    repeated every step, or frames ``[N, T, ...]``), every state zero at each sample's start
    and no pipeline delay (netx's one step per layer, which ``run_netx`` offsets). ``step``:
    the neuron step (``fixed_point.emulate.neuron_step``, or one with straight-through
    gradients of the same values); ``stats``: one dict per layer for its saturation counts."""
    n, state, out = x.shape[0], [None] * len(stages_), []
    for t in range(time_steps):
        h = x[:, t] if frames else x
        for i, st in enumerate(stages_):
            if st is None:
                h = h.flatten(1)
                continue
            syn, neu = st
            a = E.synapse(syn, h)
            if state[i] is None:
                state[i] = (torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(a))
            state[i] = step(neu, *state[i], a, **({"stats": stats[i]} if stats else {}))
            h = state[i][2]
        out.append(h.reshape(n, -1))
    return torch.stack(out, 1)


def emulate(seq: list[QuantLayer | NetxLayer], x: np.ndarray, time_steps: int,
            frames: bool = False, stats: list[dict] | None = None) -> np.ndarray:
    """What the netx file of ``seq`` (``quantise``) computes in Lava fixed point, bit for bit:
    output spikes ``[N, T, out]`` for float samples ``x`` in the file's input layout (the
    graded input ``round(x 2^INPUT_BITS)``)."""
    x_int = torch.round(E.tensor64(x) * 2 ** INPUT_BITS)
    with torch.no_grad():
        return run_stages(stages(seq), x_int, time_steps, frames, stats=stats).numpy()


def write_netx(model: nn.Module | ModelGraph, x: torch.Tensor, path: Path, time_steps: int,
               seq: list[QuantLayer | NetxLayer] | None = None) -> dict:
    """Write the folded SNN (or its graph) as a netx HDF5 file (``seq``: its ``quantise``,
    made here when not given); returns the quantisation summary."""
    import h5py
    graph = model if isinstance(model, ModelGraph) else build_graph(model, x)
    seq = quantise(graph, x, time_steps) if seq is None else seq
    input_flat, in_shape = input_layout(graph, seq)
    seq = seq[1:] if input_flat else seq
    summary = []
    with atomic_buffer(path) as buf, h5py.File(buf, "w") as f:   # see nir_export.write_nir
        group = f.create_group("layer")
        g0 = group.create_group("0")
        g0.create_dataset("type", data=np.bytes_("input"))
        g0.create_dataset("shape", data=np.array(in_shape))
        for i, q in enumerate(seq, start=1):
            layer = q.layer if isinstance(q, QuantLayer) else q
            g = group.create_group(str(i))
            g.create_dataset("type", data=np.bytes_(layer.kind))
            g.create_dataset("shape", data=np.array(layer.out_shape))
            if layer.kind == "flatten":
                continue
            g.create_dataset("weight", data=q.weight)
            g.create_dataset("bias", data=q.bias)
            if layer.kind == "conv":
                for k in ("stride", "padding", "dilation"):
                    g.create_dataset(k, data=np.array(getattr(layer, k)))
                g.create_dataset("groups", data=np.array(layer.groups))
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=np.array(q.i_decay))
            n.create_dataset("vDecay", data=np.array(q.v_decay))
            n.create_dataset("vThMant", data=np.array(q.vth))
            n.create_dataset("refDelay", data=np.array(1))
            n.create_dataset("gradedSpike", data=np.array(False))
            summary.append(q.summary(i))
    return {"input_bits": INPUT_BITS, "input_flat": input_flat, "input_shape": in_shape,
            "layers": summary}


def run_netx(path: Path, x: np.ndarray, time_steps: int) -> np.ndarray:
    """Run the netx file in Lava fixed point; ``x`` torch layout; returns ``[N, T, out]``.
    The file must hold its own data (``hdf5_safety``) before netx reads it."""
    check_self_contained(path, "netx file")
    import_lava_runtime()
    from lava.lib.dl.netx.hdf5 import Network
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.sink import RingBuffer as Sink
    from lava.proc.io.source import RingBuffer as Source

    from .lava_process import lava_run
    p = loading_parameters(INPUT_BITS, time_steps, list(x.shape[1:]))
    net = Network(net_config=str(path), input_message_bits=p["input_message_bits"],
                  reset_interval=p["reset_interval"], reset_offset=p["reset_offset"])
    n, depth = len(x), len(net.layers)
    data = input_schedule(np.round(x * 2 ** INPUT_BITS).astype(np.int32), time_steps, depth,
                          dtype=np.int32, sample_ndim=len(net.inp.shape))
    total = data.shape[-1]
    src, sink = Source(data=data), Sink(shape=net.out.shape, buffer=total)
    src.s_out.connect(net.inp)
    net.out.connect(sink.a_in)
    out = lava_run(net, lambda: net.run(condition=RunSteps(num_steps=total),
                                        run_cfg=Loihi2SimCfg(select_tag="fixed_pt")),
                   lambda: sink.data.get())
    spikes = (out[..., depth:depth + n * time_steps] != 0).astype(np.float32)
    return spikes.reshape(spikes.shape[0], n, time_steps).transpose(1, 2, 0)


def deployment_graph(job: ExportJob) -> ModelGraph:
    """The graph netx writes: the folded network compaction saved (BatchNorm and module
    average pools folded), else the compacted one with BatchNorm folded; ``netx_plan`` folds
    the average pools still there (functional ones included) into the weights itself."""
    if job.deploy is not None:
        return job.deployment_graph()
    from ..compaction import fold_for_deployment
    x, _ = job.samples()
    return fold_for_deployment(job.model, batch_slice(x, job.time_axis, 0, 64),
                               time_steps=job.time_steps,
                               graph=job.model_graph(), fold_pools=False)[1]


def export(job: ExportJob, out: Path) -> ExportResult:
    x, y = job.samples()
    folded = deployment_graph(job)
    path = Path(out) / "network.net"
    seq = quantise(folded, x, job.time_steps)
    quant = write_netx(folded, x, path, job.time_steps, seq)
    xs = job.per_sample(x)                    # [N, ...], or frames [N, T, ...]
    lead = xs.shape[:2] if xs.dim() == len(folded.input_shape) + 2 else xs.shape[:1]
    x_in = xs.reshape(*lead, *quant["input_shape"])      # flat, or (C, 1, L) for a Conv1d
    loading = loading_parameters(INPUT_BITS, job.time_steps, list(quant["input_shape"]))
    extra_files = write_loading_files(path, loading)
    t0 = time.perf_counter()
    got = run_netx(path, x_in.numpy(), job.time_steps)
    wall = time.perf_counter() - t0
    stats = [{} for _ in seq]
    emu = emulate(seq, x_in.numpy(), job.time_steps, frames=len(lead) == 2, stats=stats)
    for row, st in zip(quant["layers"], [st for q, st in zip(seq, stats)
                                         if isinstance(q, QuantLayer)]):
        row.update(st)                        # u_wrapped, v_clipped: over every sample and step
    par = spike_parity(torch_spikes(folded, x, job.time_steps), got, y.numpy())
    par["accuracy_float"] = par.pop("accuracy_torch")
    par["emulation_identical"] = float((emu == got).all(axis=(1, 2)).mean())
    drop = par["accuracy_float"] - par["accuracy"]
    return ExportResult(TARGET, [path.name, *extra_files], par["accuracy"], par,
                        passed=drop <= MAX_ACCURACY_DROP,
                        details={"lava_config": "Loihi2SimCfg(select_tag='fixed_pt')",
                                 "loading": loading,
                                 "accuracy_drop": drop, "quantization": quant,
                                 "synapses": sum(l["synapses"] for l in quant["layers"]),
                                 "lava_wall_s": wall})
