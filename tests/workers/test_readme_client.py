"""The README's Python client example, run as written against a live server and worker."""

import signal

import pytest

from tests.readme import python_block
from tests.workers.conftest import Service

pytestmark = pytest.mark.slow


def test_the_client_example_runs_against_a_live_service(sqlite_service: Service, tmp_path,
                                                         monkeypatch, capsys):
    code = python_block("Python client")
    assert "http://127.0.0.1:8000" in code
    worker = sqlite_service.start_worker()
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code.replace("http://127.0.0.1:8000", sqlite_service.url), "README.md", "exec"), {})
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    out = capsys.readouterr().out
    assert "recommendation" in out or "label=" in out
    assert "no fine-tuning" in out
    assert (tmp_path / "patch.safetensors").stat().st_size > 0
