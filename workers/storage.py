"""Optuna storage and artifact store for workers, built from the service's settings.

Trial heartbeats are what let several workers share a job safely: a worker that dies mid-trial
stops beating, the next worker to ask for a trial marks that trial FAIL, and
``RetryHeartbeatStaleTrialCallback`` enqueues a copy that someone re-runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

StaleHook = Callable[[optuna.Study, FrozenTrial], None]

# Trial heartbeats, fail_stale_trials and RetryHeartbeatStaleTrialCallback are marked
# experimental in Optuna 5; the workers depend on them by design, so the warning is noise.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def serialise_sqlite_writers(engine: sqlalchemy.Engine) -> None:
    """Make every SQLite transaction ``BEGIN IMMEDIATE``.

    Optuna pops queued (WAITING) trials with ``SELECT ... FOR UPDATE``, which SQLite ignores;
    taking the write lock at ``BEGIN`` gives the same guarantee on one host, so two local
    workers can never pop the same queued trial. PostgreSQL needs nothing of this.
    """
    if engine.dialect.name != "sqlite":
        return

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection: sqlalchemy.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()


def open_storage(
    url: str,
    *,
    heartbeat_interval: int,
    grace_period: int,
    max_retry: int = 3,
    on_stale: StaleHook | None = None,
) -> RDBStorage:
    """An RDB storage with trial heartbeats and a retry of trials whose worker died."""
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def stale_callback(study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial)
        if on_stale is not None:
            on_stale(study, trial)

    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    storage = RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=stale_callback,
    )
    serialise_sqlite_writers(storage.engine)
    return storage
