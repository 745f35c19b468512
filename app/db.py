"""Engines and the one transaction helper.

``make_engine(settings)`` builds the engine for the jobs database; nothing is created at import
time. ``session_scope(factory)`` is the only place that commits or rolls back (the optuna
``_create_scoped_session`` pattern): the functions in :mod:`app.store` only add, execute and
flush, so a caller can group several of them into one unit of work.

SQLite notes: WAL lets readers proceed while one writer writes; ``busy_timeout`` makes a second
writer wait instead of failing with "database is locked"; pysqlite's default transaction
handling is kept on purpose: it begins a transaction at the first write statement, so a guarded
``UPDATE`` takes the write lock before it reads, and a read never pins an old snapshot that a
later write in the same session could not upgrade (SQLITE_BUSY_SNAPSHOT fails without waiting).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, Executable, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from app.settings import Settings

SQLITE_BUSY_TIMEOUT_S = 30


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def engine_from_url(url: str, **kwargs: Any) -> Engine:
    """An engine with the project's per-dialect settings (used for both jobs and tests)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def make_engine(settings: Settings | str) -> Engine:
    """The engine of the jobs database: ``settings.database_url``, or a URL given directly."""
    return engine_from_url(settings if isinstance(settings, str) else settings.database_url)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded attributes after commit, so returned jobs stay readable."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def write(session: Session, statement: Executable) -> int:
    """Run an UPDATE or DELETE as plain SQL (no ORM session sync); the number of rows matched.

    Guarded transitions read this count: 0 means the WHERE guard did not match.
    """
    result = session.execute(statement, execution_options={"synchronize_session": False})
    return cast(CursorResult[Any], result).rowcount


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block ends normally, roll back on any exception."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
