"""The rich tables the CLI prints, rendered to text: the recommended row is marked, and a job
with nothing to recommend (every trial pruned or failed) still prints its leaderboard."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from rich.console import Console

from app.schemas import JobResult
from app.tables import leaderboard_table
from tests.app.helpers import RESULT

BASELINE_ROW: dict[str, Any] = {
    "label": "no fine-tuning", "method": "none", "groups": [], "lr": None, "val_acc": 0.62,
    "test_acc": 0.6, "tuned_params": 0, "tuned_share": 0.0, "best_epoch": 0, "trial_number": None,
}


def _render(result: JobResult) -> str:
    console = Console(width=160, record=True, color_system=None)
    console.print(leaderboard_table(result))
    return console.export_text()


def _result(recommended: bool) -> JobResult:
    body = copy.deepcopy(RESULT)
    body["leaderboard"].insert(0, BASELINE_ROW)
    if not recommended:
        body["recommendation"] = None
        body["leaderboard"] = [BASELINE_ROW]
    return JobResult.model_validate(body)


@pytest.mark.parametrize(
    ("recommended", "marked", "caption"),
    [
        (True, "block1 *", "* recommended: tune block1 at lr 0.001 (3.0% of parameters)"),
        (False, None, "no recommendation: no trial completed (see the result's notes)"),
    ],
    ids=["recommended", "all-trials-pruned-or-failed"],
)
def test_leaderboard_table(recommended: bool, marked: str | None, caption: str):
    text = _render(_result(recommended))
    assert "no fine-tuning" in text and caption in text
    assert ("*" in text.replace(caption, "")) is recommended
    if marked:
        assert marked in text


def test_leaderboard_table_shows_the_band_the_front_and_why():
    body = copy.deepcopy(RESULT)
    body["leaderboard"][0].update(val_se=0.02, within_band=True, pareto=True)
    body["leaderboard"].insert(0, {**BASELINE_ROW, "val_se": 0.034})
    body["selection"] = {
        "rule": "parsimony", "best_label": "block1", "best_val_acc": 0.91, "standard_error": 0.02,
        "band_low": 0.89, "n_val": 200, "within_band": ["block1"], "pareto_front": ["block1"],
        "reason": "block1 has the best validation accuracy",
    }
    text = _render(JobResult.model_validate(body))
    assert "91.0 ± 2.0" in text and "62.0 ± 3.4" in text
    assert "in band" in text and "Pareto" in text
    assert "why: block1 has the best validation accuracy" in text


def test_parts_stopped_early_are_listed_apart_with_their_best_epoch():
    body = copy.deepcopy(RESULT)
    body["stopped_early"] = [{"label": "block3", "method": "surgical", "groups": ["block3"],
                              "lr": 0.001, "val_acc": 0.7, "val_se": 0.032, "best_epoch": 2,
                              "stopped_at_epoch": 2, "trial_number": 4}]
    text = _render(JobResult.model_validate(body))
    row = next(line for line in text.splitlines() if "block3" in line)
    assert "70.0 ± 3.2" in row and "2/2" in row and "stop" in row
    assert "stopped early by successive halving" in text
    assert "stop" not in _render(JobResult.model_validate(RESULT))


def test_a_trial_cut_short_says_why_where_it_is_ranked():
    body = copy.deepcopy(RESULT)
    body["leaderboard"][0].update(best_epoch=3, stop_reason="the job's time budget ran out "
                                  "after epoch 3 of 15")
    text = _render(JobResult.model_validate(body))
    row = next(line for line in text.splitlines() if "block1" in line)
    assert "3†" in row
    assert "† trained fewer epochs: block1: the job's time budget ran out after epoch 3 of 15" in text
    assert "†" not in _render(JobResult.model_validate(RESULT))


def test_diagnosis_caption_compares_target_and_source_accuracy() -> None:
    """The output-level evidence a user reads: accuracy on the target labels next to accuracy on
    the source data; without source data only the former."""
    from app.schemas import Diagnosis
    from app.tables import diagnosis_table

    labels = {"accuracy": 0.8, "confidence": 0.81, "gap": 0.01, "null_gap": 0.0, "z": 0.4,
              "confidently_wrong": False, "source_accuracy": 0.97, "source_confidence": 0.96,
              "drop": 0.17, "drop_z": 5.8, "less_accurate": True}
    body = {"kind": "output", "ranking": ["head", "block3", "all"], "groups": [],
            "labels": labels, "confidence": 0.99, "explanation": "tune head.",
            "null": "source-bootstrap", "examples": 200, "source_examples": 200,
            "forward_passes": 2, "seconds": 0.4}
    console = Console(width=200, record=True, color_system=None)
    console.print(diagnosis_table(Diagnosis.model_validate(body)))
    text = " ".join(console.export_text().split())  # the caption wraps at the table's width
    assert "accuracy 80.0% at 81.0% mean confidence (97.0% on the source data)" in text
    older = {**body, "labels": {k: v for k, v in labels.items()
                                if k not in ("source_accuracy", "source_confidence", "drop",
                                             "drop_z", "less_accurate")}}
    console = Console(width=200, record=True, color_system=None)
    console.print(diagnosis_table(Diagnosis.model_validate(older)))  # stored before the fields
    older_text = " ".join(console.export_text().split())
    assert "accuracy 80.0% at 81.0% mean confidence" in older_text
    assert "on the source data" not in older_text
