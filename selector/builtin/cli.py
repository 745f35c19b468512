"""``data`` sub-commands of ``python -m selector``: prepare the cache, draw the shift grid.

    python -m selector data prepare [--data-dir DIR] [--model NAME ...]
    python -m selector data grid --out shifts.png [--shift NAME ...] [--severity N] [--seed N]

``add_data_commands(subparsers)`` adds them to the ``data`` command's sub-parsers; each sets
``handler`` (``args -> int``), as ``selector.__main__`` expects. ``main`` runs them standalone
(``python -m selector.builtin.cli data prepare``).
"""

from __future__ import annotations

import argparse
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
    prepare.set_defaults(handler=run_prepare)

    grid = subparsers.add_parser(
        "grid", help="write a PNG with example images of every shift",
        description="One row of example target images per built-in shift.")
    grid.add_argument("--out", required=True, help="PNG path to write")
    grid.add_argument("--shift", action="append", choices=list(SHIFTS), default=None,
                      help="only this shift (repeatable; default: all)")
    grid.add_argument("--severity", type=int, choices=range(1, 6), default=None,
                      help="force this level (default: each shift's calibrated severity)")
    grid.add_argument("--seed", type=int, default=0)
    grid.set_defaults(handler=run_grid)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Plain-text table: name, held-out accuracy, status, seconds now, training seconds, path."""
    header = (f"{'model':<22} {'accuracy':>8} {'status':<6} {'seconds':>7} {'train s':>7}"
              "  path")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['name']:<22} {row['accuracy']:>8.2%} {row['status']:<6} "
                     f"{row['seconds']:>7.1f} {row['train_seconds']:>7.1f}  {row['path']}")
    return "\n".join(lines)


def run_prepare(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = []
    for name in args.model or list(SOURCES):
        started = time.perf_counter()
        source = prepare_source(name, args.data_dir)
        rows.append({"name": name, "accuracy": source.manifest["accuracy"]["accuracy"],
                     "status": "built" if source.built else "cached",
                     "train_seconds": float(source.manifest.get("train_seconds", 0.0)),
                     "seconds": time.perf_counter() - started, "path": source.path})
        out.write(f"{name}: {rows[-1]['status']} in {rows[-1]['seconds']:.1f} s\n")
        out.flush()
    out.write(format_table(rows) + "\n")
    return 0


def run_grid(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    from selector.builtin.grid import save_shift_grid

    path = save_shift_grid(args.out, shifts=args.shift, severity=args.severity, seed=args.seed)
    out.write(f"wrote {path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selector.builtin.cli")
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="built-in data")
    add_data_commands(data.add_subparsers(dest="data_command", required=True))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
