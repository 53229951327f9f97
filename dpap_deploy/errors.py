"""User-facing errors.

Every problem caused by the user's input (a bad option, an unsupported layer, a missing file)
raises :class:`DPAPError` with a one-line message that says what was wrong, with the offending
value, and what to do instead. The CLI prints that line and exits non-zero, without a traceback.
"""


class DPAPError(Exception):
    """An error in the user's input or files, with a message meant to be read by a person."""


class ConfigError(DPAPError, ValueError):
    """An invalid hyperparameter or option."""


class UnsupportedModelError(DPAPError):
    """A model contains a layer type or structure that DPAP (or a target) cannot handle."""


class NotDeployableError(UnsupportedModelError):
    """A model the chosen target(s) would refuse, found before any work: ``blockers`` holds one
    line per reason (``[(target, line), ...]``); ``str()`` is the summary and every line, joined
    into one line, and ``lines()`` the summary and each blocker on its own line (the CLI)."""

    def __init__(self, summary: str, blockers: list[tuple[str, str]]) -> None:
        self.summary, self.blockers = summary, list(blockers)
        super().__init__(summary + ": " + "; ".join(f"[{t}] {b}" for t, b in self.blockers))

    def lines(self) -> list[str]:
        return [self.summary + ":"] + [f"  [{t}] {b}" for t, b in self.blockers]


class DeployabilityWarning(UserWarning):
    """Issued when DPAP is attached to a model that a deployment target would refuse: every
    blocker of every target, each with its fix, before any training is spent on it."""


class CheckpointError(DPAPError):
    """A checkpoint is missing, corrupt, or not written by dpap-deploy."""


class ParityError(DPAPError):
    """An exported model does not reproduce the source model within the target's tolerance."""


class DiskFullError(DPAPError):
    """A file could not be written for lack of space; the previous file, if any, is intact."""


class UnsafePathError(DPAPError):
    """A path inside an output folder is a symbolic link, which a write would follow."""


def non_finite(what: str, bad: int, total: int, fix: str) -> str:
    """The one line for ``bad`` NaN / inf values among ``total`` in ``what`` (a tensor of a
    checkpoint, a parameter of a NIR node): the same words wherever they are found."""
    return (f"{what} holds {bad} non-finite value{'' if bad == 1 else 's'} (NaN or inf) of "
            f"{total}; a network with them computes nothing meaningful: {fix}")


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` as one line for the CLI. A :class:`DPAPError` is the user's
    message; a file-system error names the file and the reason; anything else is a bug or an
    environment problem, shown by type and first line with the way to see its traceback."""
    if isinstance(exc, DPAPError):
        return " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}; check the path and its permissions"
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return (f"unexpected {type(exc).__name__}{': ' + first if first else ''}; rerun with --debug "
            "for the traceback and report it")
