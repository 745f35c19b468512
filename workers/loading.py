"""Resolve a job's model and data references into tensors, once per worker per job.

Loading a model and corrupting a dataset costs seconds; a job runs dozens of trials. So inputs
are cached per (model, data, seed) in a small LRU: a worker that helps several jobs keeps the
last few, and each trial still trains a fresh copy of the pretrained weights (the engine copies).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from app.schemas import MAX_REFERENCE_IMAGES, BuiltinData, BuiltinModel, JobSpec
from selector import LayerGroup, discover_groups, evaluate, relative_gradient_norms
from selector.finetune.activation_cache import ActivationCache
from selector.finetune.rgn import group_profile, rgn_weights
from selector.io.models_io import classifier_width
from workers.results import Baseline


class InputError(Exception):
    """The job's model or data cannot be loaded; the job fails before any trial."""


@dataclass
class JobInputs:
    model: nn.Module
    groups: list[LayerGroup]
    train: Dataset
    val: Dataset
    test: Dataset | None
    description: str
    device: str | None = None
    data_record: dict[str, Any] | None = None  # the resolved transform, split sizes, classes
    #: Clean images of the source distribution (built-in data, or the user's
    #: ``data.source_reference``): the diagnosis's null.
    source: Dataset | None = None
    #: The frozen prefix's activations shared by this job's trials on this worker (created by
    #: the first trial loop; evicted with the inputs).
    activations: ActivationCache | None = None
    _baseline: Baseline | None = field(default=None, repr=False)

    @property
    def group_names(self) -> list[str]:
        return [group.name for group in self.groups]

    def baseline(self) -> Baseline:
        """The untouched model's accuracy: the leaderboard's "no fine-tuning" row."""
        if self._baseline is None:
            _, val_acc = evaluate(self.model, self.val, device=self.device)
            test_acc = None
            if self.test is not None:
                _, test_acc = evaluate(self.model, self.test, device=self.device)
            self._baseline = Baseline(float(val_acc), test_acc)
        return self._baseline

    def rgn_profile(self, batches: int = 5, batch_size: int = 64, seed: int = 0) -> dict[str, float]:
        """Mean normalised relative gradient norm per group on a few shuffled training batches
        (Auto-RGN's view of which groups the target data wants to change)."""
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(self.train, batch_size=batch_size, shuffle=True, generator=generator)
        taken = []
        for index, batch in enumerate(loader):
            if index >= batches:
                break
            taken.append(batch)
        return group_profile(rgn_weights(relative_gradient_norms(self.model, taken)), self.groups)


def load_inputs(spec: JobSpec, *, data_dir: Path, device: str | None,
                allowed_factories: list[str] | None = None, loader_workers: int = 0,
                decode_cache_bytes: int | None = None) -> JobInputs:
    """Build the model, its layer groups and the three splits a job's trials train on.
    Image folders are decoded once into ``data_dir/decoded`` (shared by the machine's
    workers, at most ``decode_cache_bytes`` of them, least recently used evicted first);
    ``loader_workers`` DataLoader processes stream splits too large for memory."""
    try:
        model, train, val, test, description, record = _resolve(
            spec, data_dir, list(allowed_factories or []), loader_workers, decode_cache_bytes
        )
        groups = discover_groups(model, granularity=spec.search.granularity,
                                 custom=spec.search.groups)
    except InputError:
        raise
    except Exception as error:
        raise InputError(f"cannot load the job's model or data: {type(error).__name__}: {error}") from error
    model.eval()
    return JobInputs(model, groups, train, val, test, description, device, record,
                     source=_source_reference(spec, model, record, loader_workers))


