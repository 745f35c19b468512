"""The client rides through an API restart and a database outage (issue 13: recovery).

A real uvicorn server is stopped while a client polls, and started again on the same port a
moment later: the client's GET retries connect errors, then succeeds. A 503 (database down) is
retried at the ``Retry-After`` pace. Requests that are not safe to repeat are not retried.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from app.client import Client, TransportError
from app.main import create_app
from app.migrate import upgrade
from app.settings import Settings
from tests.app.server import serve

SPEC = {"model": {"source": "builtin"}, "data": {"source": "builtin", "shift": "fog"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path, auth=False, retry_after_seconds=1)
    upgrade(settings)
    return settings


def test_a_polling_client_rides_through_an_api_restart(settings: Settings) -> None:
    with serve(create_app(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        client = Client(url, retry_for=20)
        job_id = client.submit(SPEC).id
    # The server is down now; bring it back in a second, while the client is retrying.
    restarted = threading.Event()

    def restart() -> None:
        time.sleep(1.0)
        with serve(create_app(settings), port=port):
            restarted.set()
            time.sleep(5)

    thread = threading.Thread(target=restart, daemon=True)
    thread.start()
    started = time.monotonic()
    job = client.get(job_id)
    assert job.id == job_id and restarted.is_set()
    assert time.monotonic() - started >= 0.9
    thread.join()
    client.close()


def test_requests_that_are_not_safe_to_repeat_fail_at_once(settings: Settings) -> None:
    with serve(create_app(settings)) as url:
        pass
    with Client(url, retry_for=20) as client:
        started = time.monotonic()
        with pytest.raises(TransportError):
            client.submit(SPEC)  # a POST without an Idempotency-Key
        with pytest.raises(TransportError):
            Client(url, retry_for=0).get("0" * 32)
        assert time.monotonic() - started < 5


def test_503_is_retried_until_the_database_is_back(settings: Settings, tmp_path: Path) -> None:
    """With the database file unreadable the API answers 503; once it is back, 200."""
    app = create_app(settings)
    with serve(app) as url, Client(url, retry_for=20) as client:
        job_id = client.submit(SPEC, idempotency_key="k1").id
        database = Path(settings.database_url.removeprefix("sqlite:///"))
        hidden = database.with_suffix(".away")
        app.state.engine.dispose()
        database.rename(hidden)
        (database.parent / "surgical.db").mkdir()  # opening a directory fails: 503

        def bring_back() -> None:
            time.sleep(1.5)
            (database.parent / "surgical.db").rmdir()
            hidden.rename(database)
            app.state.engine.dispose()

        threading.Thread(target=bring_back, daemon=True).start()
        started = time.monotonic()
        assert client.get(job_id).id == job_id
        assert time.monotonic() - started >= 1.0
