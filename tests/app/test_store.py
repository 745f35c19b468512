"""Contract tests of app.store on SQLite and PostgreSQL: the same behaviour on both."""

from __future__ import annotations

import threading
from datetime import UTC, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker

from app import store
from app.db import session_scope
from app.errors import Conflict, Invalid, NotFound
from app.models import Job, JobState, utcnow
from tests.app.helpers import RESULT, RESULT_STORED, force_running, spec, state_of, submit


def test_create_get_and_owner_isolation(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory, "alice", max_trials=7)
    with session_scope(factory) as session:
        job = store.get_job(session, job_id, "alice")
        assert job.state == JobState.queued and not job.cancel_requested
        assert job.study_name == f"job-{job_id}"
        assert job.progress["trials_budget"] == 7 and job.progress["trials_done"] == 0
        assert job.spec["search"]["max_trials"] == 7
        assert job.created_at.tzinfo is not None and job.created_at.utcoffset() == timedelta(0)
        with pytest.raises(NotFound):
            store.get_job(session, job_id, "mallory")
        with pytest.raises(NotFound):
            store.get_job(session, "0" * 32)
        assert store.get_job(session, job_id).id == job_id  # workers: no owner check


def test_idempotency_same_payload_returns_original(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        first = store.create_job(session, "alice", spec(), "key-1")
    with session_scope(factory) as session:
        again = store.create_job(session, "alice", spec(), "key-1")
        other_owner = store.create_job(session, "bob", spec(), "key-1")
    assert again.id == first.id
    assert other_owner.id != first.id
    with session_scope(factory) as session, pytest.raises(Invalid) as caught:
        store.create_job(session, "alice", spec(max_trials=3), "key-1")
    assert caught.value.errors[0].field == "Idempotency-Key"


def test_idempotency_defaults_are_part_of_the_payload(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        first = store.create_job(session, "alice", spec(), "k")
        explicit = store.create_job(session, "alice", spec(max_trials=12, epochs=10), "k")
    assert explicit.id == first.id  # the spec is hashed after defaults are filled in


def test_concurrent_duplicate_is_a_conflict(factory: sessionmaker[Session]) -> None:
    """The second request passed the key lookup before the first committed: the unique
    constraint turns it into Conflict (409) instead of a second job."""
    inserting = threading.Event()
    outcome: list[BaseException | str] = []

    def second_request() -> None:
        session = factory()
        bind = session.connection().engine  # listen on this session's statements only

        def spot_insert(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
            if statement.lstrip().upper().startswith("INSERT INTO JOBS"):
                inserting.set()

        event.listen(bind, "before_cursor_execute", spot_insert)
        try:
            with session_scope(lambda: session) as s:  # type: ignore[arg-type]
                outcome.append(store.create_job(s, "alice", spec(), "dup").id)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            event.remove(bind, "before_cursor_execute", spot_insert)

    first = factory()
    store.create_job(first, "alice", spec(), "dup")  # flushed, not committed
    thread = threading.Thread(target=second_request)
    thread.start()
    assert inserting.wait(10), "the second request never reached its INSERT"
    first.commit()
    first.close()
    thread.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], Conflict)


def test_list_jobs_pages_newest_first(factory: sessionmaker[Session]) -> None:
    ids = [submit(factory, "alice") for _ in range(5)]
    submit(factory, "bob")
    seen: list[str] = []
    token = None
    with session_scope(factory) as session:
        for _ in range(3):
            page, token = store.list_jobs(session, "alice", page_size=2, page_token=token)
            seen += [job.id for job in page]
            if token is None:
                break
    assert token is None
    assert seen == list(reversed(ids))


def test_list_jobs_filters_state_and_rejects_bad_tokens(factory: sessionmaker[Session]) -> None:
    queued = submit(factory)
    cancelled = submit(factory)
    with session_scope(factory) as session:
        store.request_cancel(session, cancelled, "alice")
    with session_scope(factory) as session:
        page, _ = store.list_jobs(session, "alice", state="queued")
        assert [job.id for job in page] == [queued]
        page, _ = store.list_jobs(session, "alice", state=JobState.cancelled)
        assert [job.id for job in page] == [cancelled]
        with pytest.raises(Invalid) as caught:
            store.list_jobs(session, "alice", page_token="not-a-token")
        assert caught.value.errors[0].field == "page_token"


def test_cancel_queued_running_and_finished(factory: sessionmaker[Session]) -> None:
    queued, running = submit(factory), submit(factory)
    force_running(factory, running, "w1")
    with session_scope(factory) as session:
        job = store.request_cancel(session, queued, "alice")
        assert job.state == JobState.cancelled and job.cancel_requested and job.finished_at
        job = store.request_cancel(session, running, "alice")
        assert job.state == JobState.running and job.cancel_requested
        assert store.is_cancel_requested(session, running)
        with pytest.raises(NotFound):
            store.request_cancel(session, running, "mallory")
    with session_scope(factory) as session:
        assert store.finish_cancelled(session, running, "w1")
    with session_scope(factory) as session:
        again = store.request_cancel(session, running, "alice")  # finished: unchanged
        assert again.state == JobState.cancelled


def test_delete_only_finished_jobs(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    force_running(factory, job_id)
    with session_scope(factory) as session, pytest.raises(Conflict):
        store.delete_job(session, job_id, "alice")
    with session_scope(factory) as session:
        store.add_artifact(session, job_id, {"name": "w.pt", "artifact_id": "a1"})
        store.fail(session, job_id, "w1", {"type": "Boom", "detail": "x"})
    with session_scope(factory) as session:
        with pytest.raises(NotFound):
            store.delete_job(session, job_id, "mallory")
        deleted = store.delete_job(session, job_id, "alice")
    assert deleted == store.DeletedJob(job_id, f"job-{job_id}", ["a1"])
    with session_scope(factory) as session, pytest.raises(NotFound):
        store.get_job(session, job_id)


def test_claim_next_is_fifo_and_counts_attempts(factory: sessionmaker[Session]) -> None:
    first, second = submit(factory), submit(factory)
    with session_scope(factory) as session:
        job = store.claim_next(session, "w1")
    assert job is not None and job.id == first
    assert job.state == JobState.running and job.worker_id == "w1" and job.attempts == 1
    assert job.heartbeat_at is not None and job.started_at is not None
    with session_scope(factory) as session:
        assert store.release(session, first, "w1")
    with session_scope(factory) as session:
        again = store.claim_next(session, "w2")
    assert again is not None and again.id == first and again.attempts == 2
    with session_scope(factory) as session:
        assert store.claim_next(session, "w3").id == second  # type: ignore[union-attr]
        assert store.claim_next(session, "w3") is None


def test_transitions_are_guarded_by_owner_and_state(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    with session_scope(factory) as session:
        store.claim_next(session, "w1")
    with session_scope(factory) as session:
        assert store.heartbeat(session, job_id, "w1")
        assert not store.heartbeat(session, job_id, "w2")
        assert not store.mark_study_ready(session, job_id, "w2")
        assert store.mark_study_ready(session, job_id, "w1")
        assert not store.finish(session, job_id, "w2", RESULT)
        assert not store.fail(session, job_id, "w2", {"type": "E", "detail": "d"})
        assert not store.finish_cancelled(session, job_id, "w2")
        assert not store.release(session, job_id, "w2")
        assert store.finish(session, job_id, "w1", RESULT)
    job = state_of(factory, job_id)
    assert job.state == JobState.succeeded and job.result == RESULT_STORED and job.finished_at
    with session_scope(factory) as session:  # finished: every transition is refused
        assert not store.heartbeat(session, job_id, "w1")
        assert not store.fail(session, job_id, "w1", {"type": "E", "detail": "d"})
        assert not store.release(session, job_id, "w1")
        assert not store.update_progress(session, job_id, {"trials_done": 1})


def test_worker_payloads_are_validated(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    force_running(factory, job_id)
    with session_scope(factory) as session:
        with pytest.raises(ValidationError):
            store.finish(session, job_id, "w1", {"recommendation": None})
        with pytest.raises(ValidationError):
            store.fail(session, job_id, "w1", {"message": "no type"})
        with pytest.raises(ValidationError):
            store.update_progress(session, job_id, {"trials_dnoe": 3})
        with pytest.raises(ValidationError):
            store.add_artifact(session, job_id, {"name": "../x", "artifact_id": "a"})


def test_update_progress_replaces(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    force_running(factory, job_id)
    progress = {"trials_done": 3, "trials_budget": 12, "best_val_acc": 0.8,
                "best_label": "block1", "best_groups": ["block1"]}  # fmt: skip
    with session_scope(factory) as session:
        assert store.update_progress(session, job_id, progress)
    # unset fields are not stored as null (an API one version older reads it unchanged)
    assert state_of(factory, job_id).progress == progress
    with session_scope(factory) as session:
        assert store.update_progress(session, job_id, {"trials_done": 4})
    assert state_of(factory, job_id).progress == {"trials_done": 4}


def test_add_artifact_replaces_by_name_and_never_loses_appends(
    factory: sessionmaker[Session],
) -> None:
    job_id = submit(factory)
    with session_scope(factory) as session:
        assert store.add_artifact(session, job_id, {"name": "a", "artifact_id": "1"})
        assert store.add_artifact(session, job_id, {"name": "a", "artifact_id": "2", "size": 3})
        assert not store.add_artifact(session, "f" * 32, {"name": "a", "artifact_id": "1"})
    assert [(a["name"], a["artifact_id"]) for a in state_of(factory, job_id).artifacts] == [
        ("a", "2")
    ]

    def append(worker: int) -> None:
        for i in range(4):
            with session_scope(factory) as session:
                store.add_artifact(session, job_id, {"name": f"{worker}-{i}", "artifact_id": "x"})

    threads = [threading.Thread(target=append, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(state_of(factory, job_id).artifacts) == 1 + 16


def test_release_and_requeue_honour_cancel_requests(factory: sessionmaker[Session]) -> None:
    released, cancelled = submit(factory), submit(factory)
    force_running(factory, released, "w1")
    force_running(factory, cancelled, "w1")
    with session_scope(factory) as session:
        store.mark_study_ready(session, released, "w1")
        store.request_cancel(session, cancelled, "alice")
        assert store.release(session, released, "w1")
        assert store.release(session, cancelled, "w1")
    job = state_of(factory, released)
    assert job.state == JobState.queued and job.worker_id is None and not job.study_ready
    job = state_of(factory, cancelled)
    assert job.state == JobState.cancelled and job.finished_at is not None


def _age_heartbeat(factory: sessionmaker[Session], job_id: str, seconds: float) -> None:
    with session_scope(factory) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_requeue_stale(factory: sessionmaker[Session]) -> None:
    stale, fresh, stale_cancelling = submit(factory), submit(factory), submit(factory)
    for job_id in (stale, fresh, stale_cancelling):
        force_running(factory, job_id, f"w-{job_id[:4]}")
    _age_heartbeat(factory, stale, 300)
    _age_heartbeat(factory, stale_cancelling, 300)
    with session_scope(factory) as session:
        store.request_cancel(session, stale_cancelling, "alice")
    with session_scope(factory) as session:
        requeued = store.requeue_stale(session, timedelta(seconds=120))
    assert sorted(requeued) == sorted([stale, stale_cancelling])
    assert state_of(factory, stale).state == JobState.queued
    assert state_of(factory, stale).worker_id is None
    assert state_of(factory, stale_cancelling).state == JobState.cancelled
    assert state_of(factory, fresh).state == JobState.running
    with session_scope(factory) as session:  # the dead worker wakes up: it lost the job
        assert not store.heartbeat(session, stale, f"w-{stale[:4]}")
        assert store.requeue_stale(session, timedelta(seconds=120)) == []
        assert store.claim_next(session, "w9").id == stale  # type: ignore[union-attr]


def test_joinable_jobs(factory: sessionmaker[Session]) -> None:
    ready, not_ready, cancelling, dead = (submit(factory) for _ in range(4))
    for job_id in (ready, not_ready, cancelling, dead):
        force_running(factory, job_id, "w1")
    with session_scope(factory) as session:
        for job_id in (ready, cancelling, dead):
            store.mark_study_ready(session, job_id, "w1")
        store.request_cancel(session, cancelling, "alice")
    _age_heartbeat(factory, dead, 300)
    with session_scope(factory) as session:
        joinable = store.joinable_jobs(session, timedelta(seconds=120))
    assert [job.id for job in joinable] == [ready]


def test_is_cancel_requested_for_missing_job(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    with session_scope(factory) as session:
        assert not store.is_cancel_requested(session, job_id)
        assert store.is_cancel_requested(session, "e" * 32)  # deleted: stop


def test_trial_slots_never_exceed_the_budget(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    force_running(factory, job_id)
    with session_scope(factory) as session:
        assert store.has_free_trial_slot(session, job_id)
    granted: list[bool] = []

    def reserve() -> None:
        for _ in range(5):
            with session_scope(factory) as session:
                granted.append(store.reserve_trial_slot(session, job_id, 6))

    threads = [threading.Thread(target=reserve) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert granted.count(True) == 6
    with session_scope(factory) as session:
        assert not store.has_free_trial_slot(session, job_id)
        assert store.release_trial_slot(session, job_id)
        assert store.has_free_trial_slot(session, job_id)
        assert store.set_trial_slots(session, job_id, 6)
        assert not store.reserve_trial_slot(session, job_id, 6)


def test_closing_the_slots_when_time_runs_out_stops_helpers_joining(
    factory: sessionmaker[Session],
) -> None:
    job_id = submit(factory)
    force_running(factory, job_id)
    with session_scope(factory) as session:
        assert store.reserve_trial_slot(session, job_id, 10)
        assert store.reserve_trial_slot(session, job_id, 10)
        assert store.close_trial_slots(session, job_id)
        assert not store.has_free_trial_slot(session, job_id)
        assert store.trial_slots_in_use(session, job_id) == 2  # the trials in flight keep theirs
        assert not store.close_trial_slots(session, "e" * 32)


def test_the_owners_reconciliation_never_takes_a_slot_reserved_after_it_read(
    factory: sessionmaker[Session],
) -> None:
    """Compare-and-set: the owner read 2 slots, a helper reserved a third before the owner
    wrote its count, so the owner's write is refused and the helper keeps its slot."""
    job_id = submit(factory)
    force_running(factory, job_id)
    with session_scope(factory) as session:
        assert store.reserve_trial_slot(session, job_id, 4)
        assert store.reserve_trial_slot(session, job_id, 4)
        seen = store.trial_slots_in_use(session, job_id)
    assert seen == 2
    with session_scope(factory) as session:
        assert store.reserve_trial_slot(session, job_id, 4)  # a helper, meanwhile
    with session_scope(factory) as session:
        assert not store.set_trial_slots(session, job_id, 1, expected=seen)
        assert store.trial_slots_in_use(session, job_id) == 3
        assert store.set_trial_slots(session, job_id, 1, expected=3)
        assert store.trial_slots_in_use(session, job_id) == 1
        assert store.trial_slots_in_use(session, "e" * 32) == 0


def test_timestamps_round_trip_as_utc(factory: sessionmaker[Session]) -> None:
    job_id = submit(factory)
    job = state_of(factory, job_id)
    assert job.created_at.tzinfo == UTC
    assert abs((utcnow() - job.created_at).total_seconds()) < 60
