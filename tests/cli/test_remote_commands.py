"""``surgical submit|status|list|result|trials|wait|download|cancel|delete`` against a real server
(``--url``), through Typer's runner; errors are one line on stderr, never a traceback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from app.main import create_app
from tests.app.server import serve
from tests.finished_jobs import QUEUED_SPEC, FinishedJobs, closed_port
from workers.cli import cli

runner = CliRunner()


@pytest.fixture(scope="module")
def url(finished_jobs: FinishedJobs) -> Iterator[str]:
    with serve(create_app(finished_jobs.settings)) as base_url:
        yield base_url


def surgical(*args: str, url: str | None = None) -> Result:
    """Run a command; wide terminal so tables are not folded."""
    extra = ["--url", url] if url else []
    return runner.invoke(cli, [*args, *extra], env={"COLUMNS": "200", "SURGICAL_URL": None,
                                                   "SURGICAL_API_KEY": None,
                                                   "SURGICAL_RETRY_FOR": "1"})


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def one_error_line(result: Result, code: int) -> str:
    """The command failed with ``code`` and said why in one line, without a traceback."""
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception  # not an unhandled error
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_submit_json_and_yaml_then_cancel_and_delete(url: str, tmp_path: Path):
    as_json = tmp_path / "spec.json"
    as_json.write_text(json.dumps(QUEUED_SPEC))
    job_id, state = ok(surgical("submit", str(as_json), url=url)).split()
    assert state == "queued" and len(job_id) == 32

    as_yaml = tmp_path / "spec.yaml"
    as_yaml.write_text(yaml.safe_dump({**QUEUED_SPEC, "search": {"max_trials": 4}}))
    submitted = json.loads(ok(surgical("submit", str(as_yaml), "--json", url=url)))
    assert submitted["state"] == "queued" and submitted["spec"]["search"]["max_trials"] == 4

    for queued in (job_id, submitted["id"]):
        assert ok(surgical("cancel", queued, url=url)).strip() == f"{queued} cancelled"
    assert json.loads(ok(surgical("status", job_id, "--json", url=url)))["state"] == "cancelled"
    assert ok(surgical("delete", job_id, url=url)).strip() == f"{job_id} deleted"
    assert "not found" in one_error_line(surgical("status", job_id, url=url), 1)
    assert ok(surgical("delete", submitted["id"], url=url))


def test_status_shows_the_job_and_a_failed_jobs_reason(url: str, finished_jobs: FinishedJobs):
    shown = ok(surgical("status", finished_jobs.succeeded, url=url))
    assert finished_jobs.succeeded in shown and "succeeded" in shown and "3/3" in shown
    failed = ok(surgical("status", finished_jobs.failed, url=url))
    assert "failed" in failed and "broken.pt" in failed
    data = json.loads(ok(surgical("status", finished_jobs.succeeded, "--json", url=url)))
    assert data["id"] == finished_jobs.succeeded and data["progress"]["trials_done"] == 3


def test_list_shows_the_jobs_and_filters_by_state(url: str, finished_jobs: FinishedJobs):
    table = ok(surgical("list", url=url))
    assert finished_jobs.succeeded in table and finished_jobs.failed in table
    failed = json.loads(ok(surgical("list", "--state", "failed", "--json", url=url)))
    assert [job["id"] for job in failed] == [finished_jobs.failed]


def test_result_prints_the_leaderboard_and_its_json(url: str, finished_jobs: FinishedJobs):
    table = ok(surgical("result", finished_jobs.succeeded, url=url))
    data = json.loads(ok(surgical("result", finished_jobs.succeeded, "--json", url=url)))
    for text in ("tuned part", "val acc % ± SE", "in band", "Pareto", "no fine-tuning",
                 "recommended", "why:", *(row["label"] for row in data["leaderboard"])):
        assert text in table, text
    assert [row["label"] for row in data["leaderboard"]][0] == "no fine-tuning"
    assert data["recommendation"]["label"] in table
    waited = ok(surgical("wait", finished_jobs.succeeded, "--timeout", "10", url=url))
    assert "no fine-tuning" in waited and "recommended" in waited


def test_trials_lists_each_trial(url: str, finished_jobs: FinishedJobs):
    table = ok(surgical("trials", finished_jobs.succeeded, url=url))
    data = json.loads(ok(surgical("trials", finished_jobs.succeeded, "--json", url=url)))
    assert len({trial["label"] for trial in data}) == 3
    assert all(trial["label"] in table for trial in data)
    assert sorted(trial["number"] for trial in data) == [0, 1, 2]


def test_download_writes_every_artifact_or_the_named_ones(
    url: str, finished_jobs: FinishedJobs, tmp_path: Path
):
    out = tmp_path / "all"
    printed = ok(surgical("download", finished_jobs.succeeded, "--out", str(out), url=url))
    names = {path.name for path in out.iterdir()}
    assert {"patch.safetensors", "result.json", "accuracy_by_part.png"} <= names
    assert {Path(line).name for line in printed.split()} == names
    one = tmp_path / "one"
    ok(surgical("download", finished_jobs.succeeded, "--name", "result.json", "--out", str(one), url=url))
    assert [path.name for path in one.iterdir()] == ["result.json"]


def test_waiting_on_a_failed_job_exits_3_with_the_reason(url: str, finished_jobs: FinishedJobs):
    line = one_error_line(surgical("wait", finished_jobs.failed, url=url), 3)
    assert "failed" in line and "broken.pt" in line


def test_an_unknown_job_id_is_one_line(url: str):
    for command in ("status", "result", "trials", "cancel", "delete", "download"):
        line = one_error_line(surgical(command, "no-such-job", url=url), 1)
        assert "404" in line and "no-such-job" in line, (command, line)


def test_an_unreachable_server_is_one_line(tmp_path: Path):
    port = closed_port()
    line = one_error_line(surgical("list", url=f"http://127.0.0.1:{port}"), 1)
    assert f"127.0.0.1:{port}" in line and "refused" in line.lower()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(QUEUED_SPEC))
    one_error_line(surgical("submit", str(spec), url=f"http://127.0.0.1:{port}"), 1)
    one_error_line(surgical("status", "x", url="not a url"), 1)


def test_a_bad_retry_setting_is_one_line():
    result = runner.invoke(cli, ["list", "--url", "http://127.0.0.1:9"],
                           env={"SURGICAL_RETRY_FOR": "soon", "SURGICAL_API_KEY": None})
    assert "SURGICAL_RETRY_FOR" in one_error_line(result, 2)


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("spec.yaml", "model: {source: builtin\ndata: [", "invalid YAML at line"),
        ("spec.json", '{"model": ', "invalid JSON"),
        ("spec.json", "[1, 2]", "must be a mapping"),
        ("missing.json", None, "no such file"),
    ],
    ids=["bad-yaml", "bad-json", "not-a-mapping", "missing-file"],
)
def test_a_spec_file_that_cannot_be_read_is_one_line(
    url: str, tmp_path: Path, name: str, text: str | None, words: str
):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    line = one_error_line(surgical("submit", str(path), url=url), 2)
    assert words in line and name in line


def test_a_spec_the_service_refuses_is_one_line_naming_the_fields(url: str, tmp_path: Path):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({**QUEUED_SPEC, "data": {**QUEUED_SPEC["data"], "shift": "nope"},
                                    "search": {"epochs": 0}}))
    line = one_error_line(surgical("submit", str(path), url=url), 1)
    assert "422" in line and "data.shift" in line and "search.epochs" in line
