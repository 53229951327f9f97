"""Which NIR neurons run as our own Lava ``Population`` (``lava_neurons/process.py``) rather
than Lava's ``LIFReset``, found from the graph's structure (metadata ``dpap_group`` /
``dpap_role`` is never needed: a file from another tool has none).

:func:`collapse` replaces, in a :class:`Topology`, each of these by one :class:`Group` node:

- **a spiking LI loop** (``nirspec.md`` form 1): ``[G: Scale ->] [Y: LI ->] P: LI ->
  S: Threshold(thr)``, with ``S -> R: Scale(-thr) -> P`` closing a cycle (the previous step)
  for snnTorch's reset by subtraction (``reset_delay=True``), without ``R`` for no reset. In
  steps: ``u[t] = alpha u[t-1] + g x[t]`` (``Y``; without it ``u = g x``; ``g``: ``G``'s
  scale, Lapicque's input gain), ``v[t] = beta v[t-1] + u[t] - thr S[t-1]``, ``S[t] = v[t] >
  thr``. The node is named ``S`` (its consumers read the spikes); ``G`` and ``Y`` feed only the
  next stage, ``R`` only ``P``. A recurrent weight ``S -> rec -> P`` (RLeaky) or ``-> Y``
  (RSynaptic) stays a weight on a cycle into the group. Where the graph also reads ``P`` (a
  membrane readout), ``P`` becomes a :class:`Membrane`: the process's voltage output;
- **leaky integrator** (``LI`` not in such a loop): ``v[t] = beta v[t-1] + g x[t] + c``, its
  graded ``v`` is the output (a readout feeding ``Output``, or any consumer);
- **LIF / CubaLIF / IF** whose ``tau``, ``tau_syn``, ``v_threshold`` or gain differs between neurons
  (Lava's ``LIFReset`` holds one value per process; uniform ones stay Lava's), or whose input
  gain meets an input without weights to fold it into (max pooling over spikes under NIR's
  ``unit-r`` encoding: ``SumPool2d -> IF(r = 1)``), and a CubaLIF fed by a synapse with a bias
  (NIR adds it to the current, ``LIFReset`` would add it to ``v``: our process takes it into
  the current);
- **a biased Affine feeding Output** (a Linear readout): a ``beta = 0`` integrator after it
  adds the bias (Lava's synapses have none): ``v[t] = W x[t] + b``.

The discrete constants are ``nir_neurons``' (an ``LI`` is discretised as a ``LIF`` with the same
``tau``, ``r``, ``v_leak``), so Lava and the torch reference use the same float32 values.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import nir
import numpy as np

from ..errors import UnsupportedModelError
from ..graph.nir_neurons import NEURONS, Discrete, discretise
from .nir_topology import Topology

RESETS = ("zero", "subtract", "none")


@dataclass(eq=False)
class Group:
    """One ``Population`` process: the NIR nodes it stands for and its discrete constants
    (``d.alpha`` set when it has a current stage). ``out``: what the node named after it
    delivers, ``"s"`` (spikes) or ``"v"`` (graded voltage); ``scale``: a ``Scale`` before it
    (an input gain); ``drive``: the current stage's constant input (its ``v_leak``)."""
    reset: str
    members: tuple[str, ...]
    d: Discrete
    out: str = "s"
    scale: np.ndarray | None = None
    drive: np.ndarray | None = None

    @property
    def graded(self) -> bool:
        return self.out == "v"


@dataclass(eq=False)
class Membrane:
    """The voltage of the spiking :class:`Group` ``group`` (its only input), read where the
    graph reads the membrane ``LI`` of a spiking loop (a membrane readout)."""
    group: str
    graded = True


def _refuser(problems: list[str] | None):
    """``refuse(name, why, fix)``: raises, or (``problems`` given) lists the line and returns."""
    def refuse(name: str, why: str, fix: str) -> None:
        line = f"NIR node {name!r} {why}; {fix}"
        if problems is None:
            raise UnsupportedModelError(line)
        problems.append(line)
    return refuse


def _li(node: nir.LI, dt: float, name: str) -> Discrete:
    """An ``LI`` (``tau dv/dt = (v_leak - v) + r I``) as the ``LIF`` with the same constants."""
    tau = np.asarray(node.tau)
    lif = nir.LIF(tau=tau, r=np.asarray(node.r), v_leak=np.asarray(node.v_leak),
                  v_threshold=np.full(tau.shape, np.inf, np.float32),
                  v_reset=np.zeros(tau.shape, np.float32))
    return replace(discretise(lif, dt, name), kind="LI")


