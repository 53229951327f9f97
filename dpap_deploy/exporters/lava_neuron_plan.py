"""The neuron half of planning a NIR graph for Lava (``nir_to_lava.LavaNetwork`` inherits it):
each neuron's Lava constants, where each synapse bias goes, and which weight rows carry a gain.

- Lava's ``LIFReset`` (uniform constants, ``lava_groups`` found no reason for our process):
  one ``du = 1 - alpha``, ``dv = 1 - beta`` per process; an input gain ``g`` (and a per-neuron
  threshold as ``1/vth``, the threshold then 1) scales the rows of the weights feeding it; the
  synapse biases ``b`` (times that scale) and NIR's ``v_leak`` drive ``c`` go to ``bias_mant``
  (added to ``v``). A CubaLIF fed by a bias never gets here (``lava_groups`` makes it our
  process, NIR adds the bias to the current); if one does, it is refused once.
- our ``Population`` (a ``lava_groups.Group``): every constant per neuron, the gain in the
  process (``u += G (a_in + bias_u)``), the synapse biases in ``bias_u``: see
  :meth:`NeuronPlan._plan_group`.
"""
from __future__ import annotations

import nir
import numpy as np

from ..errors import UnsupportedModelError
from .lava_groups import Group
from ..graph.nir_neurons import NEURONS, discretise

NEURON_NODES = NEURONS + (Group,)
WEIGHTS = (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)


def refuse(name: str, node, why: str, fix: str):
    kind = node.d.kind if isinstance(node, Group) else type(node).__name__
    raise UnsupportedModelError(f"NIR node {name!r} ({kind}) {why}; {fix}")


def _population(name, node, what: str, a, shape) -> np.ndarray:
    """A neuron constant as a float64 array of the population's (torch) shape."""
    try:
        return np.broadcast_to(np.asarray(a, np.float64), shape).copy()
    except ValueError:
        refuse(name, node, f"has {what} of shape {np.shape(a)} for a population of shape "
               f"{tuple(shape)}", "give one value or one per neuron")


