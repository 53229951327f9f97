"""One user's model style taken through the whole path, as a user would, each stage's outcome
as one table cell. Used by ``tests/test_model_corpus.py`` and ``benchmarks/bench_corpus.py``.

Stages: ``check`` (the deployability check and the attach of ``DPAP``) -> ``train`` (the user's
own loop and loss, DPAP attached) -> ``compact`` (the compacted model's spikes equal bit for bit
those of the trained model over two windows of the user's loop, ``snntorch.utils.reset`` between
them; graded outputs within float32 rounding) -> ``nir`` / ``loihi-sim`` / ``netx`` (the exporters' parity on the test samples) ->
``convert`` (``make_deployable`` where loihi-sim refused or was listed as blocked, accuracy
before and after, and loihi-sim's parity on its result). ``blocked``: ``target:count`` per
target the check listed; ``params``: parameters before -> after compaction; ``acc``: test
accuracy in the user's own loop after training.

Cells: ``ok`` / ``blocked: <target: blocker; ...>`` (listed before training, training goes on)
/ ``refused before training: <reason>`` / ``refused: <reason>`` (a target's one-line refusal)
/ ``ran: <parity>`` (netx: loaded and ran, 8-bit parity not met) / ``converted (acc a -> b)``
/ ``FAIL: <one line>`` / ``-`` (not reached or not applicable).
"""
from __future__ import annotations

import inspect
import tempfile
import time
import warnings
from dataclasses import fields
from pathlib import Path

import torch
from snntorch import spikegen, utils

import dpap_deploy
from corpus_user import num_steps
from dpap_deploy import DPAP, DPAPConfig, SurvivalParams
from dpap_deploy.compaction import compact
from dpap_deploy.errors import DPAPError
from dpap_deploy.exporters import ExportJob, export
from dpap_deploy.masks import from_dpap_state

STAGES = ["check", "train", "compact", "nir", "loihi-sim", "netx", "convert"]
AGGRESSIVE = SurvivalParams(epsilon=1.5, eta=1.0, beta=0.5, gamma=1.0, C=0.5, warmup=0)
CONFIG = DPAPConfig(conv=AGGRESSIVE, linear=AGGRESSIVE)


def one_line(text: str, limit: int = 300) -> str:
    text = " | ".join(s.strip() for s in str(text).splitlines() if s.strip())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ------------------------------------------------------------------ data in the user's layout
def user_data(style, x, seed: int):
    """Digits images ``[N, 1, 8, 8]`` as the style's user feeds them: 64 features, rate-coded
    spikes time-first ``[T, N, ...]`` (``spikegen.rate``) or batch-first ``[N, T, ...]``, two
    polarity channels for the event style."""
    if style.encode == "polarity":
        x = torch.cat([x, 1 - x], dim=1)
    if style.features:
        x = x.flatten(1)
    if style.prepare is not None:
        x = style.prepare(x)
    if style.layout == "static":
        return x
    torch.manual_seed(seed)
    spikes = spikegen.rate(x, num_steps=num_steps)              # [T, N, ...]
    return spikes if style.layout == "time-first" else spikes.transpose(0, 1).contiguous()


def take(style, x, sl):
    return x[:, sl] if style.layout == "time-first" else x[sl]


def n_samples(style, x) -> int:
    return x.shape[1] if style.layout == "time-first" else x.shape[0]


def time_axis(style):
    return {"time-first": 0, "batch-first": 1}.get(style.layout)


def _with_time_axis(fn, style, **kw):
    """``time_axis=`` for an input with a time axis, when ``fn`` takes it (else left out: the
    toolkit must then infer the axis)."""
    axis = time_axis(style)
    if axis is not None and "time_axis" in inspect.signature(fn).parameters:
        kw["time_axis"] = axis
    return kw


def predictions(out) -> torch.Tensor:
    """Class per sample from what the user's loop returns: spikes or membranes ``[T, B, C]``
    summed over time, or logits ``[B, C]``."""
    out = out[0] if isinstance(out, tuple) else out
    return (out.sum(0) if out.dim() == 3 else out).argmax(-1)


