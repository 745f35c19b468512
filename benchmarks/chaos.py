"""Recovery, measured: kill workers, restart the API and PostgreSQL, break the artifact store,
and load the poll endpoint (issue 13). The report is docs/RELIABILITY.md.

Every scenario runs real processes: an API (uvicorn, a subprocess) and ``surgical worker``
processes on a fresh database, with the tiny built-in case (10 images per class, 1-2 epochs,
about a second per trial on one core). Scenarios::

    poll        20 concurrent pollers for 20 s on GET /v1/jobs/{id}: req/s, p50, p99, with
                uvicorn's pure-Python h11 parser and with httptools (``--before-src DIR``
                also measures an older checkout, e.g. ``git archive <rev> | tar -x -C DIR``)
    kill        kill -9 a worker mid-trial, once per job, N jobs on PostgreSQL with 2 workers:
                every job succeeds, budgets met exactly, no trial counted twice, each killed
                trial retried once
    api         restart the API mid-job while a Python client polls (it retries)
    artifacts   an unwritable artifact directory at finalize: the job fails with its reason
    pgterm      terminate every backend connection of the job's database mid-job
                (pg_terminate_backend): workers and the API reconnect, the job finishes
    pgrestart   (only with --pg-restart) restart the PostgreSQL server mid-job: /readyz is
                503 during the outage and 200 after it, the job finishes

``--quick`` runs fewer kills and shorter loads. Example::

    .venv/bin/python benchmarks/chaos.py --quick
    .venv/bin/python benchmarks/chaos.py --only poll --before-src /tmp/surgical-before
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("SURGICAL_TEST_POSTGRES_URL",
                          "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
TINY: dict[str, Any] = {
    "model": {"source": "builtin", "name": "mnist-resnet"},
    "data": {"source": "builtin", "name": "mnist", "shift": "impulse_noise", "severity": 4,
             "n_per_class": 10, "n_val": 5, "n_test": 5},
    "search": {"strategy": "tpe", "max_trials": 4, "epochs": 2, "batch_size": 32,
               "baselines": False},
    "seed": 0,
}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


# -- a service: database, API process, worker processes ----------------------------------------


@dataclass
class Service:
    """A fresh database with an API subprocess and worker subprocesses on it."""

    backend: str
    workdir: Path
    src: Path = ROOT
    http: str = "auto"  # uvicorn's HTTP parser: auto (httptools when installed), h11
    port: int = field(default_factory=free_port)
    database_url: str = ""
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def create(self, auth: bool = False) -> None:
        if self.backend == "sqlite":
            self.database_url = f"sqlite:///{self.workdir / 'surgical.db'}"
        else:
            name = f"surgical_chaos_{uuid.uuid4().hex[:12]}"
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            self.database_url = make_url(PG_ADMIN).set(database=name).render_as_string(
                hide_password=False)
        data_dir = Path(os.environ.get("SURGICAL_TEST_DATA_DIR", ROOT / ".cache" / "test-data"))
        self.env = {
            **os.environ,
            "PYTHONPATH": str(self.src),
            "SURGICAL_DATA_DIR": str(data_dir),
            "SURGICAL_DATABASE_URL": self.database_url,
            "SURGICAL_ARTIFACT_DIR": str(self.workdir / "artifacts"),
            "SURGICAL_AUTH": "true" if auth else "false",
            "SURGICAL_HEARTBEAT_SECONDS": "1",
            "SURGICAL_STALE_AFTER_SECONDS": "6",
            "SURGICAL_TRIAL_HEARTBEAT_SECONDS": "1",
            "SURGICAL_TRIAL_GRACE_SECONDS": "4",
            "SURGICAL_RETRY_AFTER_SECONDS": "1",
            "SURGICAL_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._run_cli("db", "upgrade")

    def _run_cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "workers.cli", *args], env=self.env,
                              cwd=self.src, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"surgical {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done.stdout

    def api_key(self) -> str:
        out = self._run_cli("keys", "create", "chaos")
        return next(word for word in out.split() if word.startswith("srg_"))

    def start_api(self) -> None:
        logfile = open(self.workdir / "api.log", "ab")  # noqa: SIM115
        self.api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:app_factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning",
             "--http", self.http],
            env=self.env, cwd=self.src, stdout=logfile, stderr=subprocess.STDOUT)
        wait_until(self._healthy, 60, "the API to start")

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            self.api.wait(30)

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        logfile = open(self.workdir / f"worker-{len(self.workers)}.log", "ab")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", "worker", "--device", "cpu", *args],
            env=self.env, cwd=self.src, stdout=logfile, stderr=subprocess.STDOUT)
        self.workers.append(process)
        return process

    def close(self) -> None:
        for process in self.workers:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        self.stop_api()
        if self.backend == "postgresql" and self.database_url:
            name = make_url(self.database_url).database
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def service(backend: str, src: Path = ROOT, auth: bool = False,
            http: str = "auto") -> Iterator[Service]:
    with tempfile.TemporaryDirectory(prefix="surgical-chaos-") as tmp:
        svc = Service(backend, Path(tmp), src=src, http=http)
        try:
            svc.create(auth=auth)
            yield svc
        finally:
            svc.close()


def job_state(url: str, job_id: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()


def trials_of(url: str, job_id: str) -> list[dict[str, Any]]:
    return httpx.get(f"{url}/v1/jobs/{job_id}/trials", timeout=10).json()["data"]


def finished(url: str, job_id: str) -> dict[str, Any] | None:
    try:
        state = job_state(url, job_id)
    except (httpx.HTTPError, ValueError):
        return None
    return state if state.get("done") else None


# -- poll load -----------------------------------------------------------------------------------


def poll_load(url: str, key: str, job_id: str, pollers: int, seconds: float) -> dict[str, float]:
    """``pollers`` threads GET the job back to back for ``seconds``; latency figures in ms."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def poller() -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                          timeout=30) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.get(f"/v1/jobs/{job_id}")
                mine.append(time.perf_counter() - start)
                if response.status_code != 200:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=poller) for _ in range(pollers)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors[0],
        "req_per_s": len(ordered) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
    }


