"""The client against the real app: in-process (``TestClient`` is an ``httpx.Client``) and over a
real uvicorn server, both on the session's finished jobs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.client import Client
from app.main import create_app
from tests.app.server import serve
from tests.finished_jobs import FinishedJobs


@pytest.fixture(scope="module")
def client(finished_jobs: FinishedJobs) -> Iterator[Client]:
    """A client on the real app in-process (no sockets)."""
    with TestClient(create_app(finished_jobs.settings)) as http, Client(http=http) as client:
        yield client


@pytest.fixture(scope="module")
def server_url(finished_jobs: FinishedJobs) -> Iterator[str]:
    """The real app behind a real uvicorn server on a free loopback port."""
    with serve(create_app(finished_jobs.settings)) as url:
        yield url