def accuracy(style, model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        utils.reset(model)
        return float((predictions(style.run(model, x)) == y).float().mean())


# ------------------------------------------------------------------ the stages
def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_stage(style, model, example):
    """The deployability check before training (``check_deployable``, when this version has
    it), then ``DPAP(...)``: its refusal ends the path before training; a check that refused
    or crashed while the attach took the model is a failure of the check."""
    fn = getattr(dpap_deploy, "check_deployable", None)
    if fn is None:
        try:
            from dpap_deploy.deployability import check_deployable as fn
        except ImportError:
            fn = None
    cell, blockers = None, []
    if fn is not None:
        try:
            res = fn(model, example, **_with_time_axis(fn, style))
            blockers = [f"{t}: {b}" for t, b in res.pairs()]
        except DPAPError as e:
            cell = f"refused before training: {one_line(e)}"
        except Exception as e:                                          # noqa: BLE001
            cell = f"FAIL: check_deployable: {type(e).__name__}: {one_line(e)}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            dp = DPAP(model, example, CONFIG, **_with_time_axis(DPAP.__init__, style))
        except DPAPError as e:
            return f"refused before training: {one_line(e)}", None, []
        except Exception as e:                                          # noqa: BLE001
            return f"FAIL: DPAP(...): {type(e).__name__}: {one_line(e)}", None, []
    if cell is not None:
        return (cell if cell.startswith("FAIL") else
                f"FAIL: the check refused, DPAP(...) took the model: "
                f"{cell.split(': ', 1)[1]}"), dp, []
    if fn is None:       # no check function: what the attach warned about is the check
        blockers = [one_line(w.message) for w in caught
                    if "deploy" in type(w.message).__name__.lower()]
    cell = "ok" if not blockers else "blocked: " + "; ".join(one_line(b, 200) for b in blockers)
    targets = [b.split(":", 1)[0] for b in blockers]
    return cell, dp, [f"{t}:{targets.count(t)}" for t in dict.fromkeys(targets)]


def train_stage(style, model, dp, x, y, epochs: int, batch: int):
    """The user's own loop and loss; DPAP's two calls are all it adds."""
    opt = torch.optim.Adam(model.parameters(), lr=style.lr)
    n = n_samples(style, x)
    try:
        for _ in range(epochs):
            model.train()
            for i in range(0, n, batch):
                out = style.run(model, take(style, x, slice(i, i + batch)))
                loss = style.loss(out, y[i:i + batch])
                opt.zero_grad()
                loss.backward()
                opt.step()
                dp.step()
            dp.end_epoch()
    except Exception as e:                                              # noqa: BLE001
        return f"FAIL: training: {type(e).__name__}: {one_line(e)}"
    return "ok"


GRADED_RTOL = 1e-5    # ~84 float32 ulps of the largest value: a graded output (membrane,
#                      logits) summed over fewer inputs after compaction rounds differently


def _compare(a, b) -> str | None:
    """``None`` when two outputs of the user's loop agree: spike tensors (values 0/1) bit for
    bit, graded tensors within ``GRADED_RTOL`` of their largest magnitude; else what differs."""
    a = a if isinstance(a, tuple) else (a,)
    b = b if isinstance(b, tuple) else (b,)
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b)):
        return "output shapes differ"
    for k, (p, q) in enumerate(zip(a, b)):
        spikes = bool(((p == 0) | (p == 1)).all())
        if spikes or not torch.isfinite(p).all():
            if not torch.equal(p, q):
                return f"output {k}: {int((p != q).sum())} of {p.numel()} values differ"
        elif (p - q).abs().max() > GRADED_RTOL * max(1.0, float(p.abs().max())):
            return f"output {k} (graded): max |difference| {float((p - q).abs().max()):.3g}"
    return None


def compact_stage(style, model, dp, example, windows, time_steps: int):
    """``compact`` right after training; then the user's loop on both models, window after
    window, ``snntorch.utils.reset`` before each: spikes must be equal bit for bit, graded
    outputs within float32 rounding (``_compare``)."""
    try:
        masks = from_dpap_state(dp.state_dict())
        res = compact(model, example, masks, time_steps=time_steps, graph=dp.graph,
                      **_with_time_axis(compact, style))
    except Exception as e:                                              # noqa: BLE001
        kind = "refused" if isinstance(e, DPAPError) else f"FAIL: compact: {type(e).__name__}"
        return f"{kind}: {one_line(e)}", None
    model.eval()
    res.model.eval()
    with torch.no_grad():
        for k, w in enumerate(windows, 1):
            utils.reset(model)
            utils.reset(res.model)
            try:
                a, b = style.run(model, w), style.run(res.model, w)
            except Exception as e:                                      # noqa: BLE001
                return f"FAIL: compacted model in the user's loop: {type(e).__name__}: " \
                       f"{one_line(e)}", None
            what = _compare(a, b)
            if what:
                return f"FAIL: window {k}: {what}", None
    return "ok", res


