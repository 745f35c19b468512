"""Execute one job: as its owner (set up the study, run trials, finalise) or as a helper (run
trials of a job another worker owns).

The owner is the worker that claimed the job row. It creates the study once (``load_if_exists``
so a re-claimed job resumes), evaluates the untouched model, computes the Auto-RGN profile,
enqueues the plan's first trials and marks the study ready; from then on any number of workers
run trials. The trial budget is global: each trial first reserves a slot on the job row (an
atomic conditional UPDATE), and a trial failed because its worker died gives its slot back
before Optuna re-enqueues it. When no slot is left, the owner waits for the others' trials,
writes the result and the artifacts, and finishes the job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from app import store
from app import trial_attrs as attrs
from workers import results
from workers.context import WorkerContext
from workers.finalize import finalize_job
from workers.loading import JobInputs
from workers.objective import TrainingSetup, encode, make_objective
from workers.strategies import Plan, make_plan, make_pruner, make_sampler

log = logging.getLogger(__name__)

#: Stop a job whose first trials all fail: the cause is the job, not one learning rate.
MAX_FAILURES_WITHOUT_SUCCESS = 3


class JobFailed(Exception):
    """The job cannot succeed; its message is shown to the user as the failure reason."""


@dataclass
class StudyHandle:
    study: optuna.Study
    plan: Plan
    inputs: JobInputs


def _plan_from_study(study: optuna.Study) -> Plan:
    saved = study.user_attrs["plan"]
    return make_plan(
        saved["strategy"],
        saved["group_names"],
        max_trials=saved["max_trials"],
        lr_min=saved["lr_min"],
        lr_max=saved["lr_max"],
        baselines=saved["baselines"],
        rgn_profile=study.user_attrs.get("rgn_profile"),
    )


def open_study(ctx: WorkerContext, job: Any, plan: Plan, seed: int) -> optuna.Study:
    """The job's study with this worker's sampler and pruner (they are not stored)."""
    return optuna.load_study(
        study_name=attrs.study_name(job.id),
        storage=ctx.storage,
        sampler=make_sampler(plan, seed),
        pruner=make_pruner(plan, int(job.spec["search"]["epochs"])),
    )


def setup_study(ctx: WorkerContext, job: Any, inputs: JobInputs) -> StudyHandle:
    """Create (or resume) the job's study and enqueue its first trials exactly once."""
    search = job.spec["search"]
    name = attrs.study_name(job.id)
    study = optuna.create_study(
        study_name=name, storage=ctx.storage, direction="maximize", load_if_exists=True
    )
    if not study.user_attrs.get("setup_done"):
        baseline = inputs.baseline()
        profile = inputs.rgn_profile() if search["strategy"] in ("auto", "auto-rgn", "paper") else None
        plan = make_plan(
            search["strategy"],
            inputs.group_names,
            max_trials=search["max_trials"],
            lr_min=search["lr_min"],
            lr_max=search["lr_max"],
            baselines=search["baselines"],
            rgn_profile=profile,
        )
        study.set_user_attr(
            "plan",
            {
                "strategy": search["strategy"],
                "group_names": list(inputs.group_names),
                "max_trials": search["max_trials"],
                "lr_min": search["lr_min"],
                "lr_max": search["lr_max"],
                "baselines": search["baselines"],
                "budget": plan.budget,
                "epochs": search["epochs"],
            },
        )
        study.set_user_attr("baseline", baseline)
        study.set_user_attr("rgn_profile", profile)
        study.set_user_attr("groups", [[g.name, g.num_params] for g in inputs.groups])
        study.set_user_attr("notes", plan.notes)
        for spec, source in zip(plan.enqueued, plan.sources, strict=True):
            params, user_attrs = encode(plan.space, spec)
            study.enqueue_trial(params, user_attrs={**user_attrs, attrs.SOURCE: source})
        study.set_user_attr("setup_done", True)
    plan = _plan_from_study(study)
    seeded = open_study(ctx, job, plan, seed=int(job.spec.get("seed", 0)))
    return StudyHandle(seeded, plan, inputs)


