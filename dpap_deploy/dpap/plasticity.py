"""Synaptic plasticity measures over a batch (paper Eq 7, 8; Fig. 4H ablations).

Inputs are end-of-window traces ``S_pre [N, C_in]`` and ``S_post [N, C_out]`` of one batch of
``N`` samples; outputs are ``[C_out, C_in]`` matrices, one value per synapse (per kernel, i.e.
channel pair, for conv layers). All sums over samples are one matrix product.
"""
from __future__ import annotations

import torch


def bcm(s_pre: torch.Tensor, s_post: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Trace-based BCM of one batch (Eq 7):
    ``BCM_b[i, j] = sum_n S_pre[n, j] * S_post[n, i] * (S_post[n, i] - theta_i)``."""
    return (s_post * (s_post - theta)).T @ s_pre


def hebb(s_pre: torch.Tensor, s_post: torch.Tensor) -> torch.Tensor:
    """Plain Hebbian co-activity: ``H[i, j] = sum_n S_pre[n, j] * S_post[n, i]``."""
    return s_post.T @ s_pre


def stdp_step(o_pre: torch.Tensor, o_post: torch.Tensor, s_pre: torch.Tensor,
              s_post_before: torch.Tensor | None) -> torch.Tensor:
    """One time step of a trace-based STDP term:
    ``sum_n o_post[n, i] * S_pre[n, j] - S_post_before[n, i] * o_pre[n, j]``.

    ``S_pre`` already includes this step's pre spikes (pre-before-or-with-post potentiates);
    ``S_post_before`` is the post trace *before* this step (post-before-pre depresses), so a
    simultaneous pair is counted once, as potentiation. Summed over the steps of a batch.
    """
    ltp = o_post.T @ s_pre
    if s_post_before is None:
        return ltp
    return ltp - s_post_before.T @ o_pre


def update_threshold(theta: torch.Tensor, s_post: torch.Tensor, num: int) -> torch.Tensor:
    """BCM sliding threshold (Eq 8): running mean of the post trace over every batch seen,
    ``theta = (theta * (Num - 1) + mean_n S_post) / Num``, ``Num`` = batches seen so far
    (this one included)."""
    if num < 1:
        raise ValueError(f"Num counts batches seen so far and starts at 1, got {num}")
    return (theta * (num - 1) + s_post.mean(0)) / num