def _job(style, model, kind, x, y, time_steps, graph, n):
    kw = {}
    if "time_axis" in {f.name for f in fields(ExportJob)} and time_axis(style) is not None:
        kw["time_axis"] = time_axis(style)
    return ExportJob(model, kind, x, y, time_steps, max_samples=n, graph=graph, **kw)


def export_stage(style, target, model, kind, graph, x, y, time_steps, out: Path, n: int):
    """One target: ok (its parity held), ``refused: ...`` (a one-line refusal), ``ran: ...``
    (netx: ran, its 8-bit parity not met) or ``FAIL: ...`` (exact target off, or a crash)."""
    try:
        job = _job(style, model, kind, x, y, time_steps, graph, n)
        r = export(target, job, out / target)
    except DPAPError as e:
        msg = str(e)
        return ("refused: " if "\n" not in msg else "FAIL: refusal of several lines: ") \
            + one_line(msg)
    except Exception as e:                                              # noqa: BLE001
        return f"FAIL: {target}: {type(e).__name__}: {one_line(e)}"
    p = r.parity
    summary = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in p.items() if k in ("agreement", "identical_spike_trains",
                                                        "within_tolerance", "n_samples",
                                                        "failure"))
    # loihi-sim: identical spike trains (a graded readout: within float32 rounding) on >= 99%
    exact = p.get("identical_spike_trains", p.get("within_tolerance"))
    if r.passed and (target != "loihi-sim" or (exact is not None and exact >= 0.99)):
        return "ok"
    return f"ran: {summary}" if target == "netx" else f"FAIL: parity: {summary}"


def _make_deployable():
    fn = getattr(dpap_deploy, "make_deployable", None)
    if fn is None:
        try:
            from dpap_deploy.convert import make_deployable as fn
        except ImportError:
            return None
    return fn


def convert_stage(style, model, dp, data, time_steps, n: int):
    """Where loihi-sim refused: ``make_deployable`` (the nearest deployable form, masks kept, a
    short fine-tune, its export and parity), the accuracy in the user's own loop before and
    after, and the converted model's loihi-sim parity."""
    fn = _make_deployable()
    x, y, xt, yt = data
    if fn is None:
        return "FAIL: no dpap_deploy.make_deployable in this version (refused at export)"
    before = accuracy(style, model, xt, yt)
    try:
        conv = fn(model, take(style, x, slice(0, 16)), (x, y), targets=("loihi-sim",), dpap=dp,
                  epochs=1, time_steps=time_steps, test_data=(xt, yt), max_samples=n,
                  **_with_time_axis(fn, style))
    except DPAPError as e:
        return f"refused: {one_line(e)}"
    except Exception as e:                                              # noqa: BLE001
        return f"FAIL: make_deployable: {type(e).__name__}: {one_line(e)}"
    try:
        after = accuracy(style, conv.model, xt, yt)
    except Exception as e:                                              # noqa: BLE001
        return f"FAIL: the converted model in the user's loop: {type(e).__name__}: " \
               f"{one_line(e)}"
    cell = f"converted (acc {before:.2f} -> {after:.2f}; {len(conv.changes)} change(s))"
    p = conv.parity.get("loihi-sim", {})
    if "refused" in p:
        return f"{cell}; FAIL: loihi-sim still refuses: {one_line(p['refused'])}"
    if not p.get("passed"):
        return f"{cell}; FAIL: loihi-sim parity: identical " \
               f"{p.get('identical_spike_trains')}, agreement {p.get('agreement')}, " \
               f"{one_line(p.get('failure', ''))}"
    return f"{cell}, loihi-sim ok"


