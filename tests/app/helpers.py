"""Small builders shared by the service tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app import store
from app.db import session_scope
from app.models import Job, JobState, utcnow
from app.schemas import JobResult, JobSpec

MINIMAL: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {"source": "builtin", "name": "mnist"},
}

RESULT: dict[str, Any] = {
    "recommendation": {
        "label": "block1", "method": "surgical", "groups": ["block1"], "lr": 0.001,
        "val_acc": 0.91, "test_acc": 0.9, "tuned_share": 0.03,
    },
    "leaderboard": [
        {"label": "block1", "method": "surgical", "groups": ["block1"], "lr": 0.001,
         "val_acc": 0.91, "test_acc": 0.9, "tuned_params": 5000, "tuned_share": 0.03,
         "best_epoch": 7, "trial_number": 3},
    ],
    "groups": [{"name": "block1", "num_params": 5000, "share": 0.03}],
    "rgn_profile": None,
    "baseline_val_acc": 0.62,
    "notes": ["smoke"],
}  # fmt: skip
#: RESULT as the store keeps it and the API serves it: every optional field filled in.
RESULT_STORED: dict[str, Any] = JobResult.model_validate(RESULT).model_dump(mode="json")


def spec(**search: Any) -> JobSpec:
    body = dict(MINIMAL)
    if search:
        body["search"] = search
    return JobSpec.model_validate(body)


def submit(factory: sessionmaker[Session], owner: str = "alice", **search: Any) -> str:
    with session_scope(factory) as session:
        return store.create_job(session, owner, spec(**search)).id


def force_running(factory: sessionmaker[Session], job_id: str, worker_id: str = "w1") -> None:
    """Put one specific job in the running state (tests that must not claim other jobs)."""
    now = utcnow()
    with session_scope(factory) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.running, worker_id=worker_id, heartbeat_at=now, started_at=now)
        )


def state_of(factory: sessionmaker[Session], job_id: str) -> Job:
    with session_scope(factory) as session:
        return store.get_job(session, job_id)
