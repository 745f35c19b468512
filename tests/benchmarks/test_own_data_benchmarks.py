"""The issue-10 benchmarks run end to end on tiny inputs and print their tables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def run(script: str, *args: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                            env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]


def test_throughput_prints_a_row_per_model_size_and_precision(tmp_path: Path) -> None:
    out = tmp_path / "throughput.md"
    run("throughput.py", "--quick", "--images", "8", "--sizes", "32", "--batch-size", "8",
        "--threads", "1", "--out", str(out))
    rows = [line for line in out.read_text().splitlines() if line.startswith("| resnet18")]
    assert len(rows) == 1 and "| 32 | fp32 |" in rows[0]


def test_data_scale_reports_both_paths_and_the_goals(tmp_path: Path) -> None:
    out = tmp_path / "scale.md"
    run("data_scale.py", "--images", "60", "--side", "32", "--train-per-class", "2",
        "--val-per-class", "1", "--epochs", "2", "--repeats", "1", "--loader-workers", "1",
        "--threads", "1", "--out", str(out))
    text = out.read_text()
    assert "first load (decode all 60 into the cache)" in text
    for kind in ("head", "all"):
        assert f"| {kind} | streamed |" in text and f"| {kind} | in-memory |" in text
    assert "peak RSS" in text and "streamed / in-memory per image" in text
