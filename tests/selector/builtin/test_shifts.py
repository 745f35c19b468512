"""The shift registry and the feature- / output-level constructions (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selector.builtin import UnknownChoiceError, list_shifts, recommended_severity
from selector.builtin.corruptions import CORRUPTIONS
from selector.builtin.mnist import denormalise, load_split
from selector.builtin.shifts import RECOMMENDED_SEVERITY, SHIFTS, resolve_severity, target_splits
from selector.builtin.sources import SOURCES
from selector.builtin.synthetic import (
    SUPERCLASSES,
    assign_patches,
    binary_label,
    derangement,
    patch_position,
)

SMALL = {"n_per_class": 20, "n_val": 5, "n_test": 20}


def test_list_shifts_kinds():
    shifts = list_shifts()
    assert {name for name, kind in shifts.items() if kind == "input"} == set(CORRUPTIONS)
    assert shifts["subpopulation"] == "feature"
    assert shifts["label_flip"] == shifts["spurious"] == "output"
    assert shifts["clean"] == shifts["none"] == "none"
    assert all(spec.model_name in SOURCES for spec in SHIFTS.values())


def test_recommended_severities_cover_levelled_corruptions():
    levelled = {n for n, s in CORRUPTIONS.items() if s.levels is not None}
    assert set(RECOMMENDED_SEVERITY) == levelled
    assert all(recommended_severity(n) in range(1, 6) for n in levelled)
    assert recommended_severity("stripe") is None and recommended_severity("label_flip") is None
    assert resolve_severity("impulse_noise", None) == RECOMMENDED_SEVERITY["impulse_noise"]
    assert resolve_severity("impulse_noise", 2) == 2
    assert resolve_severity("zigzag", 5) is None  # accepted, but the shift has no levels


def test_unknown_choices_raise_value_errors_listing_valid_ones():
    with pytest.raises(UnknownChoiceError, match="'snow'.*impulse_noise.*label_flip"):
        target_splits("snow")
    with pytest.raises(ValueError, match="severity 0"):
        resolve_severity("rotate", 0)
    with pytest.raises(ValueError, match="severity 9"):
        resolve_severity("stripe", 9)
    with pytest.raises(UnknownChoiceError):
        recommended_severity("nope")


def test_input_shift_is_deterministic_and_seeded():
    a = target_splits("rotate", 3, seed=0, **SMALL)
    b = target_splits("rotate", 3, seed=0, **SMALL)
    c = target_splits("rotate", 3, seed=1, **SMALL)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(a.test.tensors[1], b.test.tensors[1])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    assert a.num_classes == 10 and len(a.train) == 200 and len(a.test) == 200


def test_corruption_of_a_test_image_does_not_depend_on_n_per_class():
    few = target_splits("motion_blur", 2, seed=0, n_per_class=5, n_val=5, n_test=20)
    full = target_splits("motion_blur", 2, seed=0, n_per_class=50, n_val=5, n_test=20)
    assert torch.equal(few.test.tensors[0], full.test.tensors[0])


def test_label_flip_is_a_derangement_of_clean_images():
    for seed in range(20):
        perm = derangement(10, seed)
        assert sorted(perm) == list(range(10)) and np.all(perm != np.arange(10))
    assert not np.array_equal(derangement(10, 0), derangement(10, 1))
    flipped = target_splits("label_flip", seed=0, **SMALL)
    clean = target_splits("clean", seed=0, **SMALL)
    assert torch.equal(flipped.test.tensors[0], clean.test.tensors[0])  # same images
    assert torch.equal(flipped.test.tensors[1], torch.as_tensor(derangement(10, 0))[
        clean.test.tensors[1]])
    assert not torch.any(flipped.test.tensors[1] == clean.test.tensors[1])


def test_subpopulation_target_uses_the_other_digit_of_each_superclass():
    pool = load_split()
    splits = target_splits("subpopulation", seed=0, **SMALL)
    assert splits.num_classes == 5
    x, y = splits.train.tensors
    assert np.bincount(y.numpy()).tolist() == [20] * 5
    # Recover each image's digit from the pool to check it belongs to subpopulation B.
    lookup = {img.astype(np.uint8).tobytes(): d for img, d in zip(pool.pool_images,
                                                                  pool.pool_labels, strict=True)}
    digits = [lookup[img.round().astype(np.uint8).tobytes()] for img in denormalise(x)]
    for digit, cls in zip(digits, y.tolist(), strict=True):
        assert digit == SUPERCLASSES[cls][1]


def test_spurious_patch_agrees_95_percent_in_source_and_half_in_target():
    source = SOURCES["mnist-resnet-spurious"].data()
    images, labels = source.train
    agree = np.mean(patch_position(images) == labels)
    assert abs(agree - 0.95) < 0.005
    assert np.array_equal(labels, binary_label(load_split().source_labels))
    target = target_splits("spurious", seed=0, n_per_class=100, n_val=20, n_test=80)
    for split in (target.train, target.val, target.test):
        x, y = split.tensors
        patches = patch_position(denormalise(x))
        assert abs(np.mean(patches == y.numpy()) - 0.5) <= 0.01
        for cls in (0, 1):  # the patch is balanced inside each class: independent of y
            assert abs(np.mean(patches[y.numpy() == cls]) - 0.5) <= 0.01
    assert target.num_classes == 2


def test_assign_patches_exact_counts():
    labels = np.array([0] * 100 + [1] * 60)
    patches = assign_patches(labels, 0.95, np.random.default_rng(0))
    assert np.sum(patches[:100] == 0) == 95 and np.sum(patches[100:] == 1) == 57
