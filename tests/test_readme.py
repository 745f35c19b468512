"""The README stays true: its library example runs as written, and every setting is documented."""

import os
import subprocess
import sys

import pytest

from app.settings import Settings
from tests.readme import README, python_block


def test_every_setting_is_documented():
    text = README.read_text()
    missing = [f"SURGICAL_{name.upper()}" for name in Settings.model_fields
               if f"SURGICAL_{name.upper()}" not in text]
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_readme_starts_with_the_two_commands():
    head = README.read_text().split("## ")[0]
    assert "make run" in head and "make test" in head


@pytest.mark.slow
def test_the_library_example_runs_as_written(builtin_data_dir, mnist_resnet):
    code = python_block("The library in 10 lines")
    assert len(code.strip().splitlines()) <= 10
    env = {**os.environ, "SURGICAL_DATA_DIR": str(builtin_data_dir), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert "block1" in lines[0] and "head" in lines[0]
    assert any(line.startswith("auto-rgn") for line in lines)
    assert sum("test" in line for line in lines) == 4
