"""Client-side job operations: submit, read, list, cancel, delete.

Every function takes a Session and only executes and flushes; the caller's
:func:`app.db.session_scope` commits. State changes are guarded in the SQL ``WHERE`` clause, so a
job that a worker changes concurrently is never overwritten from a stale read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Row, and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import trial_attrs
from app.db import write
from app.errors import Conflict, FieldError, Invalid, NotFound
from app.models import FINISHED_STATES, Job, JobState, new_id, utcnow
from app.schemas import JobProgress, JobSpec


@dataclass(frozen=True)
class DeletedJob:
    """What a deleted job leaves behind for the caller to remove outside the database."""

    job_id: str
    study_name: str
    artifact_ids: list[str]


def spec_hash(spec: JobSpec) -> str:
    """SHA-256 of the canonical JSON of a validated spec (defaults filled in, keys sorted)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


#: What :func:`app.models.new_id` makes. Anything else cannot name a job, and is answered
#: without a query (PostgreSQL refuses NUL characters in text with an error, not a miss).
JOB_ID = re.compile(r"[0-9a-f]{32}")


def load(session: Session, job_id: str) -> Job | None:
    """The job row as the database has it now (bypasses stale identity-map copies)."""
    if not JOB_ID.fullmatch(job_id):
        return None
    return session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).first()


def create_job(
    session: Session, owner: str, spec: JobSpec, idempotency_key: str | None = None
) -> Job:
    """Queue a job for ``owner``; with a key, a retry of the same request returns the original.

    Raises Invalid (422) when the key was used with a different payload, and Conflict (409) when
    a concurrent request with the same key wins the unique constraint first.
    """
    digest = spec_hash(spec)
    if idempotency_key is not None:
        existing = session.scalars(
            select(Job).where(Job.owner == owner, Job.idempotency_key == idempotency_key)
        ).first()
        if existing is not None:
            if existing.spec_hash == digest:
                return existing
            raise Invalid(
                [FieldError("Idempotency-Key", "was already used with a different request body")]
            )
    now = utcnow()
    job_id = new_id()
    job = Job(
        id=job_id,
        owner=owner,
        state=JobState.queued,
        cancel_requested=False,
        spec=spec.model_dump(mode="json"),
        spec_hash=digest,
        idempotency_key=idempotency_key,
        created_at=now,
        updated_at=now,
        attempts=0,
        study_name=trial_attrs.study_name(job_id),
        study_ready=False,
        trial_slots=0,
        progress=JobProgress(trials_budget=spec.search.max_trials).model_dump(mode="json"),
        artifacts=[],
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:
        raise Conflict(
            "another request with this Idempotency-Key is being processed; retry shortly"
        ) from None
    return job


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job:
    """The job, or NotFound; with ``owner``, another owner's job is also NotFound (no leak)."""
    job = load(session, job_id)
    if job is None or (owner is not None and job.owner != owner):
        raise NotFound(f"job {job_id} not found")
    return job


def read_job(session: Session, job_id: str, owner: str) -> Row[Any]:
    """The job's columns as a row, without building an ORM object (the poll endpoint's read,
    :func:`app.api.views.job_document` takes either); NotFound exactly as :func:`get_job`."""
    row = None
    if JOB_ID.fullmatch(job_id):
        row = session.execute(select(Job.__table__).where(Job.id == job_id)).first()
    if row is None or row.owner != owner:
        raise NotFound(f"job {job_id} not found")
    return row


def _encode_token(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> tuple[datetime, str]:
    """The (created_at, id) a token holds; Invalid for anything :func:`_encode_token` never
    makes (a naive or date-only time, one out of range in UTC, a malformed id)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_text, job_id = json.loads(raw)
        created = datetime.fromisoformat(created_text)
        if created.tzinfo is None or not JOB_ID.fullmatch(job_id):
            raise ValueError("naive time or malformed id")
        return created.astimezone(UTC), job_id
    except (binascii.Error, ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise Invalid([FieldError("page_token", "is not a token this API returned")]) from exc


def list_jobs(
    session: Session,
    owner: str,
    state: JobState | str | None = None,
    page_size: int = 20,
    page_token: str | None = None,
) -> tuple[list[Job], str | None]:
    """One page of ``owner``'s jobs, newest first, and the token of the next page (or None).

    Keyset pagination on (created_at, id): pages stay stable while new jobs arrive.
    """
    query = select(Job).where(Job.owner == owner)
    if state is not None:
        query = query.where(Job.state == JobState(state))
    if page_token:
        created, last_id = _decode_token(page_token)
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < last_id))
        )
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1)
    jobs = list(session.scalars(query))
    if len(jobs) > page_size:
        return jobs[:page_size], _encode_token(jobs[page_size - 1])
    return jobs, None


def request_cancel(session: Session, job_id: str, owner: str) -> Job:
    """Cancel a job: queued -> cancelled now; running -> cancel_requested (workers stop soon).

    A finished job is returned unchanged (cancel is idempotent and best-effort, AIP-151): a
    retried cancel must not fail, and the returned state tells the caller what happened.
    """
    get_job(session, job_id, owner)
    now = utcnow()
    cancelled_now = write(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.queued)
        .values(state=JobState.cancelled, cancel_requested=True, finished_at=now, updated_at=now),
    )
    if not cancelled_now:
        write(
            session,
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.running, ~Job.cancel_requested)
            .values(cancel_requested=True, updated_at=now),
        )
    return get_job(session, job_id, owner)


def delete_job(session: Session, job_id: str, owner: str) -> DeletedJob:
    """Delete a finished job's row; the caller then removes its artifacts and Optuna study.

    Raises Conflict for a queued or running job (cancel it first, then delete).
    """
    job = get_job(session, job_id, owner)
    if job.state not in FINISHED_STATES:
        raise Conflict(f"job {job_id} is {job.state.value}; cancel it and wait until it is done")
    deleted = write(session, delete(Job).where(Job.id == job_id, Job.state.in_(FINISHED_STATES)))
    if not deleted:
        raise NotFound(f"job {job_id} not found")
    session.expunge(job)
    return DeletedJob(
        job_id=job_id,
        study_name=job.study_name,
        artifact_ids=[artifact["artifact_id"] for artifact in job.artifacts],
    )
