"""The noise-aware successive-halving pruner of ``auto``: who continues at a rung."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial

from app import trial_attrs as attrs
from workers.auto_search import make_auto_pruner
from workers.halving import NoiseAwareHalvingPruner

N_VAL = 200  # SE at 90%: 2.1 points


def _study(*curves: dict[int, float], n_val: int = N_VAL) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    for curve in curves:
        study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values=curve,
                                     user_attrs={attrs.N_VAL: n_val}))
    return study


def _candidate(curve: dict[int, float], n_val: int = N_VAL) -> FrozenTrial:
    trial = create_trial(state=TrialState.PRUNED, intermediate_values=curve,
                         user_attrs={attrs.N_VAL: n_val})
    trial.number = 10_000
    return trial


def test_rungs_are_geometric_from_the_first():
    pruner = NoiseAwareHalvingPruner(2, 3)
    assert [pruner.rung_at(s) for s in (1, 2, 5, 6, 17, 18)] == [None, 2, 2, 6, 6, 18]


def test_the_first_trial_at_a_rung_continues():
    assert not NoiseAwareHalvingPruner(2, 3).prune(_study(), _candidate({1: 0.1, 2: 0.1}))


def test_a_trial_far_below_the_top_third_is_stopped():
    study = _study({1: 0.9, 2: 0.9}, {1: 0.88, 2: 0.88}, {1: 0.5, 2: 0.5})
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.7, 2: 0.8}))


def test_a_trial_within_one_standard_error_of_the_cut_continues():
    """0.885 vs a cut of 0.90 (SE 2.1 points): a plain top-third cut stops it."""
    study = _study({1: 0.9, 2: 0.9}, {1: 0.88, 2: 0.88}, {1: 0.5, 2: 0.5})
    candidate = _candidate({1: 0.8, 2: 0.885})
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, candidate)


def test_fewer_validation_examples_widen_the_tolerance():
    study = _study({1: 0.9, 2: 0.9}, {1: 0.5, 2: 0.5}, n_val=40)  # SE at 90%: 4.7 points
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({2: 0.86}, n_val=40))
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({2: 0.84}, n_val=40))


def test_the_value_at_a_rung_is_the_best_so_far():
    """A dip at the rung's epoch does not stop a trial whose best epoch leads."""
    study = _study({1: 0.9, 2: 0.9}, {1: 0.5, 2: 0.5})
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.95, 2: 0.6}))


def test_a_rung_is_judged_once():
    """Past the first rung and before the next, a trial that fell behind is not re-judged."""
    study = _study({1: 0.99, 2: 0.99}, {1: 0.98, 2: 0.98}, {1: 0.97, 2: 0.97})
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.5, 2: 0.5, 3: 0.5}))
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.5, 2: 0.5}))


def test_the_second_rung_compares_the_trials_that_reached_it():
    early = {1: 0.99, 2: 0.99}  # stopped at the first rung: not a competitor at the second
    study = _study(early, {e: 0.8 for e in range(1, 7)})
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({e: 0.79 for e in range(1, 7)}))
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({e: 0.6 for e in range(1, 7)}))


@pytest.mark.parametrize("epochs,first", [(15, 2), (3, 1), (1, 1)])
def test_auto_uses_it_from_its_first_rung(epochs, first):
    pruner = make_auto_pruner(epochs)
    assert isinstance(pruner, NoiseAwareHalvingPruner)
    assert pruner.rung_at(first) == first and pruner.rung_at(first - 1) is None


def test_a_trial_that_skips_the_rung_step_is_judged_on_its_first_report_past_it():
    """Reports at epochs 1 and 3 (rung 2): judged at 3, with the best of epochs 1 and 3."""
    study = _study({1: 0.9, 2: 0.9}, {1: 0.5, 2: 0.5})
    assert not NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.2, 3: 0.9}))
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.2, 3: 0.3}))
    study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values={3: 0.99},
                                 user_attrs={attrs.N_VAL: N_VAL}))  # first report past the rung
    assert NoiseAwareHalvingPruner(2, 3).prune(study, _candidate({1: 0.2, 2: 0.9}))


def _synchronous_survivors(values: list[float], k: int, n_val: int = N_VAL) -> set[int]:
    """Who a synchronous first rung (every candidate's value known) keeps: the top k and
    anything within one standard error of the k-th best."""
    from workers.results import standard_error

    cut = sorted(values, reverse=True)[k - 1]
    return {i for i, v in enumerate(values) if v >= cut - (standard_error(cut, n_val) or 0.0)}


def _asynchronous_survivors(values: list[float], pruner: NoiseAwareHalvingPruner) -> set[int]:
    """Run the candidates one after another through the pruner at the first rung (2 epochs)."""
    study = optuna.create_study(direction="maximize")
    kept = set()
    for i, value in enumerate(values):
        curve = {1: value, 2: value}
        candidate = _candidate(curve)
        if not pruner.prune(study, candidate):
            kept.add(i)
        study.add_trial(create_trial(state=TrialState.PRUNED, intermediate_values=curve,
                                     user_attrs={attrs.N_VAL: N_VAL}))
    return kept