def scenario_poll(args: argparse.Namespace) -> dict[str, Any]:
    seconds = 5.0 if args.quick else 20.0
    results: dict[str, Any] = {"pollers": args.pollers, "seconds": seconds}
    sources = [("after", ROOT, "h11")]
    if importlib.util.find_spec("httptools") is not None:
        sources.append(("after-httptools", ROOT, "httptools"))
    if args.before_src:
        sources.insert(0, ("before", Path(args.before_src), "h11"))
    for label, src, http in sources:
        with service("sqlite", src=src, auth=True, http=http) as svc:
            key = svc.api_key()
            svc.start_api()
            headers = {"Authorization": f"Bearer {key}"}
            job_id = httpx.post(f"{svc.url}/v1/jobs", json=TINY, headers=headers,
                                timeout=30).json()["id"]
            poll_load(svc.url, key, job_id, 4, 1.0)  # warm up
            results[label] = poll_load(svc.url, key, job_id, args.pollers, seconds)
            log(f"poll {label}: {results[label]}")
    return results


# -- worker kill -9 ---------------------------------------------------------------------------


def worker_pid(worker_id: str | None) -> int | None:
    """Worker ids are ``<host>-<pid>-<random>`` (workers.loop.new_worker_id)."""
    try:
        return int(str(worker_id).rsplit("-", 2)[1])
    except (IndexError, ValueError):
        return None


