"""Worker-side job operations: claim, heartbeat, report, finish, and recover from dead workers.

Each function takes a Session and only executes and flushes; run each call in its own
:func:`app.db.session_scope` (a claim in particular: on SQLite the claiming ``UPDATE`` must be
the transaction's first write to take the write lock before it reads). Transitions are
single guarded statements (``WHERE state = ... AND worker_id = ...``): a worker that lost its
job to :func:`requeue_stale` gets ``False`` back instead of overwriting the new owner's work.
Delivery is at-least-once: a requeued job runs again, so workers resume its Optuna study.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.orm import Session

from app.db import write
from app.models import Job, JobState, utcnow
from app.schemas import ArtifactRecord, JobError, JobProgress, JobResult

_Record = TypeVar("_Record", bound=BaseModel)


def _json(kind: type[_Record], value: _Record | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON to store: a typed record (what workers pass) is dumped as it is; a mapping
    (tools, tests) is validated first, so a malformed record never reaches a client."""
    record = value if isinstance(value, kind) else kind.model_validate(value)
    return record.model_dump(mode="json")


def _owned(job_id: str, worker_id: str) -> tuple[Any, ...]:
    return (Job.id == job_id, Job.state == JobState.running, Job.worker_id == worker_id)


def _guarded(session: Session, where: tuple[Any, ...], **values: Any) -> bool:
    """One guarded UPDATE; True when it matched the job (the transition happened)."""
    return write(session, update(Job).where(*where).values(**values)) == 1


def claim_next(session: Session, worker_id: str) -> Job | None:
    """Take the oldest queued job: state -> running, owned by ``worker_id``, attempts + 1.

    One statement: ``UPDATE jobs ... WHERE id = (SELECT id ... FOR UPDATE SKIP LOCKED) AND
    state = 'queued' RETURNING *``. On PostgreSQL concurrent claimers skip each other's locked
    row instead of waiting; SQLite ignores ``FOR UPDATE`` but runs the statement under its single
    write lock, taken before the subquery reads, so two claimers serialise.
    """
    now = utcnow()
    oldest = (
        select(Job.id)
        .where(Job.state == JobState.queued)
        .order_by(Job.created_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return session.scalars(
        update(Job)
        .where(Job.id == oldest, Job.state == JobState.queued)
        .values(
            state=JobState.running,
            worker_id=worker_id,
            heartbeat_at=now,
            started_at=now,
            updated_at=now,
            attempts=Job.attempts + 1,
        )
        .returning(Job),
        execution_options={"synchronize_session": False, "populate_existing": True},
    ).first()


def joinable_jobs(session: Session, stale_after: timedelta) -> list[Job]:
    """Running jobs other workers may help with: study ready, not cancelling, owner alive."""
    fresh_since = utcnow() - stale_after
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.state == JobState.running,
                Job.study_ready,
                ~Job.cancel_requested,
                Job.heartbeat_at >= fresh_since,
            )
            .order_by(Job.started_at, Job.id)
        )
    )


def may_want_help(session: Session, stale_after: timedelta) -> bool:
    """Whether a drain worker should stay: some job is queued, or running (not cancelling,
    owner alive) and so may still want a helper: being set up (study not ready yet), with
    free trial slots, or with trials in flight whose slot comes back if their worker dies."""
    fresh_since = utcnow() - stale_after
    found = session.scalar(
        select(Job.id)
        .where(
            or_(
                Job.state == JobState.queued,
                and_(
                    Job.state == JobState.running,
                    ~Job.cancel_requested,
                    Job.heartbeat_at >= fresh_since,
                ),
            )
        )
        .limit(1)
    )
    return found is not None


def heartbeat(session: Session, job_id: str, worker_id: str) -> bool:
    """Record that ``worker_id`` is alive; False means it no longer owns the job: stop."""
    return _guarded(session, _owned(job_id, worker_id), heartbeat_at=utcnow())


def mark_study_ready(session: Session, job_id: str, worker_id: str) -> bool:
    """The owner created the job's Optuna study and seeded it: helpers may join from now on."""
    return _guarded(session, _owned(job_id, worker_id), study_ready=True, updated_at=utcnow())


