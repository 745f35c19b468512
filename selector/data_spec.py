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

__all__ = ["DataSplits", "ImageOptions", "SplitRule", "image_size", "stratified_split"]


@dataclass(frozen=True)
class ImageOptions:
    """``image_size``: resize to (H, W) or a square side; ``channels``: convert to 1 or 3;
    ``mean``/``std``: per-channel normalisation after scaling to [0, 1]."""

    image_size: int | tuple[int, int] | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SplitRule:
    """How one pool is cut per class: exact counts ``per_class=(train, val, test)``, or
    fractions for val and test (rounded up per class) with the rest for train. Seeded,
    stratified."""

    per_class: tuple[int, int, int] | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class DataSplits:
    train: Dataset[Any]
    val: Dataset[Any]
    test: Dataset[Any] | None
    num_classes: int
    classes: tuple[str, ...] | None = None


def stratified_split(labels: Tensor, rule: SplitRule) -> tuple[Tensor, Tensor, Tensor]:
    """Indices of train, val and test: per class, a seeded shuffle cut by ``rule``."""
    generator = torch.Generator().manual_seed(rule.seed)
    parts: list[list[Tensor]] = [[], [], []]
    for cls in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == cls).flatten()
        idx = idx[torch.randperm(len(idx), generator=generator)]
        if rule.per_class is not None:
            counts = list(rule.per_class)
            if sum(counts) > len(idx):
                raise DataError(f"class {cls} has {len(idx)} examples, fewer than the "
                                f"{sum(counts)} that per_class={rule.per_class} asks for")
        else:
            n_val, n_test = (math.ceil(len(idx) * f - 1e-9)  # a class keeps >= 1 val example
                             for f in (rule.val_fraction, rule.test_fraction))
            counts = [len(idx) - n_val - n_test, n_val, n_test]
            if counts[0] < 1:
                raise DataError(f"class {cls} has {len(idx)} examples: too few to keep one for "
                                f"training after val_fraction={rule.val_fraction} and "
                                f"test_fraction={rule.test_fraction}")
        start = 0
        for part, count in zip(parts, counts, strict=True):
            part.append(idx[start:start + count])
            start += count
    train, val, test = (torch.sort(torch.cat(p)).values if p else torch.zeros(0, dtype=torch.long)
                        for p in parts)
    return train, val, test


def image_size(size: int | Sequence[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