def run_style(style, data, stages=STAGES, epochs: int = 2, batch: int = 32, n_test: int = 64,
              seed: int = 0, out: Path | None = None) -> dict[str, str]:
    """Every stage of ``stages`` for ``style`` on ``data = (x, y, x_test, y_test)`` (digits
    images); the cells by stage, ``seconds`` the wall time."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    xi, y, xti, yt = data
    x, xt = user_data(style, xi, seed), user_data(style, xti, seed + 1)
    cells = {s: "-" for s in STAGES}
    cells["blocked"] = cells["params"] = cells["acc"] = ""
    model = style.build()
    example = take(style, x, slice(0, batch))
    cells["check"], dp, blocked = check_stage(style, model, example)
    if dp is None:
        return {**cells, "seconds": f"{time.perf_counter() - t0:.1f}"}
    cells["blocked"] = " ".join(blocked)
    cells["train"] = train_stage(style, model, dp, x, y, epochs, batch)
    if cells["train"] == "ok":
        test = take(style, xt, slice(0, n_test))
        cells["acc"] = f"{accuracy(style, model, test, yt[:n_test]):.2f}"
    if cells["train"] == "ok" and "compact" in stages:
        half = n_test // 2
        windows = [take(style, xt, slice(0, half)), take(style, xt, slice(half, n_test))]
        cells["compact"], res = compact_stage(style, model, dp, example, windows, num_steps)
        if res is not None:
            cells["params"] = f"{n_params(model)} -> {n_params(res.model)}"
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(out or tmp)
            if res is not None:
                for target in ("nir", "loihi-sim", "netx"):
                    if target in stages:
                        cells[target] = export_stage(style, target, res.model, dp.kind,
                                                     res.graph, xt, yt, num_steps, tmp, n_test)
            if "convert" in stages and (cells["loihi-sim"].startswith("refused")
                                        or "loihi-sim" in blocked_targets(cells)):
                cells["convert"] = convert_stage(style, model, dp, (x, y, xt, yt), num_steps,
                                                 n_test)
    return {**cells, "seconds": f"{time.perf_counter() - t0:.1f}"}


def digits(n_train: int, n_test: int):
    from dpap_deploy.data import load_dataset
    d = load_dataset("digits")
    return d.x_train[:n_train], d.y_train[:n_train], d.x_test[:n_test], d.y_test[:n_test]


# ------------------------------------------------------------------ issue 23's demand
DETERMINED = ("nir", "loihi-sim")      # the targets whose check must agree with the export


def stage_matches(expect: str, cell: str, cells: dict) -> bool:
    """``expect`` (issue 23's demand for the stage) against the cell ``run_style`` wrote."""
    if expect in ("ok", "-"):
        return cell == expect
    if expect == "ok-or-refused":
        return cell == "ok" or cell.startswith(("refused: ", "ran: "))
    if expect == "ok-or-refused-at-attach":      # exact, or listed before training
        return cell == "ok" or cell.startswith(("refused before training: ", "blocked: "))
    if expect == "converted":
        return cell.startswith("converted (acc ") and "FAIL" not in cell
    if expect == "converted-if-refused":
        return stage_matches("converted" if cells["loihi-sim"].startswith("refused") else "-",
                             cell, cells)
    kind, _, words = expect.partition(":")
    return cell.startswith(kind) and words in cell.lower()


def blocked_targets(cells: dict) -> list[str]:
    """The targets the check listed (``cells["blocked"]``: ``target:count`` words)."""
    return [w.split(":")[0] for w in cells["blocked"].split()]


def check_cell_matches(expect: str, cells: dict) -> bool:
    """``ok``: no target of ``DETERMINED`` blocked (netx's format may refuse, it is listed);
    ``blocked:words``: each of them blocked, for the reason named."""
    blocked = blocked_targets(cells)
    if expect == "ok":
        return not cells["check"].startswith(("FAIL", "refused")) and \
            not set(blocked) & set(DETERMINED)
    if expect.startswith("blocked:"):
        return set(DETERMINED) <= set(blocked) and expect[8:] in cells["check"].lower()
    return stage_matches(expect, cells["check"], cells)


def shortfalls(expect: dict, cells: dict, stages=STAGES) -> dict:
    """Each stage whose cell is not what ``expect`` demands: ``{stage: (expected, cell)}``;
    and ``"<target> vs check"`` where a target refused without the check listing it before
    training, or the check listed a target that then took the model."""
    wrong = {s: (expect[s], cells[s]) for s in stages if s != "check"
             and not stage_matches(expect[s], cells[s], cells)}
    if not check_cell_matches(expect["check"], cells):
        wrong["check"] = (expect["check"], cells["check"])
    for t in ("nir", "loihi-sim", "netx"):
        if cells[t] != "-" and cells[t].startswith("refused") != (t in blocked_targets(cells)):
            wrong[f"{t} vs check"] = (cells["blocked"], cells[t])
    return wrong