def update_progress(session: Session, job_id: str, progress: JobProgress | Mapping[str, Any]) -> bool:
    """Replace a running job's progress (validated as JobProgress; missing keys reset).

    Any worker on the job may call it, so it is not guarded by worker id; whole replacement
    avoids read-modify-write races between them.
    """
    # Unset fields are left out rather than stored as null: an API of the previous version,
    # which forbids fields it does not know, keeps reading the progress that newer workers
    # write during a rolling upgrade, as long as they use no new field.
    value = {k: v for k, v in _json(JobProgress, progress).items() if v is not None}
    return _guarded(
        session,
        (Job.id == job_id, Job.state == JobState.running),
        progress=value,
        updated_at=utcnow(),
    )


def add_artifact(session: Session, job_id: str, artifact: ArtifactRecord | Mapping[str, Any]) -> bool:
    """Append an artifact record (validated as ArtifactRecord), replacing one of the same name.

    The first ``UPDATE ... RETURNING artifacts`` locks the row (PostgreSQL) or the database
    (SQLite) before reading the list, so concurrent appends cannot lose each other.
    """
    record = _json(ArtifactRecord, artifact)
    current = session.execute(
        update(Job).where(Job.id == job_id).values(updated_at=utcnow()).returning(Job.artifacts),
        execution_options={"synchronize_session": False},
    ).scalar_one_or_none()
    if current is None:
        return False
    artifacts = [a for a in current if a.get("name") != record["name"]] + [record]
    return _guarded(session, (Job.id == job_id,), artifacts=artifacts)


def finish(session: Session, job_id: str, worker_id: str, result: JobResult | Mapping[str, Any]) -> bool:
    """running -> succeeded with ``result`` (validated as JobResult)."""
    return _end(session, job_id, worker_id, JobState.succeeded, result=_json(JobResult, result))


def fail(session: Session, job_id: str, worker_id: str, error: JobError | Mapping[str, Any]) -> bool:
    """running -> failed with ``error`` ({type, detail}; never a stack trace: clients see it)."""
    return _end(session, job_id, worker_id, JobState.failed, error=_json(JobError, error))


def finish_cancelled(
    session: Session, job_id: str, worker_id: str,
    result: JobResult | Mapping[str, Any] | None = None,
) -> bool:
    """running -> cancelled, after the worker stopped on cancel_requested; ``result`` covers the
    trials that did run (so a cancelled search still shows what it found)."""
    value = None if result is None else _json(JobResult, result)
    return _end(session, job_id, worker_id, JobState.cancelled, result=value)


def _end(session: Session, job_id: str, worker_id: str, state: JobState, **values: Any) -> bool:
    """running -> the final ``state`` with ``values``, only while ``worker_id`` owns the job."""
    now = utcnow()
    return _guarded(session, _owned(job_id, worker_id), state=state, finished_at=now,
                    updated_at=now, **values)


def _back_to_queue(now: Any) -> dict[str, Any]:
    """Values that hand a running job back: queued again, or cancelled if that was asked."""
    return {
        "state": case((Job.cancel_requested, JobState.cancelled), else_=JobState.queued),
        "finished_at": case((Job.cancel_requested, now), else_=None),
        "worker_id": None,
        "heartbeat_at": None,
        # The next owner re-seeds the study before helpers may join again.
        "study_ready": False,
        "updated_at": now,
    }


def release(session: Session, job_id: str, worker_id: str) -> bool:
    """A worker shutting down hands its job back (running -> queued, or cancelled if asked)."""
    return _guarded(session, _owned(job_id, worker_id), **_back_to_queue(utcnow()))


def requeue_stale(session: Session, stale_after: timedelta) -> list[str]:
    """Return running jobs whose owner stopped heartbeating to the queue; their ids.

    A heartbeat racing with this is safe: on PostgreSQL the row lock makes this statement
    re-check the heartbeat after the other commits; on SQLite the two writes serialise.
    """
    now = utcnow()
    ids = session.scalars(
        update(Job)
        .where(Job.state == JobState.running, Job.heartbeat_at < now - stale_after)
        .values(**_back_to_queue(now))
        .returning(Job.id),
        execution_options={"synchronize_session": False},
    )
    return list(ids)


def is_cancel_requested(session: Session, job_id: str) -> bool:
    """True when the job should stop: cancel was requested, or the job no longer exists."""
    flag = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return True if flag is None else bool(flag)


__all__ = [
    "add_artifact",
    "claim_next",
    "fail",
    "finish",
    "finish_cancelled",
    "heartbeat",
    "is_cancel_requested",
    "joinable_jobs",
    "may_want_help",
    "mark_study_ready",
    "release",
    "requeue_stale",
    "update_progress",
]
