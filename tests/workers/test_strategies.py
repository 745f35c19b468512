"""The search plans are pure data: checked here without Optuna trials or training."""

import optuna
import pytest

from workers.objective import SearchSpace, encode
from workers.space import PAPER_LRS, TrialSpec
from workers.strategies import make_plan

GROUPS = ("block1", "block2", "block3", "head")


def test_paper_plan_is_the_papers_grid_enqueued_once():
    plan = make_plan("paper", GROUPS, max_trials=12, lr_min=1e-5, lr_max=1e-1)
    labels = {spec.label for spec in plan.enqueued}
    assert labels == {"block1", "block2", "block3", "head", "all", "auto-rgn"}
    assert plan.budget == len(plan.enqueued) == 6 * len(PAPER_LRS)
    assert len({(s.label, s.lr) for s in plan.enqueued}) == plan.budget


def test_paper_plan_respects_the_learning_rate_range():
    plan = make_plan("paper", GROUPS, max_trials=12, lr_min=1e-3, lr_max=1e-2, baselines=False)
    assert {spec.lr for spec in plan.enqueued} == {1e-3, 1e-2}
    assert plan.budget == 5 * 2


def test_auto_plan_enqueues_baselines_and_the_rgn_pick():
    profile = {"block1": 0.4, "block2": 0.9, "block3": 0.2, "head": 1.0}
    plan = make_plan("auto", GROUPS, max_trials=10, lr_min=1e-5, lr_max=1e-1, rgn_profile=profile)
    assert [s.label for s in plan.enqueued] == ["head", "all", "auto-rgn", "block2"]
    assert plan.sources == ["baseline", "baseline", "baseline", "rgn-pick"]
    assert plan.budget == 10


def test_auto_plan_never_enqueues_more_than_the_budget():
    plan = make_plan("auto", GROUPS, max_trials=2, lr_min=1e-5, lr_max=1e-1)
    assert len(plan.enqueued) == 2


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy"):
        make_plan("random", GROUPS, max_trials=3, lr_min=1e-4, lr_max=1e-2)


@pytest.mark.parametrize("strategy", ["auto", "tpe", "paper"])
@pytest.mark.parametrize(
    "spec",
    [
        TrialSpec("surgical", ("block2",), 1e-3, "block2"),
        TrialSpec("surgical", GROUPS, 1e-2, "all"),
        TrialSpec("surgical", ("head",), 1e-4, "head"),
        TrialSpec("auto-rgn", (), 1e-3, "auto-rgn"),
    ],
)
def test_encode_then_decode_round_trips_through_a_real_study(strategy, spec):
    space = SearchSpace(strategy, GROUPS, 1e-5, 1e-1, lr_choices=PAPER_LRS,
                        parts=("block1", "block2", "block3", "head", "all", "auto-rgn"))
    study = optuna.create_study(direction="maximize")
    params, user_attrs = encode(space, spec)
    study.enqueue_trial(params, user_attrs=user_attrs)
    trial = study.ask()
    decoded = space.decode(trial)
    assert (decoded.method, decoded.groups, decoded.lr, decoded.label) == (
        spec.method, spec.groups, spec.lr, spec.label)


def test_sampled_ranges_are_contiguous_and_clipped():
    space = SearchSpace("tpe", GROUPS, 1e-5, 1e-1)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(40):
        spec = space.decode(study.ask())
        first = GROUPS.index(spec.groups[0])
        assert spec.groups == GROUPS[first:first + len(spec.groups)]
        assert 1e-5 <= spec.lr <= 1e-1
