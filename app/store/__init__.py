"""The data layer over the ``jobs`` table: the API's operations and the workers' queue.

Contract for every function: it takes a :class:`sqlalchemy.orm.Session`, executes and flushes,
and never commits; the caller wraps one unit of work in :func:`app.db.session_scope`. Guarded
transitions return ``bool`` (False: the guard did not match, e.g. the worker lost the job).
Domain errors come from :mod:`app.errors`.

    from app.db import make_engine, make_session_factory, session_scope
    from app import store

    factory = make_session_factory(make_engine(settings))
    with session_scope(factory) as session:
        job = store.claim_next(session, worker_id)
"""

from app.store.jobs import (
    DeletedJob,
    create_job,
    delete_job,
    get_job,
    list_jobs,
    read_job,
    request_cancel,
    spec_hash,
)
from app.store.queue import (
    add_artifact,
    claim_next,
    fail,
    finish,
    finish_cancelled,
    heartbeat,
    is_cancel_requested,
    joinable_jobs,
    mark_study_ready,
    may_want_help,
    release,
    requeue_stale,
    update_progress,
)
from app.store.slots import (
    close_trial_slots,
    has_free_trial_slot,
    release_trial_slot,
    reserve_trial_slot,
    set_trial_slots,
    trial_slots_in_use,
)

__all__ = [
    "DeletedJob",
    "add_artifact",
    "claim_next",
    "close_trial_slots",
    "create_job",
    "delete_job",
    "fail",
    "finish",
    "finish_cancelled",
    "get_job",
    "read_job",
    "has_free_trial_slot",
    "heartbeat",
    "is_cancel_requested",
    "joinable_jobs",
    "may_want_help",
    "list_jobs",
    "mark_study_ready",
    "release",
    "release_trial_slot",
    "request_cancel",
    "requeue_stale",
    "reserve_trial_slot",
    "set_trial_slots",
    "trial_slots_in_use",
    "spec_hash",
    "update_progress",
]
