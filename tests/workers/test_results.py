"""Ranking, leaderboard, progress and notes of ``workers/results.py`` on recorded trials
(no training): the rules the end-to-end jobs only exercise by chance."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from app.schemas import JobProgress, JobResult
from tests.workers.trial_records import GROUPS, NAMES, failed, numbered, pruned, trial
from workers import results
from workers.results import Baseline


@pytest.mark.parametrize(
    ("trials", "expected"),
    [
        pytest.param([trial("block1", 0.7), trial("head", 0.8)], 1, id="higher-val-wins"),
        pytest.param([trial("all", 0.8, tuned_params=500), trial("block1", 0.8, tuned_params=100)],
                     1, id="tie-fewer-tuned-params-wins"),
        pytest.param([trial("block1", 0.8), trial("block1", 0.8, lr=1e-2)], 0,
                     id="full-tie-earlier-wins"),
        pytest.param([trial("block1", 0.9, state=TrialState.PRUNED), trial("head", 0.5)], 1,
                     id="pruned-never-recommended"),
        pytest.param([failed(), pruned()], None, id="nothing-completed"),
    ],
)
def test_best_trial(trials, expected):
    best = results.best_trial(numbered(*trials))
    assert (None if best is None else best.number) == expected


@pytest.mark.parametrize(
    ("trial_", "counts"),
    [
        (trial("block1", 0.5), True),
        (pruned(), True),
        (failed("RuntimeError: boom"), True),
        (failed(None), False),  # its worker died: Optuna re-runs it, it is not spent
    ],
    ids=["complete", "pruned", "failed-by-error", "failed-by-dead-worker"],
)
def test_counts_against_budget(trial_, counts):
    assert results.counts_against_budget(trial_) is counts


def test_progress_is_the_api_model_with_the_best_trial():
    trials = numbered(trial("head", 0.6), pruned(), failed(None), trial("block2", 0.75))
    progress = results.progress(trials, budget=6)
    assert progress == JobProgress(trials_done=3, trials_budget=6, best_val_acc=0.75,
                                   best_label="block2", best_groups=["block2"])
    assert results.progress([], budget=6) == JobProgress(trials_done=0, trials_budget=6)


def test_leaderboard_rows_follow_the_papers_order_at_the_best_lr_of_each_part():
    trials = numbered(
        trial("all", 0.70, tuned_params=500),
        trial("head", 0.60),
        trial("block1", 0.65, lr=1e-2),
        trial("block1", 0.80, lr=1e-3),
        trial("auto-rgn", 0.75, method="auto-rgn", groups=("block1", "head")),
        trial("block1..block2", 0.85, tuned_params=400, groups=("block1", "block2")),
        trial("block2", 0.99, state=TrialState.PRUNED),
    )
    rows = results.leaderboard(trials, NAMES, Baseline(0.5, 0.45))
    assert [(r.label, r.val_acc, r.trial_number) for r in rows] == [
        ("no fine-tuning", 0.5, None),
        ("block1", 0.80, 3),
        ("head", 0.60, 1),
        ("all", 0.70, 0),
        ("auto-rgn", 0.75, 4),
        ("block1..block2", 0.85, 5),
    ]
    assert rows[0].test_acc == 0.45 and rows[0].tuned_share == 0.0 and rows[0].lr is None
    assert rows[1].lr == 1e-3 and rows[4].groups == ["block1", "head"]


@pytest.mark.parametrize(
    ("trials", "baseline", "recommended", "notes"),
    [
        pytest.param([trial("block1", 0.8), trial("block2", 0.7), trial("head", 0.6)],
                     Baseline(0.5), "block1", [], id="every-part-tried"),
        pytest.param([trial("block1", 0.8)], Baseline(0.5), "block1",
                     [results.NOTE_NOT_TRIED + "block2, head"], id="parts-not-tried"),
        pytest.param([trial("block1", 0.4), trial("block2", 0.5), trial("head", 0.3)],
                     Baseline(0.5), "block2", [results.NOTE_NO_GAIN], id="no-gain-over-untouched"),
        pytest.param([pruned("block1"), failed()], Baseline(0.5), None,
                     [results.NOTE_NOTHING_COMPLETED, results.NOTE_NOT_TRIED + "block1, block2, head"],
                     id="nothing-completed"),
    ],
)
def test_result_recommendation_and_notes(trials, baseline, recommended, notes):
    result = results.build_result(numbered(*trials), GROUPS, baseline=baseline, rgn_profile=None,
                                  notes=["from the plan"])
    assert isinstance(result, JobResult)
    assert (None if result.recommendation is None else result.recommendation.label) == recommended
    assert result.notes == ["from the plan", *notes]
    assert result.baseline_val_acc == baseline.val_acc


def test_result_groups_carry_their_share_and_the_recommendation_its_row():
    result = results.build_result(numbered(trial("block2", 0.9, tuned_params=300, test_acc=0.8)),
                                  GROUPS, baseline=None, rgn_profile={"block1": 1.0})
    assert [(g.name, g.num_params, g.share) for g in result.groups] == [
        ("block1", 100, 0.2), ("block2", 300, 0.6), ("head", 100, 0.2)]
    best = result.recommendation
    assert best is not None
    assert (best.label, best.method, best.groups, best.lr, best.val_acc, best.test_acc,
            best.tuned_share) == ("block2", "surgical", ["block2"], 1e-3, 0.9, 0.8, 0.6)
    assert result.rgn_profile == {"block1": 1.0} and result.baseline_val_acc is None
    # The model round-trips through the JSON the store keeps.
    assert JobResult.model_validate_json(result.model_dump_json()) == result
