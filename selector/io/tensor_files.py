"""Tensor files: ``.pt`` / ``.npz`` (one pool, or per-split keys) and CIFAR-10-C ``.npy``.

Images become float tensors in [0, 1] (uint8 is divided by 255), channels first, converted once
and held in memory; the resolved transform (:mod:`selector.io.transforms`) resizes, crops,
converts channels and normalises. A single pool is cut by a :class:`SplitRule` (its
``n_per_class`` keeps a few training examples per class); per-split keys keep their splits and
``n_per_class`` applies to train.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from selector.errors import DataError, ImageShapeError, MissingFileError
from selector.io.data_spec import (
    DataSplits,
    SplitRule,
    few_shot,
    sample_indices,
    stratified_split,
)
from selector.io.models_io import local_path
from selector.io.transforms import ResolvedTransform

__all__ = ["load_tensor_file", "load_tensor_sample"]

SPLITS = ("train", "val", "test")


def load_tensor_file(path: Path, options: ResolvedTransform, rule: SplitRule,
                     severity: int | None, labels_path: str | None) -> DataSplits:
    if not path.is_file():
        raise MissingFileError(path, "data file")
    if path.suffix == ".npy":
        return _pool(*_cifar_c(path, severity, labels_path), options, rule)
    content = _read_named(path)
    pair = _pair(content, "")
    if pair is not None:
        return _pool(pair[0], pair[1], options, rule)
    per_split = {s: _pair(content, s) for s in SPLITS}
    if per_split["train"] is None or per_split["val"] is None:
        raise DataError(f"{path}: expected keys images/labels (or x/y), or per-split keys such "
                        f"as train_images/train_labels; found {sorted(content)}")
    built = {s: _dataset(*p, options) for s, p in per_split.items() if p is not None}
    train = built["train"]
    if rule.n_per_class is not None:
        x, y = train.tensors
        keep = few_shot(y, torch.arange(len(y)), rule.n_per_class, rule.seed)
        train = TensorDataset(x[keep], y[keep])
    return DataSplits(train, built["val"], built.get("test"), 0)


def load_tensor_sample(path: Path, options: ResolvedTransform, limit: int, seed: int,
                       labels_path: str | None = None) -> TensorDataset:
    """At most ``limit`` examples of a tensors file (a seeded sample), not cut into splits: a
    reference pool. A file of per-split keys gives its train split; a ``.npy`` is read whole
    (no severity: a reference is clean data). Only the chosen images are converted."""
    if not path.is_file():
        raise MissingFileError(path, "data file")
    if path.suffix == ".npy":
        images, labels = _cifar_c(path, None, labels_path)
    else:
        content = _read_named(path)
        pair = _pair(content, "") or _pair(content, "train")
        if pair is None:
            raise DataError(f"{path}: expected keys images/labels (or x/y), or train_images/"
                            f"train_labels; found {sorted(content)}")
        images, labels = pair
    y = _labels(labels if isinstance(labels, Tensor) else np.array(labels))  # a writable copy
    if len(images) != len(y):
        raise DataError(f"{len(images)} images but {len(y)} labels")
    keep = torch.as_tensor(sample_indices(len(y), limit, seed), dtype=torch.long)
    chosen = images[keep] if isinstance(images, Tensor) else np.asarray(images)[keep.numpy()]
    return TensorDataset(_images(chosen, options), y[keep])


def _read_named(path: Path) -> Mapping[str, Any]:
    """:func:`_read`, with a truncated, foreign or pickled-code file reported by name."""
    try:
        return _read(path)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"{path} is not a readable {path.suffix} tensors file "
                        f"({type(error).__name__}: {str(error).strip().split('. ')[0][:200]})") from error


def _read(path: Path) -> Mapping[str, Any]:
    """The arrays of a ``.npz`` or the dict of a ``.pt`` (``weights_only``: no code runs)."""
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {k: archive[k] for k in archive.files}
    if path.suffix in (".pt", ".pth"):
        content = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(content, Mapping):
            raise DataError(f"{path} holds a {type(content).__name__}; expected a dict with "
                            "images and labels")
        return content
    raise DataError(f"unsupported data file {path.name}: use .pt, .npz or .npy")


def _pair(content: Mapping[str, Any], split: str) -> tuple[Any, Any] | None:
    if split and isinstance(content.get(split), Mapping):
        return _pair(content[split], "")
    if split and isinstance(content.get(split), (tuple, list)) and len(content[split]) == 2:
        return content[split][0], content[split][1]
    pre, post = (f"{split}_", f"_{split}") if split else ("", "")
    for images, labels in (("images", "labels"), ("x", "y")):
        for a, b in ((pre + images, pre + labels), (images + post, labels + post)):
            if a in content and b in content:
                return content[a], content[b]
    return None


def _cifar_c(path: Path, severity: int | None, labels_path: str | None) -> tuple[Any, Any]:
    """CIFAR-10-C: ``<corruption>.npy`` holds severities 1..5 stacked (10,000 images each)."""
    labels_file = local_path(labels_path) if labels_path else path.with_name("labels.npy")
    if not labels_file.is_file():
        raise MissingFileError(labels_file, "labels file")
    images, labels = _load_npy(path), _load_npy(labels_file)
    if len(images) != len(labels):
        raise DataError(f"{path.name} has {len(images)} images but {labels_file.name} "
                        f"{len(labels)} labels")
    if severity is not None:
        if severity not in range(1, 6) or len(images) % 5 or len(images) < 5:
            raise DataError(f"severity must be 1..5 for a file of 5 stacked severities; got "
                            f"severity={severity} for {len(images)} images")
        size = len(images) // 5
        images, labels = images[(severity - 1) * size:severity * size], labels[
            (severity - 1) * size:severity * size]
    return np.array(images), np.asarray(labels)  # copies the slice out of the memory map


def _load_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, memory-mapped; pickled object arrays (which could run code) and
    truncated or foreign files raise DataError naming the file, never a bare ValueError."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npy array ({type(error).__name__}: "
                        f"{str(error).strip()[:200]})") from error


def _pool(images: Any, labels: Any, options: ResolvedTransform, rule: SplitRule) -> DataSplits:
    """Split first, then convert only the chosen images: a CIFAR-10-C file resized to 224 px
    as float32 would need 6 GB per severity, the paper's 2,000 chosen images 1.2 GB."""
    y = _labels(labels)
    shape = tuple(images.shape) if hasattr(images, "shape") else np.shape(images)
    if len(shape) not in (3, 4):
        raise ImageShapeError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got "
                              f"shape {shape}")
    if len(images) != len(y):
        raise DataError(f"{len(images)} images but {len(y)} labels")
    train, val, test = stratified_split(y, rule)

    def part(idx: Tensor) -> TensorDataset:
        chosen = images[idx] if isinstance(images, Tensor) else np.asarray(images)[idx.numpy()]
        return TensorDataset(_images(chosen, options), y[idx])

    return DataSplits(part(train), part(val), part(test) if len(test) else None, 0)


def _dataset(images: Any, labels: Any, options: ResolvedTransform) -> TensorDataset:
    x, y = _images(images, options), _labels(labels)
    if len(x) != len(y):
        raise DataError(f"{len(x)} images but {len(y)} labels")
    return TensorDataset(x, y)


def _images(images: Any, options: ResolvedTransform) -> Tensor:
    x = torch.as_tensor(np.asarray(images)) if not isinstance(images, Tensor) else images
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    elif x.dim() != 4:
        raise ImageShapeError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got "
                              f"shape {tuple(x.shape)}")
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    return options.apply_tensor(x.contiguous())


def _labels(labels: Any) -> Tensor:
    y = torch.as_tensor(np.asarray(labels)) if not isinstance(labels, Tensor) else labels
    if y.dim() != 1:
        raise DataError(f"labels must be 1-D class indices, got shape {tuple(y.shape)}")
    return y.long()