class NeuronPlan:
    """Planning methods over ``self.top``, ``self.torch_shapes``, ``self.layout``,
    ``self._feeders`` / ``self._fed`` and ``self._check`` (``LavaNetwork``'s)."""

    def _pooled_bias(self, pool: str):
        """``(synapse, per-channel bias seen after the pool)`` when ``pool`` is an unpadded
        average or sum pool fed by one synapse with a bias: a pool of a per-channel constant
        is that constant (times ``k*k`` for a sum), so the bias can go to the neuron after it."""
        node = self.top.nodes[pool]
        if not isinstance(node, (nir.AvgPool2d, nir.SumPool2d)) or np.any(np.asarray(node.padding)):
            return None
        feeders = self._feeders(pool)
        if len(feeders) != 1:
            return None
        src = self.top.nodes[feeders[0]]
        b = getattr(src, "bias", None)
        if not isinstance(src, (nir.Conv1d, nir.Conv2d)) or b is None or not np.any(b):
            return None
        k = _pair(node.kernel_size)
        factor = k[0] * k[1] if isinstance(node, nir.SumPool2d) else 1.0
        return feeders[0], np.asarray(b, np.float64) * factor

    def _plan_neurons(self):
        """Per neuron: Lava constants; per synapse: row scale and where its bias goes. A
        :class:`Group` keeps its per-neuron constants and takes synapse biases into its
        current (``bias_u``); Lava's ``LIFReset`` gets one decay per process, a per-neuron
        threshold as a row scale ``1/vth`` (threshold 1) and the biases in ``v``."""
        top = self.top
        self.neuron, self.row_scale, self.bias_to = {}, {}, {}
        for name in top.order:
            if isinstance(top.nodes[name], NEURON_NODES):
                with self._check():
                    self._plan_neuron(name)
        for u, scales in self.row_scale.items():
            with self._check():
                if len(self._fed(u)) != 1:
                    refuse(u, top.nodes[u], "feeds several neurons one of which scales its "
                           "input (gain or per-neuron threshold)",
                           "give each neuron its own weights")
                per_c = scales[0].reshape(scales[0].shape[0], -1)
                if isinstance(top.nodes[u], (nir.Conv1d, nir.Conv2d)) and \
                        np.ptp(per_c, axis=1).any():
                    refuse(u, top.nodes[u], "feeds neurons whose gain or threshold varies within a "
                           "channel", "give the neurons one value per channel")
        for name in top.order:
            b = getattr(top.nodes[name], "bias", None)
            with self._check():
                unplaced = set(self._fed(name)) - set(self.bias_to.get(name, []))
                if b is not None and np.any(b) and unplaced:
                    refuse(name, top.nodes[name], "has a bias and feeds a node that is not a "
                           "neuron", "Lava synapses have no bias: fold it into the next layer")

    def _input_biases(self, name, node, shape, scale, cuba: bool) -> np.ndarray:
        """The biases of the synapses feeding ``name`` (through an unpadded pool too), times
        ``scale``, as one array of the neuron's shape; ``cuba``: refuse them (Lava's CubaLIF
        adds a bias to ``v``, NIR's CubaLIF to the current)."""
        top, bias = self.top, np.zeros(shape)
        for u in self._feeders(name):
            src = top.nodes[u]
            b = getattr(src, "bias", None)
            pooled = self._pooled_bias(u)
            if pooled is None and (b is None or not np.any(b)):
                continue
            syn_name = u if pooled is None else pooled[0]
            if cuba:         # refused here once, not again as a bias that reaches no neuron
                self.bias_to.setdefault(syn_name, []).append(name if pooled is None else u)
                refuse(name, node, f"receives the bias of {syn_name!r}", "Lava adds a bias to "
                       "v, CubaLIF to the current: use a bias-free Linear / Conv")
            if pooled is not None:          # conv -> average / sum pool -> neuron
                self.bias_to.setdefault(syn_name, []).append(u)
                b = np.broadcast_to(pooled[1].reshape((-1,) + (1,) * (len(shape) - 1)), shape)
            else:
                self.bias_to.setdefault(u, []).append(name)
                b = _bias_torch(src, self.torch_shapes[u]).reshape(shape)
            bias = bias + b * scale                             # b is part of I, like W x
        return bias

    def _plan_neuron(self, name):
        top, node = self.top, self.top.nodes[name]
        own = isinstance(node, Group)
        d = node.d if own else discretise(node, self.dt, name)
        if np.any(d.v_reset != 0):
            refuse(name, node, f"resets to v_reset={float(np.max(np.abs(d.v_reset)))}",
                   "Lava's LIF resets to 0: re-export with v_reset = 0")
        shape, lay = self.torch_shapes[name], self.layout[name]
        full = {k: _population(name, node, k, getattr(d, k), shape)
                for k in ("beta", "alpha", "v_threshold", "gain", "syn_gain", "leak")
                if getattr(d, k) is not None}
        beta, vth = full["beta"], full["v_threshold"]
        du = 1.0 - full["alpha"] if "alpha" in full else np.ones(shape)
        leak = full.get("leak", np.zeros(shape))
        gain = full.get("gain", 1.0) * full.get("syn_gain", 1.0) * np.ones(shape)
        if own:       # per-neuron constants, the gain in the process: u += G (a_in + bias_u)
            self.neuron[name] = self._plan_group(name, node, shape, lay, beta, du, vth, gain, leak)
            return
        rescale = np.ptp(vth) != 0          # LIFReset: threshold 1, rows scaled by 1/vth
        scale = gain / vth if rescale else gain
        unit = bool(np.all(scale == 1.0))
        if not unit:
            for u in self._feeders(name):
                if not isinstance(top.nodes[u], WEIGHTS):
                    refuse(name, node, f"has an input gain or per-neuron threshold and an "
                           f"input {u!r} without weights", "put a weight layer before it")
                self.row_scale.setdefault(u, []).append(scale.reshape(self.torch_shapes[u]))
        bias = (leak / vth if rescale else leak) + \
            self._input_biases(name, node, shape, scale, d.kind == "CubaLIF")
        self.neuron[name] = dict(
            kind=d.kind, own=False, du=float(du.flat[0]),
            dv=0.0 if d.kind == "IF" else 1.0 - float(beta.flat[0]),
            vth=1.0 if rescale else float(vth.flat[0]), bias=lay.to_lava(bias))

    def _plan_group(self, name, node: Group, shape, lay, beta, du, vth, gain, leak) -> dict:
        """A :class:`Group`'s ``Population`` constants (Lava layout): ``u += G (a_in + bias_u)``
        with ``G`` the NIR input gains (and a ``Scale`` before it), ``bias_u`` the synapse
        biases and the current stage's drive ``c_y / (G / g)`` (its ``u`` is ``g`` times NIR's
        current), ``bias_mant`` the membrane's drive ``c``."""
        if node.scale is not None:
            gain = gain * _population(name, node, "input scale", node.scale, shape)
        bias_u = self._input_biases(name, node, shape, 1.0, cuba=False)
        if node.drive is not None and np.any(node.drive):
            g = 1.0 if node.d.gain is None else _population(name, node, "gain", node.d.gain, shape)
            if np.any(gain == 0):
                refuse(name, node, "has a current-stage v_leak and an input gain 0",
                       "give the current stage v_leak = 0")
            bias_u = bias_u + _population(name, node, "v_leak", node.drive, shape) * g / gain
        return dict(kind=node.d.kind, own=True, reset=node.reset, out=node.out,
                    **{k: lay.to_lava(v) for k, v in dict(
                        du=du, dv=1.0 - beta, vth=vth, gain=gain, bias_u=bias_u,
                        bias=leak).items()})


def _bias_torch(node, out_shape) -> np.ndarray:
    """A synapse's bias broadcast over its output (per channel for a convolution)."""
    b = np.asarray(node.bias, np.float64)
    if isinstance(node, (nir.Conv1d, nir.Conv2d)):
        b = b.reshape((-1,) + (1,) * (len(out_shape) - 1))
    return np.broadcast_to(b, out_shape)


def _pair(v, row: int | None = None) -> tuple:
    """``(H, W)`` of a NIR size; a Conv1d's ``(K,)`` is ``(row, K)`` on a one-row image
    (``row``: 1 for stride and dilation, 0 for padding)."""
    if isinstance(v, str):
        return v
    a = [int(i) for i in np.atleast_1d(np.asarray(v))]
    if row is not None:
        return (row, a[0])
    return (a[0], a[0]) if len(a) == 1 else (a[0], a[1])
