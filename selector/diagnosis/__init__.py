"""Shift diagnosis: which layers to tune, from one forward pass and no training (issue 12)."""

from selector.diagnosis.diagnose import diagnose_shift
from selector.diagnosis.findings import (
    KINDS,
    GroupDivergence,
    LabelSignals,
    LayerDivergence,
    ShiftDiagnosis,
)
from selector.diagnosis.rule import LABEL_Z, NULL_QUANTILE, RATIO_FLOOR

__all__ = [
    "KINDS",
    "LABEL_Z",
    "NULL_QUANTILE",
    "RATIO_FLOOR",
    "GroupDivergence",
    "LabelSignals",
    "LayerDivergence",
    "ShiftDiagnosis",
    "diagnose_shift",
]
