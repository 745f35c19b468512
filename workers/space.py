"""The search space of surgical fine-tuning, as plain data.

A trial is "which contiguous layer groups to tune, how, and at which learning rate". Nothing
here knows Optuna: the workers map an Optuna trial onto a :class:`TrialSpec` in one place
(``workers/objective.py``), and everything downstream — the engine, the leaderboard, the plots —
only ever sees these records.

The paper tunes single blocks, the last layer or everything (its Table 1 rows); the search also
considers contiguous ranges of groups, which include all of those as special cases.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

#: The paper's learning-rate grid (reference code, CIFAR-10-C and ImageNet-C configs).
PAPER_LRS: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)

METHODS = ("none", "surgical", "auto-rgn", "auto-snr")

NO_FINETUNING = "no fine-tuning"
ALL = "all"


@dataclass(frozen=True)
class TrialSpec:
    """One point of the search space: what the engine is asked to run."""

    method: str
    groups: tuple[str, ...]
    lr: float
    label: str

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {METHODS}")
        if self.method == "surgical" and not self.groups:
            raise ValueError("a surgical trial needs at least one group to tune")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be positive and finite, got {self.lr}")


@dataclass(frozen=True)
class Part:
    """A named contiguous range of layer groups (a row of the paper's table)."""

    label: str
    groups: tuple[str, ...]


def contiguous(group_names: Sequence[str], start: int, length: int) -> tuple[str, ...]:
    """The groups ``start .. start+length-1``, clipped to the model's depth.

    The search no longer encodes ranges as (start, length): clipping maps several pairs onto
    the same range ("start 3, length 2" is the head again), which ran duplicates. The samplers
    choose among :func:`contiguous_parts` instead.
    """
    if not group_names:
        raise ValueError("the model has no layer groups")
    if not 0 <= start < len(group_names):
        raise ValueError(f"start {start} outside 0..{len(group_names) - 1}")
    if length < 1:
        raise ValueError(f"length must be at least 1, got {length}")
    return tuple(group_names[start : start + length])


def label_for(group_names: Sequence[str], tuned: Sequence[str]) -> str:
    """Human label of a tuned range: ``all``, a single group's name, or ``first..last``."""
    tuned = tuple(tuned)
    if tuned == tuple(group_names):
        return ALL
    if len(tuned) == 1:
        return tuned[0]
    return f"{tuned[0]}..{tuned[-1]}"


def paper_parts(group_names: Sequence[str]) -> list[Part]:
    """Each single group (blocks, then the head as "last layer") and everything."""
    parts = [Part(name, (name,)) for name in group_names]
    if len(group_names) > 1:
        parts.append(Part(ALL, tuple(group_names)))
    return parts


def lr_grid(lr_min: float, lr_max: float) -> list[float]:
    """The paper's learning rates that fall inside ``[lr_min, lr_max]`` (at least one).

    When the user's range excludes every paper value, the range's geometric midpoint is used so
    the grid is never empty.
    """
    if not 0 < lr_min <= lr_max:
        raise ValueError(f"need 0 < lr_min <= lr_max, got {lr_min}, {lr_max}")
    grid = [lr for lr in PAPER_LRS if lr_min * (1 - 1e-9) <= lr <= lr_max * (1 + 1e-9)]
    return grid or [math.sqrt(lr_min * lr_max)]


def clip_lr(lr: float, lr_min: float, lr_max: float) -> float:
    """``lr`` moved into the user's range (baselines use a default that may fall outside)."""
    return min(max(lr, lr_min), lr_max)


#: Learning rate for enqueued baselines when no grid is searched: the value the paper's grid
#: most often selects for Adam on CIFAR-10-C and our MNIST probe.
DEFAULT_BASELINE_LR = 1e-3


def baseline_specs(group_names: Sequence[str], lr: float, *, auto_rgn: bool = True) -> list[TrialSpec]:
    """The paper's reference rows: last layer only, full fine-tuning, and Auto-RGN."""
    names = tuple(group_names)
    specs = [
        TrialSpec("surgical", (names[-1],), lr, label_for(names, (names[-1],))),
        TrialSpec("surgical", names, lr, ALL),
    ]
    if auto_rgn:
        specs.append(TrialSpec("auto-rgn", (), lr, "auto-rgn"))
    return specs


def rank_groups_by_rgn(profile: dict[str, float], group_names: Sequence[str]) -> list[str]:
    """Group names ordered by Auto-RGN weight, largest first (ties keep input order)."""
    order = {name: index for index, name in enumerate(group_names)}
    known = [name for name in group_names if name in profile]
    return sorted(known, key=lambda name: (-profile[name], order[name]))


def contiguous_parts(group_names: Sequence[str]) -> list[Part]:
    """Every contiguous range of groups exactly once (``n (n + 1) / 2`` of them): the single
    groups first (input to output), then longer ranges; the full range is ``all``."""
    names = tuple(group_names)
    parts = []
    for length in range(1, len(names) + 1):
        for start in range(len(names) - length + 1):
            groups = names[start : start + length]
            parts.append(Part(label_for(names, groups), groups))
    return parts


#: Learning-rate ranges by kind of part, read off the exhaustive grid of
#: ``benchmarks/results/runs.csv`` (25 images/class, Adam, 15 epochs): the last layer is selected
#: at 1e-1 (sometimes 1e-2), conv blocks, ranges of them, full fine-tuning and Auto-RGN at 1e-3
#: (1e-4 and 1e-2 rarely win). (low, start, high): the first rung tries ``start``.
HEAD_LRS = (1e-2, 1e-1, 1e-1)
BODY_LRS = (1e-4, 1e-3, 1e-2)


def part_lr_range(label: str, group_names: Sequence[str]) -> tuple[float, float, float]:
    """(low, start, high) learning rates for a part by its label: :data:`HEAD_LRS` for the
    last group alone, :data:`BODY_LRS` for anything that trains a block (ranges, ``all``,
    Auto-RGN)."""
    return HEAD_LRS if label == group_names[-1] and len(group_names) > 1 else BODY_LRS
