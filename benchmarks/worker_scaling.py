"""Wall time of one job with 1 and with N worker processes (issue 5's scaling figure).

Runs the built-in demo job (``workers.embedded.DEMO_JOB`` unless ``--spec`` says otherwise) on a
fresh SQLite database (or ``--database-url``) once per worker count, each worker a real
``surgical worker --drain`` process with one torch thread, and writes a Markdown table.

    python benchmarks/worker_scaling.py --workers 1 2 --out benchmarks/results/worker_scaling.md
    python benchmarks/worker_scaling.py --device cuda --workers 1 2 4   # workers sharing one GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app import store
from app.db import make_engine, make_session_factory, session_scope
from app.migrate import upgrade
from app.schemas import JobSpec
from app.settings import Settings
from workers.embedded import DEMO_JOB


def run_once(spec: dict, workers: int, models_from: Path, database_url: str | None,
             device: str = "cpu") -> dict:
    """One job's wall time with ``workers`` drain workers, all training on ``device``."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        if (models_from / "models").is_dir():
            shutil.copytree(models_from / "models", data_dir / "models")
        # Without --database-url, SURGICAL_DATABASE_URL or the default (SQLite in data_dir)
        # applies: an explicit keyword, even an empty one, would override both.
        settings = (Settings(data_dir=data_dir, auth=False, database_url=database_url)
                    if database_url else Settings(data_dir=data_dir, auth=False))
        upgrade(settings)
        factory = make_session_factory(make_engine(settings))
        with session_scope(factory) as session:
            job_id = store.create_job(session, "bench", JobSpec.model_validate(spec)).id
        env = {**os.environ, "SURGICAL_DATA_DIR": str(data_dir), "SURGICAL_AUTH": "false",
               "SURGICAL_DATABASE_URL": settings.database_url, "SURGICAL_TORCH_THREADS": "1"}
        started = time.perf_counter()
        command = [sys.executable, "-m", "workers.cli", "worker", "--drain", "--device", device,
                   "--log-level", "WARNING"]
        owner = subprocess.Popen(command, env=env)
        helpers: list[subprocess.Popen[bytes]] = []
        while len(helpers) < workers - 1:  # helpers join once the owner has set up the study
            with session_scope(factory) as session:
                job = store.get_job(session, job_id)
                ready = job.study_ready or job.state != "running" and job.state != "queued"
            if ready:
                helpers = [subprocess.Popen(command, env=env) for _ in range(workers - 1)]
            time.sleep(0.2)
        for process in [owner, *helpers]:
            process.wait()
        seconds = time.perf_counter() - started
        with session_scope(factory) as session:
            job = store.get_job(session, job_id)
            state, progress = job.state, dict(job.progress)
            best = (job.result or {}).get("recommendation") or {}
        return {"workers": workers, "seconds": round(seconds, 1), "state": getattr(state, "value", state),
                "trials": progress.get("trials_done"), "best": best.get("label"),
                "best_val_acc": best.get("val_acc")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--spec", type=Path, help="job spec JSON (default: the demo job)")
    parser.add_argument("--models-from", type=Path, default=Path(os.environ.get(
        "SURGICAL_DATA_DIR", Path(__file__).resolve().parents[1] / ".cache" / "test-data")))
    parser.add_argument("--database-url", help="e.g. a PostgreSQL URL (default: fresh SQLite)")
    parser.add_argument("--device", default="cpu",
                        help="where every worker trains: cpu, cuda or cuda:N (several workers "
                        "on one GPU share it)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worker_scaling.md"))
    args = parser.parse_args()
    spec = json.loads(args.spec.read_text()) if args.spec else DEMO_JOB
    rows = []
    for count in args.workers:
        row = run_once(spec, count, args.models_from, args.database_url, args.device)
        print(row, flush=True)
        rows.append(row)
    base = rows[0]["seconds"]
    lines = [
        "# Worker scaling: one job, several workers",
        "",
        f"Command: `python benchmarks/worker_scaling.py {' '.join(sys.argv[1:])}`  ",
        f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores; device {args.device}; database: "
        f"{'given URL' if args.database_url else 'SQLite'}  ",
        f"Job: `{json.dumps(spec)}`",
        "",
        "| workers | wall time (s) | speed-up | parallel efficiency | state | trials | best part | best val acc |",
        "|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for row in rows:
        speedup = base / row["seconds"]
        lines.append(f"| {row['workers']} | {row['seconds']} | {speedup:.2f}x | "
                     f"{100 * speedup * rows[0]['workers'] / row['workers']:.0f}% | "
                     f"{row['state']} | {row['trials']} | {row['best']} | {row['best_val_acc']} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
