"""One fast case of each fault of issue 13 that the other suites do not already cover.

(A worker killed mid-trial: ``test_jobs_end_to_end``; an API restart under a polling client:
``tests/client/test_retry``.) Here: the database of a running job becomes unreachable and comes
back (on PostgreSQL, without restarting the shared server: the test's own database refuses new
connections and every backend connection to it is terminated), and the artifact store fails
when the job finalizes. ``benchmarks/chaos.py`` measures the same faults at scale.
"""

from __future__ import annotations

import errno
import threading
import time
from typing import Any, BinaryIO

import httpx
import pytest
from optuna.artifacts import FileSystemArtifactStore
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.app.conftest import PG_BASE_URL
from tests.workers.conftest import Service, tiny_job, wait_until
from workers.loop import build_context, run_worker

pytestmark = pytest.mark.slow


def _set_outage(database_url: str, down: bool) -> None:
    """Make one database unreachable (new connections refused, live ones cut) or reachable."""
    name = make_url(database_url).database
    admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(not down).lower()}'))
            if down:
                conn.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = :name AND pid <> pg_backend_pid()"),
                    {"name": name},
                )
    finally:
        admin.dispose()


@pytest.mark.postgres
def test_a_database_outage_mid_job_is_ridden_through(postgres_service: Service):
    """Connections cut mid-trial, and none possible for a few seconds: /readyz says 503 during
    the outage and 200 after it; the worker and the API reconnect; the job succeeds."""
    service = postgres_service
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=4))
        worker = service.start_worker("--drain")
        wait_until(lambda: service.trials(job.id), 180, "the first trial")
        _set_outage(service.settings.database_url, down=True)
        try:
            ready = httpx.get(f"{service.url}/readyz", timeout=10)
            assert ready.status_code == 503, ready.text
            time.sleep(3)
        finally:
            _set_outage(service.settings.database_url, down=False)
        wait_until(lambda: httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200,
                   30, "/readyz to recover")
        assert worker.wait(timeout=300) == 0, service.worker_logs()
        final = client.get(job.id)
    assert final.state == "succeeded", (final.error, service.worker_logs())


class _FullAtFinalize(FileSystemArtifactStore):
    """A real file store whose disk is full for the plots, which only finalize writes."""

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        head = content_body.read(8)
        content_body.seek(0)
        if head.startswith(b"\x89PNG"):
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write(artifact_id, content_body)


def test_an_artifact_store_failing_at_finalize_fails_the_job_with_its_reason(
    sqlite_service: Service, tmp_path: Any
):
    service = sqlite_service
    ctx = build_context(service.settings, device="cpu")
    ctx.artifact_store = _FullAtFinalize(str(tmp_path / "artifacts"))
    (tmp_path / "artifacts").mkdir(exist_ok=True)
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=2, epochs=1))
        worker = threading.Thread(target=run_worker, args=(ctx,), kwargs={"drain": True})
        worker.start()
        worker.join(timeout=300)
        final = client.get(job.id)
    assert not worker.is_alive()
    assert final.state == "failed", final
    assert final.error is not None and "No space left on device" in final.error.detail
