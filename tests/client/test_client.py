"""``app.client.Client`` against the real service: reads, writes, waiting and the error tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.client import (
    APIError,
    Client,
    ConflictError,
    InvalidRequestError,
    JobCancelledError,
    JobFailedError,
    NotFoundError,
    TransportError,
    UnauthorizedError,
    WaitTimeoutError,
)
from app.main import create_app
from app.schemas import ArtifactPublic, JobPublic, JobResult, JobsPublic, TrialPublic
from tests.finished_jobs import QUEUED_SPEC, FinishedJobs, closed_port

ARTIFACTS = {"patch.safetensors", "finetuned.safetensors", "patch-manifest.json",
             "accuracy_by_part.png", "search_history.png", "result.json"}


def test_a_finished_job_reads_back_as_the_api_schemas(client: Client, finished_jobs: FinishedJobs):
    job = client.get(finished_jobs.succeeded)
    assert isinstance(job, JobPublic)
    assert (job.state, job.done, job.progress.trials_done) == ("succeeded", True, 3)

    result = client.result(job.id)
    assert isinstance(result, JobResult)
    labels = [row.label for row in result.leaderboard]
    # auto's first rung: three distinct parts (in the shift diagnosis's order), all complete
    assert labels[0] == "no fine-tuning" and len(labels) == 4
    assert result.recommendation.label in labels

    trials = client.trials(job.id)
    assert all(isinstance(trial, TrialPublic) for trial in trials)
    assert {trial.label for trial in trials} == set(labels[1:])
    assert all(trial.state == "complete" and trial.tuned_share is not None for trial in trials)

    artifacts = client.artifacts(job.id)
    assert all(isinstance(artifact, ArtifactPublic) for artifact in artifacts)
    assert {artifact.name for artifact in artifacts} >= ARTIFACTS


def test_download_streams_an_artifact_to_a_file_or_into_a_directory(
    client: Client, finished_jobs: FinishedJobs, tmp_path: Path
):
    into_dir = client.download(finished_jobs.succeeded, "accuracy_by_part.png", tmp_path)
    assert into_dir == tmp_path / "accuracy_by_part.png"
    assert into_dir.read_bytes().startswith(b"\x89PNG")
    as_file = client.download(finished_jobs.succeeded, "result.json", tmp_path / "sub" / "r.json")
    assert JobResult.model_validate_json(as_file.read_text()) == client.result(finished_jobs.succeeded)
    assert not list(tmp_path.rglob("*.part"))
    with pytest.raises(NotFoundError):
        client.download(finished_jobs.succeeded, "nothing.bin", tmp_path)
    assert not (tmp_path / "nothing.bin").exists() and not list(tmp_path.rglob("*.part"))


def test_a_real_server_submit_idempotently_list_cancel_delete(
    server_url: str, finished_jobs: FinishedJobs, tmp_path: Path
):
    with Client(server_url) as client:
        first = client.submit(QUEUED_SPEC, idempotency_key="client-test-1")
        again = client.submit(QUEUED_SPEC, idempotency_key="client-test-1")
        assert again.id == first.id and first.state == "queued"
        assert first.spec.data.shift == "fog"  # type: ignore[union-attr]

        listed = client.list(page_size=100)
        assert isinstance(listed, JobsPublic)
        ids = [job.id for job in listed.data]
        assert {first.id, finished_jobs.succeeded, finished_jobs.failed} <= set(ids)
        assert [job.id for job in client.iter_jobs(page_size=1)] == ids  # follows the cursor
        assert finished_jobs.failed in [job.id for job in client.iter_jobs(state="failed")]
        assert first.id not in [job.id for job in client.iter_jobs(state="succeeded")]

        with pytest.raises(ConflictError):  # a live job cannot be deleted
            client.delete(first.id)
        cancelled = client.cancel(first.id)
        assert cancelled.state == "cancelled" and cancelled.done
        with pytest.raises(JobCancelledError) as raised:
            client.wait(first.id, progress=False)
        assert raised.value.job.id == first.id
        client.delete(first.id)
        with pytest.raises(NotFoundError):
            client.get(first.id)

        assert client.wait(finished_jobs.succeeded, timeout=5, progress=False).state == "succeeded"
        patch = client.download(finished_jobs.succeeded, "patch.safetensors", tmp_path)
        sizes = {artifact.name: artifact.size for artifact in client.artifacts(finished_jobs.succeeded)}
        assert patch.stat().st_size == sizes["patch.safetensors"] > 0


def test_wait_returns_a_succeeded_job_and_draws_a_progress_bar(
    client: Client, finished_jobs: FinishedJobs, capsys: pytest.CaptureFixture[str]
):
    job = client.wait(finished_jobs.succeeded, timeout=5)
    assert job.state == "succeeded"
    err = capsys.readouterr().err
    assert f"job {job.id[:8]}" in err and "3/3" in err


def test_the_client_reads_responses_of_a_newer_server_with_fields_it_does_not_know(
    client: Client, finished_jobs: FinishedJobs
):
    from app.client import _read

    document = client._request("GET", f"/v1/jobs/{finished_jobs.succeeded}").json()
    document["new_top_level_field"] = 1
    document["progress"]["eta_seconds"] = 40
    document["spec"]["search"]["future_option"] = True
    newer = httpx.Response(200, json=document)
    job = _read(JobPublic, newer)
    assert job.id == finished_jobs.succeeded and job.progress.trials_done == 3
    with pytest.raises(ValueError, match="extra"):  # what the server itself validates strictly
        JobPublic.model_validate(document)


def test_the_progress_bar_shows_the_time_left_while_a_time_budgeted_job_searches(
    client: Client, finished_jobs: FinishedJobs
):
    from datetime import UTC, datetime, timedelta

    from app.client import _time_left

    done = client.get(finished_jobs.succeeded)
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def job(state: str, phase: str | None, deadline: datetime | None) -> JobPublic:
        progress = done.progress.model_copy(update={"phase": phase, "deadline": deadline})
        return done.model_copy(update={"state": state, "progress": progress})

    assert _time_left(job("running", "searching", now + timedelta(seconds=245)), now) == ", 4:05 left"
    assert _time_left(job("running", "searching", now - timedelta(seconds=3)), now) == ", 0:00 left"
    assert _time_left(job("running", "searching", None), now) == ""  # no time budget
    assert _time_left(job("running", "finishing", now + timedelta(minutes=1)), now) == ""
    assert _time_left(job("succeeded", None, now + timedelta(minutes=1)), now) == ""


def test_wait_on_a_failed_job_raises_job_failed_with_the_reason(
    client: Client, finished_jobs: FinishedJobs
):
    with pytest.raises(JobFailedError) as raised:
        client.wait(finished_jobs.failed, timeout=5, progress=False)
    error = raised.value
    assert error.job.state == "failed" and error.job.error is not None
    assert "broken.pt" in error.job.error.detail
    assert "broken.pt" in str(error) and finished_jobs.failed in str(error)


def test_wait_times_out_with_the_last_state_seen(client: Client):
    job = client.submit(QUEUED_SPEC)
    try:
        with pytest.raises(WaitTimeoutError) as raised:
            client.wait(job.id, timeout=0.3, progress=False)
        assert isinstance(raised.value, TimeoutError)
        assert raised.value.job.state == "queued"
    finally:
        client.cancel(job.id)


def test_wait_polls_at_the_pace_the_server_asks_for(
    client: Client, finished_jobs: FinishedJobs, monkeypatch: pytest.MonkeyPatch
):
    done = client.get(finished_jobs.succeeded).model_dump(mode="json")
    running = {**done, "state": "running", "done": False}
    answers = [(running, "3"), (running, "0.5"), (done, None)]
    sleeps: list[float] = []
    monkeypatch.setattr("app.client.time.sleep", sleeps.append)

    def handler(request: httpx.Request) -> httpx.Response:
        body, retry_after = answers.pop(0)
        return httpx.Response(200, json=body, headers={"Retry-After": retry_after} if retry_after else {})

    mock = httpx.Client(base_url="http://service", transport=httpx.MockTransport(handler))
    with Client(http=mock) as mocked:
        assert mocked.wait(done["id"], progress=False).state == "succeeded"
    assert sleeps == [3.0, 0.5] and not answers


# -- the error tree ------------------------------------------------------------------------------

def test_auth_on_and_no_key_is_unauthorized(finished_jobs: FinishedJobs):
    settings = finished_jobs.settings.model_copy(update={"auth": True})
    with TestClient(create_app(settings)) as http:
        with Client(http=http) as anonymous, pytest.raises(UnauthorizedError) as raised:
            anonymous.list()
        assert raised.value.status == 401
    with (TestClient(create_app(settings)) as http, Client(api_key="srg_wrong_key", http=http) as wrong,
          pytest.raises(UnauthorizedError)):
        wrong.get(finished_jobs.succeeded)


def test_an_unknown_job_is_not_found(client: Client):
    for call in (client.get, client.result, client.trials, client.artifacts, client.cancel):
        with pytest.raises(NotFoundError) as raised:
            call("no-such-job")
        assert raised.value.status == 404 and raised.value.problem.status == 404


def test_a_bad_spec_is_an_invalid_request_naming_the_fields(client: Client):
    spec: dict[str, Any] = {**QUEUED_SPEC, "data": {**QUEUED_SPEC["data"], "shift": "nope"},
                            "search": {"max_trials": 0}}
    with pytest.raises(InvalidRequestError) as raised:
        client.submit(spec)
    error = raised.value
    assert error.status == 422
    fields = {field.field for field in error.problem.errors or []}
    assert {"data.shift", "search.max_trials"} <= fields
    assert "data.shift" in str(error) and "search.max_trials" in str(error)


def test_the_result_of_an_unfinished_job_is_a_conflict(client: Client):
    job = client.submit(QUEUED_SPEC)
    try:
        with pytest.raises(ConflictError) as raised:
            client.result(job.id)
        assert raised.value.status == 409
        assert raised.value.problem.model_extra == {"state": "queued"}
    finally:
        client.cancel(job.id)


def test_an_unreachable_service_is_a_transport_error(tmp_path: Path):
    port = closed_port()
    told: list[str] = []
    with Client(f"http://127.0.0.1:{port}", timeout=5, retry_for=1.0,
                on_retry=told.append) as client:
        with pytest.raises(TransportError) as raised:
            client.get("anything")
        assert f"127.0.0.1:{port}" in str(raised.value)
        # retried (a restarting service comes back), and said so once, with the reason
        assert len(told) == 1 and f"GET http://127.0.0.1:{port}/v1/jobs/anything" in told[0]
        assert "retrying for up to 1 s" in told[0]
        with pytest.raises(TransportError):
            client.download("anything", "x.bin", tmp_path)
    assert not list(tmp_path.iterdir())
    with pytest.raises(TransportError):
        Client("http://[not-a-host", retry_for=0).get("x")


def test_an_error_without_a_problem_body_still_maps_to_the_tree():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>\n<body>Bad gateway</body>\n</html>")

    mock = httpx.Client(base_url="http://x", transport=httpx.MockTransport(handler))
    with Client(http=mock) as client, pytest.raises(APIError) as raised:
        client.get("job")
    assert type(raised.value) is APIError and raised.value.status == 502
    assert "\n" not in str(raised.value) and "Bad gateway" in str(raised.value)
