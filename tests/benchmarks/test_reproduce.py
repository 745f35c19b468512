"""The reproduction benchmark's ``--quick`` slice: it runs, writes sane reports, and resumes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"
METHODS = ("none", "all", "head", "block1", "block2", "block3", "auto-rgn", "auto-snr")


def _run(out: Path, data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--data-dir", str(data_dir),
         "--workers", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=290,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(out)})


@pytest.mark.slow
@pytest.mark.timeout(600)  # two --quick invocations; about 30-60 s each on two busy cores
def test_quick_run_writes_reports_and_resumes(tmp_path: Path, builtin_data_dir: Path) -> None:
    out = tmp_path / "quick"
    first = _run(out, builtin_data_dir)
    assert first.returncode == 0, first.stdout + first.stderr

    with (out / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    # 2 shifts x 1 seed x (7 trained methods x 2 lrs + no fine-tuning)
    assert len(rows) == 2 * (7 * 2 + 1)
    assert {r["shift"] for r in rows} == {"impulse_noise", "label_flip"}
    assert {r["method"] for r in rows} == set(METHODS)
    for row in rows:
        for field in ("val_acc", "test_acc", "initial_val_acc", "tuned_share"):
            assert 0.0 <= float(row[field]) <= 1.0, (field, row)
        if row["method"] == "none":
            assert row["lr"] == "" and row["best_epoch"] == "0"
            assert float(row["tuned_share"]) == 0.0
        else:
            assert 1 <= int(row["best_epoch"]) <= 3
            assert float(row["lr"]) in (1e-2, 1e-3)
            assert len(row["val_curve"].split(";")) == 3
    shares = {r["method"]: float(r["tuned_share"]) for r in rows if r["method"] != "none"}
    assert shares["all"] == 1.0 and shares["head"] < shares["block1"] < shares["block3"] < 1.0
    assert {r["kind"] for r in rows} == {"input", "output"}

    table = (out / "table.md").read_text()
    for label in ("no FT", "all", "block 1", "block 2", "block 3", "last layer", "Auto-RGN",
                  "Auto-SNR", "impulse_noise", "label_flip"):
        assert label in table
    assert "**" in table  # a best cell per row
    png = (out / "figure2.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    second = _run(out, builtin_data_dir)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 to run" in second.stdout, second.stdout
    with (out / "runs.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
