"""End to end: a real uvicorn server, httpx over loopback, on SQLite and on PostgreSQL.

The server and its database live for the module; each test gets a fresh API key (a fresh
owner), so tests never see each other's jobs. The worker's part is played through app.store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
from optuna.artifacts import upload_artifact
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from pydantic import ValidationError

from app import store, trial_attrs
from app.artifacts import make_artifact_store
from app.db import make_engine, make_session_factory, session_scope
from app.main import MAX_BODY_BYTES, create_app
from app.settings import Settings
from tests.app.helpers import MINIMAL, RESULT, RESULT_STORED, force_running
from tests.app.server import Api, serve, serve_api

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    (root / "data" / "sets").mkdir(parents=True)
    (root / "data" / "sets" / "x.pt").write_bytes(b"x")
    (root / "secret.pt").write_bytes(b"s")
    (root / "data" / "sets" / "link.pt").symlink_to(root / "secret.pt")
    settings = Settings(
        data_dir=root,
        database_url=module_db_url,
        data_roots=[root / "data"],
        factory_allowlist=["mypkg"],
    )
    app = create_app(settings)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("secret internals /etc/shadow")

    with serve_api(settings, app) as api:
        yield api


def submit(client: httpx.Client, body: dict[str, Any] | None = None, **headers: str) -> str:
    response = client.post("/v1/jobs", json=body or MINIMAL, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == status and problem["title"] and problem["type"]
    if field is not None:
        assert problem["errors"][0]["field"] == field
        assert problem["detail"].startswith(f"{field}:")
    return problem


def test_submit_returns_202_with_location_and_retry_after(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=MINIMAL)
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["self"]
    assert int(response.headers["retry-after"]) >= 0
    assert job["state"] == "queued" and job["done"] is False and job["error"] is None
    assert job["spec"]["search"]["max_trials"] == 12  # defaults filled in
    assert job["progress"]["trials_budget"] == 12
    assert client.get(response.headers["location"]).json()["id"] == job["id"]


def test_get_uses_etags(client: httpx.Client, api: Api) -> None:
    job_id = submit(client)
    first = client.get(f"/v1/jobs/{job_id}")
    tag = first.headers["etag"]
    assert first.status_code == 200 and tag.startswith('"')
    cached = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag})
    assert cached.status_code == 304 and cached.content == b"" and cached.headers["etag"] == tag
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": '"x"'}).status_code == 200
    force_running(api.factory, job_id)
    with session_scope(api.factory) as session:
        store.heartbeat(session, job_id, "w1")
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag}).status_code == 200
    tag = client.get(f"/v1/jobs/{job_id}").headers["etag"]
    with session_scope(api.factory) as session:  # heartbeats do not change the resource
        store.heartbeat(session, job_id, "w1")
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag}).status_code == 304
    with session_scope(api.factory) as session:
        store.update_progress(session, job_id, {"trials_done": 1, "trials_budget": 12})
    assert client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": tag}).status_code == 200


def test_progress_written_by_a_newer_worker_is_served_as_this_version_knows_it(
        client: httpx.Client, api: Api) -> None:
    """A rolling upgrade: workers of the next version write a progress field this API does not
    know. The job is still served, as this version's schema describes it."""
    from sqlalchemy import update

    from app.models import Job
    from app.schemas import JobPublic

    job_id = submit(client)
    force_running(api.factory, job_id)
    with session_scope(api.factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(
            progress={"trials_done": 2, "phase": "searching", "eta_seconds": 40}))
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    progress = response.json()["progress"]
    assert progress == {"trials_done": 2, "phase": "searching"}
    assert JobPublic.model_validate(response.json()).progress.trials_done == 2


def test_progress_shows_the_phase_while_running_and_keeps_the_diagnosis(
        client: httpx.Client, api: Api) -> None:
    job_id = submit(client)
    force_running(api.factory, job_id)
    said = "input-level: tune block1 first"
    with session_scope(api.factory) as session:
        store.update_progress(session, job_id, {"trials_budget": 12, "phase": "diagnosing"})
    assert client.get(f"/v1/jobs/{job_id}").json()["progress"]["phase"] == "diagnosing"
    with session_scope(api.factory) as session, pytest.raises(ValidationError):
        store.update_progress(session, job_id, {"phase": "resting"})  # not a phase
    with session_scope(api.factory) as session:
        store.update_progress(session, job_id, {"trials_budget": 12, "phase": "searching",
                                                "diagnosis": said})
    progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert (progress["phase"], progress["diagnosis"]) == ("searching", said)
    with session_scope(api.factory) as session:
        store.fail(session, job_id, "w1", {"type": "job-failed", "detail": "test"})
    progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert (progress["phase"], progress["diagnosis"]) == (None, said)  # done: no phase


