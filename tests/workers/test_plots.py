"""The PNG plots' axes (no rendering needed to check what they will show)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.schemas import LeaderboardRow
from workers import plots


def _row(label: str, val: float, test: float | None, method: str = "surgical") -> LeaderboardRow:
    return LeaderboardRow(label=label, method=method, groups=[], lr=None, val_acc=val, test_acc=test)


@pytest.mark.parametrize(
    ("baseline", "expected_low"),
    [(0.05, 0.0), (0.33, 23.0), (0.95, 75.0)],
    ids=["far-below-the-bars", "below-the-bars", "above-the-bars"],
)
def test_the_no_fine_tuning_line_is_always_inside_the_axis(tmp_path: Path, baseline, expected_low):
    board = [_row("no fine-tuning", baseline, baseline, method="none"),
             _row("block1", 0.9, 0.88), _row("head", 0.86, 0.85)]
    low, high = plots.accuracy_axis(board)
    assert low == pytest.approx(expected_low) and high == 100.0
    assert low <= 100 * baseline <= high
    assert plots.plot_accuracy_by_part(tmp_path / "a.png", board, "t").stat().st_size > 0
