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


class CheckpointError(DPAPError):
    """A checkpoint is missing, corrupt, or not written by dpap-deploy."""


class ParityError(DPAPError):
    """An exported model does not reproduce the source model within the target's tolerance."""
