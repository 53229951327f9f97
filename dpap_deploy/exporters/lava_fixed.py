"""A planned Lava network (``exporters.nir_to_lava.LavaNetwork``) in fixed point: every synapse's
integer weights and exponent, every population's integer constants (``quantize``), and the
emulation of the whole network over time (``emulate``), which the Lava run in ``fixed_pt``
must equal spike for spike.

**Scales.** Each value carries a factor ``f``: its integer is ``f`` times the float one. The
input is ``round(x 2^q)`` (``q``: the fewest fraction bits that hold the calibration samples
exactly, 0 for spikes or event counts, at most ``INPUT_BITS``): ``f = 2^q``. A population ``n`` has one scale ``F`` (its integer current and
voltage are ``64 F`` times the float ones, its threshold mantissa ``round(F vth)``): the largest
that keeps every weight feeding it within its 8-bit mantissa (``254 f_in / max|W|`` per weight
layer, times the window of a pool between them), its threshold mantissa at or below
``VTH_TARGET`` and, on the calibration samples, its current and voltage within 24 bits (else
``F`` is halved, up to ``CALIBRATION_ROUNDS`` times). A weight layer then gets
``m 2^e ~ (F / f_in) W``; a pool sums its window (weights 1: ``f`` times the window for an
average); spikes have ``f = 1``; a graded voltage ``64 F``. Input gains (NIR's ``r dt/tau``, a
``Scale``) are folded into the rows of the weights feeding the neuron.

The emulation runs NIR's semantics (recurrent edges deliver the previous step; no Lava
pipeline delays, which ``LavaNetwork`` aligns) on ``N`` samples at once, ``T`` steps each,
every state zeroed per sample.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import nir
import numpy as np
import torch

from ..errors import UnsupportedModelError
from ..fixed_point import emulate as E
from ..fixed_point import quantize as Q
from .lava_groups import Membrane
from .lava_neuron_plan import _pair

INPUT_BITS = 7            # graded inputs: round(x * 128)
VTH_TARGET = 2 ** 14      # threshold mantissas at most this (v keeps 2^23 / 2^20 = 8x headroom)
VTH_MIN = 16              # fewer integer steps below a threshold: refused (what sets the scale)
CALIBRATION_ROUNDS = 8
WEIGHTS = (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear)
POOLS = (nir.AvgPool2d, nir.SumPool2d)


@dataclass
class FixedNetwork:
    net: object                     # the LavaNetwork (planned)
    input_bits: int
    synapses: dict = field(default_factory=dict)     # name -> emulate.Synapse
    neurons: dict = field(default_factory=dict)      # name -> emulate.Neurons
    lava: dict = field(default_factory=dict)         # name -> integer arrays for Lava's processes
    factor: dict = field(default_factory=dict)       # name -> f of its output
    scale: dict = field(default_factory=dict)        # population -> F
    layers: list = field(default_factory=list)       # per layer: exponent, scale, clipping
    stats: dict = field(default_factory=dict)        # population -> saturation counts
    gains: dict = field(default_factory=dict)        # (from, to) -> integer gain of an edge

    def inputs(self, x: np.ndarray) -> np.ndarray:
        """The samples as the integers the network takes: ``round(x 2^q)``."""
        return np.round(np.asarray(x, np.float64) * 2.0 ** self.input_bits)

    def to_float(self, out: np.ndarray) -> np.ndarray:
        """Output integers back in float units (spikes stay 0/1)."""
        return out / self.factor[self.net.top.sink]

    def run(self, x: np.ndarray, stats: dict | None = None) -> np.ndarray:
        """The network's output integers ``[N, T, ...]`` for float samples ``x`` (``[N, ...]``
        static or frames ``[N, T, ...]``); ``stats``: per population, ``u_wrapped`` and
        ``v_clipped`` counts."""
        return emulate_network(self, E.tensor64(self.inputs(x)), stats).numpy()


def emulate_network(fx: FixedNetwork, x: torch.Tensor, stats: dict | None = None) -> torch.Tensor:
    """``x``: integer inputs ``[N, ...]`` or ``[N, T, ...]``; returns the Output's ``[N, T, ...]``."""
    net = fx.net
    top, T, shapes = net.top, net.T, net.torch_shapes
    n = x.shape[0]
    frames = x.dim() == len(net.in_shape) + 2
    state = {k: [torch.zeros((n,) + shapes[k], dtype=torch.float64) for _ in range(3)]
             for k in fx.neurons}
    prev: dict = {}
    outs = []
    for t in range(T):
        out = {top.source: x[:, t] if frames else x}
        for name in top.order:
            if name == top.source:
                continue
            parts = [out[u] * fx.gains.get((u, name), 1) for u in top.inputs[name]] + \
                [prev.get(u, torch.zeros((n,) + shapes[u], dtype=torch.float64))
                 * fx.gains.get((u, name), 1) for u in top.back[name]]
            node = top.nodes[name]
            if name in fx.neurons:
                st = stats.setdefault(name, {}) if stats is not None else None
                u, v, s = E.neuron_step(fx.neurons[name], *state[name], sum(parts), st)
                state[name] = [u, v, s]
                out[name] = v if fx.neurons[name].out == "v" else s
            elif isinstance(node, Membrane):
                out[name] = state[node.group][1]
            elif name in fx.synapses:
                out[name] = E.synapse(fx.synapses[name], sum(parts))
            elif isinstance(node, nir.Flatten):
                out[name] = sum(parts).flatten(1)
            else:
                out[name] = sum(parts)
        prev = out
        outs.append(out[top.sink])
    return torch.stack(outs, 1)


