"""Data-parallel training on CPU with gloo: two processes equal one process with the same
global batch (masks exactly, weights within float rounding), both ranks hold the same masks,
and a killed two-process run resumed equals an uninterrupted one, bit for bit."""
from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from dpap_deploy import distributed
from dpap_deploy.checkpoint import load_checkpoint
from dpap_deploy.data import load_dataset
from dpap_deploy.data.loader import EpochBatchSampler, epoch_batches
from dpap_deploy.errors import ConfigError
from dpap_deploy.training import TrainConfig, build_run, loss_fn, pruner_masks, train

sys.path.insert(0, str(Path(__file__).parent))   # spawned children import ddp_worker by name
import ddp_worker  # noqa: E402

AGGRESSIVE = {"conv": {"epsilon": 1.5, "eta": 3.0, "beta": 2.5, "C": 5.0, "warmup": 0},
              "linear": {"epsilon": 1.5, "eta": 3.0, "beta": 1.0, "C": 2.0, "warmup": 0}}
# 1400 training samples, global batch 100: 14 steps of 50 samples per rank.
CFG = dict(epochs=4, batch_size=100, dpap_config=AGGRESSIVE, seed=5, device="cpu")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two(out: Path, cfg: dict, resume=False, kill_after=None, grads=None) -> list[int]:
    ctx = mp.get_context("spawn")
    port = _port()
    procs = [ctx.Process(target=ddp_worker.train_rank,
                         args=(r, 2, port, str(out), cfg, resume, kill_after, grads))
             for r in range(2)]
    for p in procs:
        p.start()
    procs[0].join(120)
    if kill_after:                      # rank 0 killed itself; its peer is stuck or failing
        procs[1].kill()
    procs[1].join(120)
    return [p.exitcode for p in procs]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "full"
    grads = out.parent / "grads.pt"
    assert _run_two(out, CFG, grads=str(grads)) == [0, 0]
    return out, [torch.load(out / f"rank{r}.pt") for r in range(2)], torch.load(grads)


def _close_after_adam(a: dict, b: dict, lr: float = 5e-3) -> None:
    """Weights of runs that differ only in float rounding. Adam divides by sqrt(v): a weight
    whose gradient is rounding noise can move by up to the learning rate per step either way,
    so most weights are equal and none moves apart by more than two steps."""
    diffs = torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a
                       if a[k].is_floating_point()])
    assert float(diffs.median()) < 1e-5 and float(diffs.max()) <= 2 * lr, float(diffs.max())


def test_two_processes_equal_one_process_with_the_same_global_batch(two, digits, tmp_path):
    out, ranks, grads = two
    one = train(TrainConfig(**CFG), tmp_path, progress=False, data=digits)
    # both ranks hold the same masks, bit for bit, and DPAP did prune
    for a, b in zip(ranks[0]["masks"], ranks[1]["masks"]):
        assert torch.equal(a, b)
    assert any(not m.all() for m in ranks[0]["masks"])
    # ... equal to one process's masks
    for a, b in zip(ranks[0]["masks"], pruner_masks(one)):
        assert torch.equal(a, b)
    # weights: the ranks are identical; one process differs only by summation order
    for k, w in one.model.state_dict().items():
        assert torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]), k
    _close_after_adam(ranks[0]["model"], one.model.state_dict())
    h2, h1 = ranks[0]["history"], one.history
    assert [r["params_kept"] for r in h2] == [r["params_kept"] for r in h1]
    # a spike flipped by rounding can change a few of the 1,400 training predictions: measured
    # up to 6 after 4 epochs on an Intel Xeon (BLAS summation orders differ between CPUs; the
    # masks and parameter counts above are equal bit for bit all the same)
    assert [r["train_acc"] for r in h2] == pytest.approx([r["train_acc"] for r in h1],
                                                         abs=10 / 1400)
    # only rank 0 wrote the run directory
    assert load_checkpoint(out)["world_size"] == 2
    assert (out / "history.csv").read_text().count("\n") == 5


