"""Alembic environment: our own version table, Optuna's tables filtered out.

The connection comes from ``config.attributes["connection"]`` when :mod:`app.migrate` runs us
programmatically; otherwise from the ``sqlalchemy.url`` option, or else from ``Settings()`` (the
``SURGICAL_DATABASE_URL`` environment), which is what the ``alembic`` CLI with the repository's
``alembic.ini`` uses.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection

from app.db import engine_from_url
from app.models import Base
from app.settings import Settings
from migrations import VERSION_TABLE, is_optuna_table

config = context.config
if config.config_file_name is not None:  # the CLI: take logging from alembic.ini
    fileConfig(config.config_file_name, disable_existing_loggers=False)
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Reflect only tables that are not Optuna's (and never its indexes or columns)."""
    if type_ == "table":
        return not is_optuna_table(name)
    return not is_optuna_table(parent_names.get("table_name"))


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Second guard: a table of ours can never be named like one of Optuna's."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return not is_optuna_table(table)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object,
        compare_type=True,
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def _run_with(connection: Connection) -> None:
    _configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_with(connection)
        return
    engine = engine_from_url(_url())
    try:
        with engine.begin() as conn:
            _run_with(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
