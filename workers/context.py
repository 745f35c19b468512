"""What a worker carries from job to job: settings, database sessions, the Optuna storage, the
artifact store, the inputs cache, and the stop flags set by signals."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import optuna
from sqlalchemy.orm import Session, sessionmaker

from app.artifacts import ArtifactStore
from app.db import session_scope
from app.settings import Settings
from app.validation import check_spec
from workers.job import ClaimedJob
from workers.loading import InputsCache, JobInputs


@dataclass
class WorkerContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    storage: optuna.storages.RDBStorage
    artifact_store: ArtifactStore
    worker_id: str
    device: str | None
    cache: InputsCache
    stop: threading.Event = field(default_factory=threading.Event)
    stop_now: threading.Event = field(default_factory=threading.Event)
    #: Set when the owned job's heartbeat finds another worker owns it now (the job was
    #: requeued as stale): stop working on that job, not the worker.
    job_lost: threading.Event = field(default_factory=threading.Event)

    def session(self) -> contextlib.AbstractContextManager[Session]:
        """One unit of work on the jobs database (``app.db.session_scope`` owns the commit)."""
        return session_scope(self.session_factory)

    def inputs(self, job: ClaimedJob) -> JobInputs:
        """The job's model and data, loaded after the API's checks ran again here.

        :func:`app.validation.check_spec` (the API's own implementation) re-resolves every
        file reference against this worker's data roots, and checks the factory allowlist,
        right before anything is opened: a symlink swapped in after submit, or a setting
        that changed, fails the job with :class:`app.errors.InvalidSpec` naming the field.
        """
        return self.cache.get(check_spec(job.spec, self.settings))
