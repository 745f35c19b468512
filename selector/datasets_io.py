"""Data references -> train / val / test datasets.

Accepted references (mappings are the job spec's ``data`` object; strings are paths)::

    {"source": "imagefolder", "train": dir, "val": dir, "test": dir | None}
    {"source": "imagefolder", "root": dir}           one directory, split by SplitRule
    {"source": "tensors", "path": "x.pt" | "x.npz"}  images/labels (or x/y), or per-split keys
    {"source": "tensors", "path": ".../CIFAR-10-C/impulse_noise.npy", "severity": 5}
                                                     with labels.npy beside it
    "some/dir" (with train/ and val/ inside, or class folders) / "file.pt" / "file.npz" / ".npy"

A single pool of examples is split per class with a seeded rule (:class:`SplitRule`); the
paper's CIFAR-10-C protocol is ``SplitRule(per_class=(100, 10, 90))``. Images become float
tensors in [0, 1] (uint8 is divided by 255), channels first; resizing, channel conversion and
normalisation are :class:`ImageOptions`. Tensor sources are converted once and held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from selector.data_spec import DataSplits, ImageOptions, SplitRule, stratified_split
from selector.errors import DataError, EmptySplitError, LabelRangeError, MissingFileError
from selector.image_folders import load_image_folders
from selector.models_io import local_path
from selector.tensor_files import load_tensor_file

__all__ = [
    "DataSplits",
    "ImageOptions",
    "SplitRule",
    "load_datasets",
    "load_imagefolder_splits",
    "load_tensor_splits",
    "stratified_split",
]

SPLITS = ("train", "val", "test")


def load_datasets(ref: str | Path | Mapping[str, Any], *, num_classes: int | None = None,
                  options: ImageOptions | None = None, split: SplitRule | None = None,
                  severity: int | None = None) -> DataSplits:
    """Load a data reference (see the module docstring). Keys of a mapping reference named like
    the fields of :class:`ImageOptions` / :class:`SplitRule` (and ``severity``,
    ``num_classes``) override the keyword arguments."""
    spec: dict[str, Any] = dict(ref) if isinstance(ref, Mapping) else {"path": ref}
    options = _override(options or ImageOptions(), spec)
    split = _override(split or SplitRule(), spec)
    severity = spec.get("severity", severity)
    num_classes = spec.get("num_classes", num_classes)
    source = spec.get("source") or _guess_source(spec["path"])
    if source == "imagefolder":
        result = load_image_folders(spec, options, split)
    elif source == "tensors":
        result = load_tensor_file(local_path(spec["path"]), options, split, severity,
                          spec.get("labels"))
    else:
        raise DataError(f"unknown data source {source!r}: expected imagefolder or tensors")
    return _checked(result, num_classes)


def load_imagefolder_splits(train: str | Path, val: str | Path, test: str | Path | None = None,
                            **options: Any) -> tuple[Dataset[Any], Dataset[Any],
                                                     Dataset[Any] | None]:
    """Convenience: ``load_datasets({"source": "imagefolder", ...})`` as a tuple."""
    splits = load_datasets({"source": "imagefolder", "train": train, "val": val, "test": test,
                            **options})
    return splits.train, splits.val, splits.test


def load_tensor_splits(path: str | Path, **options: Any
                       ) -> tuple[Dataset[Any], Dataset[Any], Dataset[Any] | None]:
    """Convenience: ``load_datasets({"source": "tensors", "path": path})`` as a tuple."""
    splits = load_datasets({"source": "tensors", "path": path, **options})
    return splits.train, splits.val, splits.test


# --- checks -------------------------------------------------------------------------------


def _override(defaults: Any, spec: Mapping[str, Any]) -> Any:
    changes = {f.name: spec[f.name] for f in fields(defaults) if f.name in spec}
    for key in ("image_size", "per_class", "mean", "std"):
        if isinstance(changes.get(key), list):
            changes[key] = tuple(changes[key])
    return replace(defaults, **changes)


def _guess_source(path: Any) -> str:
    file = local_path(path)
    if file.is_dir():
        return "imagefolder"
    if file.suffix in (".pt", ".pth", ".npz", ".npy"):
        return "tensors"
    if not file.exists():
        raise MissingFileError(file, "data path")
    raise DataError(f"cannot tell what {file} holds: use a directory, .pt, .npz or .npy")


def _checked(splits: DataSplits, num_classes: int | None) -> DataSplits:
    """Non-empty splits and labels inside [0, num_classes) (inferred from train if None)."""
    labels: dict[str, Tensor] = {}
    for name in SPLITS:
        dataset = getattr(splits, name)
        if dataset is None:
            continue
        if len(dataset) == 0:
            raise EmptySplitError(f"{name} split is empty")
        labels[name] = _all_labels(dataset)
    inferred = splits.num_classes or int(max(int(y.max()) for y in labels.values()) + 1)
    classes = num_classes if num_classes is not None else inferred
    for name, y in labels.items():
        bad = y[(y < 0) | (y >= classes)]
        if len(bad):
            raise LabelRangeError(f"{name} split: label {int(bad[0])} is outside [0, {classes})")
    splits.num_classes = classes
    return splits


def _all_labels(dataset: Dataset[Any]) -> Tensor:
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return _all_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices),
                                                             dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is not None:
        return torch.as_tensor(targets)
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])  # type: ignore[arg-type]
