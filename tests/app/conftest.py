"""Fixtures for the service tests: every database test runs on SQLite and on PostgreSQL.

PostgreSQL is a real dependency (``make test`` starts it): when it is down these tests fail,
they never skip. Databases are named ``surgical_t_<random>`` so engineers running the suite at
the same time never collide; a migrated template is built once per session and cloned per test
module (cloning takes ~0.1 s, dropping ~0.5 s, so per-test databases would cost minutes); each
test then starts from empty tables.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_session_factory
from app.migrate import upgrade
from app.models import ApiKey, Job
from app.settings import Settings
from tests.app.server import Api

PG_BASE_URL = os.environ.get(
    "SURGICAL_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def unique_name(kind: str = "t") -> str:
    return f"surgical_{kind}_{uuid.uuid4().hex[:16]}"


class Databases:
    """Creates and drops test databases; one instance per test session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._admin: Engine | None = None
        self._templates: dict[str, str] = {}

    @property
    def admin(self) -> Engine:
        if self._admin is None:
            self._admin = create_engine(PG_BASE_URL, isolation_level="AUTOCOMMIT")
        return self._admin

    def _pg_url(self, name: str) -> str:
        return make_url(PG_BASE_URL).set(database=name).render_as_string(hide_password=False)

    def _template(self, backend: str) -> str:
        if backend not in self._templates:
            url = self.empty(backend, kind="tpl")
            upgrade(Settings(data_dir=self.root, database_url=url))
            self._templates[backend] = url
        return self._templates[backend]

    def empty(self, backend: str, kind: str = "t") -> str:
        """A new database with no tables at all."""
        name = unique_name(kind)
        if backend == "sqlite":
            return f"sqlite:///{self.root / (name + '.db')}"
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        return self._pg_url(name)

    def migrated(self, backend: str) -> str:
        """A new database with our schema at head and Optuna's tables (a template clone)."""
        template = self._template(backend)
        name = unique_name()
        if backend == "sqlite":
            target = self.root / f"{name}.db"
            source_db = sqlite3.connect(make_url(template).database or "")
            target_db = sqlite3.connect(target)
            try:
                source_db.backup(target_db)  # consistent even if a WAL file is around
            finally:
                source_db.close()
                target_db.close()
            return f"sqlite:///{target}"
        template_name = make_url(template).database
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"'))
        return self._pg_url(name)

    def drop(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(f"{parsed.database}{suffix}").unlink(missing_ok=True)
            return
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))

    def close(self) -> None:
        for url in self._templates.values():
            self.drop(url)
        if self._admin is not None:
            self._admin.dispose()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Databases]:
    dbs = Databases(tmp_path_factory.mktemp("databases"))
    try:
        yield dbs
    finally:
        dbs.close()


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(request: pytest.FixtureRequest, databases: Databases) -> Iterator[str]:
    """A migrated database shared by one test module on one backend."""
    url = databases.migrated(request.param)
    yield url
    databases.drop(url)


@pytest.fixture
def db_url(module_db_url: str) -> Iterator[str]:
    """The module's database with empty jobs and api_keys tables."""
    engine = make_engine(module_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(Job))
            conn.execute(delete(ApiKey))
    finally:
        engine.dispose()
    yield module_db_url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    data_root = tmp_path / "data"
    data_root.mkdir()
    return Settings(data_dir=tmp_path, database_url=db_url, data_roots=[data_root])


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def backend(db_url: str) -> str:
    return make_url(db_url).get_backend_name()


@pytest.fixture
def client(api: Api) -> Iterator[httpx.Client]:
    """HTTP to the module's live server (its ``api`` fixture) under a fresh API key: a fresh
    owner, so the tests sharing one server never see each other's jobs."""
    with api.client(api.new_key()) as client:
        yield client
