"""The search plans are pure data: checked here without Optuna trials or training."""

import json

import optuna
import pytest

from workers.objective import SearchSpace, encode
from workers.space import PAPER_LRS, TrialSpec
from workers.strategies import PlanInputs, make_sampler, plan_search

GROUPS = ("block1", "block2", "block3", "head")


def make_plan(strategy, group_names, *, max_trials, lr_min, lr_max, baselines=True,
              rgn_profile=None, epochs=10):
    return plan_search(PlanInputs(strategy, tuple(group_names), max_trials, lr_min, lr_max,
                                  epochs, baselines, rgn_profile))


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


def test_auto_plan_enqueues_every_part_at_a_part_aware_lr_in_a_fixed_order():
    plan = make_plan("auto", GROUPS, max_trials=10, lr_min=1e-5, lr_max=1e-1)
    assert [(s.label, s.lr) for s in plan.enqueued] == [
        ("block1", 1e-3), ("head", 1e-1), ("block3", 1e-3), ("all", 1e-3), ("block2", 1e-3),
        ("auto-rgn", 1e-3)]
    assert set(plan.sources) == {"first-rung"} and plan.budget == 10
    assert "a fixed order" in plan.notes[0]


def test_auto_plan_follows_the_diagnosis_ranking_and_the_users_lr_range():
    plan = plan_search(PlanInputs("auto", GROUPS, 10, 1e-4, 3e-2, 10,
                                  diagnosis_ranking=("head", "block3", "unknown-part")))
    assert [(s.label, s.lr) for s in plan.enqueued][:3] == [
        ("head", 3e-2), ("block3", 1e-3), ("block1", 1e-3)]
    assert "the shift diagnosis" in plan.notes[0]


def test_auto_plan_never_enqueues_more_than_the_budget():
    plan = make_plan("auto", GROUPS, max_trials=2, lr_min=1e-5, lr_max=1e-1)
    assert len(plan.enqueued) == 2


def test_tpe_chooses_among_each_contiguous_range_once():
    plan = make_plan("tpe", GROUPS, max_trials=5, lr_min=1e-5, lr_max=1e-1)
    assert len(plan.space.parts) == len(set(plan.space.parts)) == 10 and not plan.enqueued
    groups = [plan.space.part_spec(p, 1e-3).groups for p in plan.space.parts]
    assert len(set(groups)) == 10


def test_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="unknown strategy"):
        make_plan("random", GROUPS, max_trials=3, lr_min=1e-4, lr_max=1e-2)


def test_the_plan_is_saved_as_data_and_rebuilt_identically():
    """What the owner stores in the study is the inputs' asdict, through JSON like Optuna's
    storage; a helper rebuilds exactly the same plan from it."""
    profile = {"block1": 0.4, "block2": 0.9, "block3": 0.2, "head": 1.0}
    for strategy in ("auto", "paper", "tpe", "auto-rgn"):
        inputs = PlanInputs(strategy, GROUPS, 7, 1e-4, 1e-1, 3, True, profile,
                            prefer="accuracy", diagnosis_ranking=("block2", "head"))
        saved = json.loads(json.dumps(inputs.to_attr()))
        assert PlanInputs.from_attr(saved) == inputs
        assert plan_search(PlanInputs.from_attr(saved)) == plan_search(inputs)


@pytest.mark.parametrize(
    ("epochs", "note"),
    [(15, None), (10, "10 epochs per trial, not the paper's 15")],
)
def test_the_paper_plan_names_an_epoch_count_other_than_the_papers(epochs, note):
    plan = make_plan("paper", GROUPS, max_trials=30, lr_min=1e-5, lr_max=1e-1, epochs=epochs)
    epoch_notes = [n for n in plan.notes if "epochs" in n]
    assert epoch_notes == ([] if note is None else [note])


def test_paper_spec_mapping_is_the_one_the_objective_decodes():
    plan = make_plan("paper", GROUPS, max_trials=30, lr_min=1e-5, lr_max=1e-1)
    study = optuna.create_study(direction="maximize", sampler=make_sampler(plan, seed=0))
    for spec in plan.enqueued[:8]:
        params, user_attrs = encode(plan.space, spec)
        study.enqueue_trial(params, user_attrs=user_attrs)
        assert plan.space.decode(study.ask()) == spec


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
                        parts=("block1", "block2", "block3", "head", "block1..block2", "all",
                               "auto-rgn"))
    study = optuna.create_study(direction="maximize")
    params, user_attrs = encode(space, spec)
    study.enqueue_trial(params, user_attrs=user_attrs)
    trial = study.ask()
    decoded = space.decode(trial)
    assert (decoded.method, decoded.groups, decoded.lr, decoded.label) == (
        spec.method, spec.groups, spec.lr, spec.label)


def test_sampled_ranges_are_contiguous_and_never_the_same_range_under_two_names():
    plan = make_plan("tpe", GROUPS, max_trials=5, lr_min=1e-5, lr_max=1e-1)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=1))
    names_of: dict[tuple[str, ...], set[str]] = {}
    for _ in range(60):
        trial = study.ask()
        spec = plan.space.decode(trial)
        first = GROUPS.index(spec.groups[0])
        assert spec.groups == GROUPS[first:first + len(spec.groups)]
        assert 1e-5 <= spec.lr <= 1e-1
        names_of.setdefault(spec.groups, set()).add(str(trial.params["part"]))
    assert all(len(names) == 1 for names in names_of.values())


def test_diagnose_plans_no_trials() -> None:
    plan = plan_search(PlanInputs("diagnose", ("block1", "block2", "head"), 12, 1e-5, 1e-1, 5))
    assert plan.budget == 0 and plan.enqueued == () and plan.sources == ()
    assert plan.notes and plan.notes[0].startswith("diagnose")


@pytest.mark.parametrize(("ranking", "budget", "first"), [
    (("block2", "block1", "all", "head"), 12, "block2"),
    (("head", "block2", "all", "block1"), 12, "head"),
])
def test_auto_runs_its_first_trials_in_the_diagnosis_order(ranking, budget, first) -> None:
    names = ("block1", "block2", "head")
    plan = plan_search(PlanInputs("auto", names, budget, 1e-5, 1e-1, 5,
                                  rgn_profile={"block1": 1.0, "block2": 0.5, "head": 0.2},
                                  diagnosis_ranking=ranking))
    labels = [spec.label for spec in plan.enqueued]
    assert labels[0] == first
    assert {"head", "all", "auto-rgn"} <= set(labels)
    ranked = [label for label in labels if label in ranking]
    assert ranked == sorted(ranked, key=ranking.index)
    assert plan.sources[labels.index(ranking[0])] == "first-rung"
    restored = PlanInputs.from_attr(plan.inputs.to_attr())
    assert restored == plan.inputs


def test_a_short_budget_keeps_the_diagnosis_top_parts() -> None:
    names = ("block1", "block2", "head")
    plan = plan_search(PlanInputs("auto", names, 3, 1e-5, 1e-1, 5,
                                  rgn_profile={"block1": 1.0, "block2": 0.5, "head": 0.2},
                                  diagnosis_ranking=("block2", "block1", "all", "head")))
    assert [spec.label for spec in plan.enqueued] == ["block2", "block1", "all"]
