"""One database holding finished jobs, built once per test session, for the tests that read
results back (client, CLI, dashboard).

Running a worker costs seconds of CPU, so the suite runs it once: a tiny job (3 trials of one
epoch on 10 images per class) that succeeds, and a job whose data file is broken, which fails
fast. The worker runs in-process and single-threaded. Tests may add jobs to this database but
must not cancel, delete or otherwise change these two.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.settings import Settings

TINY_SPEC: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {"source": "builtin", "name": "mnist", "shift": "impulse_noise", "severity": 4,
             "n_per_class": 10, "n_val": 5, "n_test": 5},
    "search": {"strategy": "auto", "max_trials": 3, "epochs": 1, "batch_size": 32},
    "seed": 0,
}

#: A spec the API accepts but no worker should ever run (the tests keep it queued).
QUEUED_SPEC: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {"source": "builtin", "name": "mnist", "shift": "fog"},
}


@dataclass(frozen=True)
class FinishedJobs:
    """Settings of the service that ran them (auth off) and the two jobs' ids."""

    settings: Settings
    succeeded: str
    failed: str
    broken_file: Path


def job_settings(root: Path, data_dir: Path, **overrides: Any) -> Settings:
    """Settings on a SQLite database under ``root``; built-in models come from ``data_dir``."""
    datasets = root / "datasets"
    datasets.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite:///{root / 'jobs.db'}",
        artifact_dir=root / "artifacts",
        data_roots=[datasets],
        auth=False,
        retry_after_seconds=1,
        **overrides,
    )


def build_finished_jobs(root: Path, data_dir: Path) -> FinishedJobs:
    import torch
    from fastapi.testclient import TestClient

    from app.client import Client
    from app.main import create_app
    from app.migrate import upgrade
    from workers.loop import build_context, run_worker

    settings = job_settings(root, data_dir)
    upgrade(settings)
    broken = settings.data_roots[0] / "broken.pt"
    broken.write_bytes(b"this is not a tensors file")
    with TestClient(create_app(settings)) as http, Client(http=http) as client:
        succeeded = client.submit(TINY_SPEC).id
        failed = client.submit({
            "model": {"source": "builtin", "name": "mnist-resnet"},
            "data": {"source": "tensors", "path": broken.as_uri()},
            "search": {"max_trials": 2, "epochs": 1},
        }).id
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            run_worker(build_context(settings, device="cpu"), drain=True)
        finally:
            torch.set_num_threads(threads)
        ok, bad = client.get(succeeded), client.get(failed)
    assert ok.state == "succeeded", ok.error
    assert bad.state == "failed", bad
    return FinishedJobs(settings=settings, succeeded=succeeded, failed=failed, broken_file=broken)


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
