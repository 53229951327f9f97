"""``stdp``: trace-based STDP summed over the steps of a batch (the paper's Fig. 4H ablation)."""
from __future__ import annotations

from .. import plasticity
from .base import PlasticityRule, register


@register
class STDP(PlasticityRule):
    """Per step ``sum_n o_post[n, i] * S_pre[n, j] - S_post_before[n, i] * o_pre[n, j]``
    (:func:`..plasticity.stdp_step`), accumulated over the batch's steps."""
    name = "stdp"
    needs_time = True

    def on_step(self, rec, o_post):
        before = None if rec.s_post is None else rec.s_post.clone()
        term = plasticity.stdp_step(rec.o_pre, o_post, rec.s_pre, before)
        rec.acc = term if rec.acc is None else rec.acc.add_(term)

    def measure(self, rec, theta):
        return rec.acc
