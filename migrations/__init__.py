"""The service's Alembic migrations, shipped as a package so they run from an installed wheel.

Optuna keeps its own schema in the same database by default and stamps Alembic's *default*
``alembic_version`` table, so ours uses :data:`VERSION_TABLE`, and :func:`is_optuna_table`
keeps Optuna's tables out of autogenerate and ``alembic check`` (two applications sharing one
version table corrupt each other's revision: mlflow#3374).
"""

from __future__ import annotations

from pathlib import Path

VERSION_TABLE = "surgical_alembic_version"
SCRIPT_LOCATION = str(Path(__file__).resolve().parent)

# Optuna's RDB schema (unchanged since 3.2): studies, study_*, trials, trial_*, version_info,
# plus the default alembic_version row Optuna stamps.
_OPTUNA_TABLES = frozenset({"studies", "trials", "version_info", "alembic_version"})
_OPTUNA_PREFIXES = ("study_", "trial_")


def is_optuna_table(name: str | None) -> bool:
    """True for the tables Optuna owns in a shared database."""
    return name is not None and (name in _OPTUNA_TABLES or name.startswith(_OPTUNA_PREFIXES))
