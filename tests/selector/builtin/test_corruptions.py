"""MNIST-C corruptions: contract (shape, range, determinism), effect and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from selector.builtin.corruptions import CORRUPTIONS, MNIST_C, SEVERITIES, corrupt
from selector.builtin.corruptions_spatial import motion_kernel
from selector.builtin.errors import UnknownChoiceError
from selector.builtin.mnist import load_split

LEVELLED = [name for name, spec in CORRUPTIONS.items() if spec.levels is not None]
# MNIST-C's own spatter table switches regime at level 4 (thin blobs, sigma 1): less change.
NOT_MONOTONE = {"spatter"}
# Spatter's random blobs may miss an image entirely (as in MNIST-C): count changed images.
SOMETIMES_CLEAN = {"spatter"}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return load_split().pool_images[::50]  # 40 digits, 4 per class


def test_the_fifteen_mnist_c_corruptions_and_three_extras():
    assert MNIST_C == ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear",
                       "scale", "rotate", "brightness", "translate", "stripe", "fog", "spatter",
                       "dotted_line", "zigzag", "canny_edges")
    assert set(CORRUPTIONS) - set(MNIST_C) == {"gaussian_noise", "contrast", "inverse"}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_every_severity_gives_finite_changed_images(name, images):
    for severity in SEVERITIES:
        out = corrupt(images, name, severity, seed=0)
        assert out.shape == images.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 255
        assert np.abs(out - images).mean() > 1.0, (name, severity)
        changed = np.abs(out - images).reshape(len(images), -1).max(axis=1) > 0
        assert changed.mean() >= (0.5 if name in SOMETIMES_CLEAN else 1.0), (name, severity)


@pytest.mark.parametrize("name", LEVELLED)
def test_severity_is_monotone_in_mean_change(name, images):
    change = [float(np.abs(corrupt(images, name, s, seed=0) - images).mean()) for s in SEVERITIES]
    assert change[-1] > change[0], change
    if name not in NOT_MONOTONE:
        assert all(b >= 0.97 * a for a, b in zip(change, change[1:], strict=False)), change


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_deterministic_given_name_severity_seed(name, images):
    a = corrupt(images[:8], name, 3, seed=7)
    assert np.array_equal(a, corrupt(images[:8], name, 3, seed=7))
    if name not in ("stripe", "inverse", "canny_edges", "brightness", "contrast", "scale"):
        assert not np.array_equal(a, corrupt(images[:8], name, 3, seed=8)), "seed ignored"


def test_single_image_and_input_untouched(images):
    before = images[0].copy()
    out = corrupt(images[0], "rotate", 5, seed=0)
    assert out.shape == (28, 28) and np.array_equal(images[0], before)


def test_published_parameters_spot_checks(images):
    assert CORRUPTIONS["impulse_noise"].levels == (0.03, 0.06, 0.09, 0.17, 0.27)
    assert CORRUPTIONS["shot_noise"].levels == (60, 25, 12, 5, 3)
    assert CORRUPTIONS["fog"].parameter(5) == (3.0, 1.4)
    grey = np.full((50, 28, 28), 128.0)
    noisy = corrupt(grey, "impulse_noise", 5, seed=0)
    assert 0.25 < np.mean(noisy != 128) < 0.29  # amount 0.27, half salt and half pepper
    assert 0.4 < np.mean(noisy[noisy != 128] == 255) < 0.6
    bright = corrupt(images, "brightness", 5, seed=0)
    assert np.allclose(bright[images == 0], 127.5)  # background + 0.5 of white
    stripe = corrupt(images, "stripe", 1, seed=0)
    assert np.array_equal(stripe[:, :, 7:21], images[:, :, 7:21])
    assert set(np.unique(corrupt(images, "canny_edges", 1, seed=0))) <= {0.0, 255.0}


def test_motion_kernel_is_a_normalised_one_sided_trail():
    weights, d_rows, d_cols = motion_kernel(10, 3, np.array([0.0, 90.0]))
    assert len(weights) == 21 and np.isclose(weights.sum(), 1) and weights[0] == weights.max()
    assert d_cols[0].tolist() == list(range(21)) and not d_rows[0].any()
    assert d_rows[1].tolist() == list(range(21)) and not d_cols[1].any()


def test_unknown_names_and_severities_list_the_choices(images):
    with pytest.raises(UnknownChoiceError, match="glass_blur") as info:
        corrupt(images, "snow")
    assert isinstance(info.value, ValueError) and "shot_noise" in str(info.value)
    with pytest.raises(ValueError, match="severity 6.*1, 2, 3, 4, 5"):
        corrupt(images, "rotate", 6)
    with pytest.raises(ValueError, match="shape"):
        corrupt(images[:, :20], "rotate", 1)


def test_two_thousand_images_take_seconds():
    pool = load_split().pool_images
    for name in ("fog", "motion_blur"):  # the slowest ones
        started = time.perf_counter()
        corrupt(pool, name, 5, seed=0)
        assert time.perf_counter() - started < 15, name  # about 1 s on an idle core
