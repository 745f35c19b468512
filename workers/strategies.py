"""Search strategies: which sampler and pruner a job's study uses, its trial budget, and which
trials are enqueued before any sampling (the paper's grid, auto's first rung).

``paper``    exactly the paper's protocol: every single group (blocks, then the head as "last
             layer"), everything, and Auto-RGN (with baselines), over the paper's learning-rate
             grid; a grid sampler covers it exhaustively, so the budget is the grid's size. Its
             epochs default to the paper's 15 (``app.schemas.spec.PAPER_EPOCHS``); other epoch
             counts are named in the result's notes.
``tpe``      every contiguous group range (a categorical ``part``, each range once) and a
             log-uniform learning rate under Optuna 5's default multivariate TPE with the
             constant liar, plus a median pruner.
``auto-rgn`` Auto-RGN only, over the learning-rate grid.
``auto``     (default) a first rung of every part at a part-aware learning rate, ordered by the
             shift diagnosis when there is one, successive halving on the per-epoch reports,
             then learning-rate refinement of the top parts and contiguous ranges
             (``workers/auto_search.py``).
``diagnose`` no trials: the result is the shift diagnosis and the untouched model's accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from app.schemas.spec import PAPER_EPOCHS
from workers.auto_search import (
    REDUCTION_FACTOR,
    AutoSampler,
    first_rung,
    first_rung_epochs,
    make_auto_pruner,
)
from workers.objective import SearchSpace
from workers.space import TrialSpec, contiguous_parts, lr_grid, paper_parts

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
    #: It orders ``auto``'s first rung.
    diagnosis_ranking: tuple[str, ...] | None = None

    def to_attr(self) -> dict[str, Any]:
        """JSON-ready form for ``study.set_user_attr(PLAN_ATTR, ...)``."""
        return asdict(self)

    @classmethod
    def from_attr(cls, saved: Mapping[str, Any]) -> PlanInputs:
        """The inverse of :meth:`to_attr` (JSON turned the tuple into a list)."""
        ranking = saved.get("diagnosis_ranking")
        return cls(**{**saved, "group_names": tuple(saved["group_names"]),
                      "diagnosis_ranking": None if ranking is None else tuple(ranking)})


@dataclass(frozen=True)
class SearchPlan:
    """How one job's study is searched: derived from :class:`PlanInputs` by :func:`plan_search`."""

    inputs: PlanInputs
    space: SearchSpace
    budget: int
    enqueued: tuple[TrialSpec, ...] = ()
    notes: tuple[str, ...] = ()
    #: Why each enqueued trial runs ("first-rung", "grid"), parallel to ``enqueued``.
    sources: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.enqueued):
            raise ValueError("every enqueued trial needs its source")

    @property
    def first_rung_size(self) -> int | None:
        """How many first-rung candidates ``auto`` enqueued (None when there are none)."""
        return sum(1 for source in self.sources if source == "first-rung") or None


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

    if strategy == "diagnose":
        space = SearchSpace(strategy, names, inputs.lr_min, inputs.lr_max, lr_choices=grid)
        return SearchPlan(inputs, space, 0, (), ("diagnose: no training, only the shift "
                                                 "diagnosis and the untouched model",), ())
    if strategy == "auto-rgn":
        space = SearchSpace(strategy, names, inputs.lr_min, inputs.lr_max, lr_choices=grid)
        specs = tuple(TrialSpec("auto-rgn", (), lr, "auto-rgn") for lr in grid)[:max_trials]
        return SearchPlan(inputs, space, len(specs), specs, (), ("grid",) * len(specs))

    if strategy not in ("auto", "tpe"):
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    ranges = tuple(part.label for part in contiguous_parts(names))
    if strategy == "tpe":
        space = SearchSpace(strategy, names, inputs.lr_min, inputs.lr_max, parts=ranges)
        return SearchPlan(inputs, space, max_trials)
    space = SearchSpace(strategy, names, inputs.lr_min, inputs.lr_max,
                        parts=(*ranges, "auto-rgn") if inputs.baselines else ranges)
    rung = first_rung(names, inputs.lr_min, inputs.lr_max, ranking=inputs.diagnosis_ranking,
                      auto_rgn=inputs.baselines)[:max_trials]
    order = "the shift diagnosis" if inputs.diagnosis_ranking else "a fixed order"
    note = (f"auto: {len(rung)} first-rung candidates in {order} "
            f"({', '.join(f'{s.label}@{s.lr:g}' for s in rung)}), successive halving from "
            f"epoch {first_rung_epochs(inputs.epochs)} (reduction factor {REDUCTION_FACTOR}), then "
            "the learning rate of the top parts refined and contiguous ranges tried")
    return SearchPlan(inputs, space, max_trials, tuple(rung), (note,), ("first-rung",) * len(rung))


def make_sampler(plan: SearchPlan, seed: int) -> optuna.samplers.BaseSampler:
    """Grid for the paper's protocol, TPE (Optuna 5 defaults: multivariate, constant liar) else."""
    if plan.space.strategy == "paper":
        return optuna.samplers.GridSampler(
            {"part": list(plan.space.parts), "lr": list(plan.space.lr_choices)}, seed=seed
        )
    if plan.space.strategy == "auto":
        return AutoSampler(plan.space, plan.inputs.epochs, seed)
    startup = max(3, min(10, plan.budget // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(plan: SearchPlan) -> optuna.pruners.BasePruner:
    """A median pruner after a few full trials; the paper's grid and baselines are never pruned
    (the grid must be complete to be the paper's table)."""
    if plan.space.strategy in ("paper", "auto-rgn"):
        return optuna.pruners.NopPruner()
    if plan.space.strategy == "auto":
        return make_auto_pruner(plan.inputs.epochs, plan.first_rung_size,
                                parsimony=plan.inputs.prefer == "parsimony")
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(len(plan.enqueued), 4),
        n_warmup_steps=max(1, plan.inputs.epochs // 3),
    )


__all__ = [
    "PLAN_ATTR",
    "STRATEGIES",
    "PlanInputs",
    "SearchPlan",
    "make_pruner",
    "make_sampler",
    "plan_search",
]
