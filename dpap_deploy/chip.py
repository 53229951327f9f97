"""Loihi 2 resources of a network: neuro-cores and synaptic memory, an **estimate** from public
per-core limits (never a measurement on hardware, nor what Intel's compiler allocates).

    est = estimate(graph)                          # ChipEstimate: per layer and in total
    resources(dense_graph, compact_graph)          # both, and the saving from compaction

**Limits** (:class:`Loihi2Limits`; public figures, cited in docs/deploy.md, *Chip resources*):

- 128 neuro-cores per chip, up to 1 million neurons and 120 million synapses per chip:
  Intel Labs, *Taking Neuromorphic Computing to the Next Level with Loihi 2*, technology brief
  (2021), https://www.intel.com/content/www/us/en/research/neuromorphic-computing-loihi-2-technology-brief.html,
  restated at https://open-neuromorphic.org/neuromorphic-computing/hardware/loihi-2-intel/;
- neurons per core: 2^20 neurons over 128 cores, 8,192 (the brief's neuron state allocation
  of up to 8,192 per core);
- memory per core: 192 KB, allocated flexibly between synapses, neuron state and routing (the
  brief's table); all of it is taken for synapses here, so the estimate is a lower bound;
- 8-bit synaptic weights (the weight mantissa netx writes: ``exporters/netx_export.py``).

**Mapping rule.** Each synaptic layer (a ``Conv`` / ``Linear`` with its neurons, as Lava and
netx make one process of it) gets cores of its own, never shared with another layer, as many
as its neurons or its weights need, whichever is more:
``cores = max(ceil(neurons / neurons_per_core), ceil(weight_bytes / memory_per_core))``.
``neurons`` counts every output unit (a conv layer's ``C x H x W``, after the pooling that
folds into it); ``weight_bytes`` the weights the layer stores, 8 bits each, zeros included
(dense encoding: Lava's ``Dense`` and ``Conv`` hold whole matrices and kernels). A conv layer
stores its kernel ``C_out x C_in/groups x k_h x k_w`` once, shared over positions, as Lava's
``Conv`` process holds it (Loihi 2 supports convolutional weight sharing); ``synapses``
(the unrolled convolution, every connection of every position) is given beside it, the memory
it would need without sharing. Max pooling over spikes is a layer of its own (netx maps it to a
depthwise conv with unit weights, ``exporters/netx_plan.py``); average pooling folds into the
weights and adds nothing. The input is sent to the chip as spikes and takes no neuro-core.
Chips: ``ceil(cores / cores_per_chip)``.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from .errors import ConfigError
from .graph.model_graph import POOL


@dataclass(frozen=True)
class Loihi2Limits:
    """Public per-core and per-chip limits of Loihi 2 (module docstring for the sources)."""
    neurons_per_core: int = 8192
    memory_bytes_per_core: int = 192 * 1024
    cores_per_chip: int = 128
    weight_bits: int = 8

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ConfigError(f"Loihi2Limits.{f.name} is {v!r}; it must be a positive "
                                  "integer (the default is Loihi 2's public figure)")


LOIHI2 = Loihi2Limits()


@dataclass
class LayerCores:
    """One layer's share of the chip: ``bound`` names the limit that sets its cores."""
    name: str
    kind: str                     # "conv", "linear", "maxpool"
    neurons: int
    weights: int                  # stored weights (a conv kernel once)
    synapses: int                 # every connection (the unrolled convolution)
    memory_bytes: int
    cores: int
    bound: str                    # "neurons" or "memory"


@dataclass
class ChipEstimate:
    layers: list[LayerCores]
    neurons: int
    memory_bytes: int
    cores: int
    chips: int

    def to_dict(self) -> dict:
        return asdict(self)


def _cores(name, kind, neurons, weights, synapses, limits: Loihi2Limits) -> LayerCores:
    mem = math.ceil(weights * limits.weight_bits / 8)
    by_n = math.ceil(neurons / limits.neurons_per_core)
    by_m = math.ceil(mem / limits.memory_bytes_per_core)
    return LayerCores(name, kind, neurons, weights, synapses, mem, max(by_n, by_m, 1),
                      "memory" if by_m > by_n else "neurons")


def estimate(graph, limits: Loihi2Limits = LOIHI2) -> ChipEstimate:
    """The cores and memory of ``graph`` (a :class:`~dpap_deploy.graph.ModelGraph`) under the
    module's mapping rule, layer by layer in the graph's order."""
    rows = []                      # (node id, row): rows in the graph's order
    for layer in graph.layers:
        w = layer.synapse.weight
        at = layer.neuron_node if layer.neuron_node >= 0 else layer.node
        neurons = int(np.prod(graph.nodes[at].out_shape))
        positions = int(np.prod(graph.nodes[layer.node].out_shape))  # synapse outputs
        fan_in = int(w[0].numel())
        rows.append((layer.node, _cores(layer.name, layer.kind, neurons, int(w.numel()),
                                        positions * fan_in, limits)))
    for n in graph.nodes:          # max pooling over spikes: a depthwise unit-weight layer
        if n.op == POOL and n.attrs.get("pool") == "max" and graph.fed_by_spikes(n.id):
            window = int(np.prod(n.attrs["kernel"]))
            neurons = int(np.prod(n.out_shape))
            rows.append((n.id, _cores(n.name, "maxpool", neurons, n.in_shape[0] * window,
                                      neurons * window, limits)))
    rows = [r for _, r in sorted(rows, key=lambda t: t[0])]
    cores = sum(r.cores for r in rows)
    return ChipEstimate(rows, sum(r.neurons for r in rows), sum(r.memory_bytes for r in rows),
                        cores, math.ceil(cores / limits.cores_per_chip))


def resources(dense, compact, limits: Loihi2Limits = LOIHI2) -> dict:
    """The estimate of the ``dense`` (trained, every unit) and ``compact`` graphs, and what
    compaction saves: ``{"dense", "compacted", "saving": {cores, memory_bytes, neurons}, "limits",
    "note"}``."""
    d, c = estimate(dense, limits), estimate(compact, limits)
    return {"dense": d.to_dict(), "compacted": c.to_dict(),
            "saving": {k: getattr(d, k) - getattr(c, k) for k in ("cores", "memory_bytes",
                                                                  "neurons")},
            "limits": asdict(limits),
            "note": "estimate from Loihi 2's public per-core limits (docs/deploy.md, Chip "
                    "resources), not a measurement on hardware"}
