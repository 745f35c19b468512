import pytest

from workers.space import (
    TrialSpec,
    baseline_specs,
    contiguous,
    label_for,
    lr_grid,
    paper_parts,
    rank_groups_by_rgn,
)

NAMES = ("block1", "block2", "block3", "head")


def test_contiguous_clips_to_depth():
    assert contiguous(NAMES, 2, 5) == ("block3", "head")
    with pytest.raises(ValueError):
        contiguous(NAMES, 4, 1)


def test_labels():
    assert label_for(NAMES, NAMES) == "all"
    assert label_for(NAMES, ("block2",)) == "block2"
    assert label_for(NAMES, ("block1", "block2")) == "block1..block2"


def test_paper_parts_and_baselines():
    assert [p.label for p in paper_parts(NAMES)] == [*NAMES, "all"]
    assert [s.label for s in baseline_specs(NAMES, 1e-3)] == ["head", "all", "auto-rgn"]


def test_lr_grid_is_the_papers_grid_inside_the_range():
    assert lr_grid(1e-5, 1e-1) == [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    assert lr_grid(2e-3, 5e-2) == [1e-2]
    assert lr_grid(2e-3, 3e-3) == [pytest.approx((2e-3 * 3e-3) ** 0.5)]


def test_rank_by_rgn_breaks_ties_by_depth():
    assert rank_groups_by_rgn({"block1": 0.5, "block2": 0.5, "head": 1.0}, NAMES) == ["head", "block1", "block2"]


def test_trial_spec_validates():
    with pytest.raises(ValueError):
        TrialSpec("surgical", (), 1e-3, "x")
    with pytest.raises(ValueError):
        TrialSpec("magic", ("block1",), 1e-3, "x")
    with pytest.raises(ValueError):
        TrialSpec("surgical", ("block1",), float("nan"), "x")
