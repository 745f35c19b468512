"""Finalising a job from a study of recorded trials (no training): the result document, the
artifacts and the one patch manifest, written to a real artifact store."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from app import trial_attrs as attrs
from app.client import PatchMismatchError, apply_patch
from app.schemas import PATCH_FORMAT, JobResult, JobSpec, PatchManifest
from selector import FinetuneResult
from tests.workers.trial_records import GROUPS, NAMES, failed, pruned, trial
from workers import artifacts, results
from workers.finalize import FACTS_ATTR, StudyFacts, study_result
from workers.job import ClaimedJob
from workers.results import Baseline
from workers.space import TrialSpec
from workers.strategies import PLAN_ATTR, PlanInputs

SPEC = JobSpec.model_validate({"model": {"source": "builtin"},
                               "data": {"source": "builtin", "shift": "fog"}})


def _study(*trials: optuna.trial.FrozenTrial, strategy: str = "auto") -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    inputs = PlanInputs(strategy, NAMES, 6, 1e-5, 1e-1, 10, True, {"block1": 1.0, "block2": 0.5,
                                                                    "head": 0.2})
    study.set_user_attr(PLAN_ATTR, inputs.to_attr())
    study.set_user_attr(FACTS_ATTR, StudyFacts(Baseline(0.5, 0.4), GROUPS).to_attr())
    study.add_trials(list(trials))
    return study


@pytest.mark.parametrize("cancelled", [False, True])
def test_study_result_carries_the_plan_notes_and_the_stored_facts(cancelled):
    study = _study(trial("head", 0.6), trial("block1", 0.8), pruned("block2"))
    result = study_result(study, cancelled=cancelled)
    assert result.recommendation is not None and result.recommendation.label == "block1"
    assert result.baseline_val_acc == 0.5 and result.leaderboard[0].test_acc == 0.4
    assert result.rgn_profile == {"block1": 1.0, "block2": 0.5, "head": 0.2}
    assert result.notes[0].startswith("auto: 5 first-rung candidates in a fixed order")
    assert (results.NOTE_CANCELLED in result.notes) is cancelled
    assert [g.name for g in result.groups] == list(NAMES)


def test_final_artifacts_without_a_completed_trial(tmp_path: Path):
    study = _study(failed(), pruned("block1"))
    result = study_result(study, cancelled=False)
    assert result.recommendation is None
    store = FileSystemArtifactStore(str(tmp_path))
    records = artifacts.upload_final(store, study, result, "fog: accuracy by tuned part")
    assert [r.name for r in records] == ["accuracy_by_part.png", "auto_rgn_profile.png",
                                         "search_history.png", "result.json"]
    with store.open_reader(records[-1].artifact_id) as reader:
        assert JobResult.model_validate_json(reader.read()) == result
    assert all(r.size and r.size > 0 for r in records)


def _finetune_result(model: nn.Module, changed: str) -> FinetuneResult:
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state[changed] = state[changed] + 1.0
    return FinetuneResult(
        method="surgical", tuned_groups=["head"], lr=1e-3, epochs=[], best_epoch=2,
        best_val_acc=0.9, test_acc=0.85, initial_val_acc=0.5, tuned_params=2, total_params=10,
        tuned_share=0.2, wall_seconds=0.1, state_dict=state, tuned_parameter_names=[changed],
    )


def test_the_best_trial_uploads_one_manifest_three_ways_and_finalize_lists_them(tmp_path: Path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    (tmp_path / "store").mkdir()
    store = FileSystemArtifactStore(str(tmp_path / "store"))
    study = _study()
    job = ClaimedJob("job1", SPEC)
    hook = artifacts.keep_if_best(store, job, model)
    live = study.ask()
    live.set_user_attr(attrs.GROUPS, ["head"])
    hook(live, TrialSpec("surgical", ("head",), 1e-3, "head"), _finetune_result(model, "1.bias"))
    for key, value in {attrs.LABEL: "head", attrs.METHOD: "surgical", attrs.LR: 1e-3,
                       attrs.TUNED_PARAMS: 2}.items():
        live.set_user_attr(key, value)
    study.tell(live, 0.9)

    result = study_result(study, cancelled=False)
    records = artifacts.upload_final(store, study, result, "fog")
    by_name = {r.name: r for r in records}
    assert list(by_name)[:3] == ["patch.safetensors", "finetuned.safetensors", "patch-manifest.json"]

    def fetch(name: str) -> Path:
        path = tmp_path / name
        with store.open_reader(by_name[name].artifact_id) as reader:
            path.write_bytes(reader.read())
        assert by_name[name].size == path.stat().st_size
        return path

    manifest = PatchManifest.model_validate_json(fetch("patch-manifest.json").read_text())
    assert (manifest.format, manifest.job_id, manifest.trial_number, manifest.label,
            manifest.tensors, manifest.best_epoch) == (PATCH_FORMAT, "job1", 0, "head", ["1.bias"], 2)
    assert manifest.base_model == SPEC.model and manifest.data == SPEC.data
    patch, full = fetch("patch.safetensors"), fetch("finetuned.safetensors")
    for path in (patch, full):
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        assert metadata["format"] == PATCH_FORMAT
        assert PatchManifest.model_validate_json(metadata["manifest"]) == manifest
    assert set(load_file(str(patch))) == {"1.bias"}
    assert set(load_file(str(full))) == set(model.state_dict())
    patched = apply_patch(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), patch)
    assert torch.equal(patched.state_dict()["1.bias"], model.state_dict()["1.bias"] + 1.0)
    assert json.loads(fetch("result.json").read_text())["recommendation"]["label"] == "head"


def test_apply_patch_refuses_another_format(tmp_path: Path):
    from safetensors.torch import save_file

    path = tmp_path / "other.safetensors"
    save_file({"0.bias": torch.zeros(2)}, str(path), metadata={"format": "someone-else/3"})
    with pytest.raises(PatchMismatchError, match="someone-else/3"):
        apply_patch(nn.Sequential(nn.Linear(2, 2)), path)


def test_a_later_trial_that_ranks_no_higher_uploads_nothing(tmp_path: Path):
    model = nn.Sequential(nn.Linear(2, 2))
    store = FileSystemArtifactStore(str(tmp_path))
    study = _study(trial("head", 0.95, tuned_params=1))
    hook = artifacts.keep_if_best(store, ClaimedJob("job1", SPEC), model)
    live = study.ask()
    hook(live, TrialSpec("surgical", ("head",), 1e-3, "head"), _finetune_result(model, "0.bias"))
    assert not any(key.endswith("_artifact_id") for key in live.user_attrs)
    assert list(tmp_path.iterdir()) == []


def test_the_parsimonious_pick_within_one_se_has_weights_and_a_selection_plot(tmp_path: Path):
    """The best trial by val accuracy tunes everything; a smaller part one image behind is
    recommended, so its weights must have been uploaded when it finished."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    store = FileSystemArtifactStore(str(tmp_path))
    study = _study(trial("all", 0.905, tuned_params=500, **{attrs.N_VAL: 200}))
    hook = artifacts.keep_if_best(store, ClaimedJob("job1", SPEC), model)
    live = study.ask()
    live.set_user_attr(attrs.N_VAL, 200)
    hook(live, TrialSpec("surgical", ("head",), 1e-3, "head"), _finetune_result(model, "1.bias"))
    assert "patch_artifact_id" in live.user_attrs
    for key, value in {attrs.LABEL: "head", attrs.METHOD: "surgical", attrs.LR: 1e-3,
                       attrs.TUNED_PARAMS: 2, attrs.TUNED_SHARE: 0.2}.items():
        live.set_user_attr(key, value)
    study.tell(live, 0.9)
    result = study_result(study, cancelled=False)
    assert result.recommendation is not None and result.recommendation.label == "head"
    assert result.selection is not None and result.selection.best_label == "all"
    records = artifacts.upload_final(store, study, result, "fog")
    by_name = {r.name: r for r in records}
    assert by_name["patch.safetensors"].artifact_id == live.user_attrs["patch_artifact_id"]
    assert "selection.png" in by_name and (by_name["selection.png"].size or 0) > 0
