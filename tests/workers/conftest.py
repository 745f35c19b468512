"""Fixtures for end-to-end worker tests: a real API server, real databases (SQLite and
PostgreSQL), real worker processes, and the tiny built-in case (10 images per class, 2 epochs:
about a second per trial on one core)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pytest

from app.client import Client
from app.db import make_engine, make_session_factory
from app.main import create_app
from app.settings import Settings
from app.trial_attrs import study_name
from tests.app.conftest import Databases
from tests.app.server import serve
from tests.finished_jobs import TINY_SPEC

ROOT = Path(__file__).resolve().parents[2]

#: The tiny built-in case shared with tests/finished_jobs.py, with two epochs per trial.
TINY_JOB: dict[str, Any] = {**TINY_SPEC, "search": {**TINY_SPEC["search"], "max_trials": 5, "epochs": 2}}


def tiny_job(**search: Any) -> dict[str, Any]:
    return {**TINY_JOB, "search": {**TINY_JOB["search"], **search}}


@pytest.fixture(scope="session")
def worker_databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("worker-dbs"))
    try:
        yield dbs
    finally:
        dbs.close()


@dataclass
class Service:
    """A running API plus what a test needs to start workers against the same database."""

    url: str
    settings: Settings
    env: dict[str, str]
    log_dir: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def client(self) -> Client:
        return Client(self.url)

    def study(self, job_id: str) -> optuna.Study:
        return optuna.load_study(study_name=study_name(job_id), storage=self.settings.storage_url)

    def trials(self, job_id: str, states: tuple[Any, ...] | None = None) -> list[Any]:
        """The job's trials, or none while its study does not exist yet."""
        try:
            return self.study(job_id).get_trials(states=states)
        except KeyError:
            return []

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"worker-{len(self.workers)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--device", "cpu", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )
        self.workers.append(process)
        return process

    def worker_logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"worker-{i}.log").read_text(errors="replace")[-3000:]
            for i in range(len(self.workers))
        )


def wait_until(condition: Callable[[], Any], timeout: float = 120, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _service(backend: str, dbs: Databases, tmp_path: Path, data_dir: Path,
             **overrides: Any) -> Iterator[Service]:
    """A live API over a fresh database; ``overrides``: more settings (e.g. an allowlist)."""
    url = dbs.migrated(backend)
    settings = Settings(
        data_dir=data_dir,
        database_url=url,
        artifact_dir=tmp_path / "artifacts",
        auth=False,
        heartbeat_seconds=1,
        stale_after_seconds=5,
        trial_heartbeat_seconds=1,
        trial_grace_seconds=4,
        retry_after_seconds=1,
        **overrides,
    )
    env = {
        **os.environ,
        "SURGICAL_DATA_DIR": str(data_dir),
        "SURGICAL_DATABASE_URL": url,
        "SURGICAL_ARTIFACT_DIR": str(tmp_path / "artifacts"),
        "SURGICAL_AUTH": "false",
        "SURGICAL_HEARTBEAT_SECONDS": "1",
        "SURGICAL_STALE_AFTER_SECONDS": "5",
        "SURGICAL_TRIAL_HEARTBEAT_SECONDS": "1",
        "SURGICAL_TRIAL_GRACE_SECONDS": "4",
        "SURGICAL_TORCH_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    (tmp_path / "logs").mkdir(exist_ok=True)
    service = None
    try:
        with serve(create_app(settings)) as base_url:
            service = Service(base_url, settings, env, tmp_path / "logs")
            yield service
    finally:
        if service is not None:
            for process in service.workers:
                if process.poll() is None:
                    process.kill()
                process.wait(timeout=30)
        make_engine(url).dispose()
        dbs.drop(url)


@pytest.fixture
def sqlite_service(worker_databases: Databases, tmp_path: Path, builtin_data_dir: Path,
                   mnist_resnet: Any) -> Iterator[Service]:
    yield from _service("sqlite", worker_databases, tmp_path, builtin_data_dir)


@pytest.fixture
def postgres_service(worker_databases: Databases, tmp_path: Path, builtin_data_dir: Path,
                     mnist_resnet: Any) -> Iterator[Service]:
    yield from _service("postgresql", worker_databases, tmp_path, builtin_data_dir)


def session_factory(settings: Settings):
    return make_session_factory(make_engine(settings))
