"""``python -m selector``: the engine's own command line, for library users without the service.

    python -m selector groups resnet50                  # stage groups of a torchvision arch
    python -m selector groups cifar_resnet --granularity block
    python -m selector groups path/to/model.ts          # a TorchScript file
    python -m selector groups selector.cifar_resnet:cifar_resnet
    python -m selector data prepare|grid ...            # built-in data (selector.builtin.cli)

The ``surgical`` command offers the same (``surgical groups``, ``surgical data``) by calling the
same library functions: :func:`selector.io.models_io.inspection_model`,
:func:`selector.layers.groups.describe_groups` and :mod:`selector.builtin.cli`. A
:class:`SelectorError` ends as ``error: ...`` on stderr, status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from selector.builtin.cli import add_data_commands
from selector.errors import SelectorError
from selector.io.models_io import inspection_model
from selector.layers.groups import GRANULARITIES, describe_groups

__all__ = ["build_parser", "main"]


def print_groups(ref: str, granularity: str = "stage") -> int:
    """Print the layer groups of the model reference ``ref``; returns the exit status (0)."""
    print(describe_groups(inspection_model(ref), granularity, name=ref))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m selector",
                                     description="Surgical fine-tuning engine.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    groups = commands.add_parser(
        "groups", help="print a model's layer groups",
        description="Print the layer groups of a model: torchvision arch (random weights, "
                    "built on the meta device), cifar_resnet, a TorchScript path, or "
                    "pkg.module:function.")
    groups.add_argument("model", help="model reference, e.g. resnet50")
    groups.add_argument("--granularity", choices=GRANULARITIES, default="stage")
    groups.set_defaults(handler=lambda args: print_groups(args.model, args.granularity))
    data = commands.add_parser("data", help="prepare built-in data sets")
    add_data_commands(data.add_subparsers(dest="data_command", metavar="COMMAND"))
    data.set_defaults(handler=lambda args: _help(data))
    return parser


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        return _help(parser)
    try:
        return int(handler(args) or 0)
    except SelectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