def _varies(a) -> bool:
    a = np.asarray(a)
    return a.size > 1 and bool(np.ptp(a) != 0)


def per_neuron(d: Discrete) -> bool:
    """Whether Lava's one-value-per-process ``LIFReset`` cannot hold these constants."""
    return any(a is not None and _varies(a)
               for a in (d.beta, d.alpha, d.v_threshold, d.gain, d.syn_gain))


def _equal(a, b) -> bool:
    try:
        x, y = np.broadcast_arrays(np.asarray(a, np.float32), np.asarray(b, np.float32))
    except ValueError:
        return False
    return bool(np.array_equal(x, y))


def _only_feeds(top: Topology, cons: dict, a: str, b: str, kind) -> bool:
    """``a`` is a ``kind`` node with no recurrent input whose one consumer is ``b``."""
    return isinstance(top.nodes[a], kind) and cons[a] == [b] and not top.back[a]


def _spiking_group(top: Topology, s: str, cons: dict, _refuse) -> Group | None:
    """The spiking loop whose spike node is the Threshold ``s`` (``[G: Scale ->] [Y: LI ->]
    P: LI -> s``, with ``s -> R: Scale(-thr) -> P`` closing a cycle for a reset by
    subtraction, none for no reset), if there is one."""
    nodes = top.nodes
    ins = top.inputs[s]
    if len(ins) != 1 or top.back[s] or not isinstance(nodes[ins[0]], nir.LI):
        return None
    p = ins[0]
    thr = np.asarray(nodes[s].threshold)
    loops = [r for r in cons[s] if isinstance(nodes[r], nir.Scale) and cons[r] == [p]
             and top.inputs[r] == [s] and not top.back[r] and r in top.back[p]]
    exact = [r for r in loops if _equal(nodes[r].scale, -thr)]
    r = exact[0] if len(exact) == 1 else loops[0] if len(loops) == 1 else None
    if r is not None and not _equal(nodes[r].scale, -thr):
        _refuse(r, f"(Scale) subtracts {np.ravel(-np.asarray(nodes[r].scale))[:3]} where its "
                f"Threshold {s!r} has {np.ravel(thr)[:3]}", "a reset by subtraction subtracts "
                "the threshold: write Scale(-threshold)")
    y = top.inputs[p][0] if len(top.inputs[p]) == 1 else None      # a current stage, which
    y = y if y is not None and isinstance(nodes[y], nir.LI) and cons[y] == [p] else None
    head = y or p                                                    # may have a recurrent input
    g = top.inputs[head][0] if len(top.inputs[head]) == 1 else None
    g = g if g is not None and _only_feeds(top, cons, g, head, nir.Scale) else None
    back_p = [b for b in top.back[p] if b != r]
    if y is not None and back_p:
        _refuse(p, f"has a current stage {y!r} and a recurrent input {back_p} into its "
                "membrane", "feed the recurrent weight into the current stage, as snnTorch's "
                "RSynaptic does")
    back_head = [b for b in top.back[head] if b != r]
    if g is not None and back_head:
        _refuse(head, f"has an input Scale {g!r} and a recurrent input {back_head}", "a "
                "recurrent weight behind a gain is not an snnTorch form: fold the gain into "
                "the weights")
    d = replace(_li(nodes[p], top.dt, p), kind="LIF", v_threshold=thr.astype(np.float32))
    drive = None
    if y is not None:
        dy = _li(nodes[y], top.dt, y)
        d = replace(d, kind="CubaLIF", alpha=dy.beta, syn_gain=dy.gain)
        drive = dy.leak
    members = tuple(m for m in (g, y, p, s, r) if m is not None)
    return Group("subtract" if r is not None else "none", members, d,
                 scale=None if g is None else np.asarray(nodes[g].scale, np.float32), drive=drive)


def _readout_bias(u: str) -> str:
    return f"{u}.bias"