def test_ddp_gradients_equal_the_global_batch_gradient(two, digits):
    _, _, grads = two
    run = build_run(TrainConfig(**CFG), digits)
    idx = next(iter(run.sampler))
    assert len(idx) == CFG["batch_size"]
    loss_fn(run.forward(digits.x_train[idx]), digits.y_train[idx], run.kind).backward()
    for n, p in run.model.named_parameters():
        # float32 sums of 100 terms split 50 + 50: rounding ~1e-7 of the largest term
        scale = p.grad.abs().max().clamp_min(1e-12)
        assert ((grads[n] - p.grad).abs().max() / scale) < 1e-5, n


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """A two-process run killed (SIGKILL on rank 0) after its epoch-2 checkpoint, and a copy."""
    cut = tmp_path_factory.mktemp("killed") / "cut"
    codes = _run_two(cut, CFG, kill_after=2)
    assert codes[0] != 0 and load_checkpoint(cut)["epoch"] == 2
    shutil.copytree(cut, cut.parent / "copy")
    return cut, cut.parent / "copy"


def test_killed_two_process_run_resumed_equals_uninterrupted(two, killed):
    _, ranks, _ = two
    cut, _ = killed
    assert _run_two(cut, CFG, resume=True) == [0, 0]
    back = torch.load(cut / "rank0.pt")
    for k, w in ranks[0]["model"].items():
        assert torch.equal(back["model"][k], w), k
    for a, b in zip(back["masks"], ranks[0]["masks"]):
        assert torch.equal(a, b)
    assert [r["test_acc"] for r in back["history"]] == [r["test_acc"] for r in ranks[0]["history"]]


def test_two_process_checkpoint_resumed_in_one_process(two, killed, digits):
    """A change of world size keeps the global batch, the order and the RNG; only the
    summation order of gradients and DPAP statistics changes (float rounding)."""
    _, ranks, _ = two
    _, copy = killed
    run = train(TrainConfig(**CFG), copy, resume=True, progress=False, data=digits)
    for a, b in zip(pruner_masks(run), ranks[0]["masks"]):
        assert torch.equal(a, b)
    _close_after_adam(run.model.state_dict(), ranks[0]["model"])


def test_rank_slices_cover_the_global_batch_in_order(digits):
    n, batch = len(digits.y_train), 96
    parts = [[(x, y) for x, y in epoch_batches(
        digits.x_train, digits.y_train,
        EpochBatchSampler(n, batch, 1, distributed.Dist(r, 3, r), augment=True), None)]
        for r in range(3)]
    full = list(epoch_batches(digits.x_train, digits.y_train,
                              EpochBatchSampler(n, batch, 1, augment=True), None))
    for k, (x, y) in enumerate(full):
        assert torch.equal(torch.cat([p[k][1] for p in parts]), y)
        assert torch.equal(torch.cat([p[k][0] for p in parts]), x)   # same crops and flips
    assert len(full) == 15 and len(full[-1][1]) == n - 14 * batch


