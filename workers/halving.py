"""Successive halving that does not stop a candidate on a difference the validation set cannot
resolve (``auto``'s pruner).

Optuna's ``SuccessiveHalvingPruner`` stops a trial at a rung unless its value is in the top
1/eta of the trials that reached that rung. At the first rung (two epochs) with a few hundred
validation images, the values of different parts are often one or two images apart, so the
cut is decided by noise: a part that needs a few epochs to overtake (the last block under a
subpopulation shift) is stopped behind one that is merely quick. The product's recommendation
already refuses to separate trials within one binomial standard error of the best
(``workers.results``); this pruner applies the same rule to stopping: a trial continues when
its best validation accuracy so far is within one standard error of the promotion cut.

Rungs are at ``min_resource * eta**k`` epochs; a trial is judged once per rung, when it first
reports at or past it, against every trial that has reached that rung (itself included), with
each trial's best value up to its first report at or past the rung (the objective is the best
epoch's accuracy).

Trials run one after another (Optuna cannot pause one), so a plain asynchronous rule judges the
early trials of a rung against few others: with the top third of the trials *so far*, the fifth
of six candidates must beat the best of four, the second must beat the first, and who survives
depends on the order they ran in. When the size of the first rung is known (``auto`` enqueues
its candidates), the first rung promotes at least a third of *that* many: a trial is stopped
there only when it is already below the k-th best of the trials that reached the rung (minus
the tolerance), k being a third of the planned candidates. Later trials can only push it further
down, so every trial stopped this way would also be stopped by a synchronous rung that waited
for all candidates; the order no longer decides who survives the first rung. Later rungs, whose
size depends on the first, keep the asynchronous rule: the top third of the trials so far, and
the first ``eta - 1`` trials at a rung continue only if they are (within one standard error of)
the best so far, as in Optuna's pruner.

With ``parsimony`` (the recommendation prefers the fewest tuned parameters within one standard
error of the best, ``search.prefer: "parsimony"``), the tolerance below the cut is narrower
from the second rung on: a trial there continues only if it could still be the recommendation,
that is if it trains fewer parameters (``part_params``) than a trial at or above the cut. A trial
that trains at least as many as every one of them and ends within noise of them is never
recommended, and to end more than one standard error above them it would have to overtake from
behind. The first rung keeps the full tolerance: after 2 of 15 epochs the values rank parts
poorly (a part that learns slowly, the last block under a subpopulation shift, is behind), and
that is where the tolerance saves the right answer.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from app import trial_attrs as attrs
from workers.results import standard_error


class NoiseAwareHalvingPruner(optuna.pruners.BasePruner):
    """Successive halving (maximising) with a one-standard-error tolerance at the cut."""

    def __init__(self, min_resource: int, reduction_factor: int,
                 first_rung_size: int | None = None, *, parsimony: bool = False) -> None:
        if min_resource < 1 or reduction_factor < 2:
            raise ValueError("min_resource must be >= 1 and reduction_factor >= 2")
        if first_rung_size is not None and first_rung_size < 1:
            raise ValueError("first_rung_size must be >= 1")
        self._min_resource = min_resource
        self._eta = reduction_factor
        self._first_rung_size = first_rung_size
        self._parsimony = parsimony

    def promoted(self, rung: int, reached: int) -> int:
        """How many trials of those that ``reached`` the ``rung`` are promoted (at least one;
        at the first rung at least a third of its planned size)."""
        count = max(1, reached // self._eta)
        if rung == self._min_resource and self._first_rung_size is not None:
            count = max(count, self._first_rung_size // self._eta)
        return count

    def rung_at(self, step: int) -> int | None:
        """The highest rung (in epochs) at or below ``step``; None before the first."""
        rung = None
        resource = self._min_resource
        while resource <= step:
            rung = resource
            resource *= self._eta
        return rung

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        steps = sorted(trial.intermediate_values)
        if not steps:
            return False
        step = steps[-1]
        rung = self.rung_at(step)
        if rung is None or (len(steps) > 1 and steps[-2] >= rung):
            return False  # not at a rung, or this rung was judged at an earlier report
        value = _best_up_to(trial, rung)
        assert value is not None  # it reported at step >= rung
        others = [(v, t) for t in study.get_trials(deepcopy=False, states=_REACHED)
                  if t.number != trial.number and (v := _best_up_to(t, rung)) is not None]
        competing = sorted([value, *(v for v, _ in others)], reverse=True)
        promoted = self.promoted(rung, len(competing))
        if len(competing) <= promoted:
            return False  # as many promotions as trials at the rung: it is in the top k
        cut = competing[promoted - 1]
        if value >= cut:
            return False
        n_val = trial.user_attrs.get(attrs.N_VAL)
        tolerance = standard_error(cut, int(n_val) if n_val else None) or 0.0
        if value < cut - tolerance:
            return True
        if not self._parsimony or rung == self._min_resource:
            return False  # within noise of the cut
        # within noise, at a later rung: it continues if it would be preferred to a trial at or
        # above the cut for training fewer parameters (unknown counts never stop a trial)
        mine = _part_params(trial)
        return mine is not None and all(
            (theirs := _part_params(t)) is not None and theirs <= mine
            for v, t in others if v >= cut)


#: States of trials that may have reached a rung (waiting trials have reported nothing).
_REACHED = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)


def _best_up_to(trial: FrozenTrial, rung: int) -> float | None:
    """The trial's best value over its reports up to its first one at or past ``rung`` (None
    if it has not reached the rung). With a report every epoch that is the best epoch so far."""
    values = trial.intermediate_values
    reached = [step for step in values if step >= rung]
    if not reached:
        return None
    first = min(reached)
    return max(value for step, value in values.items() if step <= first)


def _part_params(trial: FrozenTrial) -> int | None:
    value = trial.user_attrs.get(attrs.PART_PARAMS)
    return None if value is None else int(value)
