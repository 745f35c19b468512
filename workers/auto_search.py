"""The ``auto`` strategy: a deliberate search over parts x learning rate.

1. **First rung.** Every candidate part (each single layer group, the head, everything and
   Auto-RGN) is enqueued at its part-aware starting learning rate (``workers.space``: the head
   at 1e-1, anything that trains a block at 1e-3). Their order comes from the job's
   shift diagnosis when there is one (a ranking of parts, best first), else a fixed order that
   covers the three kinds of shift early: first block (input-level), head (output-level), last
   block (feature-level), everything, the middle blocks, Auto-RGN.
2. **Successive halving.** Every trial reports validation accuracy per epoch; the pruner
   (rungs at ``epochs // 7``, x3, ...; reduction factor 3; ``workers.halving``) stops a trial
   that is not in the top third of the trials that reached the same rung, nor within one
   standard error of that cut, so most candidates cost a few epochs, the best run to the end,
   and none is stopped on a difference the validation set cannot resolve. At the first rung
   the top third is of the planned candidates, so the order they run in does not decide who
   survives it; Optuna cannot pause a trial, so at later rungs the first trials continue only
   when they lead, and the order above still matters there.
3. **Refinement** (:class:`AutoSampler`, once the queue is empty): the learning rate of the top
   two parts is moved half a decade either way inside the part's range, then the best single
   group is widened into contiguous ranges with its neighbours, then the best trial's
   learning rate is refined a quarter decade; nothing already run (or running) is proposed
   again, and when everything is exhausted a seeded random part x lr fills the budget.

Pure except for :class:`AutoSampler`, which reads the study's trials.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial, TrialState

from app import trial_attrs as attrs
from workers.halving import NoiseAwareHalvingPruner
from workers.objective import LR, PART, SearchSpace, encode, spec_key
from workers.space import (
    ALL,
    BODY_LRS,
    TrialSpec,
    clip_lr,
    contiguous_parts,
    label_for,
    part_lr_range,
)

#: Half a decade: the refinement step around a part's best learning rate.
HALF_DECADE = math.sqrt(10.0)
QUARTER_DECADE = 10.0 ** 0.25
#: Parts whose learning rate is refined after the first rung.
TOP_PARTS = 2
REDUCTION_FACTOR = 3


def fixed_order(names: Sequence[str]) -> list[str]:
    """First block, head, last block, everything, middle blocks (input to output)."""
    names = list(names)
    order = [names[0], names[-1]]
    if len(names) > 2:
        order.append(names[-2])
    if len(names) > 1:
        order.append(ALL)
    order.extend(names[1:-2])
    return list(dict.fromkeys(order))  # first occurrence of each, in order


def first_rung(names: Sequence[str], lr_min: float, lr_max: float, *,
               ranking: Sequence[str] | None = None, auto_rgn: bool = True) -> list[TrialSpec]:
    """The first-rung candidates in the order they run (see the module docstring).

    ``ranking``: part names best first (the shift diagnosis); parts it names come first, in
    its order, then the rest in :func:`fixed_order`. Names it gives that are not parts of this
    model are ignored.
    """
    names = tuple(names)
    base = fixed_order(names)
    ordered = [p for p in (ranking or []) if p in base]
    ordered += [p for p in base if p not in ordered]
    if auto_rgn:
        ordered.append("auto-rgn")
    specs: list[TrialSpec] = []
    for part in ordered:
        if part == "auto-rgn":
            specs.append(TrialSpec("auto-rgn", (), clip_lr(1e-3, lr_min, lr_max), "auto-rgn"))
            continue
        groups = names if part == ALL else (part,)
        _, start, _ = part_lr_range(part, names)
        specs.append(TrialSpec("surgical", groups, clip_lr(start, lr_min, lr_max),
                               label_for(names, groups)))
    return _unique(specs)


def _unique(specs: Sequence[TrialSpec]) -> list[TrialSpec]:
    seen: set[tuple[str, tuple[str, ...], str]] = set()
    out = []
    for spec in specs:
        key = (spec.method, spec.groups, f"{spec.lr:.4g}")
        if key not in seen:
            seen.add(key)
            out.append(spec)
    return out


def _spec_of(trial: FrozenTrial, space: SearchSpace) -> TrialSpec | None:
    """The spec a trial runs or will run (a waiting trial's is in its fixed parameters)."""
    params = trial.params or trial.system_attrs.get("fixed_params") or {}
    part, lr = params.get(PART), params.get(LR)
    if part is None or lr is None:
        return None
    return space.part_spec(str(part), float(lr))


def proposals(trials: Sequence[FrozenTrial], space: SearchSpace) -> list[TrialSpec]:
    """Refinement candidates in priority order (duplicates not yet removed)."""
    names = space.group_names
    done = sorted(
        (t for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: (-float(t.value or 0.0), int(t.user_attrs.get(attrs.TUNED_PARAMS, 0)), t.number),
    )
    top: list[TrialSpec] = []
    for trial in done:
        spec = _spec_of(trial, space)
        if spec is not None and spec.label not in {s.label for s in top}:
            top.append(spec)
        if len(top) == TOP_PARTS:
            break
    out: list[TrialSpec] = []
    for spec in top:  # the learning rate, half a decade either way, inside the part's range
        low, _, high = part_lr_range(spec.label, names)
        for lr in (spec.lr / HALF_DECADE, spec.lr * HALF_DECADE):
            if low / 1.01 <= lr <= high * 1.01:
                out.append(TrialSpec(spec.method, spec.groups, _lr(space, lr), spec.label))
    single = next((s for s in top if s.method == "surgical" and len(s.groups) == 1), None)
    if single is not None and len(names) > 2:  # second stage: contiguous ranges around it
        for part in contiguous_parts(names):
            if len(part.groups) == 2 and single.groups[0] in part.groups and part.label != ALL:
                out.append(TrialSpec("surgical", part.groups, _lr(space, BODY_LRS[1]), part.label))
    if top:
        best = top[0]
        for lr in (best.lr / QUARTER_DECADE, best.lr * QUARTER_DECADE):
            out.append(TrialSpec(best.method, best.groups, _lr(space, lr), best.label))
    return out


def _lr(space: SearchSpace, lr: float) -> float:
    return float(f"{clip_lr(lr, space.lr_min, space.lr_max):.4g}")


def next_proposal(trials: Sequence[FrozenTrial], space: SearchSpace, epochs: int,
                  rng: random.Random) -> TrialSpec:
    """The first refinement candidate that has not run (nor is running, nor waits in the
    queue); a seeded random part x lr when every candidate has."""
    used = {t.user_attrs.get(attrs.SPEC_KEY) for t in trials}
    used |= {spec_key(s, epochs) for t in trials if (s := _spec_of(t, space)) is not None}
    for spec in proposals(trials, space):
        if spec_key(spec, epochs) not in used:
            return spec
    for _ in range(100):
        part = rng.choice(list(space.parts))
        low, _, high = part_lr_range(part, space.group_names)
        lr = _lr(space, math.exp(rng.uniform(math.log(low), math.log(high))))
        spec = space.part_spec(part, lr)
        if spec_key(spec, epochs) not in used:
            return spec
    return space.part_spec(rng.choice(list(space.parts)), _lr(space, BODY_LRS[1]))


class AutoSampler(optuna.samplers.BaseSampler):
    """Proposes :func:`next_proposal` for every trial the queue does not fix."""

    def __init__(self, space: SearchSpace, epochs: int, seed: int) -> None:
        self._space = space
        self._epochs = epochs
        self._rng = random.Random(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {PART: CategoricalDistribution(list(self._space.parts)),
                LR: FloatDistribution(self._space.lr_min, self._space.lr_max, log=True)}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space or "fixed_params" in trial.system_attrs:
            return {}
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        params, _ = encode(self._space, next_proposal(trials, self._space, self._epochs, self._rng))
        return params

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def first_rung_epochs(epochs: int) -> int:
    """The first rung's budget: 2 of the paper's 15 epochs."""
    return max(1, epochs // 7)


def make_auto_pruner(epochs: int, first_rung_size: int | None = None, *,
                     parsimony: bool = False) -> optuna.pruners.BasePruner:
    """Successive halving on the per-epoch validation reports (rungs at
    :func:`first_rung_epochs`, x3, ...) that keeps a trial within one standard error of the
    cut and, given the number of first-rung candidates, promotes a third of them whatever
    order they run in; with ``parsimony`` (the recommendation's default rule), from the second
    rung on only a trial that could still be recommended stays within that tolerance
    (``workers.halving``)."""
    return NoiseAwareHalvingPruner(first_rung_epochs(epochs), REDUCTION_FACTOR, first_rung_size,
                                   parsimony=parsimony)
