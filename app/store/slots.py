"""The job's trial budget, shared by its owner and helper workers.

Optuna's ``MaxTrialsCallback`` counts trials after they start, so several workers can overshoot
the budget together. Instead each worker reserves a slot on the job row before it starts a
trial: one guarded ``UPDATE ... WHERE trial_slots < budget``, which never over-reserves however
many workers race. Slots of trials that never ran are given back (``release_trial_slot``) or
reconciled by the owner (``set_trial_slots``).
"""

from __future__ import annotations

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from app.db import write
from app.models import Job, JobState


def reserve_trial_slot(session: Session, job_id: str, budget: int) -> bool:
    """Take one of the running job's ``budget`` trial slots; False when all are taken."""
    reserved = write(
        session,
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.running, Job.trial_slots < budget)
        .values(trial_slots=Job.trial_slots + 1, trial_budget=budget),
    )
    return reserved == 1


def release_trial_slot(session: Session, job_id: str) -> bool:
    """Give back a slot whose trial will not count (its worker died; it is retried)."""
    released = write(
        session,
        update(Job)
        .where(Job.id == job_id, Job.trial_slots > 0)
        .values(trial_slots=Job.trial_slots - 1),
    )
    return released == 1


def set_trial_slots(session: Session, job_id: str, used: int, *, expected: int | None = None) -> bool:
    """The owner's reconciliation: slots in use = trials that count against the budget. With
    ``expected``, only if the slots in use are still what the owner read (a helper that
    reserved a slot meanwhile keeps it); False when they changed."""
    query = update(Job).where(Job.id == job_id)
    if expected is not None:
        query = query.where(Job.trial_slots == expected)
    return write(session, query.values(trial_slots=max(0, used))) == 1


def trial_slots_in_use(session: Session, job_id: str) -> int:
    """How many of the job's trial slots are reserved now (0 for an unknown job)."""
    return int(session.scalar(select(Job.trial_slots).where(Job.id == job_id)) or 0)


def has_free_trial_slot(session: Session, job_id: str) -> bool:
    """Whether a helper could reserve a slot now (True before the first reservation)."""
    found = session.scalar(
        select(Job.id).where(
            Job.id == job_id,
            Job.state == JobState.running,
            or_(Job.trial_budget.is_(None), Job.trial_slots < Job.trial_budget),
        )
    )
    return found is not None


def close_trial_slots(session: Session, job_id: str) -> bool:
    """No slot left to reserve beyond those in use: the job's time budget ran out, so helpers
    stop joining it (``has_free_trial_slot`` turns False). A worker that checked the clock just
    before may still reserve one more slot (``reserve_trial_slot`` restores the budget); its
    trial then stops after its first epoch, since the deadline has passed."""
    return write(session, update(Job).where(Job.id == job_id)
                 .values(trial_budget=Job.trial_slots)) == 1
