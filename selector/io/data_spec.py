"""Plain records for data loading: image options, the split rule, the loaded splits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from selector.errors import DataError

__all__ = ["DataSplits", "ImageOptions", "SplitRule", "few_shot", "image_size", "sample_indices",
           "stratified_split"]


@dataclass(frozen=True)
class ImageOptions:
    """What the user asks for (the job spec's ``data.transform``); resolved by
    :func:`selector.io.transforms.resolve_transform`. ``preset``: "none" | "imagenet" |
    "weights" (None: the model's default); ``image_size``: (H, W) or a square side, a plain
    resize, or the centre crop after ``resize`` (shorter side); ``channels``: 1 or 3;
    ``mean``/``std``: per-channel normalisation after scaling to [0, 1]."""

    image_size: int | tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    preset: str | None = None
    resize: int | None = None


Amount = int | float  # an int is a per-class count, a float below 1 a per-class fraction


@dataclass(frozen=True)
class SplitRule:
    """How one pool (a root folder or a tensors file) is cut per class. Seeded, stratified.

    ``train``/``val``/``test``: per-class counts (ints) or fractions (floats below 1, rounded
    up, so a class keeps at least one example); ``train=None`` takes the rest. Without any of
    them: ``per_class=(train, val, test)`` counts, or ``val_fraction``/``test_fraction`` with
    the rest for train. ``n_per_class`` then keeps that many train examples per class (few-shot,
    the paper's regime)."""

    per_class: tuple[int, int, int] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0
    train: Amount | None = None
    val: Amount | None = None
    test: Amount | None = None
    n_per_class: int | None = None

    def amounts(self) -> tuple[Amount | None, Amount, Amount]:
        if self.train is not None or self.val is not None or self.test is not None:
            return self.train, self.val or 0, self.test or 0
        if self.per_class is not None:
            return tuple(self.per_class)  # type: ignore[return-value]
        return None, self.val_fraction, self.test_fraction


@dataclass
class DataSplits:
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any] | None
    num_classes: int
    classes: tuple[str, ...] | None = None
    transform: Any = None  # the ResolvedTransform that ran (its .record() for the result)


def stratified_split(labels: Tensor, rule: SplitRule,
                     classes: Sequence[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of train, val and test: per class, a seeded shuffle cut by ``rule`` (then
    ``rule.n_per_class`` train examples per class). ``classes`` names the classes in errors."""
    generator = torch.Generator().manual_seed(rule.seed)
    parts: list[list[Tensor]] = [[], [], []]
    train_amount, *held_out = rule.amounts()
    for cls in torch.unique(labels).tolist():
        name = repr(classes[cls]) if classes is not None and cls < len(classes) else str(cls)
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        n_val, n_test = (_count(a, len(idx)) for a in held_out)
        n_train = len(idx) - n_val - n_test if train_amount is None else _count(
            train_amount, len(idx))
        wanted = n_train + n_val + n_test
        if wanted > len(idx) or n_train < 1:
            raise DataError(f"class {name} has {len(idx)} examples, fewer than the split asks "
                            f"for (train {n_train if train_amount is not None else 'the rest'}, "
                            f"val {n_val}, test {n_test})")
        start = 0
        for part, count in zip(parts, (n_train, n_val, n_test), strict=True):
            part.append(idx[start:start + count])
            start += count
    train, val, test = (torch.sort(torch.cat(p)).values if p else torch.zeros(0, dtype=torch.long)
                        for p in parts)
    if rule.n_per_class is not None:
        train = few_shot(labels, train, rule.n_per_class, rule.seed, classes)
    return train, val, test


def few_shot(labels: Tensor, indices: Tensor, n_per_class: int, seed: int,
             classes: Sequence[str] | None = None) -> Tensor:
    """``n_per_class`` of ``indices`` per class (seeded, stratified, sorted)."""
    if n_per_class < 1:
        raise DataError(f"n_per_class must be >= 1, got {n_per_class}")
    generator = torch.Generator().manual_seed(seed + 1)
    kept = []
    subset = labels[indices]
    for cls in torch.unique(subset).tolist():
        mine = indices[subset == cls]
        if len(mine) < n_per_class:
            name = repr(classes[cls]) if classes is not None and cls < len(classes) else str(cls)
            raise DataError(f"class {name} has {len(mine)} training examples, fewer than "
                            f"n_per_class={n_per_class}")
        kept.append(mine[torch.randperm(len(mine), generator=generator)[:n_per_class]])
    return torch.sort(torch.cat(kept)).values


def sample_indices(n: int, limit: int, seed: int) -> list[int]:
    """At most ``limit`` of ``range(n)``, a seeded random choice, in file order (sorted reads)."""
    if n <= limit:
        return list(range(n))
    generator = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=generator)[:limit].tolist())


def _count(amount: Amount, n: int) -> int:
    if isinstance(amount, float) and not amount.is_integer() or (
            isinstance(amount, float) and amount < 1):
        if not 0 <= amount < 1:
            raise DataError(f"split fractions must be in [0, 1), got {amount}")
        return math.ceil(n * amount - 1e-9)
    if amount < 0:
        raise DataError(f"split counts must be >= 0, got {amount}")
    return int(amount)


def image_size(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
