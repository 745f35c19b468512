"""Schema setup: our Alembic migrations plus Optuna's storage tables, run once before workers.

Optuna creates its tables on first use, but several processes doing that on an empty database
at once crash (optuna#1092), so :func:`upgrade` creates them here, once, before any worker
starts. Our migrations run from a :class:`alembic.config.Config` built in code, with the script
location taken from the installed ``migrations`` package, so no ``alembic.ini`` is needed.
"""

from __future__ import annotations

import logging
from functools import cache

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from app.db import SQLITE_BUSY_TIMEOUT_S, engine_from_url
from app.settings import Settings
from migrations import SCRIPT_LOCATION, VERSION_TABLE

log = logging.getLogger(__name__)


def alembic_config(database_url: str) -> Config:
    """An Alembic config for our migrations against ``database_url`` (``%`` escaped for ini)."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@cache
def head_revision() -> str | None:
    """The newest revision shipped with this code (read once per process)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision stamped in our version table, or None when our schema is not there."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade_schema(database_url: str) -> None:
    """Run our migrations to head on ``database_url`` (idempotent)."""
    engine = engine_from_url(database_url)
    try:
        with engine.begin() as connection:
            config = alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def create_optuna_storage(storage_url: str) -> None:
    """Create Optuna's tables and stamp its version row once (a no-op when they exist)."""
    import optuna

    engine_kwargs = {}
    if storage_url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    storage = optuna.storages.RDBStorage(storage_url, engine_kwargs=engine_kwargs)
    storage.engine.dispose()


def upgrade(settings: Settings) -> None:
    """Bring the jobs database to head and make sure Optuna's storage exists."""
    upgrade_schema(settings.database_url)
    create_optuna_storage(settings.storage_url)
    log.info("database at revision %s; optuna storage ready", head_revision())