def run_trials(ctx: WorkerContext, job: Any, handle: StudyHandle) -> str:
    """Run trials one at a time until the budget is reserved, the job is cancelled, the worker
    is asked to stop, or ownership of the job is lost. Returns which of these happened."""
    budget = handle.plan.budget
    spec = job.spec
    setup = TrainingSetup(
        model=handle.inputs.model,
        groups=handle.inputs.groups,
        train=handle.inputs.train,
        val=handle.inputs.val,
        test=handle.inputs.test,
        epochs=int(spec["search"]["epochs"]),
        batch_size=int(spec["search"]["batch_size"]),
        seed=int(spec.get("seed", 0)),
        device=ctx.device,
    )
    objective = make_objective(
        handle.plan.space, setup, worker_id=ctx.worker_id, on_result=ctx.keep_if_best(job)
    )
    progress_cb = _progress_callback(ctx, job.id, budget)
    while True:
        if ctx.stop.is_set() or ctx.job_lost.is_set():
            return "stopping"
        with ctx.session() as session:
            if store.is_cancel_requested(session, job.id):
                return "cancelled"
        optuna.storages.fail_stale_trials(handle.study)
        with ctx.session() as session:
            if not store.reserve_trial_slot(session, job.id, budget):
                return "budget"
        handle.study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress_cb])
        trials = handle.study.get_trials(deepcopy=False)
        failures = [t for t in trials if t.state == TrialState.FAIL and attrs.FAIL_REASON in t.user_attrs]
        if len(failures) >= MAX_FAILURES_WITHOUT_SUCCESS and not results.completed(trials):
            reason = failures[-1].user_attrs[attrs.FAIL_REASON]
            raise JobFailed(f"the first {len(failures)} trials failed; last error: {reason}")


def _progress_callback(ctx: WorkerContext, job_id: str, budget: int) -> Callable[[optuna.Study, FrozenTrial], None]:
    def callback(study: optuna.Study, _trial: FrozenTrial) -> None:
        progress = results.progress(study.get_trials(deepcopy=False), budget)
        with ctx.session() as session:
            store.update_progress(session, job_id, progress)

    return callback


def wait_for_running_trials(ctx: WorkerContext, handle: StudyHandle, poll: float = 1.0) -> None:
    """Owner: let other workers' trials finish (or go stale and be failed) before finalising."""
    while True:
        optuna.storages.fail_stale_trials(handle.study)
        running = handle.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if ctx.stop_now.is_set() or ctx.job_lost.is_set():
            return
        time.sleep(poll)


def reconcile_budget(ctx: WorkerContext, job_id: str, handle: StudyHandle) -> bool:
    """Owner, with no trial running: give back slots that never became trials (a worker died
    between reserving a slot and starting its trial). True when trials are still owed."""
    trials = handle.study.get_trials(deepcopy=False)
    done = sum(1 for t in trials if results.counts_against_budget(t))
    waiting = sum(1 for t in trials if t.state == TrialState.WAITING)
    with ctx.session() as session:
        store.set_trial_slots(session, job_id, done)
    return done < handle.plan.budget or waiting > 0


def execute_as_owner(ctx: WorkerContext, job: Any) -> None:
    """Run a claimed job to a final state; the state is written whatever happens."""
    final: tuple[str, Any] = ("release", None)
    try:
        inputs = ctx.inputs(job)
        handle = setup_study(ctx, job, inputs)
        with ctx.session() as session:
            store.mark_study_ready(session, job.id, ctx.worker_id)
        while True:
            outcome = run_trials(ctx, job, handle)
            if outcome == "stopping":
                break
            wait_for_running_trials(ctx, handle)
            if outcome == "cancelled":
                final = ("cancelled", finalize_job(ctx, job, handle, cancelled=True))
                break
            if not reconcile_budget(ctx, job.id, handle):
                final = ("succeeded", finalize_job(ctx, job, handle, cancelled=False))
                break
    except JobFailed as error:
        final = ("failed", {"type": "job-failed", "detail": str(error)})
    except Exception as error:  # the job's final state must be written; the worker survives
        log.exception("job %s failed", job.id)
        final = ("failed", {"type": type(error).__name__, "detail": _one_line(error)})
    finally:
        _write_final_state(ctx, job.id, *final)


def execute_as_helper(ctx: WorkerContext, job: Any) -> None:
    """Run trials of a job another worker owns; never changes the job's state."""
    try:
        inputs = ctx.inputs(job)
        study = optuna.load_study(study_name=attrs.study_name(job.id), storage=ctx.storage)
        plan = _plan_from_study(study)
        seed = int(job.spec.get("seed", 0)) + 1 + (hash(ctx.worker_id) % 10_000)
        handle = StudyHandle(open_study(ctx, job, plan, seed), plan, inputs)
        run_trials(ctx, job, handle)
    except JobFailed:
        pass  # the owner sees the same failures and fails the job
    except Exception:
        log.exception("helping job %s failed; leaving it to its owner", job.id)


def _write_final_state(ctx: WorkerContext, job_id: str, state: str, payload: Any) -> None:
    with ctx.session() as session:
        if state == "succeeded":
            store.finish(session, job_id, ctx.worker_id, payload)
        elif state == "cancelled":
            store.finish_cancelled(session, job_id, ctx.worker_id, payload)
        elif state == "failed":
            store.fail(session, job_id, ctx.worker_id, payload)
        else:
            store.release(session, job_id, ctx.worker_id)


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:500]
