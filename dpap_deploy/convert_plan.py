"""The conversion loop of ``make_deployable``: which operations to replace, and by what.

1. Every max pooling over currents (not fed by a neuron's spikes: ``graph.fed_by_spikes``) is
   replaced by average pooling: no target has an exact form of it.
2. Then, repeatedly: ask the targets what they refuse (``convert_check.target_blockers``);
   every neuron or max pooling a blocker names is replaced by its next candidate
   (``convert_neurons.candidates``: nearest first, always built from the original neuron;
   ``convert_pools``); stop when nothing is refused or no named operation has a candidate left.

Functional max poolings are told apart by their position among the step's functional pooling
calls (the graph's order, the same in every time step), which maps to the
``AvgForMaxPool`` call index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from .convert_check import named_nodes, target_blockers
from .convert_neurons import candidates, describe
from .convert_pools import PoolSwapped, avg_module, set_module
from .errors import UnsupportedModelError
from .graph import ModelGraph, build_graph

POOL, NEURON = "pool", "neuron"


@dataclass
class Plan:
    work: nn.Module                        # the user's model (a copy), modules replaced
    example_input: object
    targets: list[str]
    time_steps: int
    fn_max: dict[int, int]                 # position among functional pools -> max call index
    replace: list[bool]                    # per functional max pool: computed as average
    lines: dict[str, str] = field(default_factory=dict)     # operation -> change line
    tried: dict[str, tuple[nn.Module, int]] = field(default_factory=dict)  # neuron -> (orig, i)
    time_axis: int | None = None           # the input's time axis (graph/time_axis.py)

    def graph(self) -> ModelGraph:
        """The graph of the model as converted so far, traced with the input's time axis."""
        return build_graph(self.model, self.example_input, time_axis=self.time_axis)

    @property
    def model(self) -> nn.Module:
        return PoolSwapped(self.work, tuple(self.replace)) if any(self.replace) else self.work

    @property
    def prefix(self) -> str:
        return "net." if any(self.replace) else ""

    @property
    def changes(self) -> list[str]:
        return list(self.lines.values())

    def inner(self, name: str) -> str:
        return name[len(self.prefix):] if name.startswith(self.prefix) else name

    def final_blockers(self, graph: ModelGraph) -> dict[str, list[str]]:
        return target_blockers(graph.model, graph, self.example_input, self.targets,
                               self.time_steps)

    # ------------------------------------------------------------------ replacing
    def swap_pool(self, graph: ModelGraph, node, why: str) -> bool:
        a = node.attrs
        window = f"kernel {tuple(a['kernel'])}, stride {tuple(a['stride'])}"
        if node.module is not None:
            name = self.inner(node.name)
            set_module(self.work, name, avg_module(node.module))
            what = f"'{name}' nn.{type(node.module).__name__}"
            into = f"nn.{type(node.module).__name__.replace('Max', 'Avg')}"
        else:
            pos = [n.id for n in graph.nodes if n.op == POOL and n.module is None].index(node.id)
            if pos not in self.fn_max or self.replace[self.fn_max[pos]]:
                return False
            self.replace[self.fn_max[pos]] = True
            what = f"F.max_pool{a['dims']}d call '{node.name}' in forward()"
            into = f"F.avg_pool{a['dims']}d (a TorchFunctionMode around forward)"
        self.lines[what] = f"{what} ({window}) -> {into}, same kernel and stride: {why}"
        return True

    def swap_neuron(self, node, refused_by: list[str]) -> bool:
        name = self.inner(node.name)
        orig, i = self.tried.get(name, (node.module, 0))
        options = candidates(orig)
        if i >= len(options):
            return False
        what, build = options[i]
        set_module(self.work, name, build())
        self.tried[name] = (orig, i + 1)
        self.lines[name] = (f"'{name}' {describe(orig)} -> {what}, parameters carried over: "
                            f"{' and '.join(refused_by)} cannot hold {describe(orig)} exactly")
        return True


def convert(work: nn.Module, graph0: ModelGraph, example_input, targets: list[str],
            time_steps: int, say) -> Plan:
    """Replace, in ``work`` (a copy of ``graph0.model``), what the targets cannot hold; every
    graph is traced with ``graph0``'s time axis (stated or inferred), never a new guess."""
    fn_pools = [n for n in graph0.nodes if n.op == POOL and n.module is None]
    fn_max = {p: k for k, p in enumerate(
        p for p, n in enumerate(fn_pools) if n.attrs.get("pool") == "max")}
    plan = Plan(work, example_input, targets, time_steps, fn_max, [False] * len(fn_max),
                time_axis=graph0.time_axis)
    graph = plan.graph()
    for node in graph.nodes:
        if node.op == POOL and node.attrs.get("pool") == "max" and \
                not graph.fed_by_spikes(node.id):
            plan.swap_pool(graph, node, "max pooling over currents has no exact form on "
                                        "any target")
    for _ in range(4 * len(graph0.nodes) + 4):
        model = plan.model
        graph = plan.graph()
        blockers = target_blockers(model, graph, example_input, targets, time_steps)
        named: dict[int, list[str]] = {}
        for target, lines in blockers.items():
            for line in lines:
                for nid in named_nodes(graph, line):
                    named.setdefault(nid, [])
                    if target not in named[nid]:
                        named[nid].append(target)
        progress = False
        for nid, refused_by in named.items():
            node = graph.nodes[nid]
            if node.op == POOL and node.attrs.get("pool") == "max":
                progress |= plan.swap_pool(graph, node, "max pooling over spikes: refused by "
                                                        + " and ".join(refused_by))
            elif node.op == NEURON:
                progress |= plan.swap_neuron(node, refused_by)
        if not progress:
            break
        say(f"converted: {len(plan.lines)} operation(s)")
    else:
        raise UnsupportedModelError("make_deployable did not settle on a deployable form "
                                    "(the targets' refusals kept changing); report this model")
    return plan
