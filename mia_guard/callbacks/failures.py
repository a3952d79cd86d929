"""What an audit does when something fails during training: say why, and let training go on.

An audit must never stop a training run: the session catches every
error of an audit, records the failed audit with :func:`failure_reason` (the history's
``failures``, the report's ``failed_audits``; the release gate fails closed on a failed
final audit), and runs each output (``history.json``, every sink) through
:func:`guarded`, so a full disk or an unreachable tracker costs that output only.
"""

from __future__ import annotations

import errno
import logging
from typing import Any, Callable

from ..audit.auditor import AuditFailedError
from ..scoring.faults import AuditOutOfMemoryError

logger = logging.getLogger("mia_guard.callbacks.session")


class ScoringFailed:
    """Returned instead of statistics by a process whose scoring raised (kept, not raised, until
    every process of a distributed run agrees that scoring failed somewhere)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def failure_reason(stage: str, err: BaseException) -> str:
    """Why an audit failed, in words that name the cause (``stage``: what was being done)."""
    if isinstance(err, (AuditOutOfMemoryError, AuditFailedError)):
        return str(err)  # these explain themselves
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{stage} failed: the disk is full ({err})"
    return f"{stage} failed: {type(err).__name__}: {err}"


def guarded(what: str, fn: Callable[..., Any], *args: Any) -> str | None:
    """``fn(*args)``; an error is logged and returned as text instead of stopping training."""
    try:
        fn(*args)
    except Exception as err:  # noqa: BLE001 - outputs must never kill training
        logger.error("mia_guard: %s failed (%s: %s); training goes on", what, type(err).__name__, err)
        return f"{type(err).__name__}: {err}"
    return None
