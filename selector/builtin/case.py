"""``load_case``: one built-in adaptation problem (source model + labelled target splits).

A case is the unit the service searches over: the paper's protocol (Lee et al. 2023) takes a
pretrained source model and a small labelled target set (100 train / 10 val / 90 test per class
on CIFAR-10-C; here 100 / 20 / 80 by default) and asks which layers to fine-tune.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset

from selector.builtin.errors import UnknownChoiceError
from selector.builtin.shifts import get_shift, resolve_severity, target_splits
from selector.builtin.sources import get_source, load_source_model

CASE_NAMES = ("mnist",)


@dataclass
class Case:
    """A built-in case, as ``ARCHITECTURE.md`` specifies.

    ``severity`` is None for shifts without levels (stripe, label_flip, ...). ``model`` is a
    fresh copy of the source model in eval mode, so it may be fine-tuned in place.
    """

    name: str
    shift: str
    kind: str                 # "input" | "feature" | "output"
    severity: int | None
    seed: int
    model: nn.Module
    model_name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int


def load_case(name: str = "mnist", shift: str = "impulse_noise", severity: int | None = 5,
              seed: int = 0, *, n_per_class: int = 100, n_val: int = 20, n_test: int = 80,
              data_dir: str | os.PathLike[str] | None = None,
              model: str | None = None) -> Case:
    """Build the case ``name`` under ``shift`` with its source model.

    ``severity=None`` picks the shift's calibrated default (``recommended_severity``).
    ``model=None`` picks the builtin model the shift is defined against; naming another
    builtin model raises, since the label spaces would not match. Building the data is
    deterministic given (shift, severity, seed, sizes); the model is trained once and cached
    under ``data_dir`` (default ``$SURGICAL_DATA_DIR``).
    """
    if name not in CASE_NAMES:
        raise UnknownChoiceError("case", name, CASE_NAMES)
    spec = get_shift(shift)
    severity = resolve_severity(shift, severity)
    if model is not None and model != spec.model_name:
        get_source(model)  # an unknown name gets the list of all builtin models
        raise UnknownChoiceError(f"model for shift {shift!r}", model, (spec.model_name,),
                                 hint=f"{shift} is defined against {spec.model_name}")
    splits = target_splits(shift, severity, seed, n_per_class=n_per_class, n_val=n_val,
                           n_test=n_test)
    return Case(name=name, shift=shift, kind=spec.kind, severity=severity, seed=seed,
                model=load_source_model(spec.model_name, data_dir), model_name=spec.model_name,
                train=splits.train, val=splits.val, test=splits.test,
                num_classes=splits.num_classes)
