"""Claiming under contention: every job is claimed exactly once, whoever races for it.

Each thread has its own connection (the engine's pool), as separate worker processes would.
On PostgreSQL this exercises ``FOR UPDATE SKIP LOCKED``; on SQLite the single write lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app import store
from app.db import session_scope
from app.models import Job, JobState, utcnow
from tests.app.helpers import force_running, spec, submit

JOBS = 40
WORKERS = 4


def test_no_job_is_claimed_twice(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        submitted = {store.create_job(session, "alice", spec()).id for _ in range(JOBS)}
    start = threading.Barrier(WORKERS)
    claims: dict[str, list[str]] = {f"w{i}": [] for i in range(WORKERS)}
    errors: list[BaseException] = []

    def worker(worker_id: str) -> None:
        try:
            start.wait(10)
            while True:
                with session_scope(factory) as session:
                    job = store.claim_next(session, worker_id)
                if job is None:
                    return
                claims[worker_id].append(job.id)
        except BaseException as exc:  # surfaced below: a thread's assertion would vanish
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    counts = Counter(job_id for ids in claims.values() for job_id in ids)
    assert set(counts) == submitted
    assert max(counts.values()) == 1
    with session_scope(factory) as session:
        running, _ = store.list_jobs(session, "alice", state=JobState.running, page_size=100)
    owners = {job.id: job.worker_id for job in running}
    assert owners == {job_id: w for w, ids in claims.items() for job_id in ids}


def test_a_drain_worker_stays_while_a_job_may_want_help(factory: sessionmaker[Session]) -> None:
    """Queued, or running with a live owner (being set up or not): stay. Cancelling, stale
    or finished: nothing left to help with."""
    stale_after = timedelta(seconds=60)

    def stays() -> bool:
        with session_scope(factory) as session:
            return store.may_want_help(session, stale_after)

    assert not stays()
    job_id = submit(factory)
    assert stays()  # queued
    force_running(factory, job_id)  # its owner is setting it up: study not ready yet
    assert stays()
    with session_scope(factory) as session:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(heartbeat_at=utcnow() - 2 * stale_after))
    assert not stays()  # the owner is dead; requeue_stale will make it queued again
    force_running(factory, job_id)
    with session_scope(factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(cancel_requested=True))
    assert not stays()
