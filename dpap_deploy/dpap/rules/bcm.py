"""``bcm`` (the paper's default): trace-based BCM, Eq 7."""
from __future__ import annotations

from .. import plasticity
from .base import PlasticityRule, register


@register
class BCM(PlasticityRule):
    """``BCM_b[i, j] = sum_n S_pre[n, j] * S_post[n, i] * (S_post[n, i] - theta_i)``."""
    name = "bcm"

    def measure(self, rec, theta):
        return plasticity.bcm(rec.s_pre, rec.s_post, theta.to(rec.s_post.dtype))
