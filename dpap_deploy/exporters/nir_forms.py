"""The NIR writer's multi-node forms (docs/nir-compat.md, "Reset by subtraction, readouts, max
pooling"):

- a neuron's LI group (``graph/neurons/li_forms``: reset by subtraction, no reset, Lapicque's
  gain factors), wired as ``feeders -> [P_gain -> P_gain2 -> ...] [P_syn ->] P``; ``P -> P_spike``;
  ``[P_spike -> P_rec -> P (RSynaptic: P_syn)]``; ``P_spike -> P_reset -> P``. The two edges
  into ``P`` from ``P_rec`` and ``P_reset`` close cycles (previous step) and are listed in that
  order, the order in which snnTorch adds them: ``((beta U + I) + V S[t-1]) - thr S[t-1]``.
  A recurrent weight with a bias is an ``Affine`` on the cycle (it delivers its bias before
  the first spike too, as snnTorch's ``recurrent(0)`` does), not moved into the feeding
  synapse, which would add it in another order. Every node carries
  ``metadata = {"dpap_group": P, "dpap_role": role}``.
- max pooling over binary spikes: ``Q = SumPool2d`` then ``Q_any = IF(v_threshold = 0.5,
  v_reset = 0)`` with unit gain (``r = 1/dt``; under ``"unit-r"``: ``r = 1``, threshold
  ``dt / 2``): the window's spike count ``c >= 0`` is an integer, the IF's membrane is 0 before
  every step (it resets whenever it is non-zero), so it spikes iff ``c >= 1``: the max, at the
  same step.
"""
from __future__ import annotations

import nir
import numpy as np

from ..errors import UnsupportedModelError


def tag(node: nir.NIRNode, group: str, role: str) -> nir.NIRNode:
    node.metadata = {**(node.metadata or {}), "dpap_group": group, "dpap_role": role}
    return node


def add_group(nodes: dict, edges: list, name: str, group: dict, rec: nir.NIRNode | None,
              feeders: list[str]) -> tuple[str, str, str]:
    """Add the group's nodes under ``name`` (the membrane) and ``name_<role>``; returns
    ``(input node, membrane node, spike node)``."""
    names = {r: name if r == "mem" else f"{name}_{r}" for r in group}
    for role, node in group.items():
        nodes[names[role]] = tag(node, name, role.rstrip("0123456789"))
    chain = [names[r] for r in group if r.startswith("gain")] + [names.get("syn", name)]
    first = chain[0]
    edges.extend((f, first) for f in feeders)
    edges.extend(zip(chain[:-1], chain[1:]))        # gain -> gain2 -> ... -> syn / mem
    if "syn" in names:
        edges.append((names["syn"], name))
    edges.append((name, names["spike"]))
    if rec is not None:
        nodes[f"{name}_rec"] = tag(rec, name, "rec")
        edges.extend([(names["spike"], f"{name}_rec"), (f"{name}_rec", names.get("syn", name))])
    if "reset" in names:
        edges.extend([(names["spike"], names["reset"]), (names["reset"], name)])
    return first, name, names["spike"]


def max_pool(n, encoding: str, dt: float, fed_by_spikes: bool) -> tuple[nir.NIRNode, nir.NIRNode]:
    """``(SumPool2d, IF)`` of a max pooling over spikes (module docstring), or refuse."""
    a = n.attrs
    if not fed_by_spikes:
        raise UnsupportedModelError(
            f"'{n.name}' is a max pooling over currents (its input is not a neuron's spikes): "
            "NIR has no max pool and max over graded values has no exact form; pool after the "
            "neuron (spikes), use average pooling, or convert with make_deployable")
    dil = tuple(np.atleast_1d(a.get("dilation", 1)).tolist())
    if a.get("dims") != 2 or a.get("ceil_mode") or any(d != 1 for d in dil):
        raise UnsupportedModelError(
            f"max pooling '{n.name}' ({a.get('dims')}-d, ceil_mode={a.get('ceil_mode')}, "
            f"dilation={tuple(dil)}) has no NIR form; NIR's SumPool2d is 2-d, floor mode, no "
            "dilation: use a 2-d max pool with dilation=1 and ceil_mode=False to export")
    shape = tuple(n.out_shape)
    unit = encoding == "unit-r"
    pool = nir.SumPool2d(kernel_size=np.array(a["kernel"]), stride=np.array(a["stride"]),
                         padding=np.array(a["padding"]))
    fire = nir.IF(r=np.full(shape, 1.0 if unit else 1.0 / dt, np.float32),
                  v_threshold=np.full(shape, dt / 2 if unit else 0.5, np.float32),
                  v_reset=np.zeros(shape, np.float32))
    return tag(pool, n.name, "maxpool"), tag(fire, n.name, "maxpool")
