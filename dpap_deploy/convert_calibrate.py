"""The threshold of a neuron whose max pooling became an average pooling, for
``make_deployable`` (``convert.py``).

Average pooling gives a smaller current than max pooling over the same window
(``avg <= max <= kh kw avg`` for non-negative values), so right after the swap the neuron
behind it fires less, often not at all. Its membrane is linear in its input current (``U[t] =
beta U[t-1] + I[t] - reset``), so scaling the current by ``g`` is the same as dividing the
threshold by ``g``; ``make_deployable`` divides it by

    g = mean(relu(I_max)) / mean(relu(I_avg)),  clamped to [1, kh kw],

the ratio of the positive input current the neuron receives in the original model and in the
converted one, measured on training inputs (cut along their batch axis, ``graph.time_axis``) over the whole
window (neurons in graph order, each
measured after the ones before it were scaled). Only the threshold changes; the weights are
untouched, so the DPAP masks hold as they were.
"""
from __future__ import annotations

import torch
from torch import nn

from .graph import ModelGraph
from .executor.run import outputs
from .graph.time_axis import batch_len


def _max_over_currents(graph: ModelGraph, path: list[int]) -> int:
    """``kh kw`` of a max pooling over currents on a layer's path (0: none)."""
    for i in path:
        n = graph.nodes[i]
        if n.op == "pool" and n.attrs.get("pool") == "max" and not graph.fed_by_spikes(i):
            area = 1
            for k in n.attrs["kernel"]:
                area *= int(k)
            return area
    return 0


@torch.no_grad()
def mean_positive_input(graph: ModelGraph, neuron: nn.Module, x: torch.Tensor,
                        time_steps: int) -> float:
    """``mean(relu(I))`` of the current ``neuron`` receives over the window of ``x``."""
    acc = [0.0, 0]

    def hook(_m, args):
        cur = args[0]
        acc[0] += float(cur.clamp(min=0).sum())
        acc[1] += cur.numel()
    h = neuron.register_forward_pre_hook(hook)
    try:
        outputs(graph, x, time_steps, multistep=False)
    finally:
        h.remove()
    return acc[0] / acc[1] if acc[1] else 0.0


def calibrate(graph0: ModelGraph, graph: ModelGraph, prefix: str, x: torch.Tensor,
              time_steps: int) -> dict[str, str]:
    """Divide, in ``graph.model``, the threshold of every neuron behind a replaced max pooling
    over currents by ``g`` (module docstring); returns ``{neuron: change line}``."""
    old = dict(graph0.model.named_modules())
    new = dict(graph.model.named_modules())
    lines = {}
    for layer in graph0.layers:
        area = _max_over_currents(graph0, layer.path)
        target = new.get(prefix + (layer.neuron_name or ""))
        if not area or target is None or not hasattr(target, "threshold"):
            continue
        a = mean_positive_input(graph0, old[layer.neuron_name], x, time_steps)
        b = mean_positive_input(graph, target, x, time_steps)
        if a <= 0 or b <= 0:
            continue
        g = min(max(a / b, 1.0), float(area))
        thr = target.threshold.detach() / g            # a new tensor: never a shared one
        target.threshold = nn.Parameter(thr) if isinstance(target.threshold, nn.Parameter) \
            else thr
        lines[layer.neuron_name] = (
            f"'{layer.neuron_name}' threshold / {g:.4g} (its positive input current under max "
            f"pooling over that under average pooling, on {batch_len(x, graph.time_axis)} training inputs)")
    return lines
