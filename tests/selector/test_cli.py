"""``python -m selector``: the groups table and the data command slot."""

from __future__ import annotations

import sys
import types

import pytest

from selector import __main__ as cli


def test_groups_of_a_torchvision_arch(capsys) -> None:
    assert cli.main(["groups", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "resnet rule, 11,689,512 parameters, 5 stage groups" in out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["block1", "block2", "block3", "block4", "head"]
    assert rows[0][-2:] == ["conv1", "layer1"]


def test_groups_by_block_for_a_factory(capsys) -> None:
    assert cli.main(["groups", "selector.cifar_resnet:cifar_resnet", "--granularity",
                     "block"]) == 0
    out = capsys.readouterr().out
    assert "stem" in out and "block3.2" in out


def test_errors_are_reported_with_status_2(capsys) -> None:
    assert cli.main(["groups", "not_a_model"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown model reference")


def test_data_slot_calls_builtin_add_data_commands(monkeypatch, capsys) -> None:
    calls = []

    def add_data_commands(subparsers) -> None:
        parser = subparsers.add_parser("prepare")
        parser.set_defaults(handler=lambda args: calls.append("ran") or 0)
        calls.append("added")

    fake = types.ModuleType("selector.builtin.cli")
    fake.add_data_commands = add_data_commands
    monkeypatch.setitem(sys.modules, "selector.builtin.cli", fake)
    assert cli.main(["data", "prepare"]) == 0
    assert calls == ["added", "ran"]
    assert set(cli.COMMANDS) >= {"groups", "data"}


def test_no_command_prints_help(capsys) -> None:
    assert cli.main([]) == 2
    assert "groups" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["groups", "resnet18", "--granularity", "layer"])
