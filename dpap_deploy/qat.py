"""Quantization-aware fine-tuning for Loihi (netx): a short training phase, after DPAP and
compaction, through the fixed-point arithmetic the exported file runs.

    result = fine_tune(deploy_model, (x_train, y_train), (x_test, y_test), time_steps)
    result.model                    # fine-tuned, its weights on the chip's grid
    result.accuracy_float, result.accuracy_quantised, result.accuracy_fine_tuned

**What is trained.** The netx layers of the deployment network (``exporters/netx_plan.py``:
BatchNorm and module average pools folded first, as in ``deploy.pt``), each layer's weights and
bias in float, seen only through their integers: every step the layer's scale ``s`` is set by
the exporter's own rule (``netx_export.layer_scale``: the largest weight on 254, the input
currents measured once on the calibration samples), the weights become ``2 round(W s / 2)``
clipped to ``[-256, 254]`` and the bias ``round(b s 2^q)``, and the network runs in Lava's
integers (``fixed_point.emulate``: 12-bit decays truncated toward zero, the 24-bit state, the
threshold ``vth << 6``). Rounding, truncation and the spike pass the gradient straight through:
the rounding steps forward their exact integer and backward the gradient of the value before
rounding; the spike is Heaviside forward and the package's rectangle surrogate (``neurons.py``)
backward, of width the threshold. The forward values are those of ``netx_export.emulate``, bit
for bit. Loss: the package's ``sum_c (onehot_c - r_c)^2`` on the output rates (Eq 3), Adam.

**Masks.** A weight that is zero when fine-tuning starts (pruned by DPAP, or a unit cut by
compaction's folding) gets no gradient and stays exactly zero; no unit is added or removed.

**After.** The model's parameters are set to what the chip computes: ``W = W_int / s`` (times
each row's threshold), ``b = b_int / (s 2^q)``, the threshold times ``vThMant / (s 2^q)``,
``beta = 1 - vDecay / 4096`` and, for a ``Synaptic``, ``alpha = 1 - iDecay / 4096``: the float
network then differs from its fixed-point form only by the decays' truncation and the input's
rounding, and exporting it (``netx``) quantises it back to the same integers (its largest
weight is on 254, and its scale is then ``vThMant / 2^q`` exactly). Accuracies are measured
on the test samples: float before, post-training quantised (the emulation of the file the
export would write before fine-tuning), fine-tuned (the emulation of the file it writes after:
Lava's spikes, ``tests/test_qat.py``) and the fine-tuned float network.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import snntorch as snn
import torch
from torch import nn

from .errors import ConfigError, UnsupportedModelError
from .exporters import netx_export as NX
from .fixed_point import emulate as E
from .metrics import accuracy, predictions
from .neurons import rectangle
from .training.loop import loss_fn

CALIBRATION_SAMPLES = 256
EVAL_BATCH = 256


@dataclass
class QATResult:
    model: nn.Module
    accuracy_float: float
    accuracy_quantised: float
    accuracy_fine_tuned: float
    accuracy_fine_tuned_float: float
    epochs: int
    lr: float
    train_samples: int
    measured_on: str
    loss: list[float] = field(default_factory=list)      # mean training loss per epoch
    target: str = "netx"

    def section(self) -> dict:
        """``report.json``'s ``qat`` section."""
        return {k: v for k, v in asdict(self).items() if k != "model"}