def test_list_paginates_newest_first(client: httpx.Client) -> None:
    ids = [submit(client) for _ in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"page_size": 2}
    for _ in range(5):
        page = client.get("/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["data"]]
        if page["next_page_token"] is None:
            break
        params["page_token"] = page["next_page_token"]
    assert seen == list(reversed(ids))
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    cancelled = client.get("/v1/jobs", params={"state": "cancelled"}).json()["data"]
    assert [job["id"] for job in cancelled] == [ids[0]]
    assert_problem(client.get("/v1/jobs", params={"page_size": 0}), 422, "page_size")
    assert_problem(client.get("/v1/jobs", params={"state": "bogus"}), 422, "state")
    assert_problem(client.get("/v1/jobs", params={"page_token": "zz"}), 422, "page_token")


def test_idempotency_key(client: httpx.Client, api: Api) -> None:
    first = submit(client, MINIMAL, **{"Idempotency-Key": "abc"})
    assert submit(client, MINIMAL, **{"Idempotency-Key": "abc"}) == first
    changed = {**MINIMAL, "seed": 1}
    response = client.post("/v1/jobs", json=changed, headers={"Idempotency-Key": "abc"})
    assert_problem(response, 422, "Idempotency-Key")
    with api.client(api.new_key()) as other:  # keys are per owner
        assert submit(other, MINIMAL, **{"Idempotency-Key": "abc"}) != first
    assert submit(client, MINIMAL) != first


def test_cancel(client: httpx.Client, api: Api) -> None:
    queued, running = submit(client), submit(client)
    job = client.post(f"/v1/jobs/{queued}/cancel").json()
    assert job["state"] == "cancelled" and job["done"] and job["cancel_requested"]
    assert client.post(f"/v1/jobs/{queued}/cancel").json()["state"] == "cancelled"
    force_running(api.factory, running)
    job = client.post(f"/v1/jobs/{running}/cancel").json()
    assert job["state"] == "running" and job["cancel_requested"] and not job["done"]


def test_trials_result_artifacts_and_delete(client: httpx.Client, api: Api) -> None:
    job_id = submit(client)
    assert client.get(f"/v1/jobs/{job_id}/trials").json() == {"data": []}
    force_running(api.factory, job_id, "w1")
    study = optuna.create_study(
        study_name=trial_attrs.study_name(job_id),
        storage=api.settings.storage_url,
        direction="maximize",
    )
    attrs = {
        trial_attrs.LABEL: "block1", trial_attrs.METHOD: "surgical",
        trial_attrs.GROUPS: ["block1"], trial_attrs.LR: 0.001,
        trial_attrs.VAL_ACC_PER_EPOCH: [0.5, 0.9], trial_attrs.BEST_EPOCH: 2,
        trial_attrs.TEST_ACC: 0.88, trial_attrs.TUNED_SHARE: 0.03, trial_attrs.DURATION_S: 4.2,
        trial_attrs.WORKER: "w1",
    }  # fmt: skip
    lr = FloatDistribution(1e-5, 1e-1, log=True)
    study.add_trial(
        create_trial(params={"lr": 0.001}, distributions={"lr": lr}, value=0.9, user_attrs=attrs)
    )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"lr": 0.1},
            distributions={"lr": lr},
            user_attrs={trial_attrs.FAIL_REASON: "diverged"},
        )
    )
    trials = client.get(f"/v1/jobs/{job_id}/trials").json()["data"]
    assert [(t["number"], t["state"]) for t in trials] == [(0, "complete"), (1, "fail")]
    assert trials[0]["label"] == "block1" and trials[0]["groups"] == ["block1"]
    assert trials[0]["val_acc"] == 0.9 and trials[0]["val_acc_per_epoch"] == [0.5, 0.9]
    assert trials[0]["test_acc"] == 0.88 and trials[0]["lr"] == 0.001
    assert trials[0]["duration_s"] == 4.2 and trials[0]["worker"] == "w1"
    assert trials[1]["fail_reason"] == "diverged" and trials[1]["val_acc"] is None

    problem = assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409)
    assert problem["state"] == "running"
    assert_problem(client.delete(f"/v1/jobs/{job_id}"), 409)

    payload = Path(api.settings.data_dir) / "weights.bin"
    payload.write_bytes(b"\x00weights" * 1000)
    artifact_id = upload_artifact(
        artifact_store=make_artifact_store(api.settings),
        file_path=str(payload),
        study_or_trial=study,
    )
    with session_scope(api.factory) as session:
        assert store.add_artifact(session, job_id, {
            "name": "best weights.bin", "artifact_id": artifact_id,
            "content_type": "application/octet-stream", "size": payload.stat().st_size,
        })  # fmt: skip
        assert store.finish(session, job_id, "w1", RESULT)

    assert client.get(f"/v1/jobs/{job_id}/result").json() == RESULT_STORED
    listed = client.get(f"/v1/jobs/{job_id}/artifacts").json()["data"]
    assert [a["name"] for a in listed] == ["best weights.bin"]
    download = client.get(listed[0]["href"])
    assert download.status_code == 200 and download.content == payload.read_bytes()
    assert download.headers["content-type"] == "application/octet-stream"
    assert "attachment" in download.headers["content-disposition"]
    assert_problem(client.get(f"/v1/jobs/{job_id}/artifacts/nope"), 404)

    assert client.delete(f"/v1/jobs/{job_id}").status_code == 204
    assert_problem(client.get(f"/v1/jobs/{job_id}"), 404)
    assert_problem(client.delete(f"/v1/jobs/{job_id}"), 404)
    with pytest.raises(KeyError):
        optuna.load_study(
            study_name=trial_attrs.study_name(job_id), storage=api.settings.storage_url
        )
    assert not (Path(api.settings.artifact_dir or "") / artifact_id).exists()


