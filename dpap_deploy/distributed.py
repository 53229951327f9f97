"""Data parallelism with ``torch.distributed``: one process per device, started by ``torchrun``.

``torchrun --nproc-per-node N -m dpap_deploy train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` joins the process group
(NCCL for CUDA, gloo on CPU). Without those variables everything here is a no-op for one
process, so the training loop calls the same functions either way.

What is shared between ranks and why (docs/scale.md):

- the global batch ``B`` (``--batch-size``) is cut into ``world`` contiguous slices of the
  same shuffled (seed, epoch) order (:func:`shard`), so the union of one step's slices is the
  batch one process would take;
- gradients: ``DistributedDataParallel`` averages them; each rank's loss is scaled by
  ``world * b_r / B`` so the average is ``sum_r (b_r / B) grad_r``, the global-batch gradient
  even when the last batch splits unevenly;
- DPAP's per-batch statistics are sums over samples, summed over ranks (:meth:`Dist.all_reduce_sum_`);
- masks: a hash per rank (``masks.digest``), compared every epoch (:meth:`Dist.check_same`);
- measurements of the structured baselines (firing rates, SynOps) on a fixed sample set: each
  rank measures its slice, sums are added over ranks (:func:`sum_over_ranks`).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import ConfigError, DPAPError


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (``world == 1``: not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum_(self, t: torch.Tensor) -> torch.Tensor:
        """In place: ``t <- sum over ranks of t``."""
        if self.active:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def check_same(self, digest: int, what: str) -> None:
        """Stop the run (one line) unless every rank holds the same ``digest``."""
        if not self.active:
            return
        dev = collective_device()
        mine = torch.tensor([digest], dtype=torch.int64, device=dev)
        every = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(every, mine)
        values = [int(v) for v in every]
        if len(set(values)) > 1:
            differ = [r for r, v in enumerate(values) if v != values[0]]
            raise DPAPError(f"ranks disagree on {what}: ranks {differ} differ from rank 0 "
                            f"(hashes {[f'{v & 0xffffffff:08x}' for v in values]}); stopping, "
                            "the run's last checkpoint is consistent")


_CURRENT = Dist()


def current() -> Dist:
    return _CURRENT


def env_world() -> int:
    """``WORLD_SIZE`` set by torchrun (1 without it)."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"invalid WORLD_SIZE {raw!r} in the environment: an integer "
                          "(torchrun sets it)") from None


def setup(device: str) -> Dist:
    """Join the process group torchrun describes (idempotent); ``device`` is the run's
    ``--device``: ``cuda`` (or ``auto`` with CUDA present) uses NCCL on ``cuda:LOCAL_RANK``,
    anything else gloo."""
    global _CURRENT
    world = env_world()
    if world <= 1:
        _CURRENT = Dist()
        return _CURRENT
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} under torchrun but CUDA is not available; "
                              "use --device cpu (gloo)")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    _CURRENT = Dist(rank, world, local)
    return _CURRENT


def shutdown() -> None:
    global _CURRENT
    if dist.is_initialized():
        dist.destroy_process_group()
    _CURRENT = Dist()


def device_for(name: str, d: Dist) -> str:
    """Each rank of a CUDA job takes the GPU of its local rank."""
    if d.active and (name == "cuda" or (name == "auto" and torch.cuda.is_available())):
        return f"cuda:{d.local_rank}"
    return name


def collective_device() -> torch.device:
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_batch(n: int, batch: int, world: int) -> None:
    """Every rank needs at least one sample of every global batch (the last one included)."""
    if world <= 1:
        return
    last = n % batch or batch
    if batch < world or last < world:
        raise ConfigError(f"--batch-size {batch} over {n} samples leaves a batch of "
                          f"{min(batch, last)} for {world} processes: every process needs at "
                          f"least one sample; choose a batch size with n mod batch = 0 or >= {world}")


def shard(batch_idx, d: Dist):
    """This rank's contiguous slice of a global batch (a tensor or list of indices)."""
    if not d.active:
        return batch_idx
    sizes = [len(p) for p in torch.tensor_split(torch.arange(len(batch_idx)), d.world)]
    start = sum(sizes[:d.rank])
    return batch_idx[start:start + sizes[d.rank]]


def sum_over_ranks(values: list[torch.Tensor], d: Dist) -> list[torch.Tensor]:
    """Each tensor summed over the ranks (one float64 all-reduce for all of them): for
    measurements of which every rank took a slice (:func:`shard`) of the same samples. Every
    rank receives the same sums, so decisions taken from them agree across ranks."""
    if not d.active:
        return values
    flat = torch.cat([v.detach().double().flatten().cpu() for v in values])
    flat = d.all_reduce_sum_(flat.to(collective_device())).cpu()
    out, i = [], 0
    for v in values:
        out.append(flat[i:i + v.numel()].view(v.shape).to(v.dtype))
        i += v.numel()
    return out


def loss_scale(local: int, global_: int, d: Dist) -> float:
    """``world * b_r / B``: DDP averages gradients over ranks, so scaling each rank's mean loss
    by this makes the average ``sum_r (b_r / B) grad_r``, the global-batch gradient (exactly
    1.0 for equal slices)."""
    return d.world * local / global_ if d.active else 1.0


def wrap(module: torch.nn.Module, device: torch.device, d: Dist) -> torch.nn.Module:
    """``DistributedDataParallel`` around ``module`` (whose forward runs the whole window), or
    ``module`` itself for one process."""
    if not d.active:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP
    ids = [device.index] if device.type == "cuda" else None
    # Buffers are broadcast once, not at every forward: snnTorch neurons keep their membrane
    # state in buffers shaped like the last batch (rank 0's evaluation batch differs from the
    # others' slices), and a BatchNorm's running statistics serve only rank 0's evaluation.
    return DDP(module, device_ids=ids, output_device=ids[0] if ids else None,
               forward_sync_buffers=False)
