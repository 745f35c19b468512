"""The feature- and output-level shifts built from MNIST labels and pixels.

The paper (Lee et al. 2023, Table 1) pairs each shift type with datasets: BREEDS for feature-level
shifts, CIFAR-Flip and Waterbirds for output-level ones. These are their MNIST analogues:

* subpopulation (BREEDS-style): five superclasses of two visually similar digits each. The
  source model learns the superclass from subpopulation A (the first digit of each pair); the
  target asks for the same superclasses on subpopulation B (the other digit). The label set
  does not change, the features that reveal it do.
* label_flip (CIFAR-Flip): the target relabels every digit by a seeded permutation of the ten
  labels with no fixed point, so the clean source model is wrong on every target image.
* spurious (Waterbirds-style): a binary task (digit >= 5) with a 4x4 white patch in the top-left
  corner (patch 0) or the top-right corner (patch 1). In the source data the patch equals the
  label for exactly 95% of each class's images; in the target the patch is independent of the
  label (each class of each split is split half and half, like Waterbirds' balanced groups), so
  a model that learnt the shortcut loses accuracy on the half where patch and label disagree.
"""

from __future__ import annotations

import numpy as np

#: Superclass k = (subpopulation A digit, subpopulation B digit); pairs share strokes.
SUPERCLASSES: tuple[tuple[int, int], ...] = ((0, 6), (1, 7), (2, 5), (3, 8), (4, 9))
SOURCE_AGREEMENT = 0.95  # share of source images whose patch position equals the label
PATCH_SIZE = 4
PATCH_VALUE = 255.0


def superclass_of(digits: np.ndarray, subpopulation: str) -> tuple[np.ndarray, np.ndarray]:
    """Mask of ``digits`` in subpopulation "A" or "B", and their superclass (0-4) labels."""
    if subpopulation not in ("A", "B"):
        raise ValueError(f"subpopulation must be 'A' or 'B', got {subpopulation!r}")
    column = 0 if subpopulation == "A" else 1
    lookup = np.full(10, -1, dtype=np.int64)
    for k, pair in enumerate(SUPERCLASSES):
        lookup[pair[column]] = k
    classes = lookup[np.asarray(digits)]
    mask = classes >= 0
    return mask, classes[mask]


def derangement(n: int, seed: int) -> np.ndarray:
    """A seeded permutation of ``range(n)`` with no fixed point (rejection sampling)."""
    if n < 2:
        raise ValueError("a permutation without fixed points needs at least 2 labels")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xF11B]))
    while True:  # about e = 2.7 tries on average
        perm = rng.permutation(n)
        if np.all(perm != np.arange(n)):
            return perm.astype(np.int64)


def binary_label(digits: np.ndarray) -> np.ndarray:
    """The spurious task's label: 1 for digits 5-9, 0 for digits 0-4."""
    return (np.asarray(digits) >= 5).astype(np.int64)


def assign_patches(labels: np.ndarray, agreement: float, rng: np.random.Generator) -> np.ndarray:
    """Patch positions (0 / 1) such that exactly ``round(agreement * n_c)`` of each class agree.

    Exact counts, not Bernoulli draws, so the source correlation is 95% on every seed and the
    target groups are balanced even in small few-shot splits.
    """
    labels = np.asarray(labels)
    patches = np.empty(len(labels), dtype=np.int64)
    for cls in np.unique(labels):
        ids = rng.permutation(np.flatnonzero(labels == cls))
        n_agree = int(round(agreement * len(ids)))
        patches[ids[:n_agree]] = cls
        patches[ids[n_agree:]] = 1 - cls
    return patches


def add_patches(images: np.ndarray, patches: np.ndarray) -> np.ndarray:
    """Copy of 0..255 ``images`` (N, 28, 28) with the white patch at each image's position.

    MNIST digits sit in a 20x20 box centred in the frame, so the 4-pixel corners are background
    and the patch never hides a stroke.
    """
    out = np.array(images, dtype=np.float32)
    s = PATCH_SIZE
    out[patches == 0, :s, :s] = PATCH_VALUE
    out[patches == 1, :s, -s:] = PATCH_VALUE
    return out


def patch_position(images: np.ndarray) -> np.ndarray:
    """Read the patch position back (for tests and plots): 1 if the right corner is brighter."""
    s = PATCH_SIZE
    left = images[:, :s, :s].mean(axis=(1, 2))
    right = images[:, :s, -s:].mean(axis=(1, 2))
    return (right > left).astype(np.int64)