def audit_study(database_url: str, job_id: str, budget: int) -> dict[str, Any]:
    """Budget met exactly, no trial counted twice, killed trials retried once."""
    import optuna

    from app.trial_attrs import study_name
    from workers.results import counts_against_budget

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name(job_id), storage=database_url)
    trials = study.get_trials(deepcopy=False)
    effective = [t for t in trials if counts_against_budget(t)]
    failed = [t for t in trials if t.state.name == "FAIL"]
    retries = {n: sum(1 for t in trials if t.system_attrs.get("failed_trial") == n)
               for n in (t.number for t in failed)}
    numbers = [t.number for t in trials]
    return {"trials": len(trials), "effective": len(effective),
            "budget_met": len(effective) == budget, "numbers_unique": len(set(numbers)) == len(numbers),
            "failed": len(failed), "retries_per_failed": sorted(retries.values())}


def scenario_kill(args: argparse.Namespace) -> dict[str, Any]:
    jobs = args.kills or (3 if args.quick else 10)
    budget = 4
    spec = {**TINY, "search": {**TINY["search"], "max_trials": budget}}
    outcome: dict[str, Any] = {"jobs": jobs, "workers": 2, "kills": 0, "per_job": []}
    with service("postgresql") as svc:
        svc.start_api()
        ids = [httpx.post(f"{svc.url}/v1/jobs", json=spec, timeout=30).json()["id"]
               for _ in range(jobs)]
        for _ in range(2):
            svc.start_worker()
        for job_id in ids:
            def running_trial(job_id: str = job_id) -> dict[str, Any] | None:
                if finished(svc.url, job_id):
                    return {"finished": True}
                for trial in trials_of(svc.url, job_id):
                    if trial["state"] == "running" and worker_pid(trial.get("worker")):
                        return trial
                return None

            trial = wait_until(running_trial, 600, f"a running trial of {job_id}")
            pid = worker_pid(trial.get("worker"))
            if pid is None:
                continue
            time.sleep(1.0)  # mid-trial
            os.kill(pid, signal.SIGKILL)
            outcome["kills"] += 1
            log(f"killed worker {pid} running trial {trial['number']} of job {job_id}")
            svc.start_worker()  # keep two workers alive
        started = time.monotonic()
        states = [wait_until(functools.partial(finished, svc.url, j), 900, f"job {j}")
                  for j in ids]
        outcome["drain_s"] = round(time.monotonic() - started, 1)
        for job_id, state in zip(ids, states, strict=True):
            audit = audit_study(svc.database_url, job_id, budget)
            outcome["per_job"].append({"state": state["state"], **audit})
    per_job = outcome["per_job"]
    outcome["succeeded"] = sum(j["state"] == "succeeded" for j in per_job)
    outcome["budgets_met"] = sum(j["budget_met"] for j in per_job)
    outcome["numbers_unique"] = all(j["numbers_unique"] for j in per_job)
    outcome["failed_trials"] = sum(j["failed"] for j in per_job)
    outcome["retried_once"] = sum(r == 1 for j in per_job for r in j["retries_per_failed"])
    return outcome


# -- API restart under a polling Python client ------------------------------------------------


def scenario_api(args: argparse.Namespace) -> dict[str, Any]:
    from app.client import Client

    with service("sqlite") as svc:
        svc.start_api()
        svc.start_worker("--drain")
        result: dict[str, Any] = {}
        with Client(svc.url, retry_for=60) as client:
            job_id = client.submit(TINY).id

            def wait() -> None:
                try:
                    result["state"] = client.wait(job_id, timeout=600, progress=False,
                                                  poll=0.5).state
                except Exception as error:  # reported, not raised: the figure is the outcome
                    result["error"] = f"{type(error).__name__}: {error}"

            poller = threading.Thread(target=wait)
            poller.start()
            wait_until(lambda: job_state(svc.url, job_id)["state"] == "running", 300, "running")
            time.sleep(2)
            down = time.monotonic()
            svc.stop_api()
            time.sleep(3)
            svc.start_api()
            result["api_down_s"] = round(time.monotonic() - down, 1)
            poller.join(900)
        return result


# -- unwritable artifact directory at finalize -----------------------------------------------


