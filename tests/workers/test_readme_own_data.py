"""The README's "Your own model and data" example, run as written against a live server and a
worker process; its other job specs validate."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.schemas import JobSpec
from tests.app.conftest import Databases
from tests.readme import README, python_block
from tests.workers.conftest import Service, _service

pytestmark = pytest.mark.slow
SECTION = "Your own model and data"


@pytest.fixture
def service(worker_databases: Databases, tmp_path: Path) -> Iterator[Service]:
    yield from _service("sqlite", worker_databases, tmp_path, tmp_path / "data")


def test_the_own_data_example_runs_against_a_live_service(
        service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    code = python_block(SECTION)
    assert "http://127.0.0.1:8000" in code
    monkeypatch.setenv("SURGICAL_DATA_DIR", str(service.settings.data_dir))
    worker = service.start_worker()
    try:
        exec(compile(code.replace("http://127.0.0.1:8000", service.url), "README.md", "exec"), {})
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    out = capsys.readouterr().out
    assert "'preset': 'imagenet'" in out and "'resize': 73" in out and "[64, 64]" in out
    assert "label=" in out  # the recommendation


def test_the_own_data_job_specs_are_valid() -> None:
    text = README.read_text().split(f"## {SECTION}", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        JobSpec.model_validate(json.loads(block))
