"""Regression tests for the hand-found defects of issue 13 (schemathesis did not generate them).

A real uvicorn server on SQLite and on PostgreSQL: every crafted request must be answered with
a 4xx problem naming the field, never a 500 (PostgreSQL refuses NUL characters and non-finite
JSON numbers with errors that SQLite does not raise, so both backends matter).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.db import session_scope
from app.models import Job
from app.schemas.spec import MAX_GROUPS
from app.settings import Settings
from tests.app.helpers import MINIMAL
from tests.app.server import Api, serve_api

PROBLEM = "application/problem+json"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("hardening")
    (root / "data").mkdir()
    settings = Settings(data_dir=root, database_url=module_db_url, data_roots=[root / "data"])
    with serve_api(settings) as api:
        yield api


def problem(response: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert body["errors"][0]["field"] == field, body
    return body


def with_search(**search: Any) -> dict[str, Any]:
    return {**MINIMAL, "search": search}


def raw_post(client: httpx.Client, text: str | bytes) -> httpx.Response:
    return client.post("/v1/jobs", content=text, headers=JSON)


# --- requests that returned 500 ----------------------------------------------------------------


@pytest.mark.parametrize(("lr_min", "field"), [(0.5, "search.lr_max"), (1e300, "search.lr_min")])
def test_lr_min_above_the_default_lr_max_is_refused_at_submit(
    client: httpx.Client, lr_min: float, field: str
) -> None:
    problem(client.post("/v1/jobs", json=with_search(lr_min=lr_min)), 422, field)


def _token(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "token",
    [
        _token(["2024-01-01T00:00:00", "x"]),  # naive
        _token(["2024-01-01", "0" * 32]),  # date only
        _token(["9999-12-31T23:59:59-23:59", "0" * 32]),  # overflows in UTC
        _token(["2024-01-01T00:00:00+00:00", "\x00"]),  # NUL (PostgreSQL refuses it)
        _token(["2024-01-01T00:00:00+00:00", 5]),
        _token({"a": 1}),
        "%%%",
    ],
)
def test_crafted_page_tokens_are_problems(client: httpx.Client, token: str) -> None:
    problem(client.get("/v1/jobs", params={"page_token": token}), 422, "page_token")


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN"])
def test_non_finite_numbers_are_refused(client: httpx.Client, number: str) -> None:
    body = json.dumps(MINIMAL)[:-1] + f', "search": {{"lr_max": {number}}}}}'
    problem(raw_post(client, body), 422, "search.lr_max")
    factory = '{"source": "factory", "target": "m:f", "kwargs": {"x": [NUMBER]}}'
    factory = factory.replace("NUMBER", number)
    body = json.dumps(MINIMAL).replace('{"source": "builtin", "name": "mnist-resnet"}', factory)
    problem(raw_post(client, body), 422, "model.kwargs.x.0")


@pytest.mark.parametrize(
    ("groups", "field"),
    [
        ('{"g": "conv\\ud800"}', "search.groups.g"),  # a lone surrogate in a value
        ('{"g\\udc00": "conv"}', "search.groups"),  # ... in a name (was stored as U+FFFD)
        ('{"g": "conv\\u0000"}', "search.groups.g"),
        ('{"g\\u0000": "conv"}', "search.groups"),  # NUL in a name broke JSON queries
    ],
)
def test_unstorable_strings_are_refused(client: httpx.Client, groups: str, field: str) -> None:
    body = json.dumps(MINIMAL)[:-1] + f', "search": {{"groups": {groups}}}}}'
    problem(raw_post(client, body), 422, field)


@pytest.mark.parametrize("path", ["%00", "%00/trials", "%00/result", "a%00b/artifacts", "x" * 40])
def test_malformed_job_ids_are_not_found(client: httpx.Client, path: str) -> None:
    problem(client.get(f"/v1/jobs/{path}"), 404)
    problem(client.post("/v1/jobs/%00/cancel"), 404)
    problem(client.delete("/v1/jobs/%00"), 404)


# --- unbounded work ----------------------------------------------------------------------------


def test_group_count_and_pattern_length_are_capped(client: httpx.Client) -> None:
    many = {f"g{i}": f"^layer{i}$" for i in range(MAX_GROUPS + 1)}
    problem(client.post("/v1/jobs", json=with_search(groups=many)), 422, "search.groups")
    long = {"g": "a" * 501}
    problem(client.post("/v1/jobs", json=with_search(groups=long)), 422, "search.groups")
    enough = {f"g{i}": f"^layer{i}$" for i in range(MAX_GROUPS)}
    assert client.post("/v1/jobs", json=with_search(groups=enough)).status_code == 202


@pytest.mark.parametrize("pattern", ["(.|.|.)*!", "(a+)+", "(a*)*b", "(x|x)*y", r"(\w+\.)*z"])
def test_catastrophic_regexes_are_refused(client: httpx.Client, pattern: str) -> None:
    """ReDoS: workers would re.fullmatch these against every module name with no limit."""
    body = problem(client.post("/v1/jobs", json=with_search(groups={"g": pattern})), 422)
    assert "backtrack" in body["detail"]


def test_stored_specs_are_served_as_stored(client: httpx.Client, api: Api) -> None:
    """A stored spec is never re-validated on read: a job that today's rules would refuse
    (stored under older ones) still reads, lists and polls; the ETag still works."""
    job_id = client.post("/v1/jobs", json=MINIMAL).json()["id"]
    with session_scope(api.factory) as session:
        stored = session.get(Job, job_id)
        assert stored is not None
        legacy = json.loads(json.dumps(stored.spec))
        legacy["search"].update(lr_min=0.5, groups={"g": "(a+)+"})
        session.execute(update(Job).where(Job.id == job_id).values(spec=legacy))
    first = client.get(f"/v1/jobs/{job_id}")
    assert first.status_code == 200, first.text
    assert first.json()["spec"]["search"]["groups"] == {"g": "(a+)+"}
    again = client.get(f"/v1/jobs/{job_id}", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    listed = client.get("/v1/jobs")
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == job_id
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def test_reading_a_job_with_many_groups_is_fast(client: httpx.Client) -> None:
    groups = {f"g{i}": rf"^features\.{i}\.(conv|bn)\d+$" for i in range(MAX_GROUPS)}
    job_id = client.post("/v1/jobs", json=with_search(groups=groups)).json()["id"]
    client.get(f"/v1/jobs/{job_id}")  # warm up the connection
    start = time.perf_counter()
    for _ in range(20):
        assert client.get(f"/v1/jobs/{job_id}").status_code == 200
    assert (time.perf_counter() - start) / 20 < 0.25


@pytest.mark.parametrize(
    "uri", ["http:/etc/passwd", "http://example.com/x.pt", "memory://x.pt", "data:,x"]
)
def test_remote_and_ambiguous_uris_are_refused_at_submit(client: httpx.Client, uri: str) -> None:
    body = {**MINIMAL, "data": {"source": "tensors", "path": uri}}
    problem(client.post("/v1/jobs", json=body), 422, "data.path")


# --- conformance -------------------------------------------------------------------------------


def test_authentication_comes_before_parsing(api: Api) -> None:
    with api.client() as anonymous:
        for body in ("{not json", '{"model": 1}', b"\xff\xfe"):
            problem(raw_post(anonymous, body), 401)
    with api.client("srg_000000000000_wrong") as wrong:
        problem(raw_post(wrong, "{not json"), 401)


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "\xff\xfe"}',  # invalid UTF-8
        b'{"seed": ' + b"9" * 5000 + b"}",  # more digits than Python converts
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the recursion limit
    ],
)
def test_unparsable_bodies_are_documented_400_problems(client: httpx.Client, body: bytes) -> None:
    assert "400" in client.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    detail = problem(raw_post(client, body), 400)["detail"]
    assert "could not be parsed" in detail


def test_405_lists_every_allowed_method(client: httpx.Client) -> None:
    response = client.put("/v1/jobs/" + "0" * 32)
    problem(response, 405)
    assert response.headers["allow"] == "DELETE, GET"
    assert client.patch("/v1/jobs").headers["allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (with_search(max_trials=True), "search.max_trials"),
        (with_search(epochs=2.0), "search.epochs"),
        (with_search(lr_max=True), "search.lr_max"),
        (with_search(baselines=1), "search.baselines"),
        ({**MINIMAL, "seed": False}, "seed"),
        ({**MINIMAL, "seed": "3"}, "seed"),
    ],
)
def test_types_are_strict(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    problem(client.post("/v1/jobs", json=body), 422, field)


def test_empty_idempotency_key_is_refused(client: httpx.Client) -> None:
    response = client.post("/v1/jobs", json=MINIMAL, headers={"Idempotency-Key": ""})
    problem(response, 422, "Idempotency-Key")


def test_the_schema_says_what_the_spec_requires(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["TensorsData"]["properties"]["path"]["minLength"] == 1
    assert schemas["SearchSpec"]["properties"]["groups"]


def test_unknown_torchvision_arch_is_refused_at_submit(client: httpx.Client) -> None:
    body = {**MINIMAL, "model": {"source": "torchvision", "arch": "resnet19", "num_classes": 10}}
    detail = problem(client.post("/v1/jobs", json=body), 422, "model.arch")["detail"]
    assert "resnet18" in detail  # the close matches help the user
