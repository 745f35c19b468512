"""What a finished job reports (``GET /v1/jobs/{id}/result``).

``workers/results.py`` builds a :class:`JobResult` directly (each field is validated as it is
built) and hands the model to :func:`app.store.finish`, which dumps it; a plain mapping given to
the store is validated there, so a malformed result never reaches a client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Recommendation(_Record):
    """The configuration to use, chosen by the job's rule (see :class:`Selection`)."""

    label: str = Field(examples=["block1"])
    method: str = Field(examples=["surgical"])
    groups: list[str]
    lr: float | None = Field(description="None for the no-fine-tuning baseline.")
    val_acc: float
    test_acc: float | None
    tuned_share: float | None = Field(ge=0, le=1)
    val_se: float | None = Field(
        default=None, ge=0, description="Standard error of val_acc (binomial, sqrt(p(1-p)/n)).")
    trial_number: int | None = None


class LeaderboardRow(_Record):
    """One evaluated configuration (a completed trial), best first."""

    label: str
    method: str
    groups: list[str]
    lr: float | None = Field(description="None for the no-fine-tuning baseline.")
    val_acc: float
    test_acc: float | None = None
    tuned_params: int | None = Field(default=None, ge=0)
    tuned_share: float | None = Field(default=None, ge=0, le=1)
    best_epoch: int | None = Field(default=None, ge=0, description="0 = before training.")
    trial_number: int | None = Field(default=None, description="None for the baseline row.")
    val_se: float | None = Field(
        default=None, ge=0, description="Standard error of val_acc (binomial, sqrt(p(1-p)/n)).")
    within_band: bool | None = Field(
        default=None, description="val_acc within one standard error of the best trial's "
        "(None for the baseline row).")
    pareto: bool | None = Field(
        default=None, description="On the Pareto front of val_acc against tuned_share: no other "
        "row is at least as accurate with fewer tuned parameters.")
    stop_reason: str | None = Field(
        default=None, description="Why this trial trained fewer epochs than asked (the job's "
        "time budget ran out, or its loss turned non-finite); None when it ran them all.")


class StoppedPart(_Record):
    """A part that was tried but never completed: successive halving stopped every trial of it
    early (or it diverged in epoch 1). Its best validation accuracy before it was stopped is
    evidence for the leaderboard's reader; it is never recommended."""

    label: str
    method: str
    groups: list[str]
    lr: float | None
    val_acc: float = Field(description="Best validation accuracy before it was stopped.")
    val_se: float | None = Field(default=None, ge=0)
    best_epoch: int = Field(ge=1)
    stopped_at_epoch: int = Field(ge=1, description="The last epoch it trained.")
    trial_number: int


class Selection(_Record):
    """How the recommendation was chosen among the completed trials, and why.

    Validation sets are small (a few hundred images), so validation accuracies a standard error
    apart are indistinguishable. ``parsimony`` (the default) recommends the fewest tuned
    parameters within one standard error of the best validation accuracy (the "one standard
    error rule"); ``accuracy`` the best validation accuracy (ties: fewer tuned parameters).
    """

    rule: Literal["parsimony", "accuracy"]
    best_label: str = Field(description="The part with the highest validation accuracy.")
    best_val_acc: float
    standard_error: float | None = Field(
        default=None, ge=0, description="The best trial's standard error (None: n_val unknown).")
    band_low: float = Field(description="The band's lower edge: best_val_acc - standard_error.")
    n_val: int | None = Field(default=None, ge=1, description="Validation examples per trial.")
    within_band: list[str] = Field(description="Labels whose val_acc lies in the band.")
    pareto_front: list[str] = Field(
        description="Labels on the Pareto front (val_acc against tuned share), fewest tuned first.")
    reason: str = Field(description="Why the recommendation won, in words.")


class GroupInfo(_Record):
    """A layer group of the model, input to output, and its share of the parameters."""

    name: str
    num_params: int = Field(ge=0)
    share: float = Field(ge=0, le=1)


class DiagnosisLayer(_Record):
    """One watched normalisation layer: its divergence on the target and on unshifted data."""

    name: str
    group: str
    channels: int = Field(ge=0)
    value: float = Field(description="Mean symmetric KL over channels between the target's "
                         "per-channel Gaussian and the reference (running statistics or source).")
    null_mean: float = Field(description="The same statistic on unshifted data (mean).")
    null_high: float = Field(description="Its 99% point.")


