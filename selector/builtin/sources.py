"""Built-in source models: what each is trained on, and their cached weights.

* ``mnist-resnet`` (10 classes): clean digits, 300 per digit.
* ``mnist-resnet-subpop`` (5 classes): superclasses, subpopulation A digits (0, 1, 2, 3, 4).
* ``mnist-resnet-spurious`` (2 classes): digit >= 5, with the corner patch agreeing 95%.

All train on the SOURCE part of the split only (``mnist``), never on the target pool.
Each is built on first use (about 20-50 s on two idle CPU cores), stored under
``<data dir>/models/<name>/`` (see ``cache``) and loaded from there afterwards. The manifest
records the seed, the data, the recipe and held-out accuracies: ``accuracy`` is measured on
target-pool images drawn from the *source* distribution (never trained on), and
``target_accuracy`` (where the model has a shifted target) on the shifted target pool.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from selector.builtin import cache, synthetic
from selector.builtin.errors import CacheEntryError, UnknownChoiceError
from selector.builtin.mnist import load_split, source_stats
from selector.builtin.pretrain import (
    ARCHITECTURE,
    PretrainRecipe,
    accuracy,
    build_model,
    train_source,
)

#: Bump when the data, recipe or architecture change: older cache entries are then rebuilt.
RECIPE_VERSION = 2
SOURCE_SEED = 0

Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SourceData:
    train: Arrays                     # 0..255 images and labels to pretrain on
    evaluations: dict[str, Arrays]    # held-out sets reported in the manifest


@dataclass(frozen=True)
class SourceSpec:
    name: str
    num_classes: int
    description: str
    data: Callable[[], SourceData]
    recipe: PretrainRecipe = PretrainRecipe()


def _clean_data() -> SourceData:
    split = load_split()
    return SourceData((split.source_images, split.source_labels),
                      {"accuracy": (split.pool_images, split.pool_labels)})


def _subpop_data() -> SourceData:
    split = load_split()
    train_mask, train_labels = synthetic.superclass_of(split.source_labels, "A")
    held_mask, held_labels = synthetic.superclass_of(split.pool_labels, "A")
    target_mask, target_labels = synthetic.superclass_of(split.pool_labels, "B")
    return SourceData((split.source_images[train_mask], train_labels),
                      {"accuracy": (split.pool_images[held_mask], held_labels),
                       "target_accuracy": (split.pool_images[target_mask], target_labels)})


def _spurious_data() -> SourceData:
    split = load_split()
    rng = np.random.default_rng(np.random.SeedSequence([SOURCE_SEED, 0x5B]))
    train_labels = synthetic.binary_label(split.source_labels)
    held_labels = synthetic.binary_label(split.pool_labels)

    def patched(images: np.ndarray, labels: np.ndarray, agreement: float) -> np.ndarray:
        return synthetic.add_patches(images, synthetic.assign_patches(labels, agreement, rng))

    return SourceData(
        (patched(split.source_images, train_labels, synthetic.SOURCE_AGREEMENT), train_labels),
        {"accuracy": (patched(split.pool_images, held_labels, synthetic.SOURCE_AGREEMENT),
                      held_labels),
         "target_accuracy": (patched(split.pool_images, held_labels, 0.5), held_labels),
         "minority_accuracy": (patched(split.pool_images, held_labels, 0.0), held_labels)})


SOURCES: dict[str, SourceSpec] = {
    spec.name: spec for spec in (
        SourceSpec("mnist-resnet", 10, "clean MNIST digits, source part (300/class)",
                   _clean_data),
        SourceSpec("mnist-resnet-subpop", 5,
                   f"superclasses {list(map(list, synthetic.SUPERCLASSES))}, trained on "
                   "subpopulation A (first digit of each pair), source part", _subpop_data),
        SourceSpec("mnist-resnet-spurious", 2,
                   "digit >= 5; 4x4 white patch top-left (0) / top-right (1) equal to the "
                   f"label for {synthetic.SOURCE_AGREEMENT:.0%} of each class, source part",
                   _spurious_data),
    )
}


def get_source(name: str) -> SourceSpec:
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownChoiceError("builtin model", name, SOURCES) from None


def entry_dir(name: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    return cache.data_dir(data_dir) / "models" / name


def _build(spec: SourceSpec) -> tuple[cache.Tensors, dict[str, Any]]:
    data = spec.data()
    model, seconds = train_source(*data.train, spec.num_classes, spec.recipe, SOURCE_SEED)
    scores = {key: round(accuracy(model, *arrays), 4) for key, arrays in data.evaluations.items()}
    mean, std = source_stats()
    manifest = {
        "name": spec.name,
        "recipe": RECIPE_VERSION,
        "architecture": {**ARCHITECTURE, "num_classes": spec.num_classes},
        "seed": SOURCE_SEED,
        "data": {"split": load_split().description, "train": spec.description,
                 "n_train": int(len(data.train[1])),
                 "normalisation": {"scale": "x / 255", "mean": mean, "std": std}},
        "training": asdict(spec.recipe) | {"optimizer": "sgd-nesterov",
                                           "schedule": "one-cycle", "bn_mode": "train"},
        "accuracy": scores,
        "train_seconds": round(seconds, 1),
        "torch": torch.__version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    return model.state_dict(), manifest


@dataclass(frozen=True)
class PreparedSource:
    """A loaded source model with its manifest, for the CLI and reports."""

    name: str
    model: nn.Module
    manifest: dict[str, Any]
    path: Path
    built: bool


def prepare_source(name: str, data_dir: str | os.PathLike[str] | None = None) -> PreparedSource:
    """Load (building first if the cache lacks a valid entry) the source model ``name``."""
    spec = get_source(name)
    model = build_model(spec.num_classes)

    def fits(tensors: cache.Tensors) -> None:
        try:
            model.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise CacheEntryError(f"weights do not fit {name}: {exc}") from exc

    path = entry_dir(name, data_dir)
    tensors, manifest, built = cache.load_or_build(
        path, lambda: _build(spec), {"name": name, "recipe": RECIPE_VERSION}, validate=fits)
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return PreparedSource(name, model, manifest, path, built)


def load_source_model(name: str, data_dir: str | os.PathLike[str] | None = None) -> nn.Module:
    """The pretrained source model ``name`` in eval mode (built and cached on first use).

    Every call returns a fresh module, so callers may modify it freely.
    """
    return prepare_source(name, data_dir).model