def collapse(top: Topology, problems: list[str] | None = None) -> Topology:
    """``top`` with every :class:`Group` (module docstring) as one node, a :class:`Membrane`
    where a spiking loop's membrane ``LI`` is read; the rest unchanged. A loop that is almost
    the form is refused; ``problems``: list those lines instead."""
    refuse = _refuser(problems)
    nodes, inputs = dict(top.nodes), {k: list(v) for k, v in top.inputs.items()}
    back, order = {k: list(v) for k, v in top.back.items()}, list(top.order)
    cons = {n: top.consumers(n) for n in top.order}
    taken: set[str] = set()
    for s in top.order:
        if not isinstance(top.nodes[s], nir.Threshold):
            continue
        g = _spiking_group(top, s, cons, refuse)
        if g is None:
            continue
        head, p = g.members[0], g.members[-2 if g.reset == "none" else -3]
        nodes[s] = g
        inputs[s] = list(top.inputs[head])
        back[s] = [b for m in g.members for b in top.back[m] if b not in g.members]
        taken.update(m for m in g.members if m != s)
        if set(cons[p]) - set(g.members):           # the membrane is read too
            taken.discard(p)
            nodes[p], inputs[p], back[p] = Membrane(s), [s], []
            order.remove(p)
            order.insert(order.index(s) + 1, p)
    for name in top.order:
        node = top.nodes[name]
        if name in taken:
            continue
        if isinstance(node, nir.LI) and not isinstance(nodes[name], Membrane):
            nodes[name] = Group("none", (name,), _li(node, top.dt, name), out="v")
        elif isinstance(node, NEURONS):
            d = discretise(node, top.dt, name)
            if per_neuron(d) or not _weighted_inputs(top, name, d) or \
                    (d.kind == "CubaLIF" and _biased_input(top, name)):
                nodes[name] = Group("zero", (name,), d)
    for u in list(inputs[top.sink]):                # a biased Linear readout
        node = top.nodes[u]
        if isinstance(node, nir.Affine) and np.any(node.bias) and cons[u] == [top.sink]:
            b = _readout_bias(u)
            nodes[b] = Group("none", (b,), Discrete("LI", np.float32(0), None, None,
                                                    np.float32(np.inf), np.float32(0)), out="v")
            inputs[b], back[b] = [u], []
            inputs[top.sink] = [b if v == u else v for v in inputs[top.sink]]
            order.insert(order.index(u) + 1, b)
    for m in taken:
        del nodes[m], inputs[m], back[m]
    order = [n for n in order if n not in taken]
    return Topology(nodes, order, inputs, back, top.source, top.sink, top.dt)


def _biased_input(top: Topology, name: str) -> bool:
    """Whether a synapse with a non-zero bias feeds ``name`` (directly or through pools and
    flattens). NIR's ``CubaLIF`` adds it to the current (``I = alpha I + g_syn (W x + b)``),
    Lava's ``LIFReset`` adds a bias to ``v``: our process takes it into the current
    (``bias_u``)."""
    for u in top.inputs[name] + top.back[name]:
        node = top.nodes[u]
        b = getattr(node, "bias", None)
        if b is not None and np.any(b):
            return True
        if u != top.source and isinstance(node, (nir.AvgPool2d, nir.SumPool2d, nir.Flatten)) \
                and _biased_input(top, u):
            return True
    return False


def _weighted_inputs(top: Topology, name: str, d: Discrete) -> bool:
    """Whether Lava's ``LIFReset`` can take the neuron's input gain (folded into the rows of
    the weights feeding it): true at gain 1 or when every input is a weight layer. A pool
    straight before it (max pooling over spikes under NIR's ``unit-r`` encoding: an ``IF``
    with ``r = 1``) needs the gain in the neuron: our process."""
    if d.gain is None and d.syn_gain is None:
        return True
    return all(isinstance(top.nodes[u], (nir.Conv1d, nir.Conv2d, nir.Affine, nir.Linear))
               for u in top.inputs[name] + top.back[name])


def stand_in(top: Topology, known: tuple) -> Topology:
    """``top`` with each Group, and each node not of a ``known`` type (refused later, by name),
    as an element-wise identity (a unit ``Scale``): a shape pass that knows only NIR's nodes
    then runs over the whole graph."""
    unit = nir.Scale(scale=np.float32(1))
    nodes = {k: v if isinstance(v, known) else unit
             for k, v in top.nodes.items()}
    return replace(top, nodes=nodes)
