"""Finish a job: the result document for the API and the artifacts people download.

Artifacts go through Optuna's artifact store (the dashboard shows the same files) and are
listed on the job row so the API can stream them by name:

* ``patch.safetensors`` — only the tensors the best trial changed, with its manifest in the
  safetensors metadata; apply it to the pretrained model to get the fine-tuned one.
* ``patch-manifest.json`` — the same manifest, readable without torch.
* ``finetuned.safetensors`` — the best trial's full state dict.
* ``accuracy_by_part.png``, ``auto_rgn_profile.png``, ``search_history.png`` — plots.
* ``result.json`` — the result document.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from app import store
from workers import plots, results
from workers.context import PATCH_ARTIFACT, WEIGHTS_ARTIFACT, WorkerContext

if TYPE_CHECKING:
    from workers.execute import StudyHandle


def finalize_job(ctx: WorkerContext, job: Any, handle: StudyHandle, *, cancelled: bool) -> dict[str, Any]:
    """Build the result and upload the artifacts; returns the result document."""
    study = handle.study
    trials = study.get_trials(deepcopy=False)
    attrs_ = study.user_attrs
    notes = list(attrs_.get("notes", []))
    if cancelled:
        notes.append("cancelled before the trial budget was spent: the result covers the trials run")
    result = results.build_result(
        trials,
        [(name, int(size)) for name, size in attrs_.get("groups", [])],
        baseline=attrs_.get("baseline"),
        rgn_profile=attrs_.get("rgn_profile"),
        notes=notes,
    )
    result = _validated(result)
    best = results.best_trial(trials)
    # Uploads go to the Optuna storage (the same SQLite file in embedded mode): no jobs-table
    # transaction may be open meanwhile, so the records are written in one go at the end.
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        add = _adder(ctx, records, study)
        if best is not None:
            for key, name, description in (
                (PATCH_ARTIFACT, "patch.safetensors", "tensors changed by the best trial (apply to the pretrained model)"),
                (WEIGHTS_ARTIFACT, "finetuned.safetensors", "full state dict of the best trial"),
            ):
                artifact_id = best.user_attrs.get(key)
                if artifact_id:
                    records.append({
                        "name": name, "artifact_id": artifact_id,
                        "content_type": "application/octet-stream",
                        "size": _size(ctx, artifact_id), "description": description,
                    })
            manifest = folder / "patch-manifest.json"
            manifest.write_text(json.dumps(_manifest(job, best, result), indent=2))
            add(manifest, "application/json", "what the patch contains and how it was chosen")
        title = f"{job.spec['data'].get('shift') or job.spec['data']['source']}: accuracy by tuned part"
        add(plots.plot_accuracy_by_part(folder / "accuracy_by_part.png", result["leaderboard"], title),
            "image/png", "validation and test accuracy per tuned part (the paper's Fig. 2)")
        if result.get("rgn_profile"):
            add(plots.plot_rgn_profile(folder / "auto_rgn_profile.png", result["rgn_profile"],
                                       [g["name"] for g in result["groups"]]),
                "image/png", "Auto-RGN weight per layer group")
        history = [
            {"number": t.number, "value": t.value if t.state.name == "COMPLETE" else None,
             "label": t.user_attrs.get("label", "?"),
             "pruned_at": (t.intermediate_values[max(t.intermediate_values)]
                           if t.state.name == "PRUNED" and t.intermediate_values else None)}
            for t in trials
        ]
        add(plots.plot_search_history(folder / "search_history.png", history),
            "image/png", "validation accuracy of every trial, with the best so far")
        result_path = folder / "result.json"
        result_path.write_text(json.dumps(result, indent=2))
        add(result_path, "application/json", "the recommendation and the leaderboard")
    with ctx.session() as session:
        for record in records:
            store.add_artifact(session, job.id, record)
    return result


def _adder(ctx: WorkerContext, records: list[dict[str, Any]], study: optuna.Study) -> Callable[[Path, str, str], None]:
    def add(path: Path, content_type: str, description: str) -> None:
        artifact_id = optuna.artifacts.upload_artifact(
            artifact_store=ctx.artifact_store, file_path=str(path), study_or_trial=study,
            mimetype=content_type,
        )
        records.append({
            "name": path.name, "artifact_id": artifact_id, "content_type": content_type,
            "size": path.stat().st_size, "description": description,
        })

    return add


def _size(ctx: WorkerContext, artifact_id: str) -> int | None:
    try:
        with ctx.artifact_store.open_reader(artifact_id) as reader:
            return len(reader.read())
    except Exception:
        return None


def _manifest(job: Any, best: optuna.trial.FrozenTrial, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": "surgical-patch/1",
        "job_id": job.id,
        "base_model": job.spec["model"],
        "data": job.spec["data"],
        "trial_number": best.number,
        "recommendation": result["recommendation"],
        "apply": "app.client.apply_patch(model, 'patch.safetensors')",
    }


def _validated(result: dict[str, Any]) -> dict[str, Any]:
    """Check the document against the API's schema before anyone can read it."""
    from app.schemas import JobResult

    return JobResult.model_validate(result).model_dump(mode="json")
