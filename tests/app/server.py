"""A real uvicorn server on a free loopback port, in a thread, for end-to-end tests."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import uvicorn
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from app.auth import create_api_key
from app.db import make_engine, make_session_factory, session_scope
from app.main import create_app
from app.settings import Settings


@contextmanager
def serve(app: FastAPI, port: int = 0) -> Iterator[str]:
    """Run ``app`` until the block ends; yields its base URL. ``port`` 0: a free one (the OS
    picks it, so there is no bind race with other runs); a given port restarts a server."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


@contextmanager
def serve_api(settings: Settings, app: FastAPI | None = None) -> Iterator[Api]:
    """Serve ``app`` (default: the service on ``settings``) until the block ends; yields an
    :class:`Api` on it with a session factory on the same database (for module fixtures)."""
    engine = make_engine(settings)
    try:
        with serve(app or create_app(settings)) as base_url:
            yield Api(base_url, settings, make_session_factory(engine))
    finally:
        engine.dispose()


@dataclass
class Api:
    """A running server plus direct database access, to play the worker's part."""

    base_url: str
    settings: Settings
    factory: sessionmaker[Session]

    def new_key(self, owner: str | None = None) -> str:
        with session_scope(self.factory) as session:
            return create_api_key(session, owner or f"user-{uuid.uuid4().hex[:8]}")

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)
