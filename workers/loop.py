"""The worker loop: claim, help, poll, heartbeat, signals — separate from executing a job.

One worker runs one trial at a time on its own device. Each pass of the loop:

1. returns stale jobs (their owner stopped heartbeating) to the queue;
2. claims the oldest queued job and runs it as its owner; otherwise
3. helps a running job whose study is ready and whose budget has slots left; otherwise
4. sleeps; with ``drain`` it returns instead once no job is queued or running (a running
   job may still want help: it is being set up, or a trial's slot may come back).

SIGTERM (or SIGINT) asks the worker to stop after its current trial; a second one stops it at
once. A job owned by a stopping worker goes back to the queue and its next owner resumes the
study where it was.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from pydantic import ValidationError

from app import store
from app.artifacts import make_artifact_store
from app.db import make_engine, make_session_factory, session_scope
from app.models import Job
from app.schemas import JobError
from app.settings import Settings
from app.trial_attrs import STUDY_PREFIX
from workers.context import WorkerContext
from workers.execute import (
    DATABASE_ERRORS,
    FinalState,
    execute_as_helper,
    execute_as_owner,
    one_line,
    write_final_state,
)
from workers.job import ClaimedJob
from workers.loading import InputsCache
from workers.storage import open_storage

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def build_context(settings: Settings, *, device: str | None = None, worker_id: str | None = None) -> WorkerContext:
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    worker_id = worker_id or new_worker_id()

    def give_slot_back(study, trial) -> None:  # a dead worker's trial will be re-run
        with session_scope(session_factory) as session:
            store.release_trial_slot(session, study.study_name.removeprefix(STUDY_PREFIX))

    storage = open_storage(
        settings.storage_url,
        heartbeat_interval=settings.trial_heartbeat_seconds,
        grace_period=settings.trial_grace_seconds,
        on_stale=give_slot_back,
    )
    artifacts = make_artifact_store(settings)
    return WorkerContext(
        settings=settings,
        session_factory=session_factory,
        storage=storage,
        artifact_store=artifacts,
        worker_id=worker_id,
        device=device,
        cache=InputsCache(settings.data_dir, device, allowed_factories=settings.factory_allowlist,
                          loader_workers=settings.loader_workers,
                          decode_cache_bytes=(settings.decode_cache_mb << 20) or None),
    )


class JobHeartbeat:
    """Beats the owned job's row from a background thread while the owner trains."""

    def __init__(self, ctx: WorkerContext, job_id: str) -> None:
        self._ctx, self._job_id = ctx, job_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> JobHeartbeat:
        self._ctx.job_lost.clear()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._done.wait(self._ctx.settings.heartbeat_seconds):
            try:
                with self._ctx.session() as session:
                    if not store.heartbeat(session, self._job_id, self._ctx.worker_id):
                        log.warning("lost ownership of job %s", self._job_id)
                        self._ctx.job_lost.set()
                        return
            except Exception:  # a database hiccup: try again next beat
                log.exception("heartbeat for job %s failed", self._job_id)


def run_once(ctx: WorkerContext) -> bool:
    """One pass of the loop; True when it found work."""
    with ctx.session() as session:
        requeued = store.requeue_stale(session, timedelta(seconds=ctx.settings.stale_after_seconds))
    if requeued:
        log.info("requeued stale jobs: %s", ", ".join(requeued))
    with ctx.session() as session:
        row = store.claim_next(session, ctx.worker_id)
        if row is not None:
            session.expunge(row)
    if row is not None:
        claimed = _parse(ctx, row)
        if claimed is not None:
            log.info("worker %s owns job %s", ctx.worker_id, claimed.id)
            with JobHeartbeat(ctx, claimed.id):
                execute_as_owner(ctx, claimed)
        return True
    with ctx.session() as session:
        rows = store.joinable_jobs(session, timedelta(seconds=ctx.settings.stale_after_seconds))
        for row in rows:
            session.expunge(row)
    candidates = [job for job in (_parse(ctx, row, own=False) for row in rows) if job is not None]
    for candidate in candidates:
        if store_has_free_slot(ctx, candidate.id):
            log.info("worker %s helps job %s", ctx.worker_id, candidate.id)
            ctx.job_lost.clear()
            execute_as_helper(ctx, candidate)
            return True
    return False


def _parse(ctx: WorkerContext, row: Job, *, own: bool = True) -> ClaimedJob | None:
    """The typed job, parsed once here; an unreadable spec fails a job this worker owns."""
    try:
        return ClaimedJob.from_row(row)
    except ValidationError as error:
        log.error("job %s has an invalid stored spec: %s", row.id, error)
        if own:
            fields = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}"
                               for e in error.errors())
            detail = f"the stored job spec is no longer valid: {fields}"[:500]
            write_final_state(ctx, row.id, FinalState(
                "failed", error=JobError(type="InvalidSpec", detail=detail)))
        return None


def _work_may_come(ctx: WorkerContext) -> bool:
    """A drain worker stays while a job may still want it: one queued, or one running that is
    being set up or has trials left or in flight (two drain workers started together: the
    second must wait for the owner to make the study ready, not leave)."""
    with ctx.session() as session:
        return store.may_want_help(session, timedelta(seconds=ctx.settings.stale_after_seconds))


def store_has_free_slot(ctx: WorkerContext, job_id: str) -> bool:
    with ctx.session() as session:
        return store.has_free_trial_slot(session, job_id)


def run_worker(ctx: WorkerContext, *, drain: bool = False, poll_seconds: float = 1.0) -> None:
    """Serve jobs until stopped (or, with ``drain``, until no job has work left)."""
    previous = install_signal_handlers(ctx)
    log.info("worker %s started (device %s%s)", ctx.worker_id, ctx.device or "auto", ", drain" if drain else "")
    try:
        while not ctx.stop.is_set():
            try:
                found = run_once(ctx)
                if not found and drain and not _work_may_come(ctx):
                    break
            except DATABASE_ERRORS as error:  # a restart or a network cut: keep trying
                log.warning("database unavailable (%s); retrying in %.0f s", one_line(error),
                            5 * poll_seconds)
                ctx.stop.wait(5 * poll_seconds)
                continue
            if not found:
                ctx.stop.wait(poll_seconds)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("worker %s stopped", ctx.worker_id)


#: What ``signal.signal`` takes and returns: a function, ``SIG_DFL``/``SIG_IGN``, or None (a
#: handler not installed from Python).
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


def install_signal_handlers(ctx: WorkerContext) -> dict[int, SignalHandler]:
    """First SIGTERM/SIGINT: stop after the current trial; second: stop now. Returns the
    handlers it replaced (so an embedding program gets them back)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handle(signum: int, _frame: FrameType | None) -> None:
        if ctx.stop.is_set():
            ctx.stop_now.set()
            log.warning("second signal: stopping now")
            raise KeyboardInterrupt
        log.info("signal %s: stopping after the current trial", signal.Signals(signum).name)
        ctx.stop.set()

    return {signum: signal.signal(signum, handle) for signum in (signal.SIGTERM, signal.SIGINT)}
