"""Issue 12 over HTTP: a ``diagnose`` job trains nothing and finishes in seconds; the client's
``diagnose`` and ``surgical diagnose SPEC`` show it; a searching job's result carries it too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.workers.conftest import Service, tiny_job
from workers.cli import cli
from workers.diagnosing import NOTE_AGREED, NOTE_DIAGNOSIS_ONLY, NOTE_DISAGREED
from workers.loop import build_context, run_worker


def test_a_diagnose_job_trains_nothing_and_reports_the_diagnosis(sqlite_service: Service,
                                                                 tmp_path: Path) -> None:
    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(strategy="diagnose"))
        started = time.perf_counter()
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        seconds = time.perf_counter() - started
        job = client.get(job.id)
        assert job.state == "succeeded", job.error
        assert seconds < 60
        assert client.trials(job.id) == []
        result = client.result(job.id)
        assert result.recommendation is None
        assert [row.label for row in result.leaderboard] == ["no fine-tuning"]
        diagnosis = result.diagnosis
        assert diagnosis is not None
        assert diagnosis.kind == "input" and diagnosis.ranking[0] == "block1"
        assert diagnosis.null == "source-bootstrap" and diagnosis.forward_passes == 2
        assert diagnosis.groups[0].exceeds and diagnosis.groups[0].layers
        assert any(note.startswith(NOTE_DIAGNOSIS_ONLY) for note in result.notes), result.notes
        assert not any("no trial completed" in note for note in result.notes)
        names = {artifact.name for artifact in client.artifacts(job.id)}
        assert {"diagnosis.png", "result.json"} <= names
        plot = client.download(job.id, "diagnosis.png", tmp_path)
        assert plot.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow  # a worker process starts (torch import) and serves two jobs
def test_client_and_cli_diagnose_with_a_running_worker(sqlite_service: Service,
                                                       tmp_path: Path) -> None:
    service = sqlite_service
    service.start_worker()
    spec = tiny_job(strategy="auto")  # the client turns any spec into a diagnose job
    with service.client() as client:
        diagnosis = client.diagnose(spec, timeout=120, poll=0.5)
    assert diagnosis.kind == "input", diagnosis.explanation
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**spec, "data": {**spec["data"], "shift": "label_flip",
                                                 "severity": None}}))
    shown = CliRunner().invoke(cli, ["diagnose", str(path), "--url", service.url, "--timeout",
                                     "120"], env={"COLUMNS": "200", "SURGICAL_API_KEY": None})
    assert shown.exit_code == 0, (shown.stdout, shown.stderr, service.worker_logs())
    assert "output-level" in shown.stdout and "block1" in shown.stdout
    assert "tune first: head" in shown.stdout
    as_json = CliRunner().invoke(cli, ["diagnose", str(path), "--url", service.url, "--json"],
                                 env={"SURGICAL_API_KEY": None})
    assert json.loads(as_json.stdout)["kind"] == "output"


@pytest.mark.slow  # four real (one-epoch) trials
def test_a_searching_job_reports_the_diagnosis_and_whether_the_search_agreed(
        sqlite_service: Service) -> None:
    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=4, epochs=1))
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        assert client.get(job.id).state == "succeeded"
        result = client.result(job.id)
    assert result.diagnosis is not None and result.diagnosis.kind == "input"
    verdicts = [n for n in result.notes if n.startswith((NOTE_AGREED, NOTE_DISAGREED))]
    assert len(verdicts) == 1, result.notes
    assert result.recommendation is not None
    agreed = result.recommendation.label == result.diagnosis.ranking[0]
    assert verdicts[0].startswith(NOTE_AGREED if agreed else NOTE_DISAGREED)
    study = service.study(job.id)
    assert study.user_attrs["plan"]["diagnosis_ranking"][0] == "block1"
    first = min(study.get_trials(), key=lambda t: t.number)
    assert first.user_attrs["label"] == "block1"  # the diagnosis's pick runs first