def scenario_artifacts(args: argparse.Namespace) -> dict[str, Any]:
    spec = {**TINY, "search": {**TINY["search"], "max_trials": 2, "epochs": 1}}
    with service("sqlite") as svc:
        svc.start_api()
        job_id = httpx.post(f"{svc.url}/v1/jobs", json=spec, timeout=30).json()["id"]
        svc.start_worker("--drain")
        wait_until(lambda: (job_state(svc.url, job_id)["progress"]["trials_done"] >= 2
                            or job_state(svc.url, job_id)["done"]), 600, "the last trial")
        artifacts = svc.workdir / "artifacts"
        artifacts.rename(svc.workdir / "artifacts.away")
        artifacts.write_text("not a directory: the disk is gone")
        final = wait_until(lambda: finished(svc.url, job_id), 300, "the job to end")
        return {"state": final["state"], "error": final.get("error"),
                "fault_before_finalize": final["state"] != "succeeded"}


# -- database outages ------------------------------------------------------------------------


def terminate_backends(database_url: str) -> int:
    name = make_url(database_url).database
    with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as conn:
        return len(conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name}).all())


def readiness(url: str) -> int:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return 0


def _outage(args: argparse.Namespace, fault: Callable[[Service], dict[str, Any]]) -> dict[str, Any]:
    spec = {**TINY, "search": {**TINY["search"], "max_trials": 6}}
    with service("postgresql") as svc:
        svc.start_api()
        job_id = httpx.post(f"{svc.url}/v1/jobs", json=spec, timeout=30).json()["id"]
        svc.start_worker("--drain")
        wait_until(lambda: any(t["state"] == "running" for t in trials_of(svc.url, job_id)),
                   300, "a running trial")
        outcome = fault(svc)
        final = wait_until(lambda: finished(svc.url, job_id), 900, "the job to end")
        outcome.update(state=final["state"], attempts=final["attempts"],
                       audit=audit_study(svc.database_url, job_id, 6),
                       worker_exit=svc.workers[0].wait(300))
        return outcome


def scenario_pgterm(args: argparse.Namespace) -> dict[str, Any]:
    def fault(svc: Service) -> dict[str, Any]:
        cut = []
        for _ in range(3):
            cut.append(terminate_backends(svc.database_url))
            time.sleep(2)
        return {"connections_terminated": cut, "readyz_after": readiness(svc.url)}

    return _outage(args, fault)


def scenario_pgrestart(args: argparse.Namespace) -> dict[str, Any]:
    version = sorted(os.listdir("/etc/postgresql"))[-1]

    def ctl(action: str) -> None:
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action,
                        *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)

    def fault(svc: Service) -> dict[str, Any]:
        ctl("stop")
        stopped = time.monotonic()
        during = readiness(svc.url)
        time.sleep(3)
        ctl("start")
        wait_until(lambda: readiness(svc.url) == 200, 60, "/readyz to recover")
        return {"readyz_during": during, "readyz_after": 200,
                "outage_s": round(time.monotonic() - stopped, 1)}

    return _outage(args, fault)


SCENARIOS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "poll": scenario_poll,
    "kill": scenario_kill,
    "api": scenario_api,
    "artifacts": scenario_artifacts,
    "pgterm": scenario_pgterm,
    "pgrestart": scenario_pgrestart,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer kills, shorter loads")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS),
                        help="run only these scenarios (repeatable)")
    parser.add_argument("--pg-restart", action="store_true",
                        help="also restart the PostgreSQL server (disturbs other users)")
    parser.add_argument("--kills", type=int, default=None, help="jobs (and kills) in 'kill'")
    parser.add_argument("--pollers", type=int, default=20)
    parser.add_argument("--before-src", help="a checkout to measure 'poll' against as before")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    names = args.only or [name for name in SCENARIOS if name != "pgrestart"]
    if args.pg_restart and "pgrestart" not in names:
        names.append("pgrestart")
    results: dict[str, Any] = {}
    for name in names:
        log(f"scenario {name}")
        started = time.monotonic()
        results[name] = SCENARIOS[name](args)
        results[name]["wall_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
