"""DPAP attached to an ordinary snnTorch / PyTorch model.

    dpap = DPAP(model, example_input)          # finds layers, installs hooks
    for epoch in range(E):
        for x, y in loader:
            out = my_time_loop(model, x)         # the user's own loop, T calls per batch
            loss(out, y).backward(); opt.step()
            dpap.step()                          # masks weights; folds this batch's traces
        dpap.end_epoch()                         # survival update and pruning (Eq 12-17)

Traces are recorded by forward hooks while the model is in training mode with autograd on: each call of a layer
is one time step (Eq 5, 6; one call per batch for an ANN, Eq 18, 19). ``step`` turns the batch's
end-of-window traces into the plasticity term (Eq 7) and moves the sliding threshold (Eq 8);
``end_epoch`` computes spine importance (Eq 11), updates the survival functions and prunes.
Gradients of pruned parameters are masked by tensor hooks; weights are re-masked in ``step``
(``mask_timing = "epoch"``: neither; the masks are multiplied into the weights once, at the end
of each epoch, and pruned weights train again in between, as in the authors' code).
Accumulators are float64 (values reach 1e12). Traces are read in float32 (also under autocast).
In a data-parallel run ``reduce`` sums the batch's per-process sums over the processes before
they are folded (``_step_reduced``), so every process takes the one-process decision.

**Deployability.** Attaching checks the model against every deployment target of its kind
(``deployability.check_graph``: nir, loihi-sim, netx for an SNN; onnx for an ANN) and issues one
``DeployabilityWarning`` listing every blocker of every target with its fix, before any
training is spent; nothing when they all take it. ``check_deploy=False`` silences it; a target
name or a list of names checks only those.

**Readouts.** The output layer may be a readout instead of spiking neurons (``graph.readout``):
``"current"``, a ``Linear`` fed by spikes whose graded output ``I[t] = W s[t] + b`` the user
sums over time, or ``"membrane"``, a neuron whose membrane ``U[t]`` is returned (the
leaky-integrator readout, ``snn.Leaky(reset_mechanism="none")``). The readout is the output
layer, so as for every output layer its neurons (the classes) are never removed, and its input
synapses are pruned only with ``prune_output_synapses`` (method.md section 4). Its post trace
is then the graded value it returns, rectified as an ANN's (Eq 18-19):
``S_post[t+1] = tau S_post[t] + a(ReLU(y[t+1]))`` with ``y = I`` or ``U`` and ``a`` the
population activity (summed over positions for a conv population): a readout emits no spikes
(a leaky integrator's threshold crossings are not its output), and ReLU keeps the trace and
the BCM term on the non-negative scale of the spike traces they stand in for.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from . import plasticity, rules, survival
from .config import DPAPConfig
from .importance import normalize, spine_importance, spine_importance_minmax
from ..graph import ModelGraph, PrunableLayer, graph_of
from ..graph.state import neuron_membrane     # the one reading of a neuron call's membrane
from ..masks import apply_masks, layer_param_masks, layer_stats
from .traces import population_activity, update_trace

_F64 = torch.float64


@dataclass
class LayerState:
    """Persistent DPAP state of one layer (everything here is checkpointed)."""

    syn_alive: torch.Tensor                     # bool [C_out, C_in]
    neu_alive: torch.Tensor                     # bool [C_out]
    F_syn: torch.Tensor                         # float64 [C_out, C_in]
    F_neu: torch.Tensor                         # float64 [C_out]
    theta: torch.Tensor                         # float64 [C_out], BCM sliding threshold
    plast_e: torch.Tensor                       # float64 [C_out, C_in], Eq 10 accumulator
    trace_e: torch.Tensor                       # float64 [C_out], sum_b sum_n S_post
    neu_pruned_epoch: torch.Tensor              # int64 [C_out], -1 while alive
    syn_sample: torch.Tensor                    # int64 [K], flat synapse indices tracked
    f_neu_hist: list = field(default_factory=list)   # per epoch: float32 [C_out]
    f_syn_hist: list = field(default_factory=list)   # per epoch: float32 [K]


class _Recorder:
    """Per-batch traces of one layer, filled by forward hooks (not checkpointed)."""

    __slots__ = ("s_pre", "s_post", "o_pre", "acc")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.s_pre = self.s_post = self.o_pre = self.acc = None


def _activity_seq(x: torch.Tensor) -> torch.Tensor:
    """``[T, B, ...] -> [T, B, C]`` population activity of every step in one operation."""
    T, B = x.shape[:2]
    return population_activity(x.reshape((T * B,) + x.shape[2:])).reshape(T, B, -1)


class _Windowed:
    def __init__(self, dpap: "DPAP") -> None:
        self.dpap = dpap

    def __enter__(self):
        self.dpap._windowed = True
        return self.dpap

    def __exit__(self, *exc):
        self.dpap._windowed = False
        return False


def _as_config(config) -> DPAPConfig:
    """``None`` (the defaults), a :class:`DPAPConfig`, or a table of options
    (:meth:`DPAPConfig.from_dict`, so ``{"linear": {"epsilon": 1.0}}`` works too)."""
    if config is None:
        return DPAPConfig()
    if isinstance(config, DPAPConfig):
        return config
    if isinstance(config, Mapping):
        return DPAPConfig.from_dict(config)
    raise ConfigError(f"DPAP config must be a DPAPConfig or a table of options, got "
                      f"{type(config).__name__}; e.g. DPAPConfig() or preset('default')")


class DPAP:
    """Developmental-plasticity-inspired adaptive pruning of one model."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor | None = None,
                 config: DPAPConfig | None = None, seed: int = 0, graph: ModelGraph | None = None,
                 check_deploy: bool | str | list[str] = True,
                 time_axis: int | None = None) -> None:
        """``check_deploy``: ``True`` (default) warns (``DeployabilityWarning``) about every
        blocker of every target of the model's kind; a target name or a list of names checks
        those only; ``False`` checks nothing. ``time_axis``: where ``example_input`` holds its
        time steps, ``1`` for ``[B, T, ...]``, ``0`` for ``[T, B, ...]`` (``build_graph``)."""
        self.model = model
        self.config = _as_config(config)
        self.graph = graph_of(graph or model, example_input, time_axis=time_axis)
        self.kind, self.layers = self.graph.kind, self.graph.layers
        self.deployability = None
        if check_deploy is not False and check_deploy is not None:
            self._check_deploy(None if check_deploy is True else check_deploy)
        self.rule = rules.rule(self.config.rule)
        if self.rule.needs_time and self.kind == "ann":
            others = [n for n, r in rules.RULES.items() if not r.needs_time]
            raise ConfigError(f"plasticity rule '{self.rule.name}' needs spike timing and an "
                              f"ANN has no time axis; use rule {' or '.join(map(repr, others))}")
        self.epoch = 0
        self.num_batches = 0
        self._windowed = False
        # Sums a float64 tensor over the processes of a data-parallel run, in place (None:
        # one process). Set by the training loop (dpap_deploy.distributed).
        self.reduce = None
        gen = torch.Generator().manual_seed(seed)
        self.states = [self._new_state(layer, gen) for layer in self.layers]
        self._rec = [_Recorder() for _ in self.layers]
        self._pairs: list[list] = [[] for _ in self.layers]
        self._handles: list = []
        self._grad_handles: dict[int, list] = {}
        for i in range(len(self.layers)):
            self._refresh_masks(i)
        self._attach()

    # ----------------------------------------------------------------- set-up
    def _check_deploy(self, targets) -> None:
        """Warn once, before any hook is attached, with every blocker of every target."""
        from ..deployability import warn_blockers
        self.deployability = warn_blockers(self.graph, targets, stacklevel=3)

    def _new_state(self, layer: PrunableLayer, gen: torch.Generator) -> LayerState:
        dev = layer.synapse.weight.device
        n_out, n_in = layer.n_out, layer.n_in
        params = self.config.params_for(layer.kind)
        k = min(self.config.history_synapse_samples, n_out * n_in)
        return LayerState(
            syn_alive=torch.ones(n_out, n_in, dtype=torch.bool, device=dev),
            neu_alive=torch.ones(n_out, dtype=torch.bool, device=dev),
            F_syn=torch.full((n_out, n_in), params.beta, dtype=_F64, device=dev),
            F_neu=torch.full((n_out,), params.beta, dtype=_F64, device=dev),
            theta=torch.zeros(n_out, dtype=_F64, device=dev),
            plast_e=torch.zeros(n_out, n_in, dtype=_F64, device=dev),
            trace_e=torch.zeros(n_out, dtype=_F64, device=dev),
            neu_pruned_epoch=torch.full((n_out,), -1, dtype=torch.long, device=dev),
            syn_sample=torch.randperm(n_out * n_in, generator=gen)[:k].sort().values.to(dev),
        )

    def _tracked(self, layer: PrunableLayer) -> bool:
        return not layer.is_output or self.config.prune_output_synapses

    def _attach(self) -> None:
        for i, layer in enumerate(self.layers):
            if not self._tracked(layer):
                continue
            self._handles.append(layer.synapse.register_forward_pre_hook(self._pre_hook(i)))
            if layer.neuron is not None:
                self._handles.append(layer.neuron.register_forward_hook(self._post_hook(i, False)))
            else:  # ANN layer without an activation module: trace = ReLU(pre-activation)
                last = layer.bn if layer.bn is not None else layer.synapse
                self._handles.append(last.register_forward_hook(self._post_hook(i, True)))

    def detach(self) -> None:
        """Remove every hook DPAP installed; masks already applied stay applied."""
        for h in self._handles:
            h.remove()
        for hs in self._grad_handles.values():
            for h in hs:
                h.remove()
        self._handles, self._grad_handles = [], {}

    # ------------------------------------------------------------------ hooks
    def _recording(self) -> bool:
        # A training forward pass: training mode with autograd on. An evaluation inside the
        # training loop (``torch.no_grad()``, with or without ``model.eval()``) is not recorded,
        # nor a window the multi-step executor reports itself (``window``).
        return self.model.training and torch.is_grad_enabled() and not self._windowed

    def _record_pre(self, i: int, act: torch.Tensor) -> None:
        rec = self._rec[i]
        rec.s_pre = update_trace(rec.s_pre, act, self.config.tau)
        rec.o_pre = act

    def _record_post(self, i: int, act: torch.Tensor) -> None:
        rec = self._rec[i]
        if rec.s_post is not None and rec.s_post.shape != act.shape:
            raise RuntimeError(
                f"DPAP traces of layer '{self.layers[i].name}' from an earlier batch were "
                "not consumed: call dpap.step() after every optimizer step")
        self.rule.on_step(rec, act)
        rec.s_post = update_trace(rec.s_post, act, self.config.tau)

    def _pre_hook(self, i: int):
        def hook(_mod, inputs):
            if self._recording():
                self._record_pre(i, population_activity(inputs[0].detach().float()))
        return hook

    def _post_hook(self, i: int, relu: bool):
        node = self.graph.nodes[self.layers[i].neuron_node] if not relu else None
        adapter = node.adapter if node is not None else None
        membrane = self.layers[i].is_output and self.graph.readout == "membrane"
        relu = relu or membrane          # a readout's trace: its graded value, rectified

        def hook(mod, _inputs, output):
            if not self._recording():
                return
            if membrane:
                out = neuron_membrane(adapter, mod, output)
            else:
                out = adapter.spikes(output) if adapter is not None else \
                    (output[0] if isinstance(output, tuple) else output)
            out = out.detach().float()
            self._record_post(i, population_activity(torch.relu(out) if relu else out))
        return hook

    def window(self, i: int, pre: torch.Tensor, pre_static: bool, post: torch.Tensor,
               steps: int) -> None:
        """A whole window of layer ``i`` from the multi-step executor: ``pre`` is its input
        ``[T, B, ...]`` (or ``[B, ...]`` at every step when ``pre_static``), ``post`` its
        spikes ``[T, B, ...]``. The traces are the step loop's, step by step, on activities
        computed for all steps at once (Eq 5-6)."""
        if not (self.model.training and torch.is_grad_enabled()) or \
                not self._tracked(self.layers[i]):
            return
        post, pre = post.detach().float(), pre.detach().float()   # bf16/fp16 under autocast
        a_post = _activity_seq(post)
        a_pre = population_activity(pre) if pre_static else _activity_seq(pre)
        for t in range(steps):
            self._record_pre(i, a_pre if pre_static else a_pre[t])
            self._record_post(i, a_post[t])

    def windows(self):
        """Context for a multi-step run: the hooks stand aside while it reports windows."""
        return _Windowed(self)

    def hooks_standing_aside(self) -> frozenset[int]:
        """The ids of DPAP's module hooks while they stand aside (inside ``windows()``: they
        record nothing then), so that the executor may run those modules without calling them;
        outside it, none."""
        return frozenset(h.id for h in self._handles) if self._windowed else frozenset()

    # ------------------------------------------------------------- per batch
    @torch.no_grad()
    def step(self) -> None:
        """After ``optimizer.step()``: re-zero pruned weights (``mask_timing = "step"``) and
        fold the batch's traces."""
        if self.config.mask_timing == "step":
            for pairs in self._pairs:
                if pairs:
                    apply_masks(pairs)
        if not any(r.s_post is not None for r in self._rec):
            return
        self.num_batches += 1
        if self.reduce is not None:
            return self._step_reduced()
        for i, (layer, st, rec) in enumerate(zip(self.layers, self.states, self._rec)):
            if rec.s_post is None:
                continue
            # The batch term is a float32 matrix product (values up to ~1e10 per batch keep
            # 7 significant digits); sums across batches and epochs are float64.
            term = self._batch_term(i)
            if term is not None:
                st.plast_e += term
                st.trace_e += rec.s_post.sum(0)
            st.theta = plasticity.update_threshold(st.theta, rec.s_post.to(_F64), self.num_batches)
            rec.clear()

    def _batch_term(self, i: int) -> torch.Tensor | None:
        """The plasticity term of the batch (Eq 7: a sum over its samples), or None in warm-up
        (summed in the warm-up too when the sums are cumulative, as in the authors' code)."""
        layer, st, rec = self.layers[i], self.states[i], self._rec[i]
        if rec.s_pre is None:
            raise RuntimeError(f"layer '{layer.name}' produced output without input")
        if self.config.accumulation == "epoch" and \
                survival.in_warmup(self.epoch, self.config.params_for(layer.kind)):
            return None
        return self.rule.measure(rec, st.theta)

    def _step_reduced(self) -> None:
        """``step`` when the global batch is spread over processes: every quantity the update
        needs is a sum over samples (the plasticity term, ``sum_n S_post``, the sample count),
        so the per-process sums are summed (``self.reduce``, one float64 all-reduce) and
        ``theta`` moves by ``sum_n S_post / N`` of the global batch (Eq 8): the one-process
        update up to float rounding, and the same on every process."""
        parts, slots = [], []
        for i, rec in enumerate(self._rec):
            if rec.s_post is None:
                continue
            term = self._batch_term(i)
            post = rec.s_post.to(_F64)
            pieces = [post.sum(0), torch.tensor([float(post.shape[0])], dtype=_F64,
                                                device=post.device)]
            if term is not None:
                pieces.append(term.to(_F64).flatten())
            parts += pieces
            slots.append((i, term is not None))
        flat = self.reduce(torch.cat(parts))
        off = 0
        for i, has_term in slots:
            st = self.states[i]
            n_out = st.theta.numel()
            post_sum, count = flat[off:off + n_out], flat[off + n_out]
            off += n_out + 1
            if has_term:
                st.plast_e += flat[off:off + st.plast_e.numel()].view_as(st.plast_e)
                st.trace_e += post_sum
                off += st.plast_e.numel()
            st.theta = plasticity.update_threshold(st.theta, (post_sum / count)[None],
                                                   self.num_batches)
            self._rec[i].clear()

    # ------------------------------------------------------------- per epoch
    @torch.no_grad()
    def end_epoch(self) -> dict[str, dict[str, int]]:
        """Survival update and pruning for the epoch just finished; returns what died."""
        died: dict[str, dict[str, int]] = {}
        cfg = self.config
        method, everyone, zr = cfg.normalization, cfg.population == "all", cfg.zero_range
        for i, (layer, st) in enumerate(zip(self.layers, self.states)):
            params = cfg.params_for(layer.kind)
            n_syn = n_neu = 0
            if self._tracked(layer) and not survival.in_warmup(self.epoch, params):
                syn_alive = st.syn_alive & st.neu_alive[:, None]
                plast = st.plast_e * syn_alive if cfg.mask_dead_synapses_in_spine else st.plast_e
                syn_pop = torch.ones_like(syn_alive) if everyone else syn_alive
                neu_pop = torch.ones_like(st.neu_alive) if everyone else st.neu_alive
                norm = normalize(st.plast_e, syn_pop, method, zr) \
                    if cfg.prune_conv_kernels or layer.kind != "conv" else None
                if norm is not None:
                    st.F_syn = survival.update_survival(st.F_syn, norm, syn_alive, params, self.epoch)
                    dead = survival.prune_decisions(st.F_syn, syn_alive)
                    st.syn_alive &= ~dead
                    n_syn = int(dead.sum())
                if not layer.is_output:
                    D = spine_importance(st.trace_e, plast) if cfg.importance == "product" \
                        else spine_importance_minmax(st.trace_e, plast, neu_pop, zr)
                    norm = normalize(D, neu_pop, method, zr)
                    if norm is not None:
                        st.F_neu = survival.update_survival(st.F_neu, norm, st.neu_alive, params,
                                                            self.epoch)
                        dead = survival.prune_decisions(st.F_neu, st.neu_alive)
                        st.neu_alive &= ~dead
                        st.neu_pruned_epoch[dead] = self.epoch
                        n_neu = int(dead.sum())
            st.f_neu_hist.append(st.F_neu.float().cpu())
            st.f_syn_hist.append(st.F_syn.flatten()[st.syn_sample].float().cpu())
            if cfg.accumulation == "epoch":
                st.plast_e.zero_()
                st.trace_e.zero_()
            if n_syn or n_neu:
                self._refresh_masks(i)
            elif self._pairs[i] and cfg.mask_timing == "epoch":   # pruned weights regrew
                apply_masks(self._pairs[i])
            died[layer.name] = {"synapses": n_syn, "neurons": n_neu}
        self.epoch += 1
        return died

    def _refresh_masks(self, i: int) -> None:
        layer, st = self.layers[i], self.states[i]
        if bool(st.syn_alive.all()) and bool(st.neu_alive.all()):
            self._pairs[i] = []
            return
        self._pairs[i] = layer_param_masks(layer, st.syn_alive, st.neu_alive)
        apply_masks(self._pairs[i])
        if i not in self._grad_handles and self.config.mask_timing == "step":
            self._grad_handles[i] = [
                p.register_hook(lambda g, i=i, k=k: g * self._pairs[i][k][1] if self._pairs[i] else g)
                for k, (p, _) in enumerate(self._pairs[i])]

    # ------------------------------------------------------------- reporting
    def layer_stats(self) -> list[dict]:
        """Per layer: neurons / synapses total and kept (a conv synapse is a kernel), params."""
        return [layer_stats(layer, st.syn_alive, st.neu_alive)
                for layer, st in zip(self.layers, self.states)]

    def params_removed_fraction(self) -> float:
        """Parameters zeroed by pruning over all parameters of the model (weights, biases,
        BatchNorm affine; the outgoing weights of dead neurons are counted by compaction)."""
        total = sum(p.numel() for p in self.model.parameters())
        removed = sum(s["params_total"] - s["params_kept"] for s in self.layer_stats())
        return removed / total if total else 0.0

    # ---------------------------------------------------------- checkpointing
    def state_dict(self) -> dict:
        return {"format": "dpap-state", "version": 1, "epoch": self.epoch,
                "num_batches": self.num_batches, "config": self.config.to_dict(),
                "layers": [{"name": layer.name, "kind": layer.kind, **{k: getattr(st, k) for k in (
                    "syn_alive", "neu_alive", "F_syn", "F_neu", "theta", "plast_e", "trace_e",
                    "neu_pruned_epoch", "syn_sample")},
                    "f_neu_hist": list(st.f_neu_hist), "f_syn_hist": list(st.f_syn_hist)}
                    for layer, st in zip(self.layers, self.states)]}

    def load_state_dict(self, sd: dict) -> None:
        if not isinstance(sd, dict) or sd.get("format") != "dpap-state":
            raise CheckpointError("the checkpoint has no DPAP state (was it written with --no-dpap?)")
        names = [d["name"] for d in sd["layers"]]
        if names != [layer.name for layer in self.layers]:
            raise CheckpointError(f"DPAP state is for layers {names}, the model has "
                                  f"{[layer.name for layer in self.layers]}")
        self.epoch, self.num_batches = int(sd["epoch"]), int(sd["num_batches"])
        for i, (layer, st, d) in enumerate(zip(self.layers, self.states, sd["layers"])):
            dev = layer.synapse.weight.device
            for k in ("syn_alive", "neu_alive", "F_syn", "F_neu", "theta", "plast_e", "trace_e",
                      "neu_pruned_epoch", "syn_sample"):
                setattr(st, k, d[k].to(dev))
            st.f_neu_hist, st.f_syn_hist = list(d["f_neu_hist"]), list(d["f_syn_hist"])
            self._rec[i].clear()
            self._refresh_masks(i)
