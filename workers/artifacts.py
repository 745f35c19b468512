"""Every file a job produces, in one place: the patch, its manifest, the weights, the plots and
the result document, uploaded to Optuna's artifact store (the dashboard shows the same files).

Three moments write them:

* before any trial (:func:`upload_diagnosis`), ``diagnosis.png``: the shift diagnosis is made
  in seconds, so users can look at it while the search runs; its record is kept in the study
  (``DIAGNOSIS_PLOT_ATTR``) so the end lists it again without a second upload;

* during the search (:func:`keep_if_best`), a trial that may be recommended (inside the band
  of the best so far, :func:`workers.results.may_be_recommended`) uploads its weights as
  *trial* artifacts, so the recommended weights exist whichever worker ran that trial:

  - ``patch.safetensors`` — only the tensors the trial changed (apply it to the pretrained
    model with ``app.client.apply_patch``);
  - ``finetuned.safetensors`` — the trial's full state dict;
  - ``patch-manifest.json`` — the :class:`app.schemas.PatchManifest`, also written into both
    files' safetensors metadata, so the three always agree;

* at the end (:func:`upload_final`), the owner references the recommended trial's three files
  and adds ``accuracy_by_part.png``, ``auto_rgn_profile.png``, ``search_history.png``,
  ``selection.png`` and ``result.json``, and lists ``diagnosis.png`` again; the returned
  records are listed on the job row so the API streams them.

Safetensors only: no pickle, safe to load from anyone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import optuna
import torch
from optuna.artifacts import upload_artifact
from optuna.trial import FrozenTrial, TrialState
from safetensors.torch import save_file
from torch import nn

from app import trial_attrs as attrs
from app.artifacts import ArtifactStore
from app.schemas import PATCH_FORMAT, ArtifactRecord, Diagnosis, JobResult, PatchManifest
from selector import FinetuneResult
from workers import plots, results
from workers.job import ClaimedJob
from workers.objective import BestHook
from workers.space import TrialSpec

OCTET = "application/octet-stream"
JSON = "application/json"
PNG = "image/png"

#: The best trial's files: (trial user attribute holding the artifact id, file name, content
#: type, description shown by the API).
TRIAL_FILES: tuple[tuple[str, str, str, str], ...] = (
    ("patch_artifact_id", "patch.safetensors", OCTET,
     "tensors changed by the best trial (apply to the pretrained model)"),
    ("weights_artifact_id", "finetuned.safetensors", OCTET, "full state dict of the best trial"),
    ("manifest_artifact_id", "patch-manifest.json", JSON,
     "what the patch contains and how it was chosen"),
)


def diff_state_dict(
    pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Tensors of ``finetuned`` that differ (bit for bit) from ``pretrained``: surgical
    fine-tuning changes only the tuned groups, so for a block-1 trial that is a few percent."""
    missing = sorted(set(finetuned) - set(pretrained))
    if missing:
        raise KeyError(f"fine-tuned weights have keys the pretrained model lacks: {missing[:5]}")
    return {
        name: tensor.detach().cpu().contiguous().clone()
        for name, tensor in finetuned.items()
        if not torch.equal(tensor.detach().cpu(), pretrained[name].detach().cpu())
    }


def save_weights(path: Path, tensors: Mapping[str, torch.Tensor], manifest: PatchManifest) -> Path:
    """A safetensors file with the manifest in its metadata (which holds strings only)."""
    metadata = {"format": PATCH_FORMAT, "manifest": manifest.model_dump_json()}
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path),
              metadata=metadata)
    return path


def patch_manifest(job: ClaimedJob, trial_number: int, spec: TrialSpec, groups: list[str],
                   result: FinetuneResult, tensors: list[str]) -> PatchManifest:
    return PatchManifest(
        job_id=job.id, trial_number=trial_number, label=spec.label, method=spec.method,
        groups=groups, lr=spec.lr, val_acc=result.best_val_acc, test_acc=result.test_acc,
        best_epoch=result.best_epoch, tensors=sorted(tensors), base_model=job.spec.model,
        data=job.spec.data,
    )


def keep_if_best(artifact_store: ArtifactStore, job: ClaimedJob, pretrained: nn.Module) -> BestHook:
    """A hook for the objective: upload the weights of a trial that may be recommended, now or
    later (:func:`workers.results.may_be_recommended` under the job's ``search.prefer``)."""
    prefer = job.spec.search.prefer

    def hook(trial: optuna.Trial, spec: TrialSpec, result: FinetuneResult) -> None:
        done = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        n_val = trial.user_attrs.get(attrs.N_VAL)
        if not results.may_be_recommended(done, result.best_val_acc, result.tuned_params,
                                          n_val, prefer):
            return  # outside the band of the best so far: it can never be recommended
        patch = diff_state_dict(pretrained.state_dict(), result.state_dict)
        groups = list(trial.user_attrs.get(attrs.GROUPS, spec.groups))
        manifest = patch_manifest(job, trial.number, spec, groups, result, list(patch))
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            paths = {
                "patch.safetensors": save_weights(folder / "patch.safetensors", patch, manifest),
                "finetuned.safetensors": save_weights(folder / "finetuned.safetensors",
                                                      result.state_dict, manifest),
                "patch-manifest.json": folder / "patch-manifest.json",
            }
            paths["patch-manifest.json"].write_text(manifest.model_dump_json(indent=2))
            for key, name, content_type, _ in TRIAL_FILES:
                artifact_id = upload_artifact(artifact_store=artifact_store,
                                              file_path=str(paths[name]), study_or_trial=trial,
                                              mimetype=content_type)
                trial.set_user_attr(key, artifact_id)

    return hook


