"""Resource schemas of the REST API (``...Public``), and the records workers write into a job.

``JobProgress``, ``JobError`` and ``ArtifactRecord`` are what :mod:`app.store` validates when a
worker calls ``update_progress``, ``fail`` and ``add_artifact``; the ``...Public`` schemas are
what clients read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.spec import JobSpec

JobStateName = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobPhase = Literal["diagnosing", "searching", "finishing"]


class JobProgress(BaseModel):
    """Live progress; ``update_progress`` replaces it whole (no read-modify-write races)."""

    model_config = ConfigDict(extra="forbid")

    trials_done: int = Field(default=0, ge=0)
    trials_budget: int | None = Field(default=None, ge=0)
    best_val_acc: float | None = None
    best_label: str | None = None
    best_groups: list[str] | None = None
    phase: JobPhase | None = Field(
        default=None, description="What the running job is doing: 'diagnosing' (forward passes "
        "before any training), 'searching' (trials) or 'finishing' (result and artifacts); "
        "null once the job is done or before a worker has started it.")
    diagnosis: str | None = Field(
        default=None, description="The shift diagnosis's verdict as soon as it is made, before "
        "any trial has trained, e.g. 'input-level: tune block1 first'; the whole diagnosis is "
        "in the result.")
    deadline: datetime | None = Field(
        default=None, description="When the job's time budget (search.max_minutes) runs out: "
        "no trial starts after it. Null without a time budget.")


class JobError(BaseModel):
    """Why a job failed: an error class name and a human-readable detail (no stack traces)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(examples=["DataError"])
    detail: str = Field(examples=["train directory is empty"])


class ArtifactRecord(BaseModel):
    """An artifact of a job as stored on the job row; ``artifact_id`` is the store's key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255, pattern=r"^[^/\\\x00-\x1f]+$")
    artifact_id: str = Field(min_length=1)
    content_type: str = "application/octet-stream"
    size: int | None = Field(default=None, ge=0)
    description: str | None = None


class JobLinks(BaseModel):
    self: str
    trials: str
    result: str
    artifacts: str
    cancel: str


class JobPublic(BaseModel):
    """A job as clients see it (modelled on AIP-151 long-running operations)."""

    id: str = Field(examples=["5f0c6c3e9b8f4a7d8e2f1a0b3c4d5e6f"])
    state: JobStateName
    done: bool = Field(description="True once state is succeeded, failed or cancelled.")
    cancel_requested: bool
    spec: JobSpec
    progress: JobProgress
    error: JobError | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker_id: str | None = None
    attempts: int = 0
    links: JobLinks


class JobsPublic(BaseModel):
    """One page of jobs, newest first; pass ``next_page_token`` back for the next page."""

    data: list[JobPublic]
    next_page_token: str | None = None


class TrialPublic(BaseModel):
    """One Optuna trial of a job, with the user attributes workers record (app.trial_attrs)."""

    number: int
    state: str = Field(examples=["complete"], description="running|complete|pruned|fail|waiting")
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    method: str | None = None
    groups: list[str] | None = None
    lr: float | None = None
    val_acc: float | None = Field(default=None, description="Best validation accuracy (value).")
    val_acc_per_epoch: list[float] | None = None
    best_epoch: int | None = None
    test_acc: float | None = None
    tuned_params: int | None = None
    tuned_share: float | None = None
    duration_s: float | None = None
    worker: str | None = None
    device: str | None = None
    source: str | None = None
    fail_reason: str | None = None
    stop_reason: str | None = Field(
        default=None, description="Why a complete trial trained fewer epochs than asked, e.g. "
        "its loss turned non-finite (its finite epochs were kept).")
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None


class TrialsPublic(BaseModel):
    """A job's trials by number; empty until the job's study exists."""

    data: list[TrialPublic]


class ArtifactPublic(BaseModel):
    """A downloadable output of a job (weights, reports, plots)."""

    name: str = Field(examples=["best.safetensors"])
    content_type: str
    size: int | None = None
    description: str | None = None
    href: str = Field(examples=["/v1/jobs/5f0c.../artifacts/best.safetensors"])


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]


class ProblemFieldError(BaseModel):
    field: str = Field(examples=["search.max_trials"])
    message: str
    loc: list[str | int] | None = None
    type: str | None = None


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``); extension members allowed."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[ProblemFieldError] | None = None
