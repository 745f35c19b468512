"""The SOURCE / TARGET split and the sampling of target splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from selector.builtin.mnist import (
    POOL_PER_CLASS,
    SOURCE_PER_CLASS,
    load_split,
    sample_splits,
    source_stats,
    to_dataset,
)
from selector.builtin.shifts import target_splits


def test_source_and_pool_are_disjoint_and_stratified():
    split = load_split()
    assert not set(split.source_ids) & set(split.pool_ids)
    assert len(split.source_ids) + len(split.pool_ids) == 5000
    assert np.bincount(split.source_labels).tolist() == [SOURCE_PER_CLASS] * 10
    assert np.bincount(split.pool_labels).tolist() == [POOL_PER_CLASS] * 10
    assert split.source_images.shape == (3000, 28, 28)
    assert split.pool_images.min() >= 0 and split.pool_images.max() == 255
    assert not split.pool_images.flags.writeable  # shared: callers must not mutate it


def test_no_target_image_equals_a_source_image():
    split = load_split()
    source = {image.tobytes() for image in split.source_images.astype(np.uint8)}
    assert not any(image.tobytes() in source for image in split.pool_images.astype(np.uint8))


def test_sample_splits_default_sizes_are_stratified_and_disjoint():
    labels = load_split().pool_labels
    idx = sample_splits(labels, n_per_class=100, n_val=20, n_test=80, seed=0)
    for part, size in ((idx.train, 100), (idx.val, 20), (idx.test, 80)):
        assert np.bincount(labels[part], minlength=10).tolist() == [size] * 10
    assert len(np.unique(np.concatenate([idx.train, idx.val, idx.test]))) == 2000


def test_sample_splits_deterministic_per_seed():
    labels = load_split().pool_labels
    a = sample_splits(labels, n_per_class=10, n_val=5, n_test=5, seed=3)
    b = sample_splits(labels, n_per_class=10, n_val=5, n_test=5, seed=3)
    c = sample_splits(labels, n_per_class=10, n_val=5, n_test=5, seed=4)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    assert not np.array_equal(a.train, c.train)


def test_few_shot_keeps_the_test_split():
    labels = load_split().pool_labels
    full = sample_splits(labels, n_per_class=100, n_val=20, n_test=80, seed=0)
    few = sample_splits(labels, n_per_class=5, n_val=20, n_test=80, seed=0)
    assert np.array_equal(full.test, few.test) and np.array_equal(full.val, few.val)
    assert set(few.train) <= set(full.train) and len(few.train) == 50


def test_sample_splits_rejects_impossible_sizes():
    labels = load_split().pool_labels
    with pytest.raises(ValueError, match="n_per_class"):
        sample_splits(labels, n_per_class=150, n_val=20, n_test=80, seed=0)
    with pytest.raises(ValueError, match="at least 1"):
        sample_splits(labels, n_per_class=0, n_val=20, n_test=80, seed=0)


def test_datasets_are_normalised_float_tensors():
    mean, std = source_stats()
    assert 0.1 < mean < 0.16 and 0.28 < std < 0.34
    splits = target_splits("clean", seed=0, n_per_class=3, n_val=2, n_test=4)
    x, y = splits.train.tensors
    assert x.shape == (30, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(splits.val) == 20 and len(splits.test) == 40
    assert torch.isclose(x.min(), torch.tensor(-mean / std), atol=1e-5)
    ds = to_dataset(load_split().source_images, load_split().source_labels)
    assert abs(float(ds.tensors[0].mean())) < 1e-3 and abs(float(ds.tensors[0].std()) - 1) < 1e-3
