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
    # --report-only re-compares the CSV with the grid without diagnosing again: blank the grid
    # columns and the agreement line, and it restores both from the grid
    with (out / "diagnosis.csv").open(newline="") as handle:
        stale = list(csv.DictReader(handle))
    for row in stale:
        row.update(grid_best="", agree="", regret="")
    with (out / "diagnosis.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(stale[0]))
        writer.writeheader()
        writer.writerows(stale)
    (out / "diagnosis.md").write_text(report.replace("**Agreement:", "**Stale:"))
    again = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "diagnosis.py"), "--report-only", "--out",
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr[-2000:]
    rewritten = (out / "diagnosis.md").read_text()
    assert rewritten.split("\n", 1)[1] == report.split("\n", 1)[1]
    with (out / "diagnosis.csv").open(newline="") as handle:
        restored = {row["shift"]: row for row in csv.DictReader(handle)}
    assert restored["impulse_noise"]["grid_best"] == rows["impulse_noise"]["grid_best"] != ""


def _run(shift: str, seed: int, method: str, lr: str, val: float, test: float) -> dict[str, str]:
    return {"shift": shift, "kind": "input", "severity": "", "regime": "25", "seed": str(seed),
            "method": method, "lr": lr, "best_epoch": "3", "val_acc": f"{val}",
            "val_loss": "0.5", "test_acc": f"{test}", "tuned_share": "0.1"}


def test_grid_counts_only_cases_whose_runs_are_all_in(tmp_path: Path) -> None:
    """An interrupted grid leaves a case part-run: it must not be compared on the parts and
    learning rates that happened to finish."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.diagnosis import compare, grid_tests

    rows = []
    for seed in (0, 1):
        rows.append(_run("rotate", seed, "none", "", 0.5, 0.5))
        for method in ("all", "block1", "block2", "block3"):
            for lr, val in (("0.001", 0.8), ("0.0001", 0.7)):
                bonus = 0.1 if method == "block3" else 0.0
                rows.append(_run("rotate", seed, method, lr, val + bonus, val + bonus))
        for lr in ("0.1", "0.01", "0.001"):
            rows.append(_run("rotate", seed, "head", lr, 0.6, 0.6))
    rows = [r for r in rows if not (r["seed"] == "1" and r["method"] == "block3"
                                    and r["lr"] == "0.0001")]  # seed 1 was cut short
    first = tmp_path / "a.csv"
    with first.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    grid = grid_tests([first, tmp_path / "missing.csv"])
    assert set(grid) == {("rotate", 25, 0)}
    assert grid[("rotate", 25, 0)]["block3"] == pytest.approx(0.9)
    row = {"top": "block1"}
    compare(row, grid[("rotate", 25, 0)])
    assert row["grid_best"] == "block3" and row["agree"] == 0 and row["regret"] == "10.0"
    assert row["resolved"] == ""  # no test-set size: not judged
    compare(row, grid[("rotate", 25, 0)], test_images=800)  # 2 SE = 3.5 points
    assert row["resolved"] == 1
    compare(row, grid[("rotate", 25, 0)], test_images=80)   # 2 SE = 11.2 points
    assert row["resolved"] == 0