# ---- planning ---------------------------------------------------------------------------------
def _torch(lay, a) -> np.ndarray:
    """A per-neuron constant in Lava layout back in torch layout."""
    a = np.asarray(a, np.float64)
    if a.ndim == 0:
        return np.broadcast_to(a, lay.torch_shape).copy()
    return lay.from_lava(a[..., None])[0]


def _pool_factor(node) -> float:
    k = np.atleast_1d(np.asarray(node.kernel_size)).astype(int)
    k = (k[0], k[0]) if len(k) == 1 else (k[0], k[1])
    return float(k[0] * k[1]) if isinstance(node, nir.AvgPool2d) else 1.0


def _rows(w: np.ndarray, node, scale: np.ndarray) -> np.ndarray:
    """``w`` (torch layout) with output unit ``i`` scaled by ``scale`` (its output's shape)."""
    if isinstance(node, (nir.Affine, nir.Linear)):
        return w * scale.reshape(-1, 1)
    per_c = scale.reshape(scale.shape[0], -1)[:, 0]
    return w * per_c.reshape((-1,) + (1,) * (w.ndim - 1))


class _Planner:
    def __init__(self, net, input_bits: int, caps: dict):
        self.net, self.top, self.caps = net, net.top, caps
        self.fx = FixedNetwork(net, input_bits)
        self.w = {}                                   # weight layer -> float weights (torch)
        self.gain = {}                                # population -> folded gain (torch)
        self.gain_div = {}                            # population -> gain taken into F

    def refuse(self, name, why, fix):
        Q.refuse(name, why, fix)

    # the float weights, with every row scale and population gain folded in
    def _float_weights(self):
        net, top = self.net, self.top
        for name in top.order:
            c = net.neuron.get(name)
            if c is None or not c.get("own"):
                continue
            g = _torch(net.layout[name], c["gain"])
            self.gain[name] = g
            if np.all(g == 1.0):
                continue
            feeders = net._feeders(name)
            if np.ptp(g) == 0 and not any(isinstance(top.nodes[u], WEIGHTS) for u in feeders):
                self.gain_div[name] = float(g.flat[0])      # no weights: the gain goes to F
                continue
            for u in feeders:
                if not isinstance(top.nodes[u], WEIGHTS):
                    self.refuse(name, f"has an input gain and an input {u!r} without weights",
                                "fixed point folds gains into weights: put a weight layer "
                                "before it")
                net.row_scale.setdefault(u, []).append(g.reshape(net.torch_shapes[u]))
        for name in top.order:
            node = top.nodes[name]
            if isinstance(node, WEIGHTS):
                w = np.asarray(node.weight, np.float64)
                for s in net.row_scale.get(name, []):
                    w = _rows(w, node, np.asarray(s, np.float64))
                self.w[name] = w

    def _upstream(self, name, mult=1.0):
        """``[(node, multiplier, weighted)]`` reaching ``name``'s input through pools, sums and
        pass-throughs: weight layers (weighted) or fixed-factor values (the input, neurons)."""
        top, out = self.top, []
        for u in top.inputs[name] + top.back[name]:
            node = top.nodes[u]
            if isinstance(node, WEIGHTS):
                out.append((u, mult, True))
            elif isinstance(node, POOLS):
                out += self._upstream(u, mult * _pool_factor(node))
            elif u == top.source or u in self.net.neuron or isinstance(node, Membrane):
                out.append((u, mult, False))
            else:
                out += self._upstream(u, mult)
        return out

    def _f_of(self, u) -> float:
        """The factor of ``u``'s output: planned, or found from what feeds it."""
        fx, top, node = self.fx, self.top, self.top.nodes[u]
        if u in fx.factor:
            return fx.factor[u]
        if u == top.source:
            return 2.0 ** fx.input_bits
        c = self.net.neuron.get(u)
        if c is not None and c.get("out", "s") == "s":
            return 1.0                                  # spikes
        if c is not None or isinstance(node, Membrane):
            group = u if c is not None else node.group
            if group not in fx.scale:
                self.refuse(u, "feeds back a graded value before its scale is known",
                            "fixed point takes graded values forward only")
            return 64.0 * fx.scale[group]
        if isinstance(node, WEIGHTS):
            return self.F_syn.get(u) or self._preferred(u)
        f = self._f_of(top.inputs[u][0])
        return f * _pool_factor(node) if isinstance(node, POOLS) else f

    def _preferred(self, s) -> float:
        """The scale of a weight layer's output that uses its 8-bit mantissa fully."""
        w = self.w[s]
        top = float(np.abs(w).max()) if w.size else 0.0
        hi = Q.grid_limits(w)[1] or 255
        return hi * self._f_of(self.top.inputs[s][0]) / top if top > 0 else np.inf

    def _cap(self, name) -> tuple[float, str]:
        """The largest ``F`` the population's threshold (``VTH_TARGET``) and biases
        (13-bit mantissa << 7) allow, and calibration's limit; with what sets it."""
        c, cap, why = self.net.neuron[name], self.caps.get(name, np.inf), "24-bit state"
        vth = np.asarray(c["vth"], np.float64)
        vth = vth[np.isfinite(vth)]
        if vth.size and vth.max() > 0 and VTH_TARGET / float(vth.max()) < cap:
            cap, why = VTH_TARGET / float(vth.max()), "threshold"
        biases = [np.asarray(c["bias"], np.float64)]
        if c.get("own"):
            biases.append(np.asarray(c["bias_u"], np.float64) * np.asarray(c["gain"]))
        top = max(float(np.abs(b).max()) for b in biases)
        if top > 0 and (Q.BIAS_MANT_MAX * 2 ** Q.BIAS_EXP_MAX) / (Q.ACT * top) < cap:
            cap, why = (Q.BIAS_MANT_MAX * 2 ** Q.BIAS_EXP_MAX) / (Q.ACT * top), \
                f"bias {top:.4g}"
        return cap, why

    def _scale(self, name):
        """A population's ``F`` (module docstring); its weight layers' output scales. An input
        without weights (spikes summed into a current, as a residual '+' does) gets an integer
        gain on its edge (a ``Relay`` in Lava), and ``F`` is that gain times its factor; a
        population fed only so takes its uniform input gain ``g`` into ``F = f / g``."""
        ups = self._upstream(name)
        forced = [(u, m) for u, m, w in ups if not w]
        fs = {round(self._f_of(u) * m, 9) for u, m in forced}
        if len(fs) > 1:
            self.refuse(name, f"sums inputs of different scales {sorted(fs)}",
                        "give each input a weight layer")
        weighted = [self._preferred(u) * m for u, m, w in ups if w]
        cap, why = self._cap(name)
        F = min([cap] + weighted)
        if forced:
            f = fs.pop()
            if weighted:
                direct = set(self.top.inputs[name] + self.top.back[name])
                if any(u not in direct or m != 1 for u, m in forced):
                    self.refuse(name, "sums a weighted input with one that passes a pool",
                                "give that input a weight layer")
                g = max(1, int(np.floor(F / f)))
                for u, _ in forced:
                    self.fx.gains[(u, name)] = g
                F = g * f
            else:
                F = f / self.gain_div.get(name, 1.0)
        elif F == cap and weighted:
            vth = np.asarray(self.net.neuron[name]["vth"], np.float64)
            vmax = float(vth[np.isfinite(vth)].max()) if np.isfinite(vth).any() else 0.0
            if 0 < F * vmax < VTH_MIN:
                self.refuse(name, f"has its scale set to {F:.3g} by its {why}, which leaves "
                            f"its threshold {vmax:.4g} only {int(F * vmax)} integer steps",
                            "lower the bias relative to the threshold (or raise the threshold"
                            " and the weights together)")
        F = 1.0 if not np.isfinite(F) else F
        self.fx.scale[name] = F
        for u, m, w in ups:
            if w:
                self.F_syn[u] = min(self.F_syn.get(u, np.inf), F / m)

    def plan(self) -> FixedNetwork:
        self._float_weights()
        net, top, fx = self.net, self.top, self.fx
        self.F_syn = {}
        for name in top.order:                          # populations' scales first
            if name in net.neuron:
                self._scale(name)
        for name in top.order:                          # then every integer, in order
            node = top.nodes[name]
            if name == top.source:
                fx.factor[name] = 2.0 ** fx.input_bits
            elif name in net.neuron:
                self._neuron(name, net.neuron[name], fx.scale[name])
            elif isinstance(node, WEIGHTS):
                self._weights(name, node, self._f_of(name), self._f_of(top.inputs[name][0]))
            elif isinstance(node, POOLS):
                fx.factor[name] = self._f_of(name)
                self._pool(name, node)
            else:
                fs = {round(self._f_of(u), 9) for u in top.inputs[name] + top.back[name]}
                if len(fs) > 1:
                    self.refuse(name, f"sums values of different scales {sorted(fs)}",
                                "put a weight layer on each branch")
                fx.factor[name] = self._f_of(name)
        return fx

    def _weights(self, name, node, F, f_in):
        fx = self.fx
        conv = isinstance(node, (nir.Conv1d, nir.Conv2d))
        m, e, clipped = Q.weights(name, self.w[name], F / f_in, conv)
        fx.factor[name] = F
        if conv:
            c1 = isinstance(node, nir.Conv1d)
            args = {a: (_pair(getattr(node, a))[1:] if c1 else _pair(getattr(node, a)))
                    for a in ("stride", "padding", "dilation")}
            args["groups"] = int(node.groups)
            fx.synapses[name] = E.Synapse("conv", E.tensor64(m), 0, args, conv1d=c1)
        else:
            fx.synapses[name] = E.Synapse("dense", E.tensor64(m), e)
        fx.lava[name] = dict(weight=m, exp=e)
        fx.layers.append(dict(layer=name, kind="conv" if conv else "dense", weight_exp=e,
                              scale=F / f_in, weights_clipped=clipped,
                              weight_range=[int(m.min()), int(m.max())]))

    def _pool(self, name, node):
        args = dict(kernel_size=_pair(node.kernel_size), stride=_pair(node.stride),
                    padding=_pair(node.padding))
        self.fx.synapses[name] = E.Synapse("pool", None, 0, args)

    def _neuron(self, name, c, F):
        fx, lay = self.fx, self.net.layout[name]
        own = c.get("own", False)
        du = Q.decay(name, "du (1 - alpha)", _torch(lay, c["du"]))
        dv = Q.decay(name, "dv (1 - beta)", _torch(lay, c["dv"]))
        if not own and float(du.flat[0]) == 0:
            self.refuse(name, "keeps its current forever (alpha = 1)", "Lava's LIF decays "
                        "the current by at least 1/4096: use alpha < 1")
        vth = Q.threshold(name, _torch(lay, c["vth"]), F)
        bm, be, b_round = Q.bias(name, _torch(lay, c["bias"]), F)
        if own:
            bu = _torch(lay, c["bias_u"]) * self.gain[name]
            um, ue, u_round = Q.bias(name, bu, F, "current bias")
        else:
            um, ue, u_round = np.zeros_like(bm), np.zeros_like(bm), 0
        reset = c.get("reset", "zero")
        out = c.get("out", "s")
        t = E.tensor64
        fx.neurons[name] = E.Neurons(t(du), t(dv), t(vth), t(bm * 2.0 ** be), t(um * 2.0 ** ue),
                                     reset, out)
        fx.factor[name] = 1.0 if out == "s" else 64.0 * F
        fx.lava[name] = dict(du=du, dv=dv, vth=vth, bias_mant=bm, bias_exp=be,
                             bias_u=um * 2.0 ** ue)
        fx.layers.append(dict(layer=name, kind="neurons", scale=F,
                              vth_mant=[int(vth.min()), int(vth.max())],
                              du=[int(du.min()), int(du.max())], dv=[int(dv.min()), int(dv.max())],
                              bias_rounded=b_round + u_round))


