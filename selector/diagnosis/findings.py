"""What a diagnosis returns: plain, frozen dataclasses (``to_dict`` gives JSON-ready data for
the service, which must not import torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["GroupDivergence", "LabelSignals", "LayerDivergence", "ShiftDiagnosis", "KINDS"]

KINDS = ("input", "feature", "output", "none", "unavailable")


@dataclass(frozen=True)
class LayerDivergence:
    """One watched normalisation layer: the statistic on the target and on the null."""

    name: str              # module name
    group: str             # the layer group holding it
    channels: int
    value: float           # mean symmetric KL over channels, target vs reference
    null_mean: float       # the same statistic on unshifted data (mean over the null draws)
    null_high: float       # its NULL_QUANTILE (99%) point


@dataclass(frozen=True)
class GroupDivergence:
    """A layer group: the mean over its watched layers, compared with the same mean's null."""

    name: str
    value: float
    null_mean: float
    null_high: float       # 99% point of the group's null
    threshold: float       # max(null_high, RATIO_FLOOR * null_mean): "clearly exceeds"
    ratio: float           # value / null_mean: "diverges N x more than unshifted data"
    exceeds: bool
    layers: tuple[LayerDivergence, ...]


@dataclass(frozen=True)
class LabelSignals:
    """The untouched model's predictions against the target labels.

    ``gap`` = mean confidence - accuracy (how much more sure than right the model is);
    ``null_gap`` is the same gap on clean source data (0 without it: a calibrated model);
    ``z`` = (gap - null_gap) / its binomial standard error. ``confidently_wrong`` is the
    output-level signature: z above the one-sided 99% normal point.

    With labelled source data a second test asks the question directly: ``drop`` = source
    accuracy - target accuracy, ``drop_z`` its two-proportion z, ``less_accurate`` when it is
    significant. A spurious correlation that breaks (Waterbirds) leaves the model no more sure
    than right, only less right. With two tests each runs at half the level (Bonferroni), so
    unshifted data still raises the alarm at most 1% of the time.
    """

    accuracy: float | None
    confidence: float
    gap: float | None
    null_gap: float
    z: float | None
    confidently_wrong: bool
    source_accuracy: float | None = None
    source_confidence: float | None = None
    note: str | None = None
    drop: float | None = None
    drop_z: float | None = None
    less_accurate: bool = False

    @property
    def labels_moved(self) -> bool:
        """The output-level signature: either test fired."""
        return self.confidently_wrong or self.less_accurate


@dataclass(frozen=True)
class ShiftDiagnosis:
    """Where the shift lives, from at most two forward passes and no training.

    ``kind``: "input" | "feature" | "output" | "none" | "unavailable" (``reason`` says why).
    ``ranking``: parts to tune, best first (group names, "head", "all").
    ``confidence``: the share of bootstrap resamples of the target data on which the same
    part comes out on top (1.0 = the decision never changed).
    ``null``: "source-bootstrap" | "source-two-sample" | "analytic" | "none".
    """

    kind: str
    ranking: tuple[str, ...]
    groups: tuple[GroupDivergence, ...]
    labels: LabelSignals
    confidence: float
    explanation: str
    null: str
    examples: int
    source_examples: int | None
    forward_passes: int
    seconds: float
    reason: str | None = None

    @property
    def top(self) -> str:
        return self.ranking[0]

    @property
    def divergence(self) -> dict[str, float]:
        """Group name -> the group's divergence (mean symmetric KL of its layers)."""
        return {g.name: g.value for g in self.groups}

    @property
    def layer_divergence(self) -> dict[str, float]:
        """Layer name -> its divergence, in forward order."""
        return {layer.name: layer.value for g in self.groups for layer in g.layers}

    def to_dict(self) -> dict:
        """JSON-ready (floats, strings, lists), the shape the service stores."""
        out = asdict(self)
        out["ranking"] = list(self.ranking)
        out["groups"] = [{**g, "layers": list(g["layers"]),
                          "ratio": g["ratio"] if math.isfinite(g["ratio"]) else None}
                         for g in out["groups"]]
        return out
