"""``surgical groups`` and ``surgical data``: Typer commands that call the library directly,
and a ``surgical`` entry point that loads torch only inside the commands that need it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from workers.cli import cli

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_groups_prints_the_table() -> None:
    done = runner.invoke(cli, ["groups", "resnet18", "--granularity", "block"])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith("resnet18: resnet rule, 11,689,512 parameters, 10 block groups")
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["stem", "block1.1", "block1.2", "block2.1", "block2.2",
                                        "block3.1", "block3.2", "block4.1", "block4.2", "head"]
    assert rows[0][-2:] == ["conv1", "bn1"] and rows[-1][-2:] == ["fc", "fc"]


def test_groups_errors_are_one_line_with_status_2() -> None:
    for args, words in ((["groups", "not_a_model"], "error: unknown model reference 'not_a_model'"),
                        (["groups", "resnet18", "--granularity", "layer"],
                         "error: granularity must be one of")):
        done = runner.invoke(cli, args)
        assert done.exit_code == 2 and done.stderr.startswith(words), done.output
        assert len(done.stderr.strip().splitlines()) == 1


def test_data_grid_and_its_options(tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    done = runner.invoke(cli, ["data", "grid", "--out", str(out), "--shift", "fog",
                               "--shift", "zigzag", "--severity", "2", "--seed", "3"])
    assert done.exit_code == 0, done.output
    assert done.stdout == f"wrote {out}\n" and out.read_bytes()[:4] == b"\x89PNG"
    refused = runner.invoke(cli, ["data", "grid", "--out", str(out), "--shift", "snow"])
    assert refused.exit_code == 2 and "snow" in refused.stderr


def test_data_prepare_reports_the_cached_model(builtin_data_dir: Path, mnist_resnet) -> None:
    done = runner.invoke(cli, ["data", "prepare", "--data-dir", str(builtin_data_dir),
                               "--model", "mnist-resnet"])
    assert done.exit_code == 0, done.output
    assert "mnist-resnet: cached" in done.stdout and str(builtin_data_dir) in done.stdout


def test_the_entry_point_and_the_remote_commands_do_not_load_torch() -> None:
    code = """
import sys
from typer.testing import CliRunner
from workers.cli import cli
done = CliRunner().invoke(cli, ["--help"])
assert done.exit_code == 0 and "submit" in done.stdout and "groups" in done.stdout, done.output
heavy = sorted(m for m in ("torch", "torchvision", "selector", "optuna") if m in sys.modules)
assert not heavy, heavy
print("light")
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "light" in done.stdout, done.stderr
