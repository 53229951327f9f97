"""The corpus of snnTorch model styles, end to end, as a user would take each: the deployability
check -> the user's own training loop with DPAP attached (2 epochs, embedded digits) ->
``compact`` (bit-identical over two windows of the user's loop, ``snntorch.utils.reset``
between them) -> nir -> loihi-sim (identical spike trains on >= 99% of 64 test samples) -> netx
-> ``make_deployable`` where an exact target refused. The stages and the cell words are
``tests/corpus_stages.py``'s.

    python benchmarks/bench_corpus.py --csv benchmarks/results/corpus.csv
    python benchmarks/bench_corpus.py --styles-module /path/to/my_styles.py --csv other.csv

A styles module defines ``STYLES``, a list of ``corpus_user.UserStyle``. One CSV row is
written (atomically: the whole file replaced) as each style finishes; a style already in the
CSV is skipped, so an interrupted run resumes. The markdown table is written beside the CSV
(``.md``) and printed.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from corpus_stages import STAGES, digits, run_style, shortfalls  # noqa: E402

COLUMNS = ["style", "source", *STAGES, "blocked", "acc", "params", "meets_issue", "seconds"]


def load_styles(path: str | None):
    if path is None:
        import corpus_tutorials
        return corpus_tutorials.STYLES
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if spec is None or not Path(path).is_file():
        sys.exit(f"--styles-module {path}: no such Python file; give the path of a .py file "
                 f"that defines STYLES")
    mod = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(Path(path).resolve().parent))
    spec.loader.exec_module(mod)
    if not isinstance(getattr(mod, "STYLES", None), list):
        sys.exit(f"--styles-module {path}: defines no STYLES list")
    return mod.STYLES


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict]) -> None:
    """The whole CSV to a temporary file in the same folder, then renamed over the old one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerows(rows)
    os.chmod(tmp, 0o644)                 # mkstemp makes it owner-only
    os.replace(tmp, path)


def short(cell: str, limit: int = 90) -> str:
    cell = str(cell).replace("|", "/")
    return cell if len(cell) <= limit else cell[:limit - 3] + "..."


def check_words(cell: str, blocked: str) -> str:
    """The check's cell in the table: ``ok``, the blocked targets, or the refusal."""
    if not cell.startswith("blocked: "):
        return short(cell)
    return "blocked: " + ", ".join(f"{t} ({n})" for t, n in
                                   (w.split(":") for w in blocked.split()))


def markdown(rows: list[dict]) -> str:
    """The table: each target the check listed, with its count of blockers; other cells cut
    to 90 characters (the CSV has them whole)."""
    head = ["style", "source", *STAGES, "acc", "params", "meets_issue"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [check_words(r["check"], r.get("blocked", "")) if c == "check"
                 else short(r.get(c, "")) for c in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", default=str(ROOT / "benchmarks/results/corpus.csv"))
    ap.add_argument("--styles-module", default=None, help="a .py file defining STYLES")
    ap.add_argument("--only", nargs="*", default=None, help="style names to run")
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args(argv)
    path = Path(args.csv)
    rows = read_rows(path)
    done = {r["style"] for r in rows}
    data = digits(args.n_train, args.n_test)
    for style in load_styles(args.styles_module):
        if style.name in done or (args.only and style.name not in args.only):
            continue
        cells = run_style(style, data, epochs=args.epochs, n_test=args.n_test)
        wrong = shortfalls(style.expect, cells) if style.expect else {}
        cells["meets_issue"] = "yes" if not wrong else "no: " + ", ".join(wrong)
        rows.append({"style": style.name, "source": style.source, **cells})
        write_rows(path, rows)
        print(f"{style.name}: " + "; ".join(f"{s}={cells[s]}" for s in STAGES), flush=True)
    table = markdown(rows)
    path.with_suffix(".md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
