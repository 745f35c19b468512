"""Command line of the selector engine.

    python -m selector groups resnet50                  # stage groups of a torchvision arch
    python -m selector groups cifar_resnet --granularity block
    python -m selector groups path/to/model.ts          # a TorchScript file
    python -m selector groups selector.cifar_resnet:cifar_resnet
    python -m selector data ...                         # built-in data (selector.builtin.cli)

Commands are registered in :data:`COMMANDS`: name -> function that adds its sub-parser and sets
``handler`` (``args -> int | None``, the exit status) with ``set_defaults``. The ``data``
command's sub-commands come from ``selector.builtin.cli.add_data_commands(subparsers)`` when
that module exists. :class:`SelectorError` is mapped to ``error: ...`` on stderr, status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from selector.errors import SelectorError

__all__ = ["COMMANDS", "build_parser", "main"]

Subparsers = Any  # argparse._SubParsersAction: private type, stable API
COMMANDS: dict[str, Callable[[Subparsers], None]] = {}


def command(name: str) -> Callable[[Callable[[Subparsers], None]], Callable[[Subparsers], None]]:
    """Register a function that adds the sub-parser of command ``name``."""
    def register(add: Callable[[Subparsers], None]) -> Callable[[Subparsers], None]:
        COMMANDS[name] = add
        return add
    return register


@command("groups")
def _add_groups(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "groups", help="print a model's layer groups",
        description="Print the layer groups of a model: torchvision arch (random weights, "
                    "built on the meta device), cifar_resnet, a TorchScript path, or "
                    "pkg.module:function.")
    parser.add_argument("model", help="model reference, e.g. resnet50")
    parser.add_argument("--granularity", choices=("stage", "block"), default="stage")
    parser.set_defaults(handler=_run_groups)


@command("data")
def _add_data(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("data", help="prepare built-in data sets")
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    try:
        builtin_cli = importlib.import_module("selector.builtin.cli")
    except ModuleNotFoundError as exc:
        if exc.name not in ("selector.builtin.cli", "selector.builtin"):
            raise
    else:
        builtin_cli.add_data_commands(commands)

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(handler=show_help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selector",
                                     description="Surgical fine-tuning engine.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS.values():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except SelectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run_groups(args: argparse.Namespace) -> int:
    from selector.io.models_io import build_torchvision, load_model, torchvision_architectures
    from selector.layers.groups import discover_groups, format_groups_table, model_family

    if args.model in torchvision_architectures():
        model = build_torchvision(args.model, meta=True)
    else:
        model = load_model(args.model)
    groups = discover_groups(model, args.granularity)
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {model_family(model)} rule, {total:,} parameters, "
          f"{len(groups)} {args.granularity} groups")
    print(format_groups_table(model, groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
