"""The diagnosis benchmark's ``--quick`` slice runs and writes its CSV and Markdown report."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_diagnosis_benchmark(tmp_path: Path, builtin_data_dir: Path, mnist_resnet) -> None:
    out = tmp_path / "quick"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diagnosis.py"), "--quick", "--out", str(out),
         "--data-dir", str(builtin_data_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with (out / "diagnosis.csv").open(newline="") as handle:
        rows = {row["shift"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"impulse_noise", "label_flip", "clean"}
    assert {shift: row["diagnosed"] for shift, row in rows.items()} == {
        "impulse_noise": "input", "label_flip": "output", "clean": "none"}
    # the committed grid has both 25/class seed-0 cases: they are compared
    assert rows["impulse_noise"]["grid_best"] and rows["label_flip"]["agree"] in ("0", "1")
    assert rows["clean"]["grid_best"] == ""
    report = (out / "diagnosis.md").read_text()
    assert "**Agreement:" in report and "| 25/class |" in report
