"""SQLAlchemy models of the service's own tables: ``jobs`` and ``api_keys``.

Optuna keeps its tables (``studies``, ``trials``, ...) in the same database by default; they are
not declared here and :mod:`migrations.env` keeps them out of autogenerate. Timestamps are UTC
and timezone-aware in Python on every backend (:class:`UTCDateTime`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import uuid4

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Enum,
    Index,
    Integer,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """The current time, UTC and aware: every timestamp the service writes comes from here."""
    return datetime.now(UTC)


def new_id() -> str:
    return uuid4().hex


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; returns aware datetimes even on SQLite, which keeps no time zone.

    Naive values are refused on the way in: a naive timestamp compared with UTC strings on SQLite
    would silently shift heartbeats by the local offset.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use app.models.utcnow()")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobState(StrEnum):
    """A job's lifecycle (names equal values, so every driver stores the same string)."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def done(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset({JobState.succeeded, JobState.failed, JobState.cancelled})

JOB_STATE_TYPE = Enum(
    JobState,
    name="job_state",
    native_enum=False,
    create_constraint=True,
    length=16,
    values_callable=lambda states: [state.value for state in states],
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Job(Base):
    """One fine-tuning search. ``spec`` is the validated :class:`app.schemas.JobSpec` as JSON."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200))
    state: Mapped[JobState] = mapped_column(JOB_STATE_TYPE, default=JobState.queued)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    worker_id: Mapped[str | None] = mapped_column(String(255))
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    study_name: Mapped[str] = mapped_column(String(255))
    study_ready: Mapped[bool] = mapped_column(default=False)
    # Global trial budget shared by the owner and helper workers (see store.reserve_trial_slot).
    trial_slots: Mapped[int] = mapped_column(Integer, default=0)
    trial_budget: Mapped[int | None] = mapped_column(Integer)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    artifacts: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    __table_args__ = (
        # Idempotency keys are scoped to their owner; NULL keys never collide.
        UniqueConstraint("owner", "idempotency_key"),
        # claim_next: oldest queued first.
        Index(None, "state", "created_at"),
        # list_jobs: an owner's jobs, newest first, keyset-paginated on (created_at, id).
        Index(None, "owner", "created_at", "id"),
    )


class ApiKey(Base):
    """An API key: only its SHA-256 is stored; ``prefix`` finds the row without the secret."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
