"""ImageFolder directories: one per split (class indices aligned on the train split's), or
one root directory cut per class by a :class:`SplitRule`.

Images are decoded once through the geometric half of the resolved transform into uint8
(:mod:`selector.io.decode_cache`; memory-mapped on disk when a ``cache_dir`` is given) and
normalised per batch. Files are listed like torchvision's ``ImageFolder`` (class folders sorted
by name, files with an image extension).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from selector.errors import DataError, EmptySplitError, LabelRangeError, MissingFileError
from selector.io.data_spec import (
    DataSplits,
    SplitRule,
    few_shot,
    sample_indices,
    stratified_split,
)
from selector.io.decode_cache import DecodedImages, decode_files
from selector.io.models_io import local_path
from selector.io.transforms import ResolvedTransform

__all__ = ["list_images", "load_image_folders", "load_image_sample"]

SPLITS = ("train", "val", "test")


def load_image_folders(spec: Mapping[str, Any], transform: ResolvedTransform, rule: SplitRule,
                       *, cache_dir: Path | None = None, loader_workers: int = 0,
                       cache_limit_bytes: int | None = None) -> DataSplits:
    def decoded(path: Path, classes: list[str] | None) -> tuple[DecodedImages, list[str]]:
        files, labels, names = list_images(path, classes)
        return decode_files(files, labels, transform, cache_dir=cache_dir,
                            loader_workers=loader_workers,
                            cache_limit_bytes=cache_limit_bytes), names

    root = spec.get("root") or spec.get("path")
    dirs = {s: spec.get(s) for s in SPLITS}
    if root is not None and not dirs["train"] and (local_path(root) / "train").is_dir():
        dirs = {s: local_path(root) / s for s in SPLITS if (local_path(root) / s).is_dir()}
    train_dir = dirs.get("train")
    if not train_dir:
        if root is None:
            raise DataError("imagefolder data needs train (and val) directories, or a root")
        whole, classes = decoded(local_path(root), None)
        train, val, test = stratified_split(whole.labels, rule, classes)
        return DataSplits(Subset(whole, train.tolist()), Subset(whole, val.tolist()),
                          Subset(whole, test.tolist()) if len(test) else None,
                          len(classes), tuple(classes))
    train_set, classes = decoded(local_path(train_dir), None)
    if not dirs.get("val"):
        raise DataError("imagefolder data with a train directory needs a val directory too")
    others = {s: decoded(local_path(d), classes)[0]
              for s, d in dirs.items() if s != "train" and d is not None}
    few: Any = train_set
    if rule.n_per_class is not None:
        keep = few_shot(train_set.labels, torch.arange(len(train_set)), rule.n_per_class,
                        rule.seed, classes)
        few = Subset(train_set, keep.tolist())
    return DataSplits(few, others["val"], others.get("test"), len(classes), tuple(classes))


def load_image_sample(path: Path, transform: ResolvedTransform, limit: int, seed: int,
                      classes: list[str] | None = None, *, loader_workers: int = 0
                      ) -> DecodedImages:
    """At most ``limit`` images of an ImageFolder directory (a seeded sample), decoded in
    memory: a reference pool, read once per job. Not written to the decode cache, whose one
    file per folder a sample of the target's own folder would keep replacing. ``classes``:
    the target's class names, so that labels mean the same on both sides."""
    files, labels, _ = list_images(path, classes)
    keep = sample_indices(len(files), limit, seed)
    return decode_files([files[i] for i in keep], [labels[i] for i in keep], transform,
                        loader_workers=loader_workers)


def list_images(path: Path, classes: list[str] | None = None
                ) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of an ImageFolder directory; with ``classes``, labels use
    that class -> index map (the train split's) and unknown class folders are an error."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not path.is_dir():
        raise MissingFileError(path, "image directory")
    found = sorted(d.name for d in path.iterdir() if d.is_dir())
    if classes is not None:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise LabelRangeError(f"{path} has class folders not in the train split: {unknown}")
    elif not found:
        raise EmptySplitError(f"{path} has no class folders")
    names = list(classes) if classes is not None else found
    files: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(names):
        folder = path / name
        if not folder.is_dir():
            continue
        for file in sorted(folder.rglob("*")):
            if file.is_file() and file.suffix.lower() in IMG_EXTENSIONS:
                files.append(file)
                labels.append(index)
    if not files:
        raise EmptySplitError(f"{path} has no image files ({', '.join(IMG_EXTENSIONS)})")
    return files, labels, names
