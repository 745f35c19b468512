"""The shift diagnosis of a job (issue 12): computed once by the owner before any trial, kept
with the study's facts, reported in the result, and compared with what the search found.

``selector.diagnose_shift`` does the work (forward passes only); this module only maps its
findings onto the API's :class:`app.schemas.Diagnosis` and words the leaderboard note.
"""

from __future__ import annotations

import logging
from typing import Any

from app.schemas import Diagnosis, JobResult
from workers.loading import JobInputs

log = logging.getLogger(__name__)

#: Notes that start like this report the diagnosis (tests and readers match on them).
NOTE_AGREED = "the search agreed with the diagnosis: "
NOTE_DISAGREED = "the search disagreed with the diagnosis: "
NOTE_DIAGNOSIS_ONLY = "diagnose: no training ran; "
NOTE_DIAGNOSIS_FAILED = "the shift diagnosis failed: "

#: Study user attributes that show the diagnosis on the Optuna dashboard (set with the plan).
DIAGNOSIS_ATTR = "diagnosis"
DIVERGENCE_ATTR = "diagnosis_divergence"


def diagnose_job(inputs: JobInputs, seed: int) -> tuple[Diagnosis | None, str | None]:
    """(the diagnosis, None) or (None, why it failed): a failed diagnosis never fails a job."""
    from selector import diagnose_shift

    try:
        found = diagnose_shift(inputs.model, inputs.train, groups=inputs.groups,
                               source=inputs.source, seed=seed)
        return Diagnosis.model_validate(found.to_dict()), None
    except Exception as error:  # a diagnosis is advice: the search runs without it
        log.exception("shift diagnosis failed")
        return None, f"{NOTE_DIAGNOSIS_FAILED}{type(error).__name__}: {error}"


def auto_order(diagnosis: Diagnosis | None) -> tuple[str, ...] | None:
    """The ranking that orders ``auto``'s first rung: the diagnosis's, unless it has none."""
    if diagnosis is None or diagnosis.kind == "unavailable":
        return None
    return tuple(diagnosis.ranking)


def dashboard_attrs(diagnosis: Diagnosis | None, note: str | None) -> dict[str, Any]:
    """The diagnosis as the Optuna dashboard shows it: study user attributes, JSON values.

    The dashboard prints a dict attribute as JSON cut at 1,024 characters, so the verdict
    (kind, ranking, confidence, null, explanation) and the per-group numbers are two short
    attributes, and each group's numbers are one readable string. The per-layer record stays in
    the ``facts`` attribute and the job's result."""
    if diagnosis is None:
        return {DIAGNOSIS_ATTR: {"kind": "failed", "reason": note}}
    verdict: dict[str, Any] = {
        "kind": diagnosis.kind, "ranking": list(diagnosis.ranking),
        "confidence": round(diagnosis.confidence, 3), "null": diagnosis.null,
        "explanation": diagnosis.explanation,
    }
    if diagnosis.reason:
        verdict["reason"] = diagnosis.reason
    groups = {g.name: (f"{g.value:.3g} (null mean {g.null_mean:.3g}, threshold "
                       f"{g.threshold:.3g}){': exceeds' if g.exceeds else ''}")
              if g.layers else "no watched layer" for g in diagnosis.groups}
    return {DIAGNOSIS_ATTR: verdict, DIVERGENCE_ATTR: groups} if groups else {
        DIAGNOSIS_ATTR: verdict}


def verdict(attr: Any) -> str | None:
    """The diagnosis's verdict in a few words, for the job's live progress, from the study
    attribute :func:`dashboard_attrs` wrote (None: the study has none yet)."""
    if not isinstance(attr, dict) or "kind" not in attr:
        return None
    kind, ranking = attr["kind"], attr.get("ranking") or []
    if kind in ("input", "feature", "output") and ranking:
        return f"{kind}-level: tune {ranking[0]} first"
    if kind == "none":
        return "no shift found in the feature statistics or the labels"
    return f"{kind}: {attr.get('reason') or 'no reason given'}"


def agreement_note(diagnosis: Diagnosis, result: JobResult) -> str:
    """Whether the search's recommendation is the part the diagnosis ranked first."""
    top = diagnosis.ranking[0]
    said = f"{diagnosis.kind}-level, tune {top}" if diagnosis.kind != "unavailable" else None
    if said is None:
        return f"no diagnosis to compare with ({diagnosis.reason})"
    picked = result.recommendation
    if picked is None:
        return f"{NOTE_DIAGNOSIS_ONLY}the diagnosis says {said} ({diagnosis.explanation})"
    if picked.label == top:
        return f"{NOTE_AGREED}both pick {top} ({diagnosis.kind}-level shift)"
    rows = {row.label: row for row in result.leaderboard}
    if top in rows:
        row = rows[top]
        return (f"{NOTE_DISAGREED}it said {said}; the search recommends {picked.label} "
                f"({100 * picked.val_acc:.1f}% val) and {top} reached {100 * row.val_acc:.1f}%")
    return (f"{NOTE_DISAGREED}it said {said}; the search recommends {picked.label} and did not "
            f"try {top} alone")
