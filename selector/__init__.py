"""Surgical fine-tuning engine: layer groups, surgical fine-tuning, Auto-RGN, built-in data.

Importing :mod:`selector` loads torch and torchvision but nothing heavier (no matplotlib).
"""

from selector.diagnosis import ShiftDiagnosis, diagnose_shift
from selector.errors import (
    CheckpointMismatchError,
    ConfigError,
    DataError,
    EmptySplitError,
    FactoryNotAllowedError,
    GroupSpecError,
    ImageShapeError,
    LabelRangeError,
    MissingFileError,
    ModelLoadError,
    SelectorError,
)
from selector.finetune.records import EpochMetrics, FinetuneResult
from selector.finetune.rgn import auto_rgn_finetune, auto_snr_finetune, relative_gradient_norms
from selector.finetune.surgical import evaluate, surgical_finetune
from selector.io.inputs import load_datasets, load_model
from selector.layers.groups import (
    GroupMatch,
    LayerGroup,
    discover_groups,
    format_groups_table,
    match_groups,
)

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "EmptySplitError",
    "EpochMetrics",
    "FactoryNotAllowedError",
    "FinetuneResult",
    "GroupMatch",
    "GroupSpecError",
    "ImageShapeError",
    "LabelRangeError",
    "LayerGroup",
    "MissingFileError",
    "ModelLoadError",
    "SelectorError",
    "ShiftDiagnosis",
    "auto_rgn_finetune",
    "auto_snr_finetune",
    "diagnose_shift",
    "discover_groups",
    "evaluate",
    "format_groups_table",
    "load_datasets",
    "load_model",
    "match_groups",
    "relative_gradient_norms",
    "surgical_finetune",
]
