"""Claiming under contention: every job is claimed exactly once, whoever races for it.

Each thread has its own connection (the engine's pool), as separate worker processes would.
On PostgreSQL this exercises ``FOR UPDATE SKIP LOCKED``; on SQLite the single write lock.
"""

from __future__ import annotations

import threading
from collections import Counter

from sqlalchemy.orm import Session, sessionmaker

from app import store
from app.db import session_scope
from app.models import JobState
from tests.app.helpers import spec

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
