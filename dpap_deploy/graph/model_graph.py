"""The model graph: one time step of a user's model as a dataflow graph, built once.

Nodes are module calls *and* functional operations (``F.max_pool2d``, ``flatten`` / ``view``,
residual ``+``, ``torch.cat``, ...), each with its input nodes and its output shape (batch
excluded). DPAP, compaction, folding, counting and the exporters all read this one structure
(``build_graph`` in ``trace.py`` makes it); none of them probes the model again.

A *prunable layer* is a synapse (``Conv1d``, ``Conv2d``, ``Linear``) with, on the way to its
neuron population, optionally a BatchNorm, pooling, dropout and residual additions; the neuron
is any registered adapter type (``graph/neurons``). The layer whose neuron (ANN: synapse) is the
graph's output is the output layer; in an SNN the output layer may be a synapse with no neuron
(a ``Linear`` readout of spikes, ``readout == "current"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from ..errors import UnsupportedModelError
from .neurons import NeuronAdapter

SYNAPSES = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.MaxPool1d, nn.MaxPool2d)
PASSIVE = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)

# Node ops
INPUT, OUTPUT = "input", "output"
SYNAPSE, NORM, NEURON, POOL, FLATTEN, PASS, ADD, CAT, ELEMENTWISE = (
    "synapse", "norm", "neuron", "pool", "flatten", "pass", "add", "cat", "elementwise")


@dataclass
class Node:
    """One operation of one time step. ``inputs`` are node ids (data inputs of this step)."""

    id: int
    op: str
    name: str                                  # module path, or e.g. "add_7" for functions
    inputs: list[int]
    out_shape: tuple[int, ...]                 # without batch
    in_shapes: list[tuple[int, ...]] = field(default_factory=list)
    module: nn.Module | None = None
    adapter: NeuronAdapter | None = None        # neurons only
    attrs: dict = field(default_factory=dict)   # pool kind/kernel/stride/padding, cat dim, fn

    @property
    def in_shape(self) -> tuple[int, ...]:
        return self.in_shapes[0] if self.in_shapes else ()


@dataclass
class PrunableLayer:
    """A synapse, its optional BatchNorm and its neuron population (node ids and modules)."""

    name: str
    synapse: nn.Module
    bn: nn.Module | None = None
    bn_name: str | None = None
    neuron: nn.Module | None = None
    neuron_name: str | None = None
    is_output: bool = False
    node: int = -1                  # synapse node id
    neuron_node: int = -1
    path: list[int] = field(default_factory=list)   # node ids from synapse to neuron (incl.)

    @property
    def kind(self) -> str:
        return "conv" if isinstance(self.synapse, (nn.Conv1d, nn.Conv2d)) else "linear"

    @property
    def n_out(self) -> int:
        return int(self.synapse.weight.shape[0])

    @property
    def n_in(self) -> int:
        return int(self.synapse.weight.shape[1])


@dataclass
class ModelGraph:
    """The traced model. ``steps_per_call`` is 1 when one call of the model is one time step
    (``nn.Sequential`` with ``init_hidden=True``) and ``T`` when the model runs its own time
    loop of ``T`` steps per call (snnTorch's tutorial classes)."""

    model: nn.Module
    nodes: list[Node]
    kind: str                         # "snn" / "ann"
    steps_per_call: int
    output: int                       # node id of the output
    input_shape: tuple[int, ...]      # one step's input, without batch
    layers: list[PrunableLayer] = field(default_factory=list)
    output_membrane: bool = False     # the model returns its output neuron's membrane
    time_axis: int | None = None      # the input's time axis (graph/time_axis.py), if any
    input_indexed: bool = False       # one call per step, the forward reads a part of its input

    # --------------------------------------------------------------- readout
    @property
    def readout(self) -> str:
        """What the model returns at each step, ``y[t]``:

        - ``"spikes"``: the output neuron's spikes ``s[t]`` (binary);
        - ``"membrane"``: the output neuron's membrane ``U[t]`` (e.g. ``snn.Leaky`` with
          ``reset_mechanism="none"``, the leaky-integrator readout);
        - ``"current"``: a graded value that is no neuron's state, e.g. a ``Linear`` fed by
          spikes, ``I[t] = W s[t] + b`` (the user typically sums it over time); ANN logits too.
        """
        node = self.nodes[self.output]
        if node.op == NEURON and node.adapter is not None and node.adapter.kind == "snn":
            return "membrane" if self.output_membrane else "spikes"
        return "current"

    def fed_by_spikes(self, node_id: int) -> bool:
        """Whether node ``node_id``'s (single) data input is the binary spike output of a
        spiking neuron, reached backwards through flatten / view / reshape, dropout and
        pass-through nodes only (a pooling, an addition or an activation in between makes the
        input graded: ``False``)."""
        node = self.nodes[node_id]
        while len(node.inputs) == 1:
            node = self.nodes[node.inputs[0]]
            if node.op == NEURON:
                return node.adapter is not None and node.adapter.kind == "snn"
            if not (node.op in (FLATTEN, PASS) or
                    (node.op == ELEMENTWISE and node.attrs.get("reshape"))):
                return False
        return False

    # --------------------------------------------------------------- queries
    def consumers(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.id)
        return out

    def describe(self) -> str:
        """One line per node: ``id op name <- inputs shape``."""
        return "\n".join(f"{n.id:3d} {n.op:11s} {n.name:24s} <- {n.inputs} {n.out_shape}"
                         for n in self.nodes)


def find_layers(graph: ModelGraph) -> list[PrunableLayer]:
    """Pair every synapse with its BatchNorm and neuron by walking forward from it."""
    cons = graph.consumers()
    layers: list[PrunableLayer] = []
    for n in graph.nodes:
        if n.op != SYNAPSE:
            continue
        if isinstance(n.module, (nn.Conv1d, nn.Conv2d)) and n.module.groups != 1:
            raise UnsupportedModelError(
                f"grouped convolution '{n.name}' (groups={n.module.groups}): DPAP prunes "
                "whole input channels of ordinary convolutions; use groups=1")
        layer = PrunableLayer(name=n.name, synapse=n.module, node=n.id, path=[n.id])
        cur = n
        while True:
            nxt = cons[cur.id]
            if len(nxt) != 1:
                break
            cur = graph.nodes[nxt[0]]
            if cur.op == NORM and layer.bn is None and layer.neuron is None:
                layer.bn, layer.bn_name = cur.module, cur.name
            elif cur.op == NEURON:
                layer.neuron, layer.neuron_name, layer.neuron_node = cur.module, cur.name, cur.id
                layer.path.append(cur.id)
                break
            elif cur.op in (POOL, PASS, ADD):
                pass
            else:
                break
            layer.path.append(cur.id)
        if graph.kind == "snn" and layer.neuron is not None and layer.neuron_node >= 0 \
                and graph.nodes[layer.neuron_node].adapter.kind != "snn":
            layer.neuron = None
        layers.append(layer)
    if not layers:
        raise UnsupportedModelError("the model has no Conv1d, Conv2d or Linear layer to prune")
    if graph.kind == "snn":
        for layer in layers:
            if layer.neuron is None and layer.node != graph.output:
                raise UnsupportedModelError(
                    f"'{layer.name}' ({type(layer.synapse).__name__}) reaches no spiking neuron "
                    "of its own (only BatchNorm, pooling, dropout or a residual '+' may stand "
                    "between a synapse and its neuron); put a spiking neuron after it")
    out = graph.nodes[graph.output]
    for layer in layers:
        layer.is_output = (layer.neuron_node == out.id) or (layer.node == out.id) or \
            (layer.neuron is None and out.id in layer.path)
    if not any(layer.is_output for layer in layers):
        layers[-1].is_output = True
    return layers
