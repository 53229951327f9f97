"""Entry points of the processes the data-parallel tests start (``torch.multiprocessing``):
each sets the environment torchrun would set and calls the ordinary training API."""
from __future__ import annotations

import os
import signal

import torch


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)


def _kill_after(epoch: int):
    def log(msg: str) -> None:   # rank 0 logs after the epoch's checkpoint is written
        if msg.startswith(f"epoch {epoch:3d}/"):
            os.kill(os.getpid(), signal.SIGKILL)
    return log


def train_rank(rank: int, world: int, port: int, out: str, cfg: dict, resume: bool,
               kill_after: int | None, grads_of_first_batch: str | None) -> None:
    """Train (or resume) ``out`` as rank ``rank``; each rank saves its final masks and weights
    to ``out/rank{rank}.pt``; optionally first the DDP gradients of the first global batch."""
    _env(rank, world, port)
    from dpap_deploy import distributed
    from dpap_deploy.data import load_dataset
    from dpap_deploy.training import TrainConfig, build_run, loss_fn, pruner_masks, train

    config = TrainConfig.from_dict(cfg)
    data = load_dataset(config.dataset, config.data_root, config.time_steps)
    if grads_of_first_batch:
        distributed.setup(config.device)
        run = build_run(config, data)
        run.sampler.set_epoch(0)
        idx = next(iter(run.sampler))
        out_ = run.forward(data.x_train[idx])
        scale = distributed.loss_scale(len(idx), config.batch_size, run.dist)
        (loss_fn(out_, data.y_train[idx], run.kind) * scale).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in run.model.named_parameters()}, grads_of_first_batch)
    log = _kill_after(kill_after) if kill_after else None
    run = train(config, out, resume=resume, progress=False, log=log, data=data)
    torch.save({"masks": pruner_masks(run), "model": run.model.state_dict(),
                "history": run.history,
                "baseline": run.baseline.state_dict() if run.baseline is not None else None},
               os.path.join(out, f"rank{rank}.pt"))
    distributed.shutdown()


def check_rank(rank: int, world: int, port: int, digest: int, queue) -> None:
    """Join a gloo group and compare ``digest`` across ranks; report the error text (or '')."""
    _env(rank, world, port)
    from dpap_deploy import distributed
    from dpap_deploy.errors import DPAPError
    d = distributed.setup("cpu")
    try:
        d.check_same(digest, "the pruning masks after epoch 3")
        queue.put((rank, ""))
    except DPAPError as exc:
        queue.put((rank, str(exc)))
    distributed.shutdown()
