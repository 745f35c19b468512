"""The registry of built-in shifts: name -> kind, source model, and how to build the target.

Kinds follow the paper's taxonomy (Lee et al. 2023, Table 1), which predicts where tuning helps:

* ``input``: the 15 MNIST-C corruptions plus gaussian_noise, contrast and inverse
  (``corruptions``), applied to clean target digits; source model ``mnist-resnet``.
* ``feature``: ``subpopulation`` (BREEDS-style, ``synthetic``); ``mnist-resnet-subpop``.
* ``output``: ``label_flip`` (CIFAR-Flip-style, clean images, ``mnist-resnet``) and
  ``spurious`` (Waterbirds-style, ``mnist-resnet-spurious``).
* ``none``: ``clean`` (alias ``none``), the unshifted control the job schema also accepts.

Every target split comes from the TARGET pool, never from the images the source models saw.
The whole pool is corrupted once per (shift, severity, seed) and the splits are then selected,
so an image's corruption and the test split do not depend on ``n_per_class``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import TensorDataset

from selector.builtin import synthetic
from selector.builtin.corruptions import CORRUPTIONS, check_severity, corrupt
from selector.builtin.errors import UnknownChoiceError
from selector.builtin.mnist import load_split, sample_splits, to_dataset


@dataclass(frozen=True)
class ShiftSpec:
    name: str
    kind: str                 # "input" | "feature" | "output" | "none"
    model_name: str           # the builtin source model this shift is defined against
    num_classes: int
    has_severity: bool        # False: severity is accepted (1-5) but ignored, Case says None
    description: str


_SHIFTS = [
    *(ShiftSpec(name, "input", "mnist-resnet", 10, spec.levels is not None,
                f"{'MNIST-C' if spec.mnist_c else 'extra'} corruption {name}")
      for name, spec in CORRUPTIONS.items()),
    ShiftSpec("subpopulation", "feature", "mnist-resnet-subpop", 5, False,
              "superclasses of digit pairs; source digits A, target digits B"),
    ShiftSpec("label_flip", "output", "mnist-resnet", 10, False,
              "clean digits relabelled by a seeded permutation without fixed points"),
    ShiftSpec("spurious", "output", "mnist-resnet-spurious", 2, False,
              "digit >= 5; corner patch agrees with the label 95% in source, 50% in target"),
    ShiftSpec("clean", "none", "mnist-resnet", 10, False, "no shift: clean target digits"),
    ShiftSpec("none", "none", "mnist-resnet", 10, False, "alias of clean"),
]
SHIFTS: dict[str, ShiftSpec] = {spec.name: spec for spec in _SHIFTS}

#: Severity used when ``severity=None``: the MNIST-C level at which mnist-resnet's
#: no-fine-tuning accuracy on the target pool is closest to 50% (``calibrate.choose_severity``),
#: read off the table in ``CALIBRATION.md`` (regenerate: ``python -m selector.builtin.calibrate``).
#: In the 25-75% band: impulse_noise, glass_blur, motion_blur, shear, scale, rotate, spatter,
#: gaussian_noise, contrast. Out of it at every level: shot_noise and translate (mild even at
#: 5), brightness (a cliff: 96% at 1, 15% at 2) and fog (near chance at 1).
RECOMMENDED_SEVERITY: dict[str, int] = {
    "shot_noise": 5, "impulse_noise": 4, "glass_blur": 2, "motion_blur": 2, "shear": 5,
    "scale": 4, "rotate": 3, "brightness": 2, "translate": 5, "fog": 1, "spatter": 3,
    "gaussian_noise": 4, "contrast": 1,
}


def list_shifts() -> dict[str, str]:
    """Every built-in shift name -> its kind ("input" | "feature" | "output" | "none")."""
    return {name: spec.kind for name, spec in SHIFTS.items()}


def get_shift(name: str) -> ShiftSpec:
    try:
        return SHIFTS[name]
    except KeyError:
        raise UnknownChoiceError("shift", name, SHIFTS) from None


def recommended_severity(shift: str) -> int | None:
    """The calibrated default severity of ``shift``; None for shifts without severities."""
    spec = get_shift(shift)
    return RECOMMENDED_SEVERITY.get(shift, 5) if spec.has_severity else None


def resolve_severity(shift: str, severity: int | None) -> int | None:
    """Validate ``severity`` for ``shift``: None -> recommended; level-less shifts give None."""
    spec = get_shift(shift)
    if severity is not None:
        check_severity(severity)
    if not spec.has_severity:
        return None
    return recommended_severity(shift) if severity is None else int(severity)


@dataclass(frozen=True)
class TargetSplits:
    train: TensorDataset
    val: TensorDataset
    test: TensorDataset
    num_classes: int


def _select(images: np.ndarray, labels: np.ndarray, sample_labels: np.ndarray, *,
            n_per_class: int, n_val: int, n_test: int, seed: int,
            num_classes: int) -> TargetSplits:
    """Stratify by ``sample_labels`` (the digit or class) and wrap the splits as datasets."""
    idx = sample_splits(sample_labels, n_per_class=n_per_class, n_val=n_val, n_test=n_test,
                        seed=seed)
    return TargetSplits(to_dataset(images[idx.train], labels[idx.train]),
                        to_dataset(images[idx.val], labels[idx.val]),
                        to_dataset(images[idx.test], labels[idx.test]), num_classes)


def target_splits(shift: str, severity: int | None = None, seed: int = 0, *,
                  n_per_class: int = 100, n_val: int = 20, n_test: int = 80) -> TargetSplits:
    """The labelled target data of a case (no model involved), per class ``n_per_class``
    train / ``n_val`` val / ``n_test`` test images; "class" is the shift's label."""
    spec = get_shift(shift)
    severity = resolve_severity(shift, severity)
    pool = load_split()
    sizes = {"n_per_class": n_per_class, "n_val": n_val, "n_test": n_test, "seed": seed,
             "num_classes": spec.num_classes}
    images, digits = pool.pool_images, pool.pool_labels
    if spec.kind == "none":
        return _select(images, digits, digits, **sizes)
    if spec.kind == "input":
        corrupted = corrupt(images, shift, severity or 1, seed)
        return _select(corrupted, digits, digits, **sizes)
    if shift == "subpopulation":
        mask, classes = synthetic.superclass_of(digits, "B")
        return _select(images[mask], classes, classes, **sizes)
    if shift == "label_flip":
        permutation = synthetic.derangement(10, seed)
        return _select(images, permutation[digits], digits, **sizes)
    if shift == "spurious":
        return _spurious_splits(images, digits, **sizes)
    raise AssertionError(f"no target builder for registered shift {shift!r}")


def _spurious_splits(images: np.ndarray, digits: np.ndarray, *, n_per_class: int, n_val: int,
                     n_test: int, seed: int, num_classes: int) -> TargetSplits:
    """Binary labels; the patch is independent of the label within every split and class."""
    labels = synthetic.binary_label(digits)
    idx = sample_splits(labels, n_per_class=n_per_class, n_val=n_val, n_test=n_test, seed=seed)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B, 1]))
    parts = []
    for ids in (idx.train, idx.val, idx.test):
        patches = synthetic.assign_patches(labels[ids], 0.5, rng)
        parts.append(to_dataset(synthetic.add_patches(images[ids], patches), labels[ids]))
    train, val, test = parts
    return TargetSplits(train, val, test, num_classes)
