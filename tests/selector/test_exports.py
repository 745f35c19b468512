"""The public surface of ``selector`` (pinned, as httpx's test_exported_members)."""

from __future__ import annotations

import subprocess
import sys

import selector


def test_public_names() -> None:
    assert set(selector.__all__) == {
        "LayerGroup", "GroupMatch", "discover_groups", "match_groups", "format_groups_table",
        "surgical_finetune", "auto_rgn_finetune", "auto_snr_finetune", "relative_gradient_norms",
        "evaluate", "EpochMetrics", "FinetuneResult", "load_model", "load_datasets",
        "SelectorError", "ConfigError", "GroupSpecError", "ModelLoadError",
        "CheckpointMismatchError", "FactoryNotAllowedError", "DataError", "EmptySplitError",
        "LabelRangeError", "ImageShapeError", "MissingFileError",
        "diagnose_shift", "ShiftDiagnosis",
    }
    for name in selector.__all__:
        assert getattr(selector, name).__module__.startswith("selector.")


def test_error_tree() -> None:
    assert issubclass(selector.GroupSpecError, ValueError)
    assert issubclass(selector.MissingFileError, FileNotFoundError)
    for name in selector.__all__:
        obj = getattr(selector, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, selector.SelectorError)


def test_import_stays_light() -> None:
    code = "import sys, selector; print(sorted(m for m in ('matplotlib', 'optuna', 'sklearn', " \
           "'fastapi', 'sqlalchemy', 'torchvision') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
