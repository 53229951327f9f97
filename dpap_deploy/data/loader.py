"""Training batches in the (seed, epoch) order, for one process or one rank of many.

The order of an epoch is ``randperm(n)`` from a generator seeded by (seed, epoch) only, so a
resumed run needs no loader state, and every rank computes the same order. Global batch ``k``
is ``order[kB:(k+1)B]``; rank ``r`` of ``world`` takes its ``r``-th contiguous slice
(:func:`..distributed.shard`), so the union of one step's slices is the one-process batch.

CIFAR-style augmentation (random crop of a 4-pixel zero-padded image, horizontal flip with
probability 1/2) draws its offsets per sample index from a second (seed, epoch) generator:
the same sample gets the same crop whatever the number of ranks or loader workers.

Two paths give the same batches: in-memory indexing (``workers=0``, the fast path for small
sets) and a ``torch.utils.data.DataLoader`` with worker processes fed by
:class:`EpochBatchSampler` (``workers>0``). ``x`` is a tensor, or for large event sets
:class:`.event_frames.LazyFrames`, indexed the same way, which bins a sample when it is asked
for: in the workers with ``workers>0``.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ..distributed import Dist, shard

PAD = 4


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Shuffling that depends only on (seed, epoch): resuming needs no loader state."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def augment_params(n: int, seed: int, epoch: int, pad: int = PAD) -> torch.Tensor:
    """``[n, 3]`` int64: crop offsets ``dy, dx`` in ``[0, 2 pad]`` and a flip bit per sample."""
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch) ^ 0x5EED_A06D)
    return torch.cat([torch.randint(0, 2 * pad + 1, (n, 2), generator=gen),
                      torch.randint(0, 2, (n, 1), generator=gen)], 1)


def crop_flip(x: torch.Tensor, dy: int, dx: int, flip: int, pad: int = PAD) -> torch.Tensor:
    """One image ``[C, H, W]``: ``pad(x, pad)[:, dy:dy+H, dx:dx+W]``, mirrored when ``flip``."""
    H, W = x.shape[-2:]
    out = F.pad(x, (pad, pad, pad, pad))[..., dy:dy + H, dx:dx + W]
    return out.flip(-1) if flip else out


def batch_sizes(n: int, batch: int) -> list[int]:
    """Sizes of the global batches of an epoch (the last one may be short)."""
    return [min(batch, n - i) for i in range(0, n, batch)]


class EpochBatchSampler(torch.utils.data.Sampler):
    """This rank's slice of every global batch of an epoch (call :meth:`set_epoch` first).
    With augmentation, items are ``(index, dy, dx, flip)``; else plain indices."""

    def __init__(self, n: int, batch: int, seed: int, d: Dist = Dist(),
                 augment: bool = False) -> None:
        self.n, self.batch, self.seed, self.d, self.augment = n, batch, seed, d, augment
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(batch_sizes(self.n, self.batch))

    def __iter__(self) -> Iterator[list]:
        order = epoch_order(self.n, self.seed, self.epoch)
        params = augment_params(self.n, self.seed, self.epoch) if self.augment else None
        for i in range(0, self.n, self.batch):
            idx = shard(order[i:i + self.batch], self.d).tolist()
            yield idx if params is None else [(j, *params[j].tolist()) for j in idx]


class TensorSamples(torch.utils.data.Dataset):
    """Samples of in-memory tensors; an item key ``(index, dy, dx, flip)`` is augmented."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            i, dy, dx, flip = key
            return crop_flip(self.x[i], dy, dx, flip), self.y[i]
        return self.x[key], self.y[key]


def make_loader(x: torch.Tensor, y: torch.Tensor, sampler: EpochBatchSampler, workers: int,
                pin: bool) -> torch.utils.data.DataLoader:
    """Worker processes fetch (and augment) this rank's batches; the loader's own generator
    is fixed so that iterating it leaves the global RNG (checkpointed) untouched."""
    return torch.utils.data.DataLoader(
        TensorSamples(x, y), batch_sampler=sampler, num_workers=workers, pin_memory=pin,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(sampler.seed))


def epoch_batches(x: torch.Tensor, y: torch.Tensor, sampler: EpochBatchSampler,
                  loader: torch.utils.data.DataLoader | None) -> Iterator[tuple]:
    """``(x, y)`` of this rank for every step of the sampler's epoch."""
    if loader is not None:
        yield from loader
        return
    for keys in sampler:
        if sampler.augment:
            idx = [k[0] for k in keys]
            xb = torch.stack([crop_flip(x[k[0]], *k[1:]) for k in keys])
            yield xb, y[idx]
        else:
            idx = torch.tensor(keys, dtype=torch.long)
            yield x[idx], y[idx]
