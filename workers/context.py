"""What a worker carries from job to job: settings, database sessions, the Optuna storage, the
artifact store, the inputs cache, and the stop flags set by signals."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from sqlalchemy.orm import Session, sessionmaker

from app import trial_attrs as attrs
from app.db import session_scope
from app.settings import Settings
from selector.io.patch import diff_state_dict, save_weights
from workers import results
from workers.loading import InputsCache, JobInputs

log = logging.getLogger(__name__)

PATCH_ARTIFACT = "patch_artifact_id"
WEIGHTS_ARTIFACT = "weights_artifact_id"


@dataclass
class WorkerContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    storage: optuna.storages.RDBStorage
    artifact_store: Any
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

    def inputs(self, job: Any) -> JobInputs:
        return self.cache.get(job.spec)

    def keep_if_best(self, job: Any) -> Callable[..., None]:
        """A hook for the objective: upload the weights of a trial that beats every completed
        trial so far, so the best trial's weights exist whichever worker ran it."""

        def hook(trial: optuna.Trial, spec: Any, result: Any) -> None:
            done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            best = max((results.trial_merit(t) for t in done if t.value is not None), default=None)
            if best is not None and results.merit(result.best_val_acc, result.tuned_params) <= best:
                return  # an earlier trial ranks at least as high: it holds the weights
            inputs = self.cache.get(job.spec)
            pretrained = inputs.model.state_dict()
            patch = diff_state_dict(pretrained, result.state_dict)
            manifest = {
                "job_id": job.id,
                "trial_number": trial.number,
                "label": spec.label,
                "method": spec.method,
                "groups": list(trial.user_attrs.get(attrs.GROUPS, spec.groups)),
                "lr": spec.lr,
                "val_acc": result.best_val_acc,
                "test_acc": result.test_acc,
                "best_epoch": result.best_epoch,
                "tensors": sorted(patch),
                "base_model": job.spec["model"],
            }
            with tempfile.TemporaryDirectory() as tmp:
                patch_path = save_weights(Path(tmp) / "patch.safetensors", patch, manifest)
                full_path = save_weights(Path(tmp) / "finetuned.safetensors", result.state_dict, manifest)
                for key, path in ((PATCH_ARTIFACT, patch_path), (WEIGHTS_ARTIFACT, full_path)):
                    artifact_id = optuna.artifacts.upload_artifact(
                        artifact_store=self.artifact_store,
                        file_path=str(path),
                        study_or_trial=trial,
                        mimetype="application/octet-stream",
                    )
                    trial.set_user_attr(key, artifact_id)

        return hook
