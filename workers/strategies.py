"""Search strategies: which sampler and pruner a job's study uses, its trial budget, and which
trials are enqueued before any sampling (the paper's baselines, Auto-RGN's pick).

``paper``    exactly the paper's protocol: every single group (blocks, then the head as "last
             layer"), everything, and Auto-RGN (with baselines), over the paper's learning-rate
             grid; a grid sampler covers it exhaustively, so the budget is the grid's size.
``tpe``      contiguous group ranges (start, length) and a log-uniform learning rate under
             Optuna 5's default multivariate TPE with the constant liar, plus a median pruner.
``auto-rgn`` Auto-RGN only, over the learning-rate grid.
``auto``     (default) enqueue the baselines (last layer, full, Auto-RGN) and the single block
             the Auto-RGN profile ranks first, then TPE for the rest of the budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import optuna

from workers.objective import SearchSpace
from workers.space import (
    ALL,
    DEFAULT_BASELINE_LR,
    TrialSpec,
    baseline_specs,
    clip_lr,
    label_for,
    lr_grid,
    paper_parts,
    rank_groups_by_rgn,
)

STRATEGIES = ("auto", "paper", "tpe", "auto-rgn")


@dataclass
class Plan:
    """How one job's study is searched."""

    space: SearchSpace
    budget: int
    enqueued: list[TrialSpec] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Why each enqueued trial runs ("baseline", "rgn-pick", "grid"), parallel to ``enqueued``.
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = ["baseline"] * len(self.enqueued)


def make_plan(
    strategy: str,
    group_names: Sequence[str],
    *,
    max_trials: int,
    lr_min: float,
    lr_max: float,
    baselines: bool = True,
    rgn_profile: dict[str, float] | None = None,
) -> Plan:
    """The study's plan; pure, so it is tested without Optuna or training."""
    names = tuple(group_names)
    grid = tuple(lr_grid(lr_min, lr_max))
    if strategy == "paper":
        parts = [part.label for part in paper_parts(names)]
        if baselines:
            parts.append("auto-rgn")
        space = SearchSpace("paper", names, lr_min, lr_max, lr_choices=grid, parts=tuple(parts))
        # Every grid point is enqueued: popping queued trials is atomic across workers, so the
        # grid is covered exactly once however many workers share it.
        specs = [_paper_spec(names, part, lr) for part in parts for lr in grid]
        budget = len(specs)
        notes = [f"paper protocol: {len(parts)} parts x {len(grid)} learning rates = {budget} trials"]
        if budget != max_trials:
            notes.append(f"the paper's grid sets the budget ({budget}), not max_trials ({max_trials})")
        return Plan(space, budget, specs, notes, ["grid"] * budget)

    space = SearchSpace(strategy, names, lr_min, lr_max, lr_choices=grid)
    if strategy == "auto-rgn":
        specs = [TrialSpec("auto-rgn", (), lr, "auto-rgn") for lr in grid][:max_trials]
        return Plan(space, len(specs), specs, [], ["grid"] * len(specs))

    if strategy not in ("auto", "tpe"):
        raise ValueError(f"unknown strategy {strategy!r}; expected one of {STRATEGIES}")
    enqueued: list[tuple[TrialSpec, str]] = []
    notes: list[str] = []
    if strategy == "auto":
        lr = clip_lr(DEFAULT_BASELINE_LR, lr_min, lr_max)
        if baselines:
            enqueued.extend((spec, "baseline") for spec in baseline_specs(names, lr))
        if rgn_profile:
            blocks = [name for name in rank_groups_by_rgn(rgn_profile, names) if name != names[-1]]
            if blocks:
                pick = blocks[0]
                spec = TrialSpec("surgical", (pick,), lr, label_for(names, (pick,)))
                enqueued.append((spec, "rgn-pick"))
                notes.append(f"Auto-RGN ranks {pick} first among the blocks; it is tried early")
        enqueued = _unique(enqueued)[:max_trials]
    return Plan(space, max_trials, [s for s, _ in enqueued], notes, [r for _, r in enqueued])


def _paper_spec(names: tuple[str, ...], part: str, lr: float) -> TrialSpec:
    if part == "auto-rgn":
        return TrialSpec("auto-rgn", (), lr, "auto-rgn")
    groups = names if part == ALL else (part,)
    return TrialSpec("surgical", groups, lr, label_for(names, groups))


def make_sampler(plan: Plan, seed: int) -> optuna.samplers.BaseSampler:
    """Grid for the paper's protocol, TPE (Optuna 5 defaults: multivariate, constant liar) else."""
    if plan.space.strategy == "paper":
        return optuna.samplers.GridSampler(
            {"part": list(plan.space.parts), "lr": list(plan.space.lr_choices)}, seed=seed
        )
    startup = max(3, min(10, plan.budget // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def make_pruner(plan: Plan, epochs: int) -> optuna.pruners.BasePruner:
    """A median pruner after a few full trials; the paper's grid and baselines are never pruned
    (the grid must be complete to be the paper's table)."""
    if plan.space.strategy in ("paper", "auto-rgn"):
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=max(len(plan.enqueued), 4), n_warmup_steps=max(1, epochs // 3)
    )


def _unique(specs: list[tuple[TrialSpec, str]]) -> list[tuple[TrialSpec, str]]:
    seen: set[tuple[str, tuple[str, ...], float]] = set()
    unique = []
    for spec, source in specs:
        key = (spec.method, spec.groups, spec.lr)
        if key not in seen:
            seen.add(key)
            unique.append((spec, source))
    return unique


__all__ = ["ALL", "Plan", "STRATEGIES", "make_plan", "make_pruner", "make_sampler"]
