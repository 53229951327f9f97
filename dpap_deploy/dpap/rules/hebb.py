"""``hebb``: plain Hebbian co-activity (the paper's Fig. 4H ablation)."""
from __future__ import annotations

from .. import plasticity
from .base import PlasticityRule, register


@register
class Hebb(PlasticityRule):
    """``H[i, j] = sum_n S_pre[n, j] * S_post[n, i]``."""
    name = "hebb"

    def measure(self, rec, theta):
        return plasticity.hebb(rec.s_pre, rec.s_post)
