"""The structure of a NIR graph as both executors of it (torch and Lava) need it.

NIR's semantics, which this module fixes once: a node with several incoming edges receives the
*sum* of its inputs; within one time step the graph is evaluated in topological order with no
delay; an edge that closes a cycle (a recurrent weight) delivers its source's output of the
*previous* step. Before the first step no neuron has spiked: a recurrent ``Linear`` delivers
zeros, a recurrent ``Affine`` its bias (as snnTorch's ``RLeaky`` computes ``recurrent(0)``, and
as Lava, where the bias sits in the neuron, does). Which edges close cycles is decided by a depth-first
search from the ``Input`` node, following edges in the order the graph lists them: an edge to a
node still on the search stack is recurrent. Nested graphs (snnTorch writes ``RLeaky`` as a
subgraph) are inlined first: ``sub.input`` / ``sub.output`` become pass-through nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import nir

from ..errors import UnsupportedModelError

DT = 1e-4   # snnTorch's step (its NIR importer assumes it); used when a graph stores none


@dataclass
class Topology:
    nodes: dict[str, nir.NIRNode]
    order: list[str]                 # topological order of the feed-forward edges
    inputs: dict[str, list[str]]     # feed-forward predecessors, in edge order
    back: dict[str, list[str]]       # recurrent predecessors: their previous step's output
    source: str                      # the Input node
    sink: str                        # the Output node
    dt: float

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.inputs[n] or name in self.back[n]]


def graph_dt(graph: nir.NIRGraph) -> float:
    meta = graph.metadata if isinstance(graph.metadata, dict) else {}
    return float(meta.get("dt", DT))


def flatten(graph: nir.NIRGraph, prefix: str = "") -> tuple[dict[str, nir.NIRNode], list]:
    """Nodes and edges with every nested ``NIRGraph`` inlined (names ``sub.node``)."""
    nodes: dict[str, nir.NIRNode] = {}
    ends: dict[str, tuple[list[str], list[str]]] = {}   # subgraph -> (its inputs, its outputs)
    edges = []
    for name, node in graph.nodes.items():
        if isinstance(node, nir.NIRGraph):
            inner, inner_edges = flatten(node, f"{prefix}{name}.")
            nodes.update(inner)
            edges += inner_edges
            ends[name] = ([f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Input)],
                          [f"{prefix}{name}.{k}" for k, v in node.nodes.items() if isinstance(v, nir.Output)])
        else:
            nodes[prefix + name] = node
    for src, dst in graph.edges:
        srcs = ends[src][1] if src in ends else [prefix + src]
        dsts = ends[dst][0] if dst in ends else [prefix + dst]
        edges += [(s, d) for s in srcs for d in dsts]
    for s, d in edges:
        for end in (s, d):
            if end not in nodes:
                raise UnsupportedModelError(f"NIR edge ({s!r}, {d!r}) names node {end!r}, which "
                                            "the graph does not have; fix the file's edges")
    return nodes, edges


def topology(graph: nir.NIRGraph, dt: float | None = None) -> Topology:
    """The graph's structure; ``dt``: the step its neurons are discretised with (None: the
    metadata's, else ``DT``)."""
    nodes, edges = flatten(graph)
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    has_in = set()
    for s, d in edges:
        succ[s].append(d)
        has_in.add(d)
    sources = [n for n, v in nodes.items() if isinstance(v, nir.Input) and n not in has_in]
    sinks = [n for n, v in nodes.items() if isinstance(v, nir.Output) and not succ[n]]
    if len(sources) != 1 or len(sinks) != 1:
        raise UnsupportedModelError(f"the NIR graph has {len(sources)} Input and {len(sinks)} "
                                    "Output nodes; this runner takes exactly one of each")
    source, sink = sources[0], sinks[0]
    back_edges, seen, on_stack = set(), {source}, {source}
    stack = [(source, iter(succ[source]))]
    while stack:                                        # depth-first, edges in file order
        name, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            on_stack.discard(name)
            stack.pop()
        elif nxt in on_stack:
            back_edges.add((name, nxt))
        elif nxt not in seen:
            seen.add(nxt)
            on_stack.add(nxt)
            stack.append((nxt, iter(succ[nxt])))
    unreached = [n for n in nodes if n not in seen]
    if unreached:
        raise UnsupportedModelError(f"NIR nodes {unreached} are not reachable from the Input "
                                    f"node {source!r}; remove them or connect them")
    inputs = {n: [] for n in nodes}
    back = {n: [] for n in nodes}
    for s, d in edges:
        (back if (s, d) in back_edges else inputs)[d].append(s)
    order, done = [], set()
    pending = [n for n in nodes if not inputs[n]]
    while pending:                                      # Kahn's algorithm on feed-forward edges
        n = pending.pop(0)
        order.append(n)
        done.add(n)
        pending += [m for m in succ[n] if m not in done and m not in pending
                    and (n, m) not in back_edges and all(p in done for p in inputs[m])]
    return Topology(nodes, order, inputs, back, source, sink,
                    graph_dt(graph) if dt is None else float(dt))
