"""Read (and delete) a job's Optuna study for the API.

The API only reads trials that workers write, through Optuna's storage API rather than its
tables, so Optuna stays free to change its schema. One :class:`Studies` per app holds one
``RDBStorage`` (building one costs a schema check), created on first use: an API that only
serves job status never touches Optuna. The tables must exist already (:func:`app.migrate.upgrade`).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from app import trial_attrs as ta
from app.db import SQLITE_BUSY_TIMEOUT_S
from app.schemas import TrialPublic

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial


def _opt(attrs: dict[str, Any], key: str, kind: type) -> Any:
    """A user attribute if present and of the expected kind (workers' records are data)."""
    value = attrs.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value if isinstance(value, kind) else None


def trial_public(trial: FrozenTrial) -> TrialPublic:
    """Map an Optuna trial and the user attributes of app.trial_attrs to the API record."""
    attrs = trial.user_attrs
    per_epoch = attrs.get(ta.VAL_ACC_PER_EPOCH)
    groups = attrs.get(ta.GROUPS)
    return TrialPublic(
        number=trial.number,
        state=trial.state.name.lower(),
        params=dict(trial.params),
        label=_opt(attrs, ta.LABEL, str),
        method=_opt(attrs, ta.METHOD, str),
        groups=[str(g) for g in groups] if isinstance(groups, list) else None,
        lr=_opt(attrs, ta.LR, float) or _opt(trial.params, "lr", float),
        val_acc=trial.value if trial.values is not None and len(trial.values) == 1 else None,
        val_acc_per_epoch=[float(v) for v in per_epoch] if isinstance(per_epoch, list) else None,
        best_epoch=_opt(attrs, ta.BEST_EPOCH, int),
        test_acc=_opt(attrs, ta.TEST_ACC, float),
        tuned_params=_opt(attrs, ta.TUNED_PARAMS, int),
        tuned_share=_opt(attrs, ta.TUNED_SHARE, float),
        duration_s=_opt(attrs, ta.DURATION_S, float),
        worker=_opt(attrs, ta.WORKER, str),
        device=_opt(attrs, ta.DEVICE, str),
        source=_opt(attrs, ta.SOURCE, str),
        fail_reason=_opt(attrs, ta.FAIL_REASON, str),
        stop_reason=_opt(attrs, ta.STOP_REASON, str),
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
    )


class Studies:
    """Lazily opened Optuna storage at ``storage_url``; safe to share between threads."""

    def __init__(self, storage_url: str) -> None:
        self._url = storage_url
        self._storage: RDBStorage | None = None
        self._lock = threading.Lock()

    @property
    def storage(self) -> RDBStorage:
        with self._lock:
            if self._storage is None:
                from optuna.storages import RDBStorage

                kwargs: dict[str, Any] = {"pool_pre_ping": True}
                if self._url.startswith("sqlite"):
                    kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
                self._storage = RDBStorage(
                    self._url, engine_kwargs=kwargs, skip_table_creation=True
                )
            return self._storage

    def _study_id(self, study_name: str) -> int | None:
        try:
            return self.storage.get_study_id_from_name(study_name)
        except KeyError:
            return None

    def trials(self, study_name: str) -> list[TrialPublic]:
        """The study's trials by number; empty when the study does not exist (yet)."""
        study_id = self._study_id(study_name)
        if study_id is None:
            return []
        trials = self.storage.get_all_trials(study_id, deepcopy=False)
        return [trial_public(t) for t in sorted(trials, key=lambda t: t.number)]

    def delete(self, study_name: str) -> bool:
        """Delete the study and its trials; False when there was none."""
        study_id = self._study_id(study_name)
        if study_id is None:
            return False
        try:
            self.storage.delete_study(study_id)
        except KeyError:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._storage is not None:
                self._storage.engine.dispose()
                self._storage = None
