"""Data references -> train / val / test datasets.

Accepted references (mappings are the job spec's ``data`` object; strings are paths)::

    {"source": "imagefolder", "train": dir, "val": dir, "test": dir | None}
    {"source": "imagefolder", "root": dir, "split": {"train": 25, "val": 10, "test": 50}}
                                                     one directory, cut per class
    {"source": "tensors", "path": "x.pt" | "x.npz"}  images/labels (or x/y), or per-split keys
    {"source": "tensors", "path": ".../CIFAR-10-C/impulse_noise.npy", "severity": 5,
     "labels": ".../labels.npy"}                     (labels.npy beside it by default)
    "some/dir" (with train/ and val/ inside, or class folders) / "file.pt" / "file.npz" / ".npy"

Every mapping may carry ``transform`` (:class:`ImageOptions` fields plus ``preset``),
``split`` (``train``/``val``/``test``: per-class ints or fractions below 1) and ``n_per_class``
(few-shot train examples per class, seeded).

A single pool of examples is split per class with a seeded rule (:class:`SplitRule`); the
paper's CIFAR-10-C protocol is ``SplitRule(per_class=(100, 10, 90))``. Images become float
tensors in [0, 1] (uint8 is divided by 255), channels first; resizing, cropping, channel
conversion and normalisation are the resolved transform (:mod:`selector.io.transforms`; the
default depends on the model: ``model_ref``). Image folders are decoded once to uint8
(memory-mapped under ``cache_dir`` when given); tensor sources are held in memory.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset, TensorDataset

from selector.errors import DataError, EmptySplitError, LabelRangeError, MissingFileError
from selector.io.data_spec import DataSplits, ImageOptions, SplitRule, stratified_split
from selector.io.image_folders import load_image_folders, load_image_sample
from selector.io.models_io import local_path
from selector.io.tensor_files import load_tensor_file, load_tensor_sample
from selector.io.transforms import options_from_mapping, resolve_transform

__all__ = [
    "DataSplits",
    "ImageOptions",
    "SplitRule",
    "load_datasets",
    "load_imagefolder_splits",
    "load_reference",
    "load_tensor_splits",
    "stratified_split",
]

SPLITS = ("train", "val", "test")


def load_datasets(ref: str | Path | Mapping[str, Any], *, num_classes: int | None = None,
                  options: ImageOptions | None = None, split: SplitRule | None = None,
                  severity: int | None = None, model_ref: Mapping[str, Any] | None = None,
                  cache_dir: Path | None = None, loader_workers: int = 0,
                  cache_limit_bytes: int | None = None) -> DataSplits:
    """Load a data reference (see the module docstring). Keys of a mapping reference named like
    the fields of :class:`ImageOptions` / :class:`SplitRule` (and ``transform``, ``split``,
    ``n_per_class``, ``severity``, ``num_classes``) override the keyword arguments.
    ``model_ref`` (the job's model object) picks the default transform preset; ``cache_dir``
    keeps decoded image folders memory-mapped on disk (at most ``cache_limit_bytes`` of them,
    least recently used evicted first); ``loader_workers`` DataLoader worker processes stream
    splits too large to hold in memory."""
    spec: dict[str, Any] = dict(ref) if isinstance(ref, Mapping) else {"path": ref}
    options = _override(options or ImageOptions(), spec)
    if isinstance(spec.get("transform"), Mapping):
        options = options_from_mapping(spec["transform"])
    split = _override(split or SplitRule(), spec)
    if isinstance(spec.get("split"), Mapping):
        split = replace(split, **_split_fields(spec["split"]))
    if spec.get("n_per_class") is not None:
        split = replace(split, n_per_class=int(spec["n_per_class"]))
    severity = spec.get("severity", severity)
    num_classes = spec.get("num_classes", num_classes)
    source = spec.get("source") or _guess_source(spec.get("path") or spec.get("root"))
    transform = resolve_transform(options, model_ref)
    if source == "imagefolder":
        result = load_image_folders(spec, transform, split, cache_dir=cache_dir,
                                    loader_workers=loader_workers,
                                    cache_limit_bytes=cache_limit_bytes)
    elif source == "tensors":
        result = load_tensor_file(local_path(spec["path"]), transform, split, severity,
                                  spec.get("labels"))
    else:
        raise DataError(f"unknown data source {source!r}: expected imagefolder or tensors")
    result.transform = transform
    return _checked(result, num_classes)


def load_reference(ref: Mapping[str, Any], *, limit: int,
                   transform: Mapping[str, Any] | None = None,
                   model_ref: Mapping[str, Any] | None = None,
                   classes: Sequence[str] | None = None, num_classes: int | None = None,
                   seed: int = 0, loader_workers: int = 0) -> Dataset[Any]:
    """Clean, labelled images of the model's source distribution (the job spec's
    ``data.source_reference``: ``{"root": dir}`` or ``{"path": file, "labels": file}``): the
    shift diagnosis's reference (``diagnose_shift(source=...)``), never trained on.

    Read with the target's ``transform`` (the same mapping and ``model_ref`` the target was
    loaded with, so both sides of the comparison see the same preprocessing); at most ``limit``
    images, a seeded sample. ``classes``: the target's class names (an image folder's labels
    follow them); labels must lie in ``[0, num_classes)``."""
    resolved = resolve_transform(transform, model_ref)
    if ref.get("root"):
        dataset: Dataset[Any] = load_image_sample(
            local_path(ref["root"]), resolved, limit, seed,
            list(classes) if classes else None, loader_workers=loader_workers)
    elif ref.get("path"):
        dataset = load_tensor_sample(local_path(ref["path"]), resolved, limit, seed,
                                     ref.get("labels"))
    else:
        raise DataError("a source reference needs a root (image folder) or a path (tensors)")
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise EmptySplitError("the source reference holds no images")
    if num_classes is not None:
        labels = _all_labels(dataset)
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise LabelRangeError(f"source reference: label {int(bad[0])} is outside "
                                  f"[0, {num_classes})")
    return dataset


def _split_fields(value: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(value) - {"train", "val", "test"})
    if unknown:
        raise DataError(f"unknown split fields {unknown}; expected train, val, test")
    return {k: value.get(k) for k in ("train", "val", "test")}


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
    changes = {f.name: spec[f.name] for f in fields(defaults)
               if f.name in spec and f.name not in ("train", "val", "test")}
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