def test_failed_job_reports_its_error(client: httpx.Client, api: Api) -> None:
    job_id = submit(client)
    force_running(api.factory, job_id, "w1")
    with session_scope(api.factory) as session:
        store.fail(session, job_id, "w1", {"type": "DataError", "detail": "empty train set"})
    response = client.get(f"/v1/jobs/{job_id}")
    job = response.json()
    assert job["state"] == "failed" and job["done"] and "retry-after" not in response.headers
    assert job["error"] == {"type": "DataError", "detail": "empty train set"}
    assert assert_problem(client.get(f"/v1/jobs/{job_id}/result"), 409)["state"] == "failed"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"search": {"max_trials": 201}}, "search.max_trials"),
        ({"search": {"epochs": 500}}, "search.epochs"),
        ({"search": {"max_minutes": -1}}, "search.max_minutes"),
        ({"data": {"source": "builtin", "n_per_class": 100000}}, "data.n_per_class"),
        ({"data": {"source": "builtin", "shift": "snow"}}, "data.shift"),
        ({"data": {"source": "tensors", "path": "DATA/sets/../../secret.pt"}}, "data.path"),
        ({"data": {"source": "tensors", "path": "file://DATA/sets/link.pt"}}, "data.path"),
        ({"model": {"source": "factory", "target": "os:system"}}, "model.target"),
        ({"model": {"source": "builtin", "name": "mnist-resnet", "x": 1}}, "model.x"),
        ({"search": {"lr_min": 0.1, "lr_max": 0.1}}, "search.lr_max"),
    ],
)
def test_bad_specs_are_problems_naming_the_field(
    client: httpx.Client, api: Api, patch: dict[str, Any], field: str
) -> None:
    data_root = str(api.settings.data_roots[0])
    body = {**MINIMAL, **patch}
    if "path" in body["data"]:
        body["data"] = {**body["data"], "path": body["data"]["path"].replace("DATA", data_root)}
    assert_problem(client.post("/v1/jobs", json=body), 422, field)


