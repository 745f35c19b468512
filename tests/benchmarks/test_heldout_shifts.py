"""The held-out shifts (``benchmarks/heldout_shifts.py``): what each corruption does, and that
the reproduction benchmark runs them under the same protocol as the built-in ones."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks import heldout_shifts as heldout

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from selector.builtin.mnist import load_split

    return np.array(load_split().pool_images[:40], dtype=np.float64)


@pytest.mark.parametrize("name", list(heldout.HELDOUT))
def test_every_level_keeps_the_image_format_and_changes_the_images(name: str,
                                                                   digits: np.ndarray) -> None:
    for severity in range(1, len(heldout.HELDOUT[name].levels) + 1):
        out = heldout.corrupt(digits, heldout.PREFIX + name, severity, seed=3)
        assert out.shape == digits.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
        assert np.abs(out - digits).mean() > 1.0  # a real shift at every level
        assert np.array_equal(out, heldout.corrupt(digits, name, severity, seed=3))


@pytest.mark.parametrize("name", ["elastic", "perspective"])
def test_random_warps_depend_on_the_seed(name: str, digits: np.ndarray) -> None:
    assert not np.array_equal(heldout.corrupt(digits, name, 3, seed=3),
                              heldout.corrupt(digits, name, 3, seed=4))


def test_zero_warps_are_the_identity(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(heldout.perspective(digits, 0.0, rng), digits, atol=1e-6)
    np.testing.assert_allclose(heldout.elastic(digits, 0.0, rng), digits, atol=1e-6)


def test_pixelate_averages_whole_cells(digits: np.ndarray) -> None:
    out = heldout.pixelate(digits, 7, np.random.default_rng(0))  # 28 / 7: 4x4 cells
    cell = out[:, :4, 4:8]
    assert np.allclose(cell, cell[:, :1, :1])
    np.testing.assert_allclose(cell[:, 0, 0], digits[:, :4, 4:8].mean(axis=(1, 2)))


def test_mirror_and_dilate(digits: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    assert np.array_equal(heldout.mirror(digits, 0, rng), digits[:, :, ::-1])
    thick = heldout.dilate(digits, 3, rng)
    assert (thick >= digits).all() and (thick > 0).sum() > (digits > 0).sum()


def test_an_unknown_name_is_one_readable_line() -> None:
    with pytest.raises(SystemExit, match="unknown held-out shift 'heldout:fisheye'; choose from"):
        heldout.get("heldout:fisheye")


@pytest.mark.slow
def test_a_heldout_case_runs_through_the_reproduction_benchmark(
        tmp_path: Path, builtin_data_dir: Path, mnist_resnet) -> None:
    """The level is the calibrated one (untouched accuracy closest to 50%), the splits have
    the built-in sizes, and ``reproduce.py`` accepts the name and writes its runs."""
    case = heldout.load_case("heldout:mirror", 3, n_per_class=5, n_val=2, n_test=4,
                             data_dir=str(builtin_data_dir))
    assert (case.kind, case.severity, case.model_name) == ("input", 1, "mnist-resnet")
    assert [len(s) for s in (case.train, case.val, case.test)] == [50, 20, 40]
    out = tmp_path / "grid"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--out", str(out),
         "--data-dir", str(builtin_data_dir), "--regimes", "10", "--shifts", "heldout:mirror",
         "--shifts-for", "10=heldout:mirror", "--seeds-for", "10=3", "--methods", "none,head",
         "--lrs", "1e-2", "--lrs-for", "head=1e-2", "--epochs", "1", "--n-val", "5",
         "--n-test", "10", "--workers", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    with (out / "runs.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {(r["shift"], r["kind"], r["severity"], r["method"]) for r in rows} == {
        ("heldout:mirror", "input", "1", "none"), ("heldout:mirror", "input", "1", "head")}
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reproduce.py"), "--out", str(out),
         "--shifts", "heldout:fisheye", "--shifts-for", "100=heldout:fisheye"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines()[-1].startswith("unknown held-out shift")


def test_the_heldout_model_has_the_benchmark_parts_and_trains_by_the_recipe(
        digits: np.ndarray) -> None:
    from benchmarks import heldout_model
    from selector.builtin.pretrain import PretrainRecipe, train_source
    from selector.layers.groups import discover_groups

    labels = np.arange(len(digits)) % 10
    model, _ = train_source(digits, labels, 10, PretrainRecipe(epochs=1, batch_size=20),
                            heldout_model.SEED, build=heldout_model.build)
    assert (model.depth, model.widths) == (20, (12, 24, 48)) and not model.training
    assert [g.name for g in discover_groups(model)] == ["block1", "block2", "block3", "head"]


def test_builtin_shifts_on_the_heldout_model_resolve_by_name() -> None:
    assert heldout.is_heldout("resnet20:rotate") and heldout.on_heldout_model("resnet20:rotate")
    assert (heldout.kind("resnet20:label_flip"), heldout.num_classes("resnet20:label_flip"),
            heldout.model_name("resnet20:rotate")) == ("output", 10, "heldout-resnet20")
    assert heldout.default_level("resnet20:rotate") == 3  # the built-in calibrated level
    with pytest.raises(SystemExit, match="takes a built-in shift of mnist-resnet's clean"):
        heldout.builtin_spec("resnet20:subpopulation")  # defined on another source model


def test_the_search_benchmark_loads_a_heldout_case_with_its_source_null(
        builtin_data_dir: Path, mnist_resnet) -> None:
    from benchmarks.search_efficiency import load_search_case

    case = load_search_case("heldout:mirror", 3, regime=5, n_val=2, n_test=4, epochs=1,
                            severity=None, data_dir=str(builtin_data_dir))
    assert (case.shift, case.n_val, len(case.setup.train)) == ("heldout:mirror", 20, 50)
    assert case.diagnosis_ranking is not None and "block1" in case.diagnosis_ranking


def test_cases_resolve_every_kind_of_name_the_benchmarks_take() -> None:
    from benchmarks import cases

    assert [cases.model_name(s) for s in ("subpopulation", "resnet20:shear", "heldout:mirror")] \
        == ["mnist-resnet-subpop", "heldout-resnet20", "mnist-resnet"]
    assert [cases.num_classes(s) for s in ("spurious", "resnet20:label_flip")] == [2, 10]
    assert [cases.default_level(s) for s in ("rotate", "resnet20:rotate", "stripe")] == [3, 3, None]
