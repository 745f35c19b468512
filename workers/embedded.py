"""``surgical run``: the whole product on one machine with embedded defaults.

It migrates the SQLite database in the data directory, builds the built-in source model once,
starts the API (no API keys: local mode), one worker per core (or per GPU) and the dashboard as
child processes, submits the demo job, shows its progress and leaderboard, and keeps serving
until Ctrl-C, which stops every child cleanly (workers finish or abandon their trial; a second
Ctrl-C kills them).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

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


@dataclass
class Children:
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, *args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        process = subprocess.Popen([sys.executable, "-m", "workers.cli", *args], env=env)
        self.processes.append(process)
        return process

    def stop(self, grace: float = 30.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} did not become ready within {timeout:.0f} s")


def run_embedded(
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    dashboard_port: int = 8080,
    workers: int | None = None,
    demo: bool = True,
    exit_after_demo: bool = False,
) -> int:
    from rich.console import Console

    from app.client import Client
    from app.migrate import upgrade
    from app.settings import Settings
    from app.tables import leaderboard_table

    console = Console()
    env = {**os.environ, "SURGICAL_AUTH": "false"}
    env.setdefault("SURGICAL_TORCH_THREADS", "1")  # one worker per core: no oversubscription
    settings = Settings(auth=False)
    console.print(f"[bold]surgical[/] embedded mode: data in {settings.data_dir}")
    console.print("[yellow]API keys are off: this service is for this machine only (127.0.0.1).[/]")
    upgrade(settings)
    if demo:
        from selector.builtin import load_source_model

        console.print("preparing the built-in source model (trained once, then cached) ...")
        load_source_model("mnist-resnet", data_dir=settings.data_dir)

    devices = default_worker_devices()
    if workers is not None:
        devices = (devices * workers)[:workers] if devices else ["cpu"] * workers
    children = Children()
    url = f"http://{host}:{port}"
    try:
        children.start("serve", "--host", host, "--port", str(port), "--no-auth", env=env)
        for device in devices:
            children.start("worker", "--device", device, "--log-level", "WARNING", env=env)
        children.start("dashboard", "--host", host, "--port", str(dashboard_port), env=env)
        wait_ready(url)
        console.print(f"API        {url}  (docs: {url}/docs)")
        console.print(f"dashboard  http://{host}:{dashboard_port}/dashboard")
        console.print(f"workers    {len(devices)} ({', '.join(devices)})")
        if demo:
            with Client(url) as client:
                job = client.submit(DEMO_JOB)
                console.print(f"demo job   {url}/v1/jobs/{job.id}")
                job = client.wait(job.id, progress=True)
                console.print(leaderboard_table(client.result(job.id), title=f"job {job.id}: {job.state}"))
                for artifact in client.artifacts(job.id):
                    console.print(f"artifact   {url}/v1/jobs/{job.id}/artifacts/{artifact.name}")
        if exit_after_demo:
            return 0
        console.print("serving; Ctrl-C stops everything")
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        console.print("stopping ...")
        children.stop()
