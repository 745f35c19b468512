"""A job's wall-clock budget (``search.max_minutes``), shared by every worker of the job.

The owner fixes the deadline once, counted from when it started on the job (loading the model
and data and the shift diagnosis count; time in the queue does not), as a study user attribute
of the job's study, so helpers and a later owner that resumes the job read the same one. After the deadline no trial starts (``run_trials``) and a running
trial stops after its current epoch (the objective's epoch callback), completing with the
epochs it trained. Workers compare the deadline with their own clocks: on several machines that
assumes clocks in sync to well under a trial's length, as NTP keeps them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import optuna

__all__ = ["DEADLINE_ATTR", "STOPPED", "deadline", "expired", "start", "stop_reason"]

#: Study user attribute: the deadline as an ISO 8601 UTC time (readable on the dashboard).
DEADLINE_ATTR = "deadline"
#: How a trial's ``stop_reason`` ends when the time budget stopped it.
STOPPED = "the job's time budget ran out"


def stop_reason(epoch: int, epochs: int) -> str:
    """The ``stop_reason`` of a trial the time budget stopped after ``epoch`` of ``epochs``."""
    return f"stopped after epoch {epoch} of {epochs}: {STOPPED}"


def start(study: optuna.Study, max_minutes: float | None, now: float | None = None) -> None:
    """Fix the deadline the first time the job is set up (a resumed job keeps its own)."""
    if max_minutes is None or DEADLINE_ATTR in study.user_attrs:
        return
    begun = time.time() if now is None else now
    when = datetime.fromtimestamp(begun + 60.0 * max_minutes, UTC)
    study.set_user_attr(DEADLINE_ATTR, when.isoformat())


def deadline(study: optuna.Study) -> float | None:
    """The job's deadline in seconds since the epoch, or None when it has no time budget."""
    value = study.user_attrs.get(DEADLINE_ATTR)
    return datetime.fromisoformat(value).timestamp() if value is not None else None


def expired(when: float | None, now: float | None = None) -> bool:
    """Whether the deadline ``when`` (None: no budget) has passed."""
    return when is not None and (time.time() if now is None else now) >= when
