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
         str(out), "--data-dir", str(builtin_data_dir),
         "--runs", "paper,auto,auto-fixed,tpe,random"],
        cwd=ROOT, capture_output=True, text=True, timeout=580,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (out / "runs.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["run"] for r in rows] == ["grid", "paper", "auto", "auto-fixed", "tpe", "random"]
    grid_cpu = float(rows[0]["cpu_seconds"])
    for row in rows[1:]:
        assert float(row["cpu_seconds"]) > 0 and row["test_acc"]
    # tpe and random run until they have spent auto's compute (one trial may overshoot)
    assert float(rows[4]["cpu_seconds"]) >= float(rows[2]["cpu_seconds"]) and grid_cpu > 0
    # the product's paper strategy: every part (4 groups, all, Auto-RGN) x 5 learning rates
    assert rows[1]["trials"] == "30" and int(rows[1]["completed"]) >= 20
    # auto orders its first rung by the shift diagnosis, as a job does
    assert "first rung ordered by the diagnosis: ('" in done.stdout
    assert "duplicates trained 0" in done.stdout
    table = (out / "table.md").read_text()
    assert table.count("| auto | 1 |") == 2  # against the 13-cell grid and against paper
    assert "Against the `paper` strategy" in table
    assert (out / "regret_vs_compute.png").stat().st_size > 0
    assert (out / "regret_vs_compute_paper.png").stat().st_size > 0