class _Exact(torch.autograd.Function):
    """Forward the exact (rounded) value, backward the gradient of the value before rounding."""

    @staticmethod
    def forward(ctx, before, exact):
        return exact.detach().clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def _st(before: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return _Exact.apply(before, exact)


_SPIKE = rectangle()


def st_neuron_step(n: E.Neurons, u, v, s, a_in, stats: dict | None = None):
    """``fixed_point.emulate.neuron_step`` (zero reset) with straight-through gradients: the
    same values, the decays' truncation passing the gradient of ``x (4096 - d) / 4096``, the
    spike the rectangle surrogate of ``(v - 64 vth) / (64 vth)``."""
    u = E.wrap_current(_st(u * (E.UNITY - n.du) / E.UNITY, E.decay(u, n.du))
                       + E.activation(a_in) + n.bias_u)
    v = E.clip_voltage(_st(v * (E.UNITY - n.dv) / E.UNITY, E.decay(v, n.dv)) + u + n.bias)
    vth = n.vth * float(2 ** E.ACT_SHIFT)
    s = _SPIKE((v - vth) / vth)
    return u, torch.where(s.detach() > 0, torch.zeros_like(v), v), s


class _Layer:
    """A netx layer's trainable float weights and bias, and its integers for a forward."""

    def __init__(self, q: NX.QuantLayer, module: nn.Module | None):
        self.q, self.module = q, module
        self.train = module is not None                 # max pooling layers are fixed
        self.w = q.layer.weight.clone().requires_grad_(self.train)
        self.mask = (self.w != 0).double()
        if self.train:
            self.w.register_hook(lambda g: g * self.mask)
        self.b = q.layer.bias.clone().requires_grad_(self.train and module.bias is not None)
        self.rows = (-1,) + (1,) * (len(q.layer.out_shape) - 1)

    def scale(self) -> float:
        q = self.q
        return NX.layer_scale(float(self.w.detach().abs().max()), q.peak, q.in_scale,
                              q.layer.alpha)

    def integers(self) -> tuple[torch.Tensor, torch.Tensor, int, float]:
        """Weights, bias, threshold mantissa (as ``netx_export.quantise`` makes them) and the
        scale ``s``."""
        s = self.scale()
        eff = s * self.q.in_scale
        w = _st(self.w * s, (2 * torch.round(self.w * s / 2)).clamp(-256, 254))
        b = _st(self.b * eff, torch.round(self.b * eff).clamp(-NX.BIAS_LIMIT, NX.BIAS_LIMIT))
        return w, b, int(round(self.q.layer.threshold * eff)), s

    def stage(self) -> tuple[E.Synapse, E.Neurons]:
        syn, neu = NX.stages([self.q])[0]
        w, b, vth, _ = self.integers()
        return (E.Synapse(syn.kind, w, args=syn.args),
                E.Neurons(neu.du, neu.dv, torch.tensor(float(vth), dtype=torch.float64),
                          b.view(self.rows) * 64, neu.bias_u))

    @torch.no_grad()
    def write_back(self) -> None:
        """The module's parameters set to the integers' float values (module docstring)."""
        if not self.train:
            return
        w, b, vth, s = self.integers()
        l, m = self.q.layer, self.module
        thr = torch.as_tensor(1.0 / np.asarray(l.row_scale), dtype=torch.float64)
        thr = thr.view(-1, *([1] * (w.dim() - 1))) if thr.dim() else thr
        m.weight.copy_((w / s * thr).reshape(m.weight.shape))
        if m.bias is not None:
            m.bias.copy_((b / (s * self.q.in_scale) * thr.reshape(-1)).reshape(m.bias.shape))
        n = l.neuron          # its threshold onto vThMant: the scale becomes vThMant itself
        n.threshold.mul_(vth / (s * self.q.in_scale * l.threshold))
        n.beta.fill_(1.0 - self.q.v_decay / 4096)
        if isinstance(n, snn.Synaptic):
            n.alpha.fill_(1.0 - self.q.i_decay / 4096)


def _modules(graph, seq) -> list:
    """The synapse module of each trainable layer (``None`` for a max pooling layer), or the
    refusal of a layer whose netx weights are no module's (an average pool folded in)."""
    named = dict(graph.model.named_modules())
    out = []
    for q in seq:
        if not isinstance(q, NX.QuantLayer):
            continue
        l = q.layer
        if l.pooled:
            raise UnsupportedModelError(
                f"fine-tuning: netx folds the average pooling {', '.join(l.pooled)} into the "
                f"weights of '{l.name}', which are then no module's weights: use "
                "nn.AvgPool2d modules (folded into the model first) instead of F.avg_pool2d")
        out.append(named.get(l.name) if l.neuron is not None else None)
    return out


def _check(epochs, lr, batch_size) -> None:
    for name, v, ok in (("epochs", epochs, isinstance(epochs, int) and epochs >= 0),
                        ("batch_size", batch_size, isinstance(batch_size, int) and batch_size > 0),
                        ("lr", lr, isinstance(lr, (int, float)) and lr > 0)):
        if not ok or isinstance(v, bool):
            raise ConfigError(f"fine-tuning {name} is {v!r}; pass a positive number "
                              f"({'0 or more epochs' if name == 'epochs' else 'e.g. 1e-4'})")


def fine_tune(model: nn.Module, train, test, time_steps: int, *, epochs: int = 2,
              lr: float = 1e-4, batch_size: int = 64, log=None, seed: int = 0) -> QATResult:
    """Fine-tune ``model`` (left unchanged) for netx's fixed point: ``train`` and ``test`` are
    ``(x, y)`` pairs, ``x`` ``[N, ...]`` static or ``[N, T, ...]`` frames; returns the
    fine-tuned deployment network (BatchNorm and average pooling modules folded, as
    ``deploy.pt`` holds it) and the four accuracies (module docstring). ``log``: a callable
    taking one line per epoch."""
    from .compaction import fold_for_deployment
    from .exporters._compare import torch_spikes
    _check(epochs, lr, batch_size)
    (xt, yt), (xe, ye) = train, test
    model, graph = fold_for_deployment(copy.deepcopy(model).eval(), xt[:CALIBRATION_SAMPLES],
                                       time_steps=time_steps)
    frames = xt.dim() == len(graph.input_shape) + 2
    seq = NX.quantise(graph, xt[:CALIBRATION_SAMPLES], time_steps)
    layers = [_Layer(q, m) for q, m in zip([q for q in seq if isinstance(q, NX.QuantLayer)],
                                           _modules(graph, seq))]
    _, in_shape = NX.input_layout(graph, seq)

    def as_input(x):
        x = x.reshape(len(x), *(x.shape[1:2] if frames else ()), *in_shape).double()
        return torch.round(x * 2 ** NX.INPUT_BITS)

    def forward(x):
        it = iter(layers)
        st = [None if not isinstance(q, NX.QuantLayer) else next(it).stage() for q in seq]
        return NX.run_stages(st, as_input(x), time_steps, frames, step=st_neuron_step)

    def fixed_accuracy() -> float:
        with torch.no_grad():
            out = torch.cat([forward(xe[i:i + EVAL_BATCH]) for i in range(0, len(xe), EVAL_BATCH)])
        return accuracy(predictions(out.sum(1)), ye)

    def float_accuracy() -> float:
        return accuracy(predictions(torch.as_tensor(torch_spikes(graph, xe, time_steps)).sum(1)), ye)

    acc_float, acc_ptq = float_accuracy(), fixed_accuracy()
    params = [t for l in layers for t in (l.w, l.b) if t.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    gen, losses = torch.Generator().manual_seed(seed), []
    for epoch in range(epochs):
        order, total = torch.randperm(len(yt), generator=gen), 0.0
        for i in range(0, len(yt), batch_size):
            idx = order[i:i + batch_size]
            loss = loss_fn(forward(xt[idx]).mean(1), yt[idx], "snn")   # Eq 3 on the rates
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(yt))
        if log is not None:
            log(f"fine-tuning for fixed point: epoch {epoch + 1}/{epochs}, loss {losses[-1]:.4f}")
    acc_tuned = fixed_accuracy()
    for l in layers:
        l.write_back()
    return QATResult(model, acc_float, acc_ptq, acc_tuned, float_accuracy(), epochs, lr,
                     len(yt), f"{len(ye):,} test samples", losses)
