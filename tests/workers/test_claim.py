"""The claim is where a job's spec becomes typed: a row whose stored spec no longer parses is
failed with its reason instead of crashing the worker later (real SQLite, no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from torch import nn

from app import store
from app.db import make_engine, make_session_factory, session_scope
from app.models import Job, JobState
from app.settings import Settings
from selector.io.models_io import classifier_width
from tests.app.conftest import Databases
from tests.app.helpers import spec
from workers.job import ClaimedJob
from workers.loop import build_context, run_once


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    dbs = Databases(tmp_path)
    return Settings(data_dir=tmp_path, database_url=dbs.migrated("sqlite"),
                    artifact_dir=tmp_path / "artifacts", auth=False)


def test_a_stored_spec_that_no_longer_parses_fails_the_job_with_its_reason(settings: Settings):
    factory = make_session_factory(make_engine(settings))
    with session_scope(factory) as session:
        job_id = store.create_job(session, "local", spec()).id
        session.execute(update(Job).where(Job.id == job_id).values(
            spec={"model": {"source": "builtin"}, "data": {"source": "builtin"},
                  "search": {"strategy": "annealing"}}))
    ctx = build_context(settings, device="cpu", worker_id="w1")
    assert run_once(ctx)  # it found (and ended) work
    with session_scope(factory) as session:
        job = store.get_job(session, job_id)
        assert job.state == JobState.failed
        assert job.error is not None and job.error["type"] == "InvalidSpec"
        assert "search.strategy" in job.error["detail"]
    assert not run_once(ctx)  # nothing left: the worker survives and the queue is empty


def test_the_claimed_job_carries_the_typed_spec_with_its_defaults(settings: Settings):
    factory = make_session_factory(make_engine(settings))
    with session_scope(factory) as session:
        job_id = store.create_job(session, "local", spec(strategy="paper")).id
        row = store.get_job(session, job_id)
        claimed = ClaimedJob.from_row(row)
    assert claimed.id == job_id
    assert (claimed.spec.search.strategy, claimed.spec.search.epochs, claimed.spec.seed) == (
        "paper", 15, 0)


@pytest.mark.parametrize(
    ("model", "width"),
    [
        (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 7)), 7),
        # A convolutional classifier after the last linear layer (SqueezeNet's shape): the
        # class count is the conv's width, which "the last nn.Linear" used to miss.
        (nn.Sequential(nn.Linear(4, 8), nn.Unflatten(1, (8, 1, 1)), nn.Conv2d(8, 5, 1)), 5),
        (nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)), None),
    ],
    ids=["linear-head", "conv-head", "norm-last"],
)
def test_the_workers_read_the_class_count_with_the_engines_rule(model: nn.Module, width):
    assert classifier_width(model) == width
