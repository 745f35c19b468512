"""Shift diagnosis: which layers to tune, from one forward pass and no training (issue 12)."""

from selector.diagnosis.diagnose import diagnose_shift
from selector.diagnosis.findings import (
    KINDS,
    GroupDivergence,
    LabelSignals,
    LayerDivergence,
    ShiftDiagnosis,
)
from selector.diagnosis.rule import LABEL_LEVEL, NULL_QUANTILE, RATIO_FLOOR, label_z

__all__ = [
    "KINDS",
    "LABEL_LEVEL",
    "label_z",
    "NULL_QUANTILE",
    "RATIO_FLOOR",
    "GroupDivergence",
    "LabelSignals",
    "LayerDivergence",
    "ShiftDiagnosis",
    "diagnose_shift",
]
