"""Our Alembic schema and Optuna's storage share one database without touching each other."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from alembic import command
from sqlalchemy import inspect, text

from app.db import engine_from_url
from app.migrate import alembic_config, create_optuna_storage, head_revision, upgrade
from app.settings import Settings
from migrations import VERSION_TABLE
from tests.app.conftest import BACKENDS, Databases

REPO = Path(__file__).resolve().parents[2]
OPTUNA_HEAD = "v3.2.0.a"


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, databases: Databases) -> Iterator[str]:
    url = databases.empty(request.param)
    yield url
    databases.drop(url)


def _versions(url: str) -> tuple[list[str], list[str], set[str]]:
    """(our version rows, Optuna's version rows, table names)."""
    engine = engine_from_url(url)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            ours = (
                list(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
                if VERSION_TABLE in tables
                else []
            )
            theirs = (
                list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
                if "alembic_version" in tables
                else []
            )
    finally:
        engine.dispose()
    return ours, theirs, tables


def test_upgrade_on_empty_db_then_check_is_clean(empty_url: str) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, "head")
    command.check(config)  # models and migrations agree
    create_optuna_storage(empty_url)
    command.check(config)  # Optuna's tables are invisible to autogenerate
    ours, theirs, tables = _versions(empty_url)
    assert ours == [head_revision()] and theirs == [OPTUNA_HEAD]
    assert {"jobs", "api_keys", "studies", "trials"} <= tables


def test_both_schemas_keep_their_own_version_rows(empty_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=empty_url)
    upgrade(settings)
    assert _versions(empty_url)[:2] == ([head_revision()], [OPTUNA_HEAD])
    upgrade(settings)  # again: nothing changes
    create_optuna_storage(empty_url)  # Optuna opening the storage again: nothing changes
    optuna.create_study(study_name="s", storage=empty_url).optimize(lambda t: 1.0, n_trials=1)
    assert _versions(empty_url)[:2] == ([head_revision()], [OPTUNA_HEAD])
    command.downgrade(alembic_config(empty_url), "base")  # ours go, Optuna's stay
    ours, theirs, tables = _versions(empty_url)
    assert ours == [] and theirs == [OPTUNA_HEAD]
    assert "jobs" not in tables and "studies" in tables
    assert len(optuna.load_study(study_name="s", storage=empty_url).trials) == 1


def test_optuna_first_then_ours(empty_url: str) -> None:
    create_optuna_storage(empty_url)
    command.upgrade(alembic_config(empty_url), "head")
    assert _versions(empty_url)[:2] == ([head_revision()], [OPTUNA_HEAD])


def test_separate_optuna_storage_url(empty_url: str, databases: Databases, tmp_path: Path) -> None:
    storage_url = databases.empty("sqlite")
    upgrade(Settings(data_dir=tmp_path, database_url=empty_url, optuna_storage_url=storage_url))
    ours, theirs, tables = _versions(empty_url)
    assert ours == [head_revision()] and theirs == [] and "studies" not in tables
    ours, theirs, tables = _versions(storage_url)
    assert ours == [] and theirs == [OPTUNA_HEAD] and "jobs" not in tables


def test_alembic_cli_with_root_ini(empty_url: str) -> None:
    env = {**os.environ, "SURGICAL_DATABASE_URL": empty_url}
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini")]
    for args in (["upgrade", "head"], ["check"]):
        done = subprocess.run(
            [*alembic, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    assert _versions(empty_url)[0] == [head_revision()]