#: Study user attribute with the ``diagnosis.png`` record (uploaded before the trials).
DIAGNOSIS_PLOT_ATTR = "diagnosis_plot"
DIAGNOSIS_DESCRIPTION = "shift diagnosis: divergence per layer against the unshifted null band"


def upload_diagnosis(artifact_store: ArtifactStore, study: optuna.Study,
                     diagnosis: Diagnosis | None) -> ArtifactRecord | None:
    """Upload ``diagnosis.png`` as soon as the diagnosis exists (None when there is nothing to
    plot) and keep its record in the study for :func:`upload_final`."""
    if diagnosis is None or not diagnosis.groups:
        return None
    uploaded = study.user_attrs.get(DIAGNOSIS_PLOT_ATTR)
    if uploaded is not None:  # a setup resumed after an outage: the plot is there already
        return ArtifactRecord.model_validate(uploaded)
    with tempfile.TemporaryDirectory() as tmp:
        path = plots.plot_diagnosis(Path(tmp) / "diagnosis.png", diagnosis)
        artifact_id = upload_artifact(artifact_store=artifact_store, file_path=str(path),
                                      study_or_trial=study, mimetype=PNG)
        record = ArtifactRecord(name=path.name, artifact_id=artifact_id, content_type=PNG,
                                size=path.stat().st_size, description=DIAGNOSIS_DESCRIPTION)
    study.set_user_attr(DIAGNOSIS_PLOT_ATTR, record.model_dump(mode="json"))
    return record


def upload_final(artifact_store: ArtifactStore, study: optuna.Study, result: JobResult,
                 title: str) -> list[ArtifactRecord]:
    """Upload the plots and the result document, and reference the recommended trial's files;
    the records to list on the job row. ``title`` heads the accuracy plot."""
    trials = study.get_trials(deepcopy=False)
    picked = result.recommendation
    chosen = None if picked is None else next(
        (t for t in trials if t.number == picked.trial_number), None)
    records = _best_trial_records(artifact_store, chosen)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def add(path: Path, content_type: str, description: str) -> None:
            artifact_id = upload_artifact(artifact_store=artifact_store, file_path=str(path),
                                          study_or_trial=study, mimetype=content_type)
            records.append(ArtifactRecord(name=path.name, artifact_id=artifact_id,
                                          content_type=content_type, size=path.stat().st_size,
                                          description=description))

        add(plots.plot_accuracy_by_part(folder / "accuracy_by_part.png", result.leaderboard, title),
            PNG, "validation and test accuracy per tuned part (the paper's Fig. 2)")
        if result.rgn_profile:
            add(plots.plot_rgn_profile(folder / "auto_rgn_profile.png", result.rgn_profile,
                                       [g.name for g in result.groups]),
                PNG, "Auto-RGN weight per layer group")
        add(plots.plot_search_history(folder / "search_history.png", trials),
            PNG, "validation accuracy of every trial, with the best so far")
        if result.selection is not None:
            add(plots.plot_selection(folder / "selection.png", result),
                PNG, "validation accuracy against tuned share: the one-SE band and Pareto front")
        uploaded = study.user_attrs.get(DIAGNOSIS_PLOT_ATTR)
        if uploaded is not None:
            records.append(ArtifactRecord.model_validate(uploaded))
        elif result.diagnosis is not None and result.diagnosis.groups:  # a study set up before
            add(plots.plot_diagnosis(folder / "diagnosis.png", result.diagnosis),
                PNG, DIAGNOSIS_DESCRIPTION)
        result_path = folder / "result.json"
        result_path.write_text(result.model_dump_json(indent=2))
        add(result_path, JSON, "the recommendation and the leaderboard")
    return records


def _best_trial_records(artifact_store: ArtifactStore, best: FrozenTrial | None) -> list[ArtifactRecord]:
    if best is None:
        return []
    records = []
    for key, name, content_type, description in TRIAL_FILES:
        artifact_id = best.user_attrs.get(key)
        if artifact_id:
            records.append(ArtifactRecord(name=name, artifact_id=artifact_id,
                                          content_type=content_type,
                                          size=_size(artifact_store, artifact_id),
                                          description=description))
    return records


def _size(artifact_store: ArtifactStore, artifact_id: str) -> int | None:
    try:
        with artifact_store.open_reader(artifact_id) as reader:
            return len(reader.read())
    except Exception:
        return None
