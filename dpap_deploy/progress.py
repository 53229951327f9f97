"""Progress that works in log files: training's bar or lines, and the start / end lines of
the longer stages of the other commands (:class:`Stage`).

On a terminal, a tqdm bar (redrawn in place). When stderr is not a terminal (a log file, a
pipe, CI), a bar's carriage returns are useless and nothing would appear until the epoch ends,
so instead one plain line is printed every ``interval_s`` seconds (default 30, or the
``DPAP_DEPLOY_PROGRESS_S`` environment variable):

    epoch 3/60  batch 40/125  2,560/8,000 samples  341 samples/s  loss 0.2345  ETA epoch 16 s, run 25 min

The rate is measured over the current epoch; the ETA counts training batches only
(``remaining samples / rate``), not the per-epoch test evaluation.
"""
from __future__ import annotations

import os
import sys
import time
from typing import TextIO

ENV_INTERVAL = "DPAP_DEPLOY_PROGRESS_S"
DEFAULT_INTERVAL_S = 30.0


def default_interval() -> float:
    value = os.environ.get(ENV_INTERVAL)
    try:
        return max(0.0, float(value)) if value else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


class LogProgress:
    """Prints a progress line at most every ``interval_s`` seconds during one epoch."""

    def __init__(self, epoch: int, epochs: int, n_samples: int, n_batches: int,
                 interval_s: float | None = None, stream: TextIO | None = None):
        self.epoch, self.epochs, self.n, self.n_batches = epoch, epochs, n_samples, n_batches
        self.interval = default_interval() if interval_s is None else interval_s
        self.stream = stream or sys.stderr
        self.start = self.last = time.perf_counter()

    def update(self, batch: int, seen: int, loss: float) -> None:
        """After ``batch`` batches (1-based) and ``seen`` samples of this epoch."""
        now = time.perf_counter()
        if now - self.last < self.interval or batch >= self.n_batches:
            return
        self.last = now
        rate = seen / max(now - self.start, 1e-9)
        left_epoch = (self.n - seen) / rate
        left_run = left_epoch + (self.epochs - self.epoch) * self.n / rate
        print(f"epoch {self.epoch}/{self.epochs}  batch {batch}/{self.n_batches}  "
              f"{seen:,}/{self.n:,} samples  {rate:,.0f} samples/s  loss {loss:.4f}  "
              f"ETA epoch {duration(left_epoch)}, run {duration(left_run)}",
              file=self.stream, flush=True)


class Stage:
    """One line when a stage of a command starts and one when it ends, through ``log`` (a
    callable taking a line, e.g. the CLI's stderr printer; ``None``: silent, the API's default).
    Plain lines, so they read the same on a terminal and in a pipe or log file:

        compact: counting operations on 397 samples ...
        compact: counting operations done in 4 s

    Used as ``with Stage(log, "compact", "counting operations on 397 samples"): ...``; a stage
    that raises prints no end line (the error is reported by whoever catches it).
    """

    def __init__(self, log, command: str, what: str):
        self.log, self.command, self.what = log, command, what

    def __enter__(self) -> "Stage":
        self.start = time.perf_counter()
        self.say(f"{self.what} ...")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.say(f"{self.what} done in {duration(time.perf_counter() - self.start)}")

    def say(self, text: str) -> None:
        """``command: text`` through ``log``, if any."""
        if self.log is not None:
            self.log(f"{self.command}: {text}")