def test_mask_hash_mismatch_stops_every_rank_with_one_line():
    """(Equal hashes pass: every run above checks them after each epoch.)"""
    ctx = mp.get_context("spawn")
    queue, port = ctx.Queue(), _port()
    procs = [ctx.Process(target=ddp_worker.check_rank, args=(r, 2, port, 7 + r, queue))
             for r in range(2)]
    for p in procs:
        p.start()
    got = dict(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(60)
    for msg in got.values():
        assert msg.startswith("ranks disagree on the pruning masks after epoch 3: ranks [1]")
        assert "\n" not in msg


def test_batch_too_small_for_the_ranks_is_one_line():
    with pytest.raises(ConfigError, match="every process needs"):
        distributed.check_batch(1400, 64 * 3 + 1, 200)



def test_step_executor_and_magnitude_baseline_under_two_processes(tmp_path):
    """snnTorch's own step loop under DDP (its neurons keep state in buffers shaped like the
    last batch: rank 0's evaluation batch differs from the slices) and a baseline's masks."""
    cfg = dict(epochs=3, batch_size=100, seed=2, device="cpu", executor="step", dpap=False,
               baseline="magnitude", prune_target=0.4, prune_window=[0, 2])
    assert _run_two(tmp_path, cfg) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for a, b in zip(ranks[0]["masks"], ranks[1]["masks"]):
        assert torch.equal(a, b)
    assert 0.3 < sum(int((~m).sum()) for m in ranks[0]["masks"]) / \
        sum(m.numel() for m in ranks[0]["masks"]) < 1.0
    for k, w in ranks[0]["model"].items():
        assert torch.equal(ranks[1]["model"][k], w), k


def test_a_two_process_run_compacts_in_one_process(two, tmp_path):
    from dpap_deploy.pipeline import compact as compact_run
    out, ranks, _ = two
    r = compact_run(out, tmp_path / "compact")
    assert r.params.compact < r.params.dense
    assert r.compaction.accuracy_compact == ranks[0]["history"][-1]["test_acc"]


def test_rate_structured_baseline_measures_slices_and_the_ranks_agree(tmp_path, digits):
    """Firing rates and SynOps are activity, not weights: each rank measures its half of the
    fixed measuring samples and the sums are added over the ranks (without that sum the two
    halves would rank the units differently and the mask check would stop the run). Both
    ranks remove the same units, the ones one process removes."""
    cfg = dict(epochs=3, batch_size=100, seed=2, device="cpu", dpap=False,
               baseline="rate-structured", prune_target=0.3, prune_target_kind="synops",
               prune_window=[0, 2])
    assert _run_two(tmp_path / "two", cfg) == [0, 0]
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in range(2)]
    for a, b in zip(ranks[0]["masks"], ranks[1]["masks"]):
        assert torch.equal(a, b)
    units = [m for m in ranks[0]["masks"] if m.dim() == 1]
    assert sum(int((~m).sum()) for m in units) > 0
    # the SynOps measured on both halves together, the same on both ranks, bit for bit
    states = [r["baseline"] for r in ranks]
    assert states[0]["reference"] == states[1]["reference"]
    assert states[0]["last"] == states[1]["last"]
    one = train(TrainConfig(**cfg), tmp_path / "one", progress=False, data=digits)
    for a, b in zip(ranks[0]["masks"], pruner_masks(one)):
        assert torch.equal(a, b)
    # SynOps are sums of spikes times fan-outs (exact in float64); the weights the spikes come
    # from differ from one process's by float rounding only
    assert states[0]["reference"] == pytest.approx(one.baseline.reference, rel=1e-3)
    assert states[0]["last"]["cost"] == pytest.approx(one.baseline.last["cost"], rel=1e-3)


@pytest.mark.parametrize("baseline", ["random", "l1-structured"])
def test_weight_and_seed_baselines_agree_across_ranks(tmp_path, baseline):
    """Scores from the run's seed (random) or from weights DDP keeps equal (L1): no reduction,
    and the ranks still hold the same masks (the run would stop otherwise)."""
    cfg = dict(epochs=2, batch_size=100, seed=4, device="cpu", dpap=False, baseline=baseline,
               prune_target=0.3, prune_window=[0, 1])
    assert _run_two(tmp_path, cfg) == [0, 0]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    for a, b in zip(ranks[0]["masks"], ranks[1]["masks"]):
        assert torch.equal(a, b)
    assert any(not m.all() for m in ranks[0]["masks"])


def test_two_processes_train_from_event_frames_binned_on_demand(tmp_path, monkeypatch):
    """Each rank's DataLoader worker bins that rank's slices of the batches into the shared
    cache; rank 0 bins the test set when it evaluates."""
    import torch.nn.functional as F
    from dpap_deploy.data.saccade import write_nmnist_tree
    d = load_dataset("digits")
    imgs = F.interpolate(d.x_train[:30], size=(28, 28), mode="bilinear")[:, 0].numpy()
    write_nmnist_tree(tmp_path / "ev", "train", imgs[:24], d.y_train[:24].numpy(), progress=False)
    write_nmnist_tree(tmp_path / "ev", "test", imgs[24:], d.y_train[24:30].numpy(), progress=False)
    monkeypatch.setenv("DPAP_EVENT_FRAMES", "stream")     # the spawned ranks inherit it
    cfg = dict(dataset="nmnist", data_root=str(tmp_path / "ev"), model="snn-mnist", epochs=2,
               batch_size=8, time_steps=3, device="cpu", seed=1, workers=1)
    assert _run_two(tmp_path / "run", cfg) == [0, 0]
    ranks = [torch.load(tmp_path / "run" / f"rank{r}.pt") for r in range(2)]
    for k, w in ranks[0]["model"].items():
        assert torch.equal(ranks[1]["model"][k], w), k
    assert len(ranks[0]["history"]) == 2
    assert len(list((tmp_path / "ev" / ".dpap-cache" / "nmnist-T3").glob("*/*.bits"))) == 30