class DiagnosisGroup(_Record):
    """A layer group's divergence (mean of its watched layers) against its null."""

    name: str
    value: float
    null_mean: float
    null_high: float
    threshold: float = Field(description="max(99% null point, 2 x null mean): clearly exceeds.")
    ratio: float | None = Field(description="value / null_mean (None when the null is 0).")
    exceeds: bool
    layers: list[DiagnosisLayer] = Field(description="Empty: the group has no watched layer.")


class DiagnosisLabels(_Record):
    """The untouched model's predictions against the target labels (the output-level signal)."""

    accuracy: float | None = Field(ge=0, le=1, description="None when the labels do not fit "
                                   "the model's outputs (see note).")
    confidence: float = Field(ge=0, le=1, description="Mean max softmax probability.")
    gap: float | None = Field(description="confidence - accuracy.")
    null_gap: float = Field(description="The same gap on clean source data (0 without it).")
    z: float | None
    confidently_wrong: bool
    source_accuracy: float | None = None
    source_confidence: float | None = None
    note: str | None = None
    drop: float | None = Field(default=None, description="Source accuracy - target accuracy "
                               "(None without labelled source data).")
    drop_z: float | None = Field(default=None, description="Its two-proportion z.")
    less_accurate: bool = Field(default=False, description="The drop is significant: with "
                                "confidently_wrong, the output-level signature.")


class Diagnosis(_Record):
    """Where the shift lives, from forward passes only (``selector.diagnose_shift``): computed
    by the worker before any trial."""

    kind: Literal["input", "feature", "output", "none", "unavailable"]
    ranking: list[str] = Field(description="Parts to tune, best first (groups and 'all').")
    groups: list[DiagnosisGroup]
    labels: DiagnosisLabels
    confidence: float = Field(ge=0, le=1, description="Share of bootstrap resamples of the "
                              "target on which the same part comes out on top.")
    explanation: str
    null: Literal["source-bootstrap", "source-two-sample", "analytic", "none"]
    examples: int = Field(ge=0)
    source_examples: int | None = None
    forward_passes: int = Field(ge=0, le=2)
    seconds: float = Field(ge=0)
    reason: str | None = Field(default=None, description="Why the diagnosis is unavailable.")


class JobResult(_Record):
    """The search's answer: a recommendation, the leaderboard behind it, and context."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "recommendation": {"label": "block1", "method": "surgical",
                                       "groups": ["block1"], "lr": 0.001, "val_acc": 0.91,
                                       "test_acc": 0.9, "tuned_share": 0.03},
                    "leaderboard": [
                        {"label": "block1", "method": "surgical", "groups": ["block1"],
                         "lr": 0.001, "val_acc": 0.91, "test_acc": 0.9, "tuned_params": 5000,
                         "tuned_share": 0.03, "best_epoch": 7, "trial_number": 3}
                    ],
                    "groups": [{"name": "block1", "num_params": 5000, "share": 0.03}],
                    "selection": {
                        "rule": "parsimony", "best_label": "block1", "best_val_acc": 0.91,
                        "standard_error": 0.02, "band_low": 0.89, "n_val": 200,
                        "within_band": ["block1"], "pareto_front": ["block1"],
                        "reason": "block1 has the best validation accuracy (91.0%)",
                    },
                    "rgn_profile": None,
                    "baseline_val_acc": 0.62,
                    "notes": [],
                }
            ]
        },
    )  # fmt: skip

    recommendation: Recommendation | None = Field(
        description="None when no trial completed (see notes)."
    )
    leaderboard: list[LeaderboardRow]
    stopped_early: list[StoppedPart] = Field(
        default_factory=list, description="Parts tried but stopped early by successive halving "
        "(best first, one per part): not in the leaderboard, never recommended.")
    groups: list[GroupInfo]
    selection: Selection | None = Field(
        default=None, description="How the recommendation was chosen (None: nothing completed).")
    rgn_profile: dict[str, float] | None = None
    baseline_val_acc: float | None = None
    notes: list[str] = Field(default_factory=list)
    diagnosis: Diagnosis | None = Field(
        default=None, description="The shift diagnosis made before the trials (None: it "
        "failed, see notes).")
    data: dict[str, Any] | None = Field(
        default=None, description="What the trials trained on: the resolved image transform "
        "(preset, resize, image_size, channels, mean, std), split sizes and class names; null "
        "for built-in data.", examples=[{"transform": {"preset": "imagenet", "resize": 256,
                                                       "image_size": [224, 224]},
                                         "sizes": {"train": 50, "val": 20, "test": 100}}])
