"""Search strategies: which sampler and pruner a job's study uses, its trial budget, and which
trials are enqueued before any sampling (the paper's baselines, Auto-RGN's pick).

``paper``    exactly the paper's protocol: every single group (blocks, then the head as "last
             layer"), everything, and Auto-RGN (with baselines), over the paper's learning-rate
             grid; a grid sampler covers it exhaustively, so the budget is the grid's size. Its
             epochs default to the paper's 15 (``app.schemas.spec.PAPER_EPOCHS``); other epoch
             counts are named in the result's notes.
``tpe``      contiguous group ranges (start, length) and a log-uniform learning rate under
             Optuna 5's default multivariate TPE with the constant liar, plus a median pruner.
``auto-rgn`` Auto-RGN only, over the learning-rate grid.
``auto``     (default) enqueue the baselines (last layer, full, Auto-RGN) and the single block
             the Auto-RGN profile ranks first, then TPE for the rest of the budget; with a shift
             diagnosis, the part it ranks first is enqueued too and the first trials run in the
             diagnosis's order.
``diagnose`` no trials: the result is the shift diagnosis and the untouched model's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from app.schemas.spec import PAPER_EPOCHS
from workers.objective import SearchSpace
from workers.space import (
    DEFAULT_BASELINE_LR,
    TrialSpec,
    baseline_specs,
    clip_lr,
    label_for,
    lr_grid,
    paper_parts,
    rank_groups_by_rgn,
)

STRATEGIES = ("auto", "paper", "tpe", "auto-rgn", "diagnose")

#: The study user attribute that holds the :class:`PlanInputs` (``dataclasses.asdict``).
PLAN_ATTR = "plan"


@dataclass(frozen=True)
class PlanInputs:
    """Everything a job's search plan is derived from; saved in the study, so every worker
    (the owner that made the plan and the helpers that join later) derives the same plan."""

    strategy: str
    group_names: tuple[str, ...]
    max_trials: int
    lr_min: float
    lr_max: float
    epochs: int
    baselines: bool = True
    rgn_profile: dict[str, float] | None = None
    #: The recommendation rule (``search.prefer``): ``workers.results.PREFER``.
    prefer: str = "parsimony"
    #: The shift diagnosis's ranking of parts (groups and "all"), best first; None: no diagnosis.
    diagnosis_ranking: tuple[str, ...] | None = None

    def to_attr(self) -> dict[str, Any]:
        """JSON-ready form for ``study.set_user_attr(PLAN_ATTR, ...)``."""
        return asdict(self)

    @classmethod
    def from_attr(cls, saved: Mapping[str, Any]) -> PlanInputs:
        """The inverse of :meth:`to_attr` (JSON turned the tuple into a list)."""
        ranking = saved.get("diagnosis_ranking")
        return cls(**{**saved, "group_names": tuple(saved["group_names"]),
                      "diagnosis_ranking": tuple(ranking) if ranking is not None else None})


@dataclass(frozen=True)
class SearchPlan:
    """How one job's study is searched: derived from :class:`PlanInputs` by :func:`plan_search`."""

    inputs: PlanInputs
    space: SearchSpace
    budget: int
    enqueued: tuple[TrialSpec, ...] = ()
    notes: tuple[str, ...] = ()
    #: Why each enqueued trial runs ("baseline", "rgn-pick", "grid"), parallel to ``enqueued``.
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.enqueued):
            raise ValueError("every enqueued trial needs its source")


