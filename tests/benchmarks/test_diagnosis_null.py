"""The principled-null diagnosis benchmark's ``--quick`` slice: known answers on a model that is
not in the built-in benchmark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_run_reports_every_condition(tmp_path: Path) -> None:
    out = tmp_path / "null.md"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diagnosis_null.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = out.read_text()
    for condition in ("unshifted (none)", "noise (input)", "contrast (input)", "permuted (output)"):
        assert f"| resnet18 | {condition} |" in text
    # a strong input shift and a label permutation on a model with its source's statistics
    assert "| source: input found | 4/4 |" in text
    assert "| source: output found | 2/2 |" in text
