"""ImageFolder directories: one per split (class indices aligned on the train split's), or
one directory cut per class by a :class:`SplitRule`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from selector.data_spec import DataSplits, ImageOptions, SplitRule, image_size, stratified_split
from selector.errors import DataError, EmptySplitError, LabelRangeError, MissingFileError
from selector.models_io import local_path

__all__ = ["load_image_folders"]

SPLITS = ("train", "val", "test")


def load_image_folders(spec: Mapping[str, Any], options: ImageOptions, rule: SplitRule
                  ) -> DataSplits:
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    steps: list[Any] = []
    if options.channels is not None:
        steps.append(transforms.Grayscale(options.channels))
    if options.image_size is not None:
        steps.append(transforms.Resize(image_size(options.image_size), antialias=True))
    steps.append(transforms.ToTensor())
    if options.mean is not None or options.std is not None:
        channels = len(options.mean or options.std or ())
        steps.append(transforms.Normalize(options.mean or (0.0,) * channels,
                                          options.std or (1.0,) * channels))
    transform = transforms.Compose(steps)
    root = spec.get("root") or spec.get("path")
    dirs = {s: spec.get(s) for s in SPLITS}
    if root is not None and not dirs["train"] and (local_path(root) / "train").is_dir():
        dirs = {s: local_path(root) / s for s in SPLITS if (local_path(root) / s).is_dir()}
    train_dir = dirs.get("train")
    if not train_dir:
        if root is None:
            raise DataError("imagefolder data needs train (and val) directories, or a root")
        whole = _folder(ImageFolder, local_path(root), transform, None)
        train, val, test = stratified_split(torch.tensor(whole.targets), rule)
        return DataSplits(Subset(whole, train.tolist()), Subset(whole, val.tolist()),
                          Subset(whole, test.tolist()) if len(test) else None,
                          len(whole.classes), tuple(whole.classes))
    train_set = _folder(ImageFolder, local_path(train_dir), transform, None)
    classes = list(train_set.classes)
    if not dirs.get("val"):
        raise DataError("imagefolder data with a train directory needs a val directory too")
    others = {s: _folder(ImageFolder, local_path(d), transform, classes)
              for s, d in dirs.items() if s != "train" and d is not None}
    return DataSplits(train_set, others["val"], others.get("test"), len(classes),
                      tuple(classes))


def _folder(base: Any, path: Path, transform: Any, classes: list[str] | None) -> Any:
    """An ImageFolder; with ``classes``, using that class -> index map (the train split's)."""
    if not path.is_dir():
        raise MissingFileError(path, "image directory")
    found = sorted(d.name for d in path.iterdir() if d.is_dir())
    if classes is not None:
        known = list(classes)
        unknown = sorted(set(found) - set(known))
        if unknown:
            raise LabelRangeError(f"{path} has class folders not in the train split: {unknown}")

        class Aligned(base):  # type: ignore[misc,valid-type]
            def find_classes(self, directory: Any) -> tuple[list[str], dict[str, int]]:
                return list(known), {c: i for i, c in enumerate(known)}

        return Aligned(str(path), transform=transform, allow_empty=True)
    if not found:
        raise EmptySplitError(f"{path} has no class folders")
    return base(str(path), transform=transform, allow_empty=True)
