"""Decode image files once into a uint8 array, memory-mapped from disk and shared.

A search trains dozens of trials for several epochs each; decoding every JPEG again in every
epoch of every trial costs far more than the training of a small head. So a list of image files
is decoded once, through the geometric half of a :class:`ResolvedTransform`, into one
``(N, C, H, W)`` uint8 ``.npy`` file under ``cache_dir``; later loads (other trials, other jobs,
other worker processes on the machine) memory-map it, and the operating system's page cache
shares the pages between processes.

The file's name is a hash of the file list, every file's size and mtime, and the transform's
geometry, so a changed folder (a file added, removed or rewritten) gets a new file; older files
for the same folder and transform are removed. With ``cache_limit_bytes`` the directory is
bounded too: a long-running service sees folders come and go, so every use marks a file as
recently used (its mtime) and writing a new file evicts the least recently used others until
the directory fits. Evicting a file another process has mapped is safe on POSIX (the mapping
keeps its pages); a process that finds its file gone between the check and the load decodes it
again. Writes are atomic: the array is written to a
temporary file and renamed into place, under an exclusive ``flock`` so two workers do not decode
the same folder twice (the second waits, then maps the first's file).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selector.errors import DataError, ImageShapeError
from selector.io.transforms import ResolvedTransform

__all__ = ["DecodedImages", "cache_key", "decode_files", "evict_least_recent"]

_VERSION = 1
SIZE_HINT = ('set data.transform.image_size (e.g. 224, or [h, w]) or data.transform.preset '
             '"imagenet" in the job spec (ImageOptions(image_size=...) in the library)')


class DecodedImages(Dataset[tuple[Tensor, int]]):
    """uint8 images (N, C, H, W), labels, and the normalisation applied per item or batch.

    Pickles by path when memory-mapped (DataLoader worker processes map the same file rather
    than receiving a copy). ``loader_workers`` is how many DataLoader worker processes stream it
    when it is too large to hold as float tensors (:class:`selector.finetune.batches.SplitData`)."""

    def __init__(self, images: np.ndarray, labels: Tensor, transform: ResolvedTransform,
                 *, path: Path | None = None, loader_workers: int = 0) -> None:
        self.images = images
        self.labels = labels.long()
        self.transform = transform
        self.path = path
        self.loader_workers = loader_workers

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        x = torch.from_numpy(np.array(self.images[index]))
        return self.transform.normalise(x.unsqueeze(0))[0], int(self.labels[index])

    def uint8_batch(self, indices: Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        """Raw uint8 images and labels of ``indices`` (sorted reads: the file is mapped)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        order = torch.argsort(idx)
        rows = np.asarray(self.images[idx[order].numpy()])
        x = torch.empty((len(idx), *rows.shape[1:]), dtype=torch.uint8)
        x[order] = torch.from_numpy(rows)
        return x, self.labels[idx]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.path is not None:
            state["images"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.images is None and self.path is not None:
            self.images = np.load(self.path, mmap_mode="r")


def cache_key(files: Sequence[Path], transform: ResolvedTransform) -> tuple[str, str]:
    """(folder key, content key): the folder and geometry; plus every file's size and mtime."""
    listing = [str(f) for f in files]
    folder = hashlib.sha256(json.dumps([_VERSION, os.path.commonpath(listing) if listing else "",
                                        transform.geometry_key()]).encode()).hexdigest()[:16]
    content = hashlib.sha256()
    for file in files:
        stat = file.stat()
        content.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return folder, content.hexdigest()[:16]


def decode_files(files: Sequence[Path], labels: Sequence[int], transform: ResolvedTransform,
                 *, cache_dir: Path | None = None, loader_workers: int = 0,
                 cache_limit_bytes: int | None = None) -> DecodedImages:
    """Decode ``files`` through ``transform``'s geometry; with ``cache_dir``, reuse (or write)
    the memory-mapped cache file, keeping the directory under ``cache_limit_bytes`` (None: no
    bound) by evicting the least recently used files. Images of different sizes after the
    transform are an :class:`ImageShapeError` that names the spec field to set."""
    y = torch.as_tensor(list(labels), dtype=torch.long)
    if cache_dir is None:
        return DecodedImages(_decode_all(files, transform, loader_workers), y, transform,
                             loader_workers=loader_workers)
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder, content = cache_key(files, transform)
    path = cache_dir / f"{folder}-{content}.npy"
    for attempt in (1, 2):
        if not path.exists():
            with _locked(cache_dir / f"{folder}.lock"):
                if not path.exists():  # another process may have built it while we waited
                    _write(path, files, transform, loader_workers)
                    for stale in cache_dir.glob(f"{folder}-*.npy"):
                        if stale != path:
                            stale.unlink(missing_ok=True)
                    if cache_limit_bytes is not None:
                        evict_least_recent(cache_dir, cache_limit_bytes, keep=path)
        try:
            images = np.load(path, mmap_mode="r")
            break
        except FileNotFoundError:  # evicted by another process between the check and the load
            if attempt == 2:
                raise
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: the last to be evicted
    if len(images) != len(y):
        raise DataError(f"decode cache {path} holds {len(images)} images for {len(y)} files")
    return DecodedImages(images, y, transform, path=path, loader_workers=loader_workers)


def evict_least_recent(cache_dir: Path, limit_bytes: int, *, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used cache files (oldest mtime first) until the directory's
    ``.npy`` files fit in ``limit_bytes``; ``keep`` is never removed. Returns what was removed."""
    entries = []
    for file in cache_dir.glob("*.npy"):
        with contextlib.suppress(OSError):  # removed by another process meanwhile
            stat = file.stat()
            entries.append((stat.st_mtime_ns, stat.st_size, file))
    total = sum(size for _, size, _ in entries)
    removed = []
    for _, size, file in sorted(entries, key=lambda e: e[0]):
        if total <= limit_bytes:
            break
        if keep is not None and file == keep:
            continue
        file.unlink(missing_ok=True)
        total -= size
        removed.append(file)
    return removed


def _decode_all(files: Sequence[Path], transform: ResolvedTransform, workers: int = 0
                ) -> np.ndarray:
    first = _decode(files[0], transform)
    out = np.empty((len(files), *first.shape), dtype=np.uint8)
    for index, array in enumerate(_arrays(files, transform, first, workers)):
        out[index] = array
    return out


def _write(path: Path, files: Sequence[Path], transform: ResolvedTransform,
           workers: int = 0) -> None:
    first = _decode(files[0], transform)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        out = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.uint8,
                                        shape=(len(files), *first.shape))
        for index, array in enumerate(_arrays(files, transform, first, workers)):
            out[index] = array
        out.flush()
        del out
        os.replace(temporary, path)  # atomic: readers see the whole file or none
    finally:
        temporary.unlink(missing_ok=True)


def _arrays(files: Sequence[Path], transform: ResolvedTransform, first: np.ndarray,
            workers: int = 0) -> Iterator[np.ndarray]:
    """Every file decoded, in order; with ``workers``, by that many DataLoader processes
    (decoding and resizing photos is the expensive part of a first load)."""
    if workers > 0 and len(files) > 1:
        from torch.utils.data import DataLoader

        loader = DataLoader(_Files(files, transform), batch_size=64, num_workers=workers,
                            collate_fn=_as_list)
        decoded: Iterator[np.ndarray] = (a for batch in loader for a in batch)
    else:
        decoded = (_decode(file, transform) for file in files)
    for file, array in zip(files, decoded, strict=True):
        if array.shape != first.shape:
            raise ImageShapeError(
                f"images of different sizes: {files[0].name} is {_hw(first)} but {file.name} "
                f"is {_hw(array)}; {SIZE_HINT}")
        yield array


class _Files(Dataset[np.ndarray]):
    def __init__(self, files: Sequence[Path], transform: ResolvedTransform) -> None:
        self.files, self.transform = files, transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> np.ndarray:
        return _decode(self.files[index], self.transform)


def _as_list(batch: list[np.ndarray]) -> list[np.ndarray]:
    return batch


def _decode(file: Path, transform: ResolvedTransform) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(file) as image:
            return transform.apply_pil(image).numpy()
    except OSError as exc:
        raise DataError(f"cannot read image {file}: {exc}") from exc


def _hw(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[2]}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
