"""The ``auto`` strategy's refinement and the no-duplicate rule: recorded trials for the
proposals (no training), a tiny real case for the objective's duplicate guard."""

from __future__ import annotations

import random
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from app import trial_attrs as attrs
from workers.auto_search import first_rung, fixed_order, next_proposal, proposals
from workers.objective import LR, PART, TrainingSetup, make_objective, spec_key
from workers.strategies import PlanInputs, make_pruner, make_sampler, plan_search

NAMES = ("block1", "block2", "block3", "head")
PLAN = plan_search(PlanInputs("auto", NAMES, 12, 1e-5, 1e-1, 10))
SPACE = PLAN.space


def _done(part: str, lr: float, value: float, state: TrialState = TrialState.COMPLETE):
    spec = SPACE.part_spec(part, lr)
    return create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        params={PART: part, LR: lr},
        distributions={PART: CategoricalDistribution(list(SPACE.parts)),
                       LR: FloatDistribution(1e-5, 1e-1, log=True)},
        user_attrs={attrs.SPEC_KEY: spec_key(spec, 10), attrs.LABEL: spec.label,
                    attrs.TUNED_PARAMS: 10 * len(spec.groups)},
        intermediate_values={1: value} if state == TrialState.PRUNED else None,
    )


def _numbered(*trials):
    for number, trial in enumerate(trials):
        trial.number = number
    return list(trials)


def test_fixed_order_covers_the_three_kinds_of_shift_first():
    assert fixed_order(NAMES) == ["block1", "head", "block3", "all", "block2"]
    assert fixed_order(("body", "head")) == ["body", "head", "all"]
    assert [s.label for s in first_rung(("only",), 1e-5, 1e-1)] == ["all", "auto-rgn"]


def test_refinement_moves_the_top_parts_lr_half_a_decade_then_widens_the_best_block():
    trials = _numbered(_done("block3", 1e-3, 0.9), _done("head", 1e-1, 0.8),
                       _done("block1", 1e-3, 0.5), _done("all", 1e-3, 0.95, TrialState.PRUNED))
    out = [(s.label, f"{s.lr:.4g}") for s in proposals(trials, SPACE)]
    assert out[:3] == [("block3", "0.0003162"), ("block3", "0.003162"), ("head", "0.03162")]
    # head at 1e-1 * sqrt(10) leaves the head's range; then the ranges around block3
    assert ("block2..block3", "0.001") in out and ("block3..head", "0.001") in out
    assert next_proposal(trials, SPACE, 10, random.Random(0)).label == "block3"


def test_proposals_never_repeat_a_run_even_when_everything_is_exhausted():
    rng, scores = random.Random(0), random.Random(1)
    trials = _numbered(*(_done(s.label if s.method == "surgical" else s.method, s.lr, 0.5)
                         for s in PLAN.enqueued))
    for _ in range(40):
        spec = next_proposal(trials, SPACE, 10, rng)
        part = spec.method if spec.method != "surgical" else spec.label
        trials = _numbered(*trials, _done(part, spec.lr, scores.random()))
    keys = [t.user_attrs[attrs.SPEC_KEY] for t in trials]
    assert len(keys) == len(set(keys))


@pytest.fixture(scope="module")
def tiny_setup(builtin_data_dir: Path) -> TrainingSetup:
    from selector import discover_groups
    from selector.builtin import load_case

    case = load_case("mnist", "impulse_noise", 4, 0, n_per_class=6, n_val=3, n_test=3,
                     data_dir=builtin_data_dir)
    return TrainingSetup(case.model, discover_groups(case.model), case.train, case.val,
                         case.test, epochs=1, batch_size=32, seed=0, device="cpu")


def test_the_same_run_is_never_trained_twice(tiny_setup: TrainingSetup):
    """Enqueue one spec twice: the second trial reuses the first's outcome, untrained."""
    study = optuna.create_study(direction="maximize")
    for _ in range(2):
        study.enqueue_trial({PART: "head", LR: 1e-1})
    trained: list[int] = []
    objective = make_objective(SPACE, tiny_setup, worker_id="t",
                               on_result=lambda trial, spec, result: trained.append(trial.number))
    study.optimize(objective, n_trials=2)
    first, second = study.trials
    assert trained == [0]
    assert second.user_attrs[attrs.DUPLICATE_OF] == 0 and second.value == first.value
    assert second.user_attrs[attrs.SPEC_KEY] == first.user_attrs[attrs.SPEC_KEY]


def test_an_auto_search_trains_each_part_lr_and_epochs_once(tiny_setup: TrainingSetup):
    plan = plan_search(PlanInputs("auto", NAMES, 9, 1e-5, 1e-1, 1))
    study = optuna.create_study(direction="maximize", sampler=make_sampler(plan, 0),
                                pruner=make_pruner(plan))
    from workers.objective import encode

    for spec in plan.enqueued:
        study.enqueue_trial(encode(plan.space, spec)[0])
    study.optimize(make_objective(plan.space, tiny_setup, worker_id="t"), n_trials=plan.budget)
    ran = [t.user_attrs[attrs.SPEC_KEY] for t in study.trials
           if attrs.DUPLICATE_OF not in t.user_attrs]
    assert len(ran) == plan.budget and len(set(ran)) == len(ran)


def test_auto_s_pruner_knows_the_size_of_its_first_rung():
    plan = plan_search(PlanInputs("auto", NAMES, 9, 1e-5, 1e-1, 15))
    pruner = make_pruner(plan)
    assert len(plan.enqueued) == 6  # each group, all, auto-rgn
    assert pruner.promoted(2, 1) == 2 and pruner.promoted(6, 1) == 1
