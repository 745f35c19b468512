"""The search-efficiency benchmark's ``--quick`` slice runs and writes its three outputs."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_run_writes_csv_table_and_plot(tmp_path: Path, builtin_data_dir: Path) -> None:
    out = tmp_path / "se"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search_efficiency.py"), "--quick", "--out",
         str(out), "--data-dir", str(builtin_data_dir)],
        cwd=ROOT, capture_output=True, text=True, timeout=580,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (out / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == ["grid", "auto", "auto-fixed", "tpe", "random"]
    grid_cpu = float(rows[0]["cpu_seconds"])
    for row in rows[1:]:
        assert float(row["cpu_seconds"]) > 0 and row["test_acc"]
    # tpe and random run until they have spent auto's compute (one trial may overshoot)
    assert float(rows[3]["cpu_seconds"]) >= float(rows[1]["cpu_seconds"]) and grid_cpu > 0
    # auto orders its first rung by the shift diagnosis, as a job does
    assert "first rung ordered by the diagnosis: ('" in done.stdout
    assert "duplicates trained 0" in done.stdout
    assert "| auto | 1 |" in (out / "table.md").read_text()
    assert (out / "regret_vs_compute.png").stat().st_size > 0
