"""``surgical run``: the whole product on one machine with embedded defaults.

It migrates the SQLite database in the data directory, builds the built-in source model once,
starts the API (no API keys: local mode), one worker per core (or per GPU) and the dashboard as
child processes, submits the demo job, shows its progress and leaderboard, and keeps serving
until Ctrl-C or SIGTERM.

Stopping (``workers.supervisor``): Ctrl-C or SIGTERM sends every child one SIGTERM (workers
finish their trial), a second one hurries them; a child that dies on its own stops the rest, and
any failure ends as one line on stderr with exit status 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workers.supervisor import (
    Background,
    Children,
    Interrupts,
    SupervisorError,
    check_port_free,
    supervise,
    wait_http,
)

DEMO_JOB: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {"source": "builtin", "name": "mnist", "shift": "impulse_noise"},
    "search": {"strategy": "auto", "max_trials": 10, "epochs": 8},
}


def default_worker_devices() -> list[str]:
    """One worker per GPU when CUDA is present, else one per CPU core."""
    try:
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    except Exception:
        pass
    return ["cpu"] * max(1, os.cpu_count() or 1)


def load_demo_spec(path: Path | None) -> dict[str, Any]:
    if path is None:
        return DEMO_JOB
    from app.cli_client import load_spec

    try:
        return load_spec(path)
    except ValueError as error:
        raise SupervisorError(f"--demo-spec: {error}") from None


def _worker_env(env: dict[str, str], devices: list[str]) -> dict[str, str]:
    """Share the cores between CPU workers: N workers each using every core only contend."""
    cpu_workers = sum(device == "cpu" for device in devices)
    if not cpu_workers or "OMP_NUM_THREADS" in env:
        return env
    return {**env, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // cpu_workers))}


def run_embedded(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dashboard_port: int = 8080,
    workers: int | None = None,
    demo: bool = True,
    exit_after_demo: bool = False,
    demo_spec: Path | None = None,
) -> int:
    """Run everything until a signal (or, with ``exit_after_demo``, the demo's end); the exit
    status: 0 after a requested stop or a succeeded demo, 1 on any failure (said in one line)."""
    from rich.console import Console

    from app.client import SurgicalError

    console = Console(soft_wrap=True, highlight=False)

    def say(text: str) -> None:
        console.print(text, markup=False)

    with Interrupts() as interrupts:
        children = Children(interrupts)
        try:
            _run(console, say, children, host=host, port=port, dashboard_port=dashboard_port,
                 workers=workers, demo=demo, exit_after_demo=exit_after_demo, demo_spec=demo_spec)
            return 0
        except KeyboardInterrupt:
            say("interrupted")
            return 0
        except SupervisorError as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
        except SurgicalError as error:  # the demo job failed, or the API answered an error
            print(f"error: demo job: {error}", file=sys.stderr, flush=True)
            return 1
        except Exception as error:  # a failed migration, an unreachable database, ...
            from app.cli import error_message

            print(f"error: {error_message(error)}", file=sys.stderr, flush=True)
            return 1
        finally:
            interrupts.stopping = True
            children.stop(say)


def _run(console: Any, say: Callable[[str], None], children: Children, *, host: str, port: int,
         dashboard_port: int, workers: int | None, demo: bool, exit_after_demo: bool,
         demo_spec: Path | None) -> None:
    from app.client import Client
    from app.migrate import upgrade
    from app.settings import Settings
    from app.tables import leaderboard_table

    if port == dashboard_port:
        raise SupervisorError(f"--port and --dashboard-port are both {port}")
    check_port_free(host, port, "--port")
    check_port_free(host, dashboard_port, "--dashboard-port")
    spec = load_demo_spec(demo_spec) if demo else None
    env = {**os.environ, "SURGICAL_AUTH": "false"}
    settings = Settings(auth=False)
    say(f"surgical embedded mode: data in {settings.data_dir}")
    console.print("[yellow]API keys are off: this service is for this machine only "
                  f"({host}).[/]", highlight=False)
    upgrade(settings)
    model = (spec or {}).get("model", {})
    if model.get("source") == "builtin":
        from selector.builtin import load_source_model

        say("preparing the built-in source model (trained once, then cached) ...")
        load_source_model(model.get("name", "mnist-resnet"), data_dir=settings.data_dir)

    devices = default_worker_devices()
    if workers is not None:
        devices = (devices * workers)[:workers]
    url = f"http://{host}:{port}"
    dashboard_url = f"http://{host}:{dashboard_port}"
    children.start("API", "serve", "--host", host, "--port", str(port), "--no-auth", "--no-access-log",
                   env=env)
    worker_env = _worker_env(env, devices)
    for index, device in enumerate(devices):
        children.start(f"worker {index}", "worker", "--device", device, "--log-level", "WARNING",
                       env=worker_env)
    children.start("dashboard", "dashboard", "--host", host, "--port", str(dashboard_port), env=env)
    wait_http(f"{url}/readyz", "API", children)
    wait_http(f"{dashboard_url}/api/meta", "dashboard", children)
    say(f"API        {url}")
    say(f"API docs   {url}/docs")
    say(f"dashboard  {dashboard_url}/dashboard")
    say(f"workers    {len(devices)} ({', '.join(devices)})")
    if spec is not None:
        with Client(url) as client:
            job = client.submit(spec)
            say(f"demo job   {url}/v1/jobs/{job.id}  (surgical status {job.id} --url {url})")
            waiter = Background(lambda: client.wait(job.id, progress=True))
            waiter.start()
            supervise(children, until=lambda: not waiter.is_alive())
            job = waiter.result()
            console.print(leaderboard_table(client.result(job.id), title=f"job {job.id}: {job.state}"))
            for artifact in client.artifacts(job.id):
                say(f"artifact   {url}/v1/jobs/{job.id}/artifacts/{artifact.name}")
    if exit_after_demo:
        return
    say("serving; Ctrl-C (or SIGTERM) stops everything")
    supervise(children)
