"""Splits as seeded batches, with the cheap checks that turn shape and label mistakes into
readable errors before any training starts.

A split is materialised as two tensors when it fits in ``MATERIALISE_LIMIT_BYTES`` (the paper's
target sets are a few thousand images): indexing a tensor is far cheaper than collating
``Dataset`` items for every batch of every trial. Larger splits are read item by item in the
same seeded order, so both paths see identical batches.

Decoded image folders (:class:`selector.io.decode_cache.DecodedImages`) are read as uint8 in whole
batches: materialised splits are normalised once; larger ones stream uint8 batches (through a
``DataLoader`` with ``loader_workers`` worker processes and pinned memory on CUDA when asked)
and are normalised on the training device, which moves a quarter of the bytes of float32.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from selector.errors import DataError, EmptySplitError, ImageShapeError, LabelRangeError
from selector.io.decode_cache import DecodedImages

__all__ = ["MATERIALISE_LIMIT_BYTES", "SplitData", "has_random_transform"]

MATERIALISE_LIMIT_BYTES = 1 << 30


class SplitData:
    """One split (train, val or test) ready for batching on one device."""

    def __init__(self, dataset: Dataset[Any], name: str, *,
                 limit_bytes: int | None = None) -> None:
        try:
            n = len(dataset)  # type: ignore[arg-type]
        except TypeError as exc:
            raise DataError(f"{name} split: the dataset has no len(); pass a map-style "
                            "torch Dataset") from exc
        if n == 0:
            raise EmptySplitError(f"{name} split is empty")
        self.name = name
        self.n = n
        self.dataset = dataset
        self.device = torch.device("cpu")
        self.num_classes: int | None = None
        limit = MATERIALISE_LIMIT_BYTES if limit_bytes is None else limit_bytes
        self.decoded = _decoded(dataset)
        self.streams = False
        self._loader: DataLoader[Any] | None = None
        self._order: _Order | None = None
        self.random = has_random_transform(dataset)
        # a randomly transformed dataset is read item by item every epoch: materialising it
        # would freeze one draw of the augmentation
        tensors = (_as_tensors(dataset, limit) if self.decoded is None and not self.random
                   else None)
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        if self.decoded is not None:
            base, idx = self.decoded
            self.sample_shape = tuple(base.images.shape[1:])
            self.dtype = torch.float32
            if 4 * int(np.prod(self.sample_shape)) * len(idx) <= limit:
                x, self.y = base.uint8_batch(idx)
                self.x = base.transform.normalise(x)
                self.y = self.y.long()
            else:
                self.streams = True
        elif tensors is None:
            first, _ = _item(dataset, 0, name)
            self.sample_shape = tuple(first.shape)
            self.dtype = first.dtype
        else:
            self.x, self.y = _check_labels_dtype(tensors[0], tensors[1], name)
            if len(self.x) != len(self.y):
                raise DataError(f"{name} split: {len(self.x)} images but {len(self.y)} labels")
            self.n = len(self.x)
            self.sample_shape = tuple(self.x.shape[1:])
            self.dtype = self.x.dtype
        if not self.dtype.is_floating_point:
            raise ImageShapeError(
                f"{name} images have dtype {self.dtype}; the model needs floating-point "
                "images (convert, e.g. uint8 / 255, or use selector.io.inputs.load_datasets)")

    @classmethod
    def from_tensors(cls, name: str, x: Tensor, y: Tensor) -> SplitData:
        return cls(TensorDataset(x, y), name, limit_bytes=1 << 62)

    def to(self, device: torch.device) -> SplitData:
        """Move materialised tensors to ``device`` (lazy splits move batch by batch)."""
        self.device = device
        if self.x is not None and self.y is not None:
            self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def check_labels(self, num_classes: int) -> None:
        """Raise :class:`LabelRangeError` if a label is outside ``[0, num_classes)``; lazy
        splits are checked batch by batch as they are read."""
        self.num_classes = num_classes
        if self.y is not None:
            _check_range(self.y, num_classes, self.name)

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        if self.x is not None and self.y is not None:
            idx = indices.to(self.x.device)
            return self.x[idx], self.y[idx]
        if self.decoded is not None:
            base, idx = self.decoded
            return self._on_device(base.uint8_batch(idx[indices]))
        items = [_item(self.dataset, int(i), self.name) for i in indices]
        x = torch.stack([item[0] for item in items]).to(self.device)
        y = torch.tensor([item[1] for item in items], dtype=torch.long, device=self.device)
        if self.num_classes is not None:
            _check_range(y, self.num_classes, self.name)
        return x, y

    def batches(self, batch_size: int, order: Tensor | None = None
                ) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches in ``order`` (a permutation of ``range(n)``) or in dataset order; the last
        batch may be smaller (the reference's DataLoader keeps it)."""
        indices = order if order is not None else torch.arange(self.n)
        chunks = [indices[start:start + batch_size] for start in range(0, self.n, batch_size)]
        if self.streams and self.decoded is not None and self.decoded[0].loader_workers > 0:
            yield from self._streamed(chunks)
            return
        for chunk in chunks:
            yield self.batch(chunk)

    def _streamed(self, chunks: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        """Batches read by DataLoader worker processes. The loader is built once per split and
        keeps its workers between epochs (``persistent_workers``): starting processes every
        epoch costs more than reading a few hundred decoded images. Its batch sampler runs in
        this process, so each epoch's order is simply handed to it."""
        assert self.decoded is not None
        base, idx = self.decoded
        if self._loader is None:
            self._order = _Order()
            self._loader = DataLoader(
                _Rows(base, idx), batch_sampler=self._order, collate_fn=_as_is,
                num_workers=base.loader_workers, persistent_workers=True, prefetch_factor=4,
                pin_memory=self.device.type == "cuda")
        assert self._order is not None
        self._order.chunks = [c.tolist() for c in chunks]
        for pair in self._loader:
            yield self._on_device(pair)

    def _on_device(self, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """A uint8 batch moved to the device, then normalised there."""
        assert self.decoded is not None
        x, y = (t.to(self.device, non_blocking=True) for t in pair)
        if self.num_classes is not None:
            _check_range(y, self.num_classes, self.name)
        return self.decoded[0].transform.normalise(x), y.long()


class _Rows(Dataset[tuple[Tensor, Tensor]]):
    """The rows ``idx`` of a decoded dataset, read a whole batch at a time (``__getitems__``:
    one sorted read of the memory map per batch, in a DataLoader worker)."""

    def __init__(self, base: DecodedImages, idx: Tensor) -> None:
        self.base, self.idx = base, idx

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        return self.base.uint8_batch(self.idx[torch.as_tensor(indices, dtype=torch.long)])


class _Order:
    """A batch sampler whose batches are set per epoch (it runs in the training process)."""

    chunks: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


def _as_is(batch: Any) -> Any:
    return batch


_RANDOM = ("ColorJitter", "AutoAugment", "RandAugment", "TrivialAugmentWide", "AugMix",
           "GaussianBlur", "ElasticTransform", "GaussianNoise", "JPEG")


def has_random_transform(dataset: Any) -> bool:
    """Whether ``dataset`` (or the dataset a Subset wraps) applies a random torchvision
    transform (``Random*``, colour jitter, auto-augment policies, ...). Random augmentation is
    outside the paper's protocol; such datasets are never materialised nor prefix-cached."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    pending = [getattr(dataset, "transform", None), getattr(dataset, "transforms", None)]
    while pending:
        step = pending.pop()
        if step is None:
            continue
        name = type(step).__name__
        if name.startswith("Random") or name in _RANDOM:
            return True
        pending.extend(getattr(step, "transforms", None) or [])
        inner = getattr(step, "transform", None)
        if inner is not None and inner is not step:
            pending.append(inner)
    return False


def _decoded(dataset: Dataset[Any]) -> tuple[DecodedImages, Tensor] | None:
    """A decoded image dataset (or a Subset of one, nested) and the indices it exposes."""
    if isinstance(dataset, DecodedImages):
        return dataset, torch.arange(len(dataset))
    if isinstance(dataset, Subset):
        inner = _decoded(dataset.dataset)
        if inner is not None:
            return inner[0], inner[1][torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    return None


def _as_tensors(dataset: Dataset[Any], limit_bytes: int) -> tuple[Tensor, Tensor] | None:
    """Whole-split tensors: directly for TensorDataset (and Subsets of one), by reading every
    item when the split fits in ``limit_bytes``; None when it does not."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, Subset) and isinstance(dataset.dataset, TensorDataset):
        base = _as_tensors(dataset.dataset, limit_bytes)
        if base is not None:
            idx = torch.as_tensor(list(dataset.indices), dtype=torch.long)
            return base[0][idx], base[1][idx]
    n = len(dataset)  # type: ignore[arg-type]
    first, _ = _item(dataset, 0, "dataset")
    if first.numel() * first.element_size() * n > limit_bytes:
        return None
    items = [_item(dataset, i, "dataset") for i in range(n)]
    try:
        x = torch.stack([item[0] for item in items])
    except RuntimeError as exc:
        shapes = sorted({tuple(item[0].shape) for item in items})
        raise ImageShapeError(f"images of different shapes in one split: {shapes[:4]}; "
                              "resize them to one size") from exc
    return x, torch.tensor([item[1] for item in items])


def _item(dataset: Dataset[Any], index: int, split: str) -> tuple[Tensor, int]:
    item = dataset[index]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise DataError(f"{split} split: items must be (image, label) pairs, got "
                        f"{type(item).__name__}")
    image, label = item[0], item[1]
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, Tensor):
        raise ImageShapeError(
            f"{split} split: images must be tensors, got {type(image).__name__}; add a "
            "transform such as torchvision.transforms.ToTensor()")
    if isinstance(label, Tensor):
        if label.numel() != 1:
            raise DataError(f"{split} split: labels must be class indices, got a tensor of "
                            f"shape {tuple(label.shape)}")
        label = label.item()
    if isinstance(label, (float, np.floating)) and float(label).is_integer():
        label = int(label)
    if not isinstance(label, (int, np.integer)):
        raise DataError(f"{split} split: labels must be integers, got {label!r}")
    return image, int(label)


def _check_labels_dtype(x: Tensor, y: Tensor, name: str) -> tuple[Tensor, Tensor]:
    if y.dim() != 1:
        raise DataError(f"{name} split: labels must be a 1-D tensor of class indices, got "
                        f"shape {tuple(y.shape)}")
    if y.dtype.is_floating_point and not torch.equal(y, y.round()):
        raise DataError(f"{name} split: labels must be integers")
    return x, y.long()


def _check_range(y: Tensor, num_classes: int, name: str) -> None:
    bad = y[(y < 0) | (y >= num_classes)]
    if len(bad):
        raise LabelRangeError(
            f"{name} split: label {int(bad[0])} is outside [0, {num_classes}) (the model "
            f"outputs {num_classes} classes; {len(bad)} labels out of range)")
