"""Fixtures shared by the whole suite.

The built-in source models are real models trained by the project (a minute or so each on two
cores). They are built once per machine into ``.cache/test-data`` at the repository root (or
``SURGICAL_TEST_DATA_DIR``) and reused by every test and every later run; a corrupt entry is
detected by its checksum and rebuilt.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    """Tests train tiny models while worker subprocesses train beside them on two cores: one
    thread each avoids oversubscription (which slows small models down enormously)."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def builtin_data_dir() -> Path:
    """The data directory holding the cached built-in source models."""
    path = Path(os.environ.get("SURGICAL_TEST_DATA_DIR", ROOT / ".cache" / "test-data"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def mnist_resnet(builtin_data_dir: Path):
    """The clean built-in source model (built on first use)."""
    from selector.builtin import load_source_model

    return load_source_model("mnist-resnet", data_dir=builtin_data_dir)


@pytest.fixture(scope="session")
def finished_jobs(tmp_path_factory: pytest.TempPathFactory, builtin_data_dir: Path, mnist_resnet):
    """A SQLite service database with one succeeded and one failed job (see
    ``tests/finished_jobs.py``); built once, shared by the client, CLI and dashboard tests."""
    from tests.finished_jobs import build_finished_jobs

    return build_finished_jobs(tmp_path_factory.mktemp("finished-jobs"), builtin_data_dir)