def test_the_first_rung_promotes_a_third_of_its_planned_candidates_in_any_order():
    """Six candidates, two promoted: the second-best is never stopped for running late, and
    what a synchronous rung keeps is kept whatever the order (a superset: early trials may
    continue on values a later trial would have beaten)."""
    import itertools

    values = [0.95, 0.80, 0.70, 0.60, 0.50, 0.40]
    pruner = NoiseAwareHalvingPruner(2, 3, first_rung_size=len(values))
    synchronous = _synchronous_survivors(values, k=2)
    assert synchronous == {0, 1}
    for order in itertools.permutations(range(len(values))):
        kept = _asynchronous_survivors([values[i] for i in order], pruner)
        assert synchronous <= {order[i] for i in kept}, order
    # Without the planned size the second-best is stopped when it runs after the best
    # (0.80 is below the best minus its standard error, 1.5 points) ...
    plain = NoiseAwareHalvingPruner(2, 3)
    assert 1 not in _asynchronous_survivors(values, plain)
    # ... and kept when it runs first: the order decided.
    assert 0 in _asynchronous_survivors([values[1], values[0], *values[2:]], plain)


def test_the_planned_size_only_widens_the_first_rung():
    pruner = NoiseAwareHalvingPruner(2, 3, first_rung_size=6)
    assert [pruner.promoted(2, n) for n in (1, 2, 3, 6, 9)] == [2, 2, 2, 2, 3]
    assert [pruner.promoted(6, n) for n in (1, 2, 3, 6)] == [1, 1, 1, 2]
    # the third trial far below two leaders is stopped, as a synchronous rung would
    study = _study({1: 0.9, 2: 0.9}, {1: 0.88, 2: 0.88})
    assert pruner.prune(study, _candidate({1: 0.5, 2: 0.5}))
    assert not pruner.prune(_study({1: 0.9, 2: 0.9}), _candidate({1: 0.5, 2: 0.5}))
    with pytest.raises(ValueError):
        NoiseAwareHalvingPruner(2, 3, first_rung_size=0)


def _sized(curve: dict[int, float], params: int | None, *, candidate: bool = False
           ) -> FrozenTrial:
    user_attrs: dict[str, int] = {attrs.N_VAL: N_VAL}
    if params is not None:
        user_attrs[attrs.PART_PARAMS] = params
    trial = create_trial(state=TrialState.PRUNED, intermediate_values=curve,
                         user_attrs=user_attrs)
    if candidate:
        trial.number = 10_000
    return trial


def _at_second_rung(leader_params: int | None) -> optuna.Study:
    """A leader at 0.90 after 6 epochs (the cut: one of two is promoted)."""
    study = optuna.create_study(direction="maximize")
    study.add_trial(_sized({e: 0.90 for e in range(1, 7)}, leader_params))
    return study


def test_parsimony_stops_a_larger_part_within_noise_below_the_cut_from_the_second_rung():
    """0.885 vs a cut of 0.90 (SE 2.1 points) at epoch 6: within noise. Tuning more than the
    leader, it can be recommended only by ending more than one SE above it: it is stopped."""
    behind = {e: 0.885 for e in range(1, 7)}
    parsimonious = NoiseAwareHalvingPruner(2, 3, first_rung_size=6, parsimony=True)
    assert parsimonious.prune(_at_second_rung(1_000), _sized(behind, 5_000, candidate=True))
    assert parsimonious.prune(_at_second_rung(1_000), _sized(behind, 1_000, candidate=True))
    # fewer parameters than the leader: within noise it would be the recommendation
    assert not parsimonious.prune(_at_second_rung(1_000), _sized(behind, 200, candidate=True))
    # unknown counts never stop a trial
    assert not parsimonious.prune(_at_second_rung(None), _sized(behind, 5_000, candidate=True))
    assert not parsimonious.prune(_at_second_rung(1_000), _sized(behind, None, candidate=True))
    # without the rule (search.prefer "accuracy") the full tolerance holds
    tolerant = NoiseAwareHalvingPruner(2, 3, first_rung_size=6)
    assert not tolerant.prune(_at_second_rung(1_000), _sized(behind, 5_000, candidate=True))
    # far below the cut it is stopped either way, at or above it it continues either way
    far = {e: 0.80 for e in range(1, 7)}
    assert tolerant.prune(_at_second_rung(1_000), _sized(far, 200, candidate=True))
    ahead = {e: 0.91 for e in range(1, 7)}
    assert not parsimonious.prune(_at_second_rung(1_000), _sized(ahead, 5_000, candidate=True))


def test_parsimony_keeps_the_full_tolerance_at_the_first_rung():
    """After 2 epochs a slow starter (the last block under a subpopulation shift) may be a
    larger part just behind: it continues within noise of the cut."""
    pruner = NoiseAwareHalvingPruner(2, 3, first_rung_size=3, parsimony=True)
    study = optuna.create_study(direction="maximize")
    study.add_trial(_sized({1: 0.9, 2: 0.9}, 1_000))
    study.add_trial(_sized({1: 0.5, 2: 0.5}, 1_000))
    study.add_trial(_sized({1: 0.5, 2: 0.5}, 1_000))
    assert not pruner.prune(study, _sized({1: 0.8, 2: 0.885}, 5_000, candidate=True))
    assert pruner.prune(study, _sized({1: 0.8, 2: 0.85}, 5_000, candidate=True))


def test_auto_applies_parsimony_only_with_the_parsimony_rule():
    from workers.strategies import PlanInputs, make_pruner, plan_search

    names = ("block1", "block2", "block3", "head")
    for prefer, expected in (("parsimony", True), ("accuracy", False)):
        plan = plan_search(PlanInputs("auto", names, 8, 1e-5, 1e-1, 15, prefer=prefer))
        pruner = make_pruner(plan)
        assert isinstance(pruner, NoiseAwareHalvingPruner)
        assert pruner._parsimony is expected
