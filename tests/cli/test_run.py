"""``surgical run`` as a user runs it: a subprocess that starts the API, a worker and the
dashboard as its own children, in a fresh data directory holding the cached built-in model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.finished_jobs import TINY_SPEC, closed_port

ROOT = Path(__file__).resolve().parents[2]


def _ports() -> tuple[int, int]:
    api = closed_port()
    dashboard = closed_port()
    while dashboard == api:
        dashboard = closed_port()
    return api, dashboard


def _env(data_dir: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SURGICAL_")}
    return {**env, "SURGICAL_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": "1", "COLUMNS": "120"}


def _surgical_run(*args: str) -> list[str]:
    return [sys.executable, "-m", "workers.cli", "run", *args]


def _leftovers(data_dir: Path) -> list[str]:
    """Live processes started with this test's data directory in their environment."""
    marker = f"SURGICAL_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if marker not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if state != "Z":  # a zombie has exited; only its parent's wait() is missing
            found.append(f"{proc.name}: {command}")
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def data_dir(tmp_path: Path, builtin_data_dir: Path, mnist_resnet) -> Path:
    """A fresh data directory with a copy of the cached built-in model (no training here)."""
    target = tmp_path / "data"
    shutil.copytree(builtin_data_dir / "models" / "mnist-resnet", target / "models" / "mnist-resnet")
    return target


@pytest.mark.parametrize("taken", ["api", "dashboard"])
def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, taken: str):
    api, dashboard = _ports()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", api if taken == "api" else dashboard))
        holder.listen()
        done = subprocess.run(
            _surgical_run("--port", str(api), "--dashboard-port", str(dashboard), "--no-demo"),
            env=_env(tmp_path / "data"), cwd=ROOT, capture_output=True, text=True, timeout=120,
            check=False,
        )
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    port, option = (api, "--port") if taken == "api" else (dashboard, "--dashboard-port")
    assert lines[0].startswith(f"error: port {port} on 127.0.0.1 is already in use") and option in lines[0]
    assert not (tmp_path / "data").exists()  # it failed before touching anything


def test_a_startup_failure_is_one_line(tmp_path: Path):
    api, dashboard = _ports()
    env = {**_env(tmp_path / "data"),
           "SURGICAL_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"}
    spec = tmp_path / "demo.yaml"
    spec.write_text("model: [")
    for args, words in ((["--no-demo"], "error: database error:"),
                        (["--demo-spec", str(spec)], "error: --demo-spec: ")):
        done = subprocess.run(
            _surgical_run("--port", str(api), "--dashboard-port", str(dashboard), *args),
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        )
        assert done.returncode == 1, (done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(words), done.stderr


@pytest.mark.slow
def test_exit_after_demo_prints_where_everything_is_and_the_leaderboard(data_dir: Path, tmp_path: Path):
    spec = tmp_path / "demo.json"
    spec.write_text(json.dumps({**TINY_SPEC, "search": {**TINY_SPEC["search"], "max_trials": 2}}))
    api, dashboard = _ports()
    done = subprocess.run(
        _surgical_run("--port", str(api), "--dashboard-port", str(dashboard), "--workers", "1",
                      "--exit-after-demo", "--demo-spec", str(spec)),
        env=_env(data_dir), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, (done.stdout, done.stderr[-3000:])
    out = done.stdout
    assert f"API docs   http://127.0.0.1:{api}/docs" in out
    assert f"dashboard  http://127.0.0.1:{dashboard}/dashboard" in out
    assert f"demo job   http://127.0.0.1:{api}/v1/jobs/" in out
    assert "succeeded" in out and "no fine-tuning" in out and "recommended" in out
    assert "artifacts/patch.safetensors" in out
    assert "Traceback" not in done.stderr
    assert not _leftovers(data_dir)
    assert _port_free(api) and _port_free(dashboard)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_every_child_cleanly(data_dir: Path, tmp_path: Path, signum: int):
    api, dashboard = _ports()
    log = tmp_path / "run.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            _surgical_run("--port", str(api), "--dashboard-port", str(dashboard), "--workers", "1",
                          "--no-demo"),
            env=_env(data_dir), cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "serving;" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert httpx.get(f"http://127.0.0.1:{api}/readyz", timeout=5).status_code == 200
        assert len(_leftovers(data_dir)) == 4  # supervisor, API, worker, dashboard
        process.send_signal(signum)
        assert process.wait(timeout=60) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    assert "stopping" in output and "killing" not in output and "Traceback" not in output, output
    assert not _leftovers(data_dir), output
    assert _port_free(api) and _port_free(dashboard)
