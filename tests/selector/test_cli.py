"""``python -m selector``: the groups table and the built-in data commands."""

from __future__ import annotations

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


def test_data_runs_the_builtin_commands(tmp_path, capsys) -> None:
    out = tmp_path / "grid.png"
    assert cli.main(["data", "grid", "--out", str(out), "--shift", "zigzag", "--seed", "1"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_data_without_a_command_prints_its_help(capsys) -> None:
    assert cli.main(["data"]) == 2
    help_text = capsys.readouterr().out
    assert "prepare" in help_text and "grid" in help_text


def test_no_command_prints_help(capsys) -> None:
    assert cli.main([]) == 2
    assert "groups" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["groups", "resnet18", "--granularity", "layer"])
