"""A bounded schemathesis run against a live uvicorn server on SQLite (issue 13).

Every operation of the OpenAPI document gets a fixed number of generated requests (valid and
invalid ones, derandomized, so a run is reproducible), sent with a valid API key. Each response
must not be a 5xx, must use a documented status code and content type, and must match its
documented schema. The run takes well under a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.settings import Settings
from tests.app.server import Api, serve_api

schemathesis = pytest.importorskip("schemathesis")
from schemathesis import checks  # noqa: E402

EXAMPLES_PER_OPERATION = 50
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


@pytest.fixture(scope="module")
def fuzz_api(databases, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Api, str]]:
    url = databases.migrated("sqlite")
    root: Path = tmp_path_factory.mktemp("fuzz")
    (root / "data").mkdir()
    settings_ = Settings(data_dir=root, database_url=url, data_roots=[root / "data"])
    with serve_api(settings_) as api:
        yield api, api.new_key("fuzzer")
    databases.drop(url)


def test_no_server_errors_and_no_schema_violations(fuzz_api: tuple[Api, str]) -> None:
    api, key = fuzz_api
    schema = schemathesis.openapi.from_url(f"{api.base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    for operation in operations:

        @given(case=st.one_of(*(operation.as_strategy(mode) for mode in modes)))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            case.call_and_validate(base_url=api.base_url, headers=headers, checks=CHECKS)

        run()
