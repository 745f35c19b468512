"""The Optuna dashboard over the service's storage: a finished job's study, trials and artifacts
read back through optuna-dashboard's own JSON API; ``readonly`` refuses every change."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from app.dashboard import make_dashboard_server
from app.trial_attrs import study_name
from tests.finished_jobs import FinishedJobs


@contextmanager
def dashboard(finished_jobs: FinishedJobs, *, readonly: bool) -> Iterator[httpx.Client]:
    server = make_dashboard_server(finished_jobs.settings, "127.0.0.1", 0, readonly=readonly)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.server_port}", timeout=30) as http:
            yield http
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def open_dashboard(finished_jobs: FinishedJobs) -> Iterator[httpx.Client]:
    with dashboard(finished_jobs, readonly=False) as http:
        yield http


@pytest.fixture(scope="module")
def readonly_dashboard(finished_jobs: FinishedJobs) -> Iterator[httpx.Client]:
    with dashboard(finished_jobs, readonly=True) as http:
        yield http


def _study_id(http: httpx.Client, job_id: str) -> int:
    response = http.get("/api/studies")
    assert response.status_code == 200, response.text
    ids = {s["study_name"]: s["study_id"] for s in response.json()["study_summaries"]}
    return ids[study_name(job_id)]


def _attrs(trial_or_study: dict[str, Any]) -> dict[str, str]:
    return {attr["key"]: attr["value"] for attr in trial_or_study["user_attrs"]}


def test_a_finished_jobs_study_trials_and_artifacts_read_back(
    open_dashboard: httpx.Client, finished_jobs: FinishedJobs
):
    http = open_dashboard
    study_id = _study_id(http, finished_jobs.succeeded)
    detail = http.get(f"/api/studies/{study_id}")
    assert detail.status_code == 200, detail.text
    study = detail.json()
    assert study["name"] == study_name(finished_jobs.succeeded)
    assert study["directions"] == ["maximize"]

    trials = study["trials"]
    assert [trial["state"] for trial in trials] == ["Complete"] * 3
    attrs = [_attrs(trial) for trial in trials]
    assert len({a["label"] for a in attrs}) == 3  # auto's first rung: three distinct parts
    for a in attrs:
        assert {"label", "groups", "test_acc", "tuned_share"} <= set(a), a
        assert 0 <= float(a["tuned_share"]) <= 1 and 0 <= float(a["test_acc"]) <= 1
    for a in attrs:
        if a["label"] in ("block1", "block2", "block3", "head"):
            assert a["groups"] == f'["{a["label"]}"]'

    artifacts = {artifact["filename"]: artifact for artifact in study["artifacts"]}
    assert {"accuracy_by_part.png", "search_history.png", "diagnosis.png",
            "result.json"} <= set(artifacts)
    # The shift diagnosis, readable on the study's page (dicts are shown as JSON).
    study_attrs = _attrs(study)
    verdict = json.loads(study_attrs["diagnosis"])
    assert verdict["kind"] == "input" and verdict["ranking"][0] == "block1"
    assert verdict["null"] == "source-bootstrap" and verdict["explanation"]
    assert "null mean" in json.loads(study_attrs["diagnosis_divergence"])["block1"]
    png = http.get(f"/artifacts/{study_id}/{artifacts['accuracy_by_part.png']['artifact_id']}")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    # The weights belong to the trials that trained them (the best one's are the job's patch).
    trial_artifacts = {a["filename"] for trial in trials for a in trial["artifacts"]}
    assert {"patch.safetensors", "finetuned.safetensors"} <= trial_artifacts

    assert http.get("/dashboard").status_code == 200  # the single-page app itself


def test_without_readonly_changes_reach_the_dashboard(open_dashboard: httpx.Client):
    # An incomplete create request: optuna-dashboard itself answers (400), nothing is changed.
    refused = open_dashboard.post("/api/studies", json={})
    assert refused.status_code == 400 and "study_name" in refused.json()["reason"]


def test_readonly_refuses_every_change_and_serves_every_read(
    readonly_dashboard: httpx.Client, finished_jobs: FinishedJobs
):
    http = readonly_dashboard
    study_id = _study_id(http, finished_jobs.succeeded)
    attempts = [
        ("DELETE", f"/api/studies/{study_id}", None),
        ("POST", "/api/studies", {"study_name": "x", "directions": ["maximize"]}),
        ("POST", f"/api/studies/{study_id}/rename", {"study_name": "renamed"}),
        ("PUT", f"/api/studies/{study_id}/note", {"version": 1, "body": "hi"}),
        ("PATCH", f"/api/studies/{study_id}", {}),
    ]
    for method, path, body in attempts:
        response = http.request(method, path, json=body)
        assert response.status_code == 405, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["allow"] == "GET, HEAD, OPTIONS"
        assert response.json()["status"] == 405
    detail = http.get(f"/api/studies/{study_id}")
    assert detail.status_code == 200 and len(detail.json()["trials"]) == 3
    assert http.head("/dashboard").status_code == 200
    names = [s["study_name"] for s in http.get("/api/studies").json()["study_summaries"]]
    assert study_name(finished_jobs.succeeded) in names and "x" not in names and "renamed" not in names