def plan_search(inputs: PlanInputs) -> SearchPlan:
    """The study's plan; pure, so it is tested without Optuna or training."""
    names = inputs.group_names
    grid = tuple(lr_grid(inputs.lr_min, inputs.lr_max))
    strategy, max_trials = inputs.strategy, inputs.max_trials
    if strategy == "paper":
        parts = [part.label for part in paper_parts(names)]
        if inputs.baselines:
            parts.append("auto-rgn")
        space = SearchSpace("paper", names, inputs.lr_min, inputs.lr_max, lr_choices=grid,
                            parts=tuple(parts))
        # Every grid point is enqueued: popping queued trials is atomic across workers, so the
        # grid is covered exactly once however many workers share it.
        specs = tuple(space.part_spec(part, lr) for part in parts for lr in grid)
        budget = len(specs)
        notes = [f"paper protocol: {len(parts)} parts x {len(grid)} learning rates = {budget} trials"]
        if budget != max_trials:
            notes.append(f"the paper's grid sets the budget ({budget}), not max_trials ({max_trials})")
        if inputs.epochs != PAPER_EPOCHS:
            notes.append(f"{inputs.epochs} epochs per trial, not the paper's {PAPER_EPOCHS}")
        return SearchPlan(inputs, space, budget, specs, tuple(notes), ("grid",) * budget)

    space = SearchSpace(strategy, names, inputs.lr_min, inputs.lr_max, lr_choices=grid)
    if strategy == "diagnose":
        return SearchPlan(inputs, space, 0, (), ("diagnose: no training, only the shift "
                                                 "diagnosis and the untouched model",), ())
    if strategy == "auto-rgn":
        specs = tuple(TrialSpec("auto-rgn", (), lr, "auto-rgn") for lr in grid)[:max_trials]
        return SearchPlan(inputs, space, len(specs), specs, (), ("grid",) * len(specs))

    if strategy not in ("auto", "tpe"):
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    enqueued: list[tuple[TrialSpec, str]] = []
    notes = []
    if strategy == "auto":
        lr = clip_lr(DEFAULT_BASELINE_LR, inputs.lr_min, inputs.lr_max)
        if inputs.baselines:
            enqueued.extend((spec, "baseline") for spec in baseline_specs(names, lr))
        if inputs.rgn_profile:
            ranked = rank_groups_by_rgn(inputs.rgn_profile, names)
            blocks = [name for name in ranked if name != names[-1]]
            if blocks:
                pick = blocks[0]
                spec = TrialSpec("surgical", (pick,), lr, label_for(names, (pick,)))
                enqueued.append((spec, "rgn-pick"))
                notes.append(f"Auto-RGN ranks {pick} first among the blocks; it is tried early")
        if inputs.diagnosis_ranking:
            enqueued = _by_diagnosis(enqueued, inputs.diagnosis_ranking, names, lr, max_trials)
            notes.append(f"the shift diagnosis ranks {inputs.diagnosis_ranking[0]} first; the "
                         "first trials follow its ranking")
        enqueued = _unique(enqueued)[:max_trials]
    return SearchPlan(inputs, space, max_trials, tuple(s for s, _ in enqueued), tuple(notes),
                      tuple(r for _, r in enqueued))


def make_sampler(plan: SearchPlan, seed: int) -> optuna.samplers.BaseSampler:
    """Grid for the paper's protocol, TPE (Optuna 5 defaults: multivariate, constant liar) else."""
    if plan.space.strategy == "paper":
        return optuna.samplers.GridSampler(
            {"part": list(plan.space.parts), "lr": list(plan.space.lr_choices)}, seed=seed
        )
    startup = max(3, min(10, plan.budget // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(plan: SearchPlan) -> optuna.pruners.BasePruner:
    """A median pruner after a few full trials; the paper's grid and baselines are never pruned
    (the grid must be complete to be the paper's table)."""
    if plan.space.strategy in ("paper", "auto-rgn"):
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(len(plan.enqueued), 4),
        n_warmup_steps=max(1, plan.inputs.epochs // 3),
    )


def _by_diagnosis(specs: list[tuple[TrialSpec, str]], ranking: tuple[str, ...],
                  names: tuple[str, ...], lr: float, budget: int) -> list[tuple[TrialSpec, str]]:
    """Add the diagnosis's top part to the enqueued trials and run them in its ranking's order
    (parts it does not rank, such as Auto-RGN, after those it does). The baselines are always
    kept; when the budget is short, the Auto-RGN pick gives way first, then the diagnosis's."""
    top = ranking[0]
    if top in names or top == "all":
        groups = names if top == "all" else (top,)
        specs = [(TrialSpec("surgical", groups, lr, label_for(names, groups)), "diagnosis-pick"),
                 *specs]
    specs = _unique(specs)
    for source in ("rgn-pick", "diagnosis-pick"):
        if len(specs) > budget:
            specs = [item for item in specs if item[1] != source]
    position = {part: i for i, part in enumerate(ranking)}
    return sorted(specs, key=lambda item: position.get(item[0].label, len(position)))


def _unique(specs: list[tuple[TrialSpec, str]]) -> list[tuple[TrialSpec, str]]:
    seen: set[tuple[str, tuple[str, ...], float]] = set()
    unique = []
    for spec, source in specs:
        key = (spec.method, spec.groups, spec.lr)
        if key not in seen:
            seen.add(key)
            unique.append((spec, source))
    return unique


__all__ = [
    "PLAN_ATTR",
    "STRATEGIES",
    "PlanInputs",
    "SearchPlan",
    "make_pruner",
    "make_sampler",
    "plan_search",
]
