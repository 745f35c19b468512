"""Finished Optuna trials as the workers record them, built without training
(``optuna.trial.create_trial``), for the unit tests of ranking, results and failure rules."""

from __future__ import annotations

from typing import Any

from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState, create_trial

from app import trial_attrs as attrs

GROUPS = (("block1", 100), ("block2", 300), ("head", 100))
NAMES = tuple(name for name, _ in GROUPS)


def trial(label: str, value: float | None, *, state: TrialState = TrialState.COMPLETE,
          tuned_params: int = 100, lr: float = 1e-3, method: str = "surgical",
          groups: tuple[str, ...] | None = None, test_acc: float | None = 0.5,
          **extra: Any) -> FrozenTrial:
    """One recorded trial; ``groups`` defaults to the label's group (``all``: every group)."""
    if groups is None:
        groups = NAMES if label == "all" else (() if method != "surgical" else (label,))
    user_attrs = {attrs.LABEL: label, attrs.METHOD: method, attrs.GROUPS: list(groups),
                  attrs.LR: lr, attrs.TUNED_PARAMS: tuned_params,
                  attrs.TUNED_SHARE: tuned_params / 500, attrs.BEST_EPOCH: 2,
                  attrs.TEST_ACC: test_acc, **extra}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                        params={"lr": lr},
                        distributions={"lr": FloatDistribution(1e-5, 1e-1, log=True)},
                        user_attrs=user_attrs,
                        intermediate_values={1: value or 0.1} if state == TrialState.PRUNED else None)


def numbered(*trials: FrozenTrial) -> list[FrozenTrial]:
    """The trials as a study returns them: numbered in order."""
    for number, frozen in enumerate(trials):
        frozen.number = number
    return list(trials)


def failed(reason: str | None = "RuntimeError: boom") -> FrozenTrial:
    """A failed trial; without ``reason`` it failed because its worker died."""
    extra = {} if reason is None else {attrs.FAIL_REASON: reason}
    return create_trial(state=TrialState.FAIL, user_attrs=extra)


def pruned(label: str = "block2", reason: str = "pruned at epoch 1") -> FrozenTrial:
    return trial(label, 0.2, state=TrialState.PRUNED, **{attrs.FAIL_REASON: reason})
