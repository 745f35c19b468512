"""Finish a job: its result document from the study, and the artifacts people download.

The result is built from the study alone (its trials and what the owner stored at set-up),
so any owner, including one that resumed the job after another died, writes the same result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import optuna

from app import store
from app.schemas import Diagnosis, JobResult
from workers import artifacts, results
from workers.context import WorkerContext
from workers.diagnosing import agreement_note
from workers.job import ClaimedJob
from workers.results import Baseline
from workers.strategies import PLAN_ATTR, PlanInputs, plan_search

#: The study user attribute that holds the :class:`StudyFacts`.
FACTS_ATTR = "facts"


@dataclass(frozen=True)
class StudyFacts:
    """What the owner measures once at set-up and the result reports: the untouched model's
    accuracy, the layer groups with their sizes (input to output), and what the trials train
    on (the resolved transform, split sizes, class names; None for built-in data)."""

    baseline: Baseline
    groups: tuple[tuple[str, int], ...]
    data: dict[str, Any] | None = None
    #: The shift diagnosis (``app.schemas.Diagnosis`` as JSON) and, when it failed, why.
    diagnosis: dict[str, Any] | None = None
    diagnosis_note: str | None = None

    def to_attr(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_attr(cls, saved: Mapping[str, Any]) -> StudyFacts:
        return cls(Baseline(**saved["baseline"]),
                   tuple((str(name), int(size)) for name, size in saved["groups"]),
                   saved.get("data"), saved.get("diagnosis"), saved.get("diagnosis_note"))


def study_result(study: optuna.Study, *, cancelled: bool,
                 out_of_time: float | None = None) -> JobResult:
    """The job's result from its study: plan notes, the leaderboard and the recommendation.
    ``out_of_time``: the job's ``max_minutes`` when that budget ended the search."""
    plan = plan_search(PlanInputs.from_attr(study.user_attrs[PLAN_ATTR]))
    facts = StudyFacts.from_attr(study.user_attrs[FACTS_ATTR])
    notes = list(plan.notes)
    if cancelled:
        notes.append(results.NOTE_CANCELLED)
    if out_of_time is not None:
        notes.append(results.out_of_time_note(out_of_time, study.get_trials(deepcopy=False),
                                              plan.budget))
    result = results.build_result(
        study.get_trials(deepcopy=False),
        facts.groups,
        baseline=facts.baseline,
        rgn_profile=plan.inputs.rgn_profile,
        notes=notes,
        prefer=plan.inputs.prefer,
    )
    diagnosis = Diagnosis.model_validate(facts.diagnosis) if facts.diagnosis else None
    notes = list(result.notes)
    if plan.inputs.strategy == "diagnose":  # nothing was meant to train: no "nothing completed"
        notes = [n for n in notes if n != results.NOTE_NOTHING_COMPLETED
                 and not n.startswith(results.NOTE_NOT_TRIED)]
    if facts.diagnosis_note:
        notes.append(facts.diagnosis_note)
    if diagnosis is not None:
        notes.append(agreement_note(diagnosis, result))
    return result.model_copy(update={"data": facts.data, "diagnosis": diagnosis, "notes": notes})


def finalize_job(ctx: WorkerContext, job: ClaimedJob, study: optuna.Study, *,
                 cancelled: bool, out_of_time: bool = False) -> JobResult:
    """Build the result and upload the artifacts; returns the result. ``out_of_time``: the
    job's time budget ended the search (its notes say so)."""
    minutes = job.spec.search.max_minutes if out_of_time else None
    result = study_result(study, cancelled=cancelled, out_of_time=minutes)
    data = job.spec.data
    title = f"{getattr(data, 'shift', None) or data.source}: accuracy by tuned part"
    # Uploads go to the Optuna storage (the same SQLite file in embedded mode): no jobs-table
    # transaction may be open meanwhile, so the records are written in one go at the end.
    records = artifacts.upload_final(ctx.artifact_store, study, result, title)
    with ctx.session() as session:
        for record in records:
            store.add_artifact(session, job.id, record)
    return result
