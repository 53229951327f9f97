"""One-line warnings for people (degenerate data, silent networks), through the
``dpap_deploy`` logger.

With no logging configured, Python's last-resort handler prints each as one line on stderr
(``warning: ...``); applications that configure logging get them as ordinary records.
The same texts are stored in ``report.json`` by the stage that found them.
"""
from __future__ import annotations

import logging

LOGGER = logging.getLogger("dpap_deploy")


def warn(message: str) -> str:
    """Log ``message`` as one warning line and return it (for the report)."""
    LOGGER.warning("warning: %s", " ".join(message.split()))
    return message