def _source_reference(spec: JobSpec, model: nn.Module, record: dict[str, Any] | None,
                      loader_workers: int = 0) -> Dataset | None:
    """Clean images of the source distribution, the diagnosis's null: built-in data knows its
    own; users' data brings one in ``data.source_reference`` (else the diagnosis falls back to
    its analytic null, or says it is unavailable).

    A reference that cannot be read fails the job before any trial, like unreadable ``train``
    data: the user asked for it by name, and a search that silently dropped it would diagnose
    with a weaker null (or not at all) without saying why."""
    data = spec.data
    if isinstance(data, BuiltinData):
        from selector.builtin import source_reference

        return source_reference(data.shift, spec.seed, n_per_class=data.n_per_class,
                                n_val=data.n_val, n_test=data.n_test)
    if data.source_reference is None:
        return None
    from selector.io.inputs import load_reference

    try:
        return load_reference(
            data.source_reference.model_dump(mode="json", exclude_none=True),
            limit=MAX_REFERENCE_IMAGES,
            transform=(data.transform.model_dump(mode="json", exclude_none=True)
                       if data.transform is not None else None),
            model_ref=spec.model.model_dump(mode="json"),
            classes=(record or {}).get("classes"), num_classes=classifier_width(model),
            seed=spec.seed, loader_workers=loader_workers)
    except Exception as error:
        raise InputError(f"cannot load data.source_reference: {type(error).__name__}: "
                         f"{error}") from error


def _resolve(spec: JobSpec, data_dir: Path, allowed_factories: list[str], loader_workers: int = 0,
             decode_cache_bytes: int | None = None,
             ) -> tuple[nn.Module, Dataset, Dataset, Dataset | None, str, dict[str, Any] | None]:
    """(model, train, val, test, description, data record) for a job's references."""
    from selector import builtin, load_datasets, load_model
    from selector.io.inputs import SplitRule

    model_ref, data_ref = spec.model, spec.data
    model: nn.Module | None = None
    if not (isinstance(model_ref, BuiltinModel) and isinstance(data_ref, BuiltinData)):
        ref = model_ref.model_dump(mode="json")
        if isinstance(model_ref, BuiltinModel):
            ref["data_dir"] = str(data_dir)
        model = load_model(ref, allowed_factory_prefixes=allowed_factories)
    if isinstance(data_ref, BuiltinData):
        case = builtin.load_case(
            data_ref.name,
            shift=data_ref.shift,
            severity=data_ref.severity,
            seed=spec.seed,
            n_per_class=data_ref.n_per_class,
            n_val=data_ref.n_val,
            n_test=data_ref.n_test,
            data_dir=data_dir,
            model=model_ref.name if isinstance(model_ref, BuiltinModel) else None,
        )
        description = f"built-in {case.name}/{case.shift} (severity {case.severity}, {case.kind}-level shift)"
        return model or case.model, case.train, case.val, case.test, description, None
    assert model is not None
    splits = load_datasets(
        data_ref.model_dump(mode="json", exclude_none=True), num_classes=classifier_width(model),
        split=SplitRule(seed=spec.seed), model_ref=spec.model.model_dump(mode="json"),
        cache_dir=data_dir / "decoded", loader_workers=loader_workers,
        cache_limit_bytes=decode_cache_bytes,
    )
    record = {
        "transform": splits.transform.record() if splits.transform is not None else None,
        "sizes": {name: len(getattr(splits, name)) for name in ("train", "val", "test")
                  if getattr(splits, name) is not None},
        "classes": list(splits.classes) if splits.classes else None,
    }
    return model, splits.train, splits.val, splits.test, f"{data_ref.source} data", record


class InputsCache:
    """A bounded, thread-safe LRU of loaded job inputs."""

    def __init__(self, data_dir: Path, device: str | None, size: int = 2,
                 allowed_factories: list[str] | None = None, loader_workers: int = 0,
                 decode_cache_bytes: int | None = None) -> None:
        self._data_dir = data_dir
        self._loader_workers = loader_workers
        self._decode_cache_bytes = decode_cache_bytes
        self._allowed = list(allowed_factories or [])
        self._device = device
        self._size = size
        self._items: OrderedDict[str, JobInputs] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: JobSpec) -> JobInputs:
        """The inputs of ``spec`` (what they depend on: model, data, seed and the groups)."""
        key = spec.model_dump_json(
            include={"model": True, "data": True, "seed": True,
                     "search": {"groups", "granularity"}}
        )
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        loaded = load_inputs(spec, data_dir=self._data_dir, device=self._device,
                             allowed_factories=self._allowed,
                             loader_workers=self._loader_workers,
                             decode_cache_bytes=self._decode_cache_bytes)
        with self._lock:
            self._items[key] = loaded
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return loaded