def fixed_network(net, x: np.ndarray, input_bits: int | None = None) -> FixedNetwork:
    """The fixed-point plan of ``net`` (a planned ``LavaNetwork``), calibrated on the float
    samples ``x`` (``[N, ...]`` or frames): a population whose current or voltage leaves 24
    bits on them gets half the scale, up to ``CALIBRATION_ROUNDS`` times, then is refused."""
    if input_bits is None:
        input_bits = exact_input_bits(x)
    caps: dict = {}
    for _ in range(CALIBRATION_ROUNDS + 1):
        fx = _Planner(_fresh(net), input_bits, caps).plan()
        stats: dict = {}
        fx.run(x, stats)
        bad = {k: v for k, v in stats.items() if v.get("u_wrapped") or v.get("v_clipped")}
        fx.stats = stats
        if not bad:
            return fx
        for k in bad:
            caps[k] = fx.scale[k] / 2
    k, v = next(iter(bad.items()))
    raise UnsupportedModelError(
        f"fixed point: layer {k!r} leaves the 24-bit state on the calibration samples "
        f"({v['u_wrapped']} current wraps, {v['v_clipped']} voltage clips) even at the scale "
        f"{fx.scale[k]:.4g}; lower its inputs' weights or the threshold range")


def exact_input_bits(x: np.ndarray) -> int:
    """The fewest fraction bits ``q <= INPUT_BITS`` that hold every value of ``x`` exactly
    (0 for spikes and counts, 4 for sixteenths), else ``INPUT_BITS``: the fewer, the finer
    the first layer's weights at the same threshold scale."""
    xa = np.asarray(x, np.float64)
    for q in range(INPUT_BITS):
        if np.array_equal(xa * 2.0 ** q, np.round(xa * 2.0 ** q)):
            return q
    return INPUT_BITS


def _fresh(net):
    """``net`` with its row scales copied (the planner adds population gains to them)."""
    clone = copy.copy(net)
    clone.row_scale = {k: list(v) for k, v in net.row_scale.items()}
    return clone
