"""The example grid and the ``data`` CLI commands."""

from __future__ import annotations

import argparse
import io

import pytest

from selector.__main__ import main
from selector.builtin import save_shift_grid
from selector.builtin.cli import add_data_commands, prepare_sources, write_shift_grid


def test_grid_writes_a_png(tmp_path):
    path = save_shift_grid(tmp_path / "g" / "shifts.png", shifts=["rotate", "label_flip",
                                                                  "spurious"], severity=2)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_rejects_unknown_shift(tmp_path):
    with pytest.raises(ValueError, match="snow"):
        save_shift_grid(tmp_path / "x.png", shifts=["snow"])


def test_add_data_commands_registers_prepare_and_grid():
    parser = argparse.ArgumentParser()
    add_data_commands(parser.add_subparsers(dest="data_command"))
    args = parser.parse_args(["prepare", "--data-dir", "/x", "--model", "mnist-resnet"])
    assert callable(args.handler) and args.data_dir == "/x" and args.model == ["mnist-resnet"]
    args = parser.parse_args(["grid", "--out", "a.png", "--shift", "fog", "--severity", "2"])
    assert args.out == "a.png" and args.shift == ["fog"] and args.severity == 2


def test_prepare_prints_a_table(tiny_source, tmp_path):
    out = io.StringIO()
    assert prepare_sources([tiny_source], str(tmp_path), out) == 0
    assert prepare_sources([tiny_source], str(tmp_path), out) == 0
    text = out.getvalue()
    assert f"{tiny_source}: built" in text and f"{tiny_source}: cached" in text
    assert "accuracy" in text and str(tmp_path) in text


def test_write_shift_grid_says_where(tmp_path):
    out = io.StringIO()
    assert write_shift_grid(tmp_path / "w.png", shifts=["fog"], severity=3, out=out) == 0
    assert out.getvalue() == f"wrote {tmp_path / 'w.png'}\n" and (tmp_path / "w.png").exists()


def test_main_prepare(tiny_source, tmp_path, capsys):
    assert main(["data", "prepare", "--data-dir", str(tmp_path), "--model", tiny_source]) == 0
    assert f"{tiny_source}: built" in capsys.readouterr().out


def test_main_grid(tmp_path, capsys):
    assert main(["data", "grid", "--out", str(tmp_path / "g.png"), "--shift", "zigzag"]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "g.png").exists()
