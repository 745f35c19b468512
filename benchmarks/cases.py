"""Any shift name the benchmarks take -> its case, source reference, source model and size.

Built-in names go to ``selector.builtin``; ``heldout:NAME`` (a held-out corruption) and
``resnet20:SHIFT`` (a built-in shift on the held-out model) to ``heldout_shifts``. One place, so
that ``reproduce.py``, ``diagnosis.py`` and ``search_efficiency.py`` build every case the same
way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks import heldout_shifts

if TYPE_CHECKING:
    from torch.utils.data import TensorDataset

    from selector.builtin.case import Case


def load_case(shift: str, seed: int, *, severity: int | None = None, n_per_class: int,
              n_val: int = 20, n_test: int = 80, data_dir: str | None = None) -> Case:
    """The case's source model and labelled target splits; ``severity=None``: the default."""
    if heldout_shifts.is_heldout(shift):
        return heldout_shifts.load_case(shift, seed, severity=severity, n_per_class=n_per_class,
                                        n_val=n_val, n_test=n_test, data_dir=data_dir)
    from selector.builtin import load_case as builtin_case

    return builtin_case("mnist", shift, severity, seed, n_per_class=n_per_class, n_val=n_val,
                        n_test=n_test, data_dir=data_dir)


def source_reference(shift: str, seed: int, *, n_per_class: int, n_val: int = 20,
                     n_test: int = 80) -> TensorDataset:
    """Clean source-distribution images disjoint from the case's training split (the null)."""
    if heldout_shifts.is_heldout(shift):
        return heldout_shifts.source_reference(shift, seed, n_per_class=n_per_class,
                                               n_val=n_val, n_test=n_test)
    from selector.builtin import source_reference as builtin_reference

    return builtin_reference(shift, seed, n_per_class=n_per_class, n_val=n_val, n_test=n_test)


def model_name(shift: str) -> str:
    if heldout_shifts.is_heldout(shift):
        return heldout_shifts.model_name(shift)
    from selector.builtin.shifts import get_shift

    return get_shift(shift).model_name


def num_classes(shift: str) -> int:
    if heldout_shifts.is_heldout(shift):
        return heldout_shifts.num_classes(shift)
    from selector.builtin.shifts import get_shift

    return get_shift(shift).num_classes


def default_level(shift: str) -> int | None:
    """The severity a case gets when none is asked for (None: the shift has no levels)."""
    if heldout_shifts.is_heldout(shift):
        return heldout_shifts.default_level(shift)
    from selector.builtin import recommended_severity

    return recommended_severity(shift)


def prepare_model(shift: str, data_dir: str | None = None) -> None:
    """Build and cache the shift's source model now (before worker processes race for it)."""
    if heldout_shifts.is_heldout(shift):
        heldout_shifts.load_model(shift, data_dir)
    else:
        from selector.builtin import load_source_model

        load_source_model(model_name(shift), data_dir)