def test_good_file_references_are_canonicalised(client: httpx.Client, api: Api) -> None:
    root = api.settings.data_roots[0]
    body = {**MINIMAL, "data": {"source": "tensors", "path": f"{root}/sets/./x.pt"},
            "model": {"source": "factory", "target": "mypkg.models:build"}}  # fmt: skip
    job_id = submit(client, body)
    spec = client.get(f"/v1/jobs/{job_id}").json()["spec"]
    assert spec["data"]["path"] == (root / "sets" / "x.pt").resolve().as_uri()


def test_malformed_requests_are_problems(client: httpx.Client) -> None:
    raw = client.post("/v1/jobs", content=b"{nope", headers=JSON)
    assert_problem(raw, 422, "body")
    assert_problem(client.post("/v1/jobs", json={"model": MINIMAL["model"]}), 422, "data")
    big = b'{"seed": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert_problem(client.post("/v1/jobs", content=big, headers=JSON), 413)
    chunks = (b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 2))  # no Content-Length
    assert_problem(client.post("/v1/jobs", content=chunks, headers=JSON), 413)


def test_auth(api: Api, client: httpx.Client) -> None:
    job_id = submit(client)
    with api.client() as anonymous:
        problem = assert_problem(anonymous.get("/v1/jobs"), 401)
        assert anonymous.get("/v1/jobs").headers["www-authenticate"].startswith("Bearer")
        assert_problem(anonymous.post("/v1/jobs", json=MINIMAL), 401)
        assert "key" in problem["detail"]
    with api.client("srg_000000000000_forged") as forged:
        assert_problem(forged.get(f"/v1/jobs/{job_id}"), 401)
    with api.client(api.new_key()) as other:
        for response in (
            other.get(f"/v1/jobs/{job_id}"),
            other.post(f"/v1/jobs/{job_id}/cancel"),
            other.delete(f"/v1/jobs/{job_id}"),
            other.get(f"/v1/jobs/{job_id}/trials"),
            other.get(f"/v1/jobs/{job_id}/result"),
            other.get(f"/v1/jobs/{job_id}/artifacts"),
        ):
            assert_problem(response, 404)
        assert other.get("/v1/jobs").json()["data"] == []
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "queued"


def test_router_errors_are_problems(client: httpx.Client) -> None:
    problem = assert_problem(client.get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in problem["detail"]
    not_allowed = client.put("/v1/jobs")
    assert_problem(not_allowed, 405)
    assert "POST" in not_allowed.headers["allow"]
    crash = client.get("/boom")
    problem = assert_problem(crash, 500)
    assert "secret" not in crash.text and "Traceback" not in crash.text
    assert_problem(client.get("/v1/jobs/x/result"), 404)


def test_health_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/cancel", "/v1/jobs/{job_id}/trials",
        "/v1/jobs/{job_id}/result", "/v1/jobs/{job_id}/artifacts",
        "/v1/jobs/{job_id}/artifacts/{name}", "/healthz", "/readyz",
    ):  # fmt: skip
        assert path in paths
    post = paths["/v1/jobs"]["post"]
    assert post["summary"] and "202" in post["responses"] and "422" in post["responses"]
    assert "examples" in spec["components"]["schemas"]["JobSpec"]


@pytest.fixture
def bare_url(request: pytest.FixtureRequest, module_db_url: str, databases: Any) -> Iterator[str]:
    backend = "postgresql" if module_db_url.startswith("postgresql") else "sqlite"
    url = databases.empty(backend)
    yield url
    databases.drop(url)


def test_readyz_is_503_on_an_unmigrated_database(bare_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=bare_url)
    with serve(create_app(settings)) as base_url:
        response = httpx.get(f"{base_url}/readyz")
        problem = assert_problem(response, 503)
        assert "db upgrade" in problem["detail"] and "retry-after" in response.headers
        assert httpx.get(f"{base_url}/healthz").status_code == 200


def test_no_auth_mode_acts_as_local(module_db_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=module_db_url, auth=False)
    with serve(create_app(settings)) as base_url:
        job_id = submit(httpx.Client(base_url=base_url))
        assert httpx.get(f"{base_url}/v1/jobs/{job_id}").json()["state"] == "queued"
    engine = make_engine(settings)
    with session_scope(make_session_factory(engine)) as session:
        assert store.get_job(session, job_id).owner == "local"
    engine.dispose()
