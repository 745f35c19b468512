"""``data`` commands of the built-in data: prepare the cache, draw the shift grid.

    surgical data prepare [--data-dir DIR] [--model NAME ...]
    surgical data grid --out shifts.png [--shift NAME ...] [--severity N] [--seed N]
    python -m selector data prepare ...     (the same, without the service's dependencies)

:func:`prepare_sources` and :func:`write_shift_grid` do the work and write their report to a
text stream; the ``surgical`` Typer commands call them directly. :func:`add_data_commands` adds
them to an argparse sub-parsers object for ``python -m selector``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from selector.builtin.shifts import SHIFTS
from selector.builtin.sources import SOURCES, prepare_source


def add_data_commands(subparsers: Any) -> None:
    """Add ``prepare`` and ``grid`` to an argparse sub-parsers object."""
    prepare = subparsers.add_parser(
        "prepare", help="build and cache the built-in source models",
        description="Train (first time only) and cache every built-in source model, then "
                    "print name, held-out accuracy, cache path and seconds.")
    prepare.add_argument("--data-dir", default=None,
                         help="cache directory (default: $SURGICAL_DATA_DIR or ~/.cache/surgical)")
    prepare.add_argument("--model", action="append", choices=sorted(SOURCES), default=None,
                         help="only this model (repeatable; default: all)")
    prepare.set_defaults(handler=lambda args: prepare_sources(args.model, args.data_dir))

    grid = subparsers.add_parser(
        "grid", help="write a PNG with example images of every shift",
        description="One row of example target images per built-in shift.")
    grid.add_argument("--out", required=True, help="PNG path to write")
    grid.add_argument("--shift", action="append", choices=list(SHIFTS), default=None,
                      help="only this shift (repeatable; default: all)")
    grid.add_argument("--severity", type=int, choices=range(1, 6), default=None,
                      help="force this level (default: each shift's calibrated severity)")
    grid.add_argument("--seed", type=int, default=0)
    grid.set_defaults(handler=lambda args: write_shift_grid(
        args.out, shifts=args.shift, severity=args.severity, seed=args.seed))


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: name, held-out accuracy, status, seconds now, training seconds, path."""
    header = (f"{'model':<22} {'accuracy':>8} {'status':<6} {'seconds':>7} {'train s':>7}"
              "  path")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['name']:<22} {row['accuracy']:>8.2%} {row['status']:<6} "
                     f"{row['seconds']:>7.1f} {row['train_seconds']:>7.1f}  {row['path']}")
    return "\n".join(lines)


def prepare_sources(names: Sequence[str] | None = None,
                    data_dir: str | os.PathLike[str] | None = None,
                    out: TextIO | None = None) -> int:
    """Build (first time only) and cache the built-in source models ``names`` (default: all),
    writing one line per model as it is done, then a table. Returns the exit status (0)."""
    out = out or sys.stdout
    rows = []
    for name in names or list(SOURCES):
        started = time.perf_counter()
        source = prepare_source(name, data_dir)
        rows.append({"name": name, "accuracy": source.manifest["accuracy"]["accuracy"],
                     "status": "built" if source.built else "cached",
                     "train_seconds": float(source.manifest.get("train_seconds", 0.0)),
                     "seconds": time.perf_counter() - started, "path": source.path})
        out.write(f"{name}: {rows[-1]['status']} in {rows[-1]['seconds']:.1f} s\n")
        out.flush()
    out.write(format_table(rows) + "\n")
    return 0


def write_shift_grid(path: str | os.PathLike[str], *, shifts: Sequence[str] | None = None,
                     severity: int | None = None, seed: int = 0,
                     out: TextIO | None = None) -> int:
    """Save the grid of example images (:func:`selector.builtin.grid.save_shift_grid`) and say
    where. Returns the exit status (0)."""
    from selector.builtin.grid import save_shift_grid  # matplotlib: only when drawing

    written = save_shift_grid(path, shifts=shifts, severity=severity, seed=seed)
    (out or sys.stdout).write(f"wrote {written}\n")
    return 0
