"""The late-bloomer measurement: crafted curves with known answers, and the committed table
regenerates from the committed grid."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import late_bloomers as lb  # noqa: E402

FIELDS = ("shift", "regime", "seed", "method", "lr", "epochs", "bn_mode", "n_val", "val_curve")


def _write(path: Path, curves: dict[tuple[str, float], list[float]], *, shift: str = "zigzag",
           n_val: int = 20) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for (method, lr), curve in curves.items():
            writer.writerow({"shift": shift, "regime": 25, "seed": 0, "method": method, "lr": lr,
                             "epochs": len(curve), "bn_mode": "eval", "n_val": n_val,
                             "val_curve": ";".join(f"{v:.3f}" for v in curve)})
    return path


def test_starting_learning_rates_and_rungs_follow_auto() -> None:
    lrs = lb.starting_lrs()
    assert lrs["head"] == 0.1 and lrs["block3"] == lrs["all"] == lrs["auto-rgn"] == 1e-3
    assert lb.rungs(15) == [2, 6]


def test_a_slow_starter_that_ends_far_ahead_is_behind_and_matters(tmp_path: Path) -> None:
    # 200 validation images (20 x 10 classes): one SE at 70% is 3.2 points
    quick = [0.60, 0.70, 0.70, 0.70, 0.70, 0.70, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71, 0.71, 0.72]
    slow = [0.30, 0.40, 0.50, 0.55, 0.60, 0.62, 0.70, 0.75, 0.80, 0.82, 0.84, 0.85, 0.86, 0.87, 0.88]
    path = _write(tmp_path / "runs.csv", {("head", 0.1): quick, ("block3", 1e-3): slow,
                                          ("block3", 1e-4): [0.9] * 15})  # another lr: ignored
    found = lb.outcomes(lb.curves(path, 15), 15)
    assert [(o.rung, o.leader, o.winner, o.behind, o.matters) for o in found] == [
        (2, "head", "block3", True, True), (6, "head", "block3", True, True)]
    assert found[0].n_val == 200


def test_within_noise_or_ending_level_is_not_counted(tmp_path: Path) -> None:
    lead = [0.80] * 15
    close = [0.78] * 14 + [0.90]      # 2 points behind at the rungs: within one SE (2.8)
    level = [0.50] * 14 + [0.81]      # far behind, but ends within one SE of the leader's final
    path = _write(tmp_path / "runs.csv", {("block1", 1e-3): lead, ("block2", 1e-3): close})
    assert not any(o.behind for o in lb.outcomes(lb.curves(path, 15), 15))
    path = _write(tmp_path / "runs.csv", {("block1", 1e-3): lead, ("block2", 1e-3): level})
    assert [(o.behind, o.matters) for o in lb.outcomes(lb.curves(path, 15), 15)] == [
        (True, False), (True, False)]


def test_the_committed_table_is_what_the_committed_grid_gives(tmp_path: Path) -> None:
    out = tmp_path / "late.md"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "late_bloomers.py"), "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    committed = (ROOT / "benchmarks" / "results" / "late_bloomers.md").read_text()
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("Command:")]  # noqa: E731
    assert strip(out.read_text()) == strip(committed)


def test_no_matching_curves_is_one_readable_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "runs.csv", {("block1", 1e-2): [0.5] * 15})
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "late_bloomers.py"),
                           "--runs-csv", str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error: no 15-epoch curves")
