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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
import sqlalchemy.exc
from optuna.trial import FrozenTrial, TrialState

from app import store
from app import trial_attrs as attrs
from app.schemas import JobError, JobPhase, JobResult
from selector.finetune.activation_cache import ActivationCache
from workers import results, time_budget
from workers.artifacts import keep_if_best, upload_diagnosis
from workers.context import WorkerContext
from workers.diagnosing import DIAGNOSIS_ATTR, auto_order, dashboard_attrs, diagnose_job
from workers.diagnosing import verdict as diagnosis_verdict
from workers.finalize import FACTS_ATTR, StudyFacts, finalize_job
from workers.job import ClaimedJob
from workers.loading import JobInputs
from workers.objective import TrainingSetup, encode, make_objective
from workers.strategies import (
    PLAN_ATTR,
    PlanInputs,
    SearchPlan,
    make_pruner,
    make_sampler,
    plan_search,
)

log = logging.getLogger(__name__)

#: Stop a job whose first trials all fail: the cause is the job, not one learning rate.
MAX_FAILURES_WITHOUT_SUCCESS = 3
#: Strategies whose plan needs the Auto-RGN profile (computed once, by the owner).
NEEDS_RGN_PROFILE = ("auto", "auto-rgn", "paper")


class JobFailed(Exception):
    """The job cannot succeed; its message is shown to the user as the failure reason."""


@dataclass
class StudyHandle:
    study: optuna.Study
    plan: SearchPlan
    inputs: JobInputs


def failure_verdict(trials: Sequence[FrozenTrial]) -> str | None:
    """Why the job must fail, or None: :data:`MAX_FAILURES_WITHOUT_SUCCESS` trials failed by
    their own error (not by a dead worker) and none completed."""
    failures = [t for t in trials if t.state == TrialState.FAIL and attrs.FAIL_REASON in t.user_attrs]
    if len(failures) < MAX_FAILURES_WITHOUT_SUCCESS or results.completed(trials):
        return None
    reason = failures[-1].user_attrs[attrs.FAIL_REASON]
    return f"the first {len(failures)} trials failed; last error: {reason}"


def saved_plan(study: optuna.Study) -> SearchPlan:
    """The plan the owner saved in the study (every worker derives the same one)."""
    return plan_search(PlanInputs.from_attr(study.user_attrs[PLAN_ATTR]))


def open_study(ctx: WorkerContext, job: ClaimedJob, plan: SearchPlan, seed: int) -> optuna.Study:
    """The job's study with this worker's sampler and pruner (they are not stored)."""
    return optuna.load_study(
        study_name=attrs.study_name(job.id),
        storage=ctx.storage,
        sampler=make_sampler(plan, seed),
        pruner=make_pruner(plan),
    )


def setup_study(ctx: WorkerContext, job: ClaimedJob, inputs: JobInputs,
                began: float | None = None) -> StudyHandle:
    """Create (or resume) the job's study and enqueue its first trials exactly once.
    ``began``: when this worker started on the job (``time.time()``), where the time budget's
    clock starts (loading the inputs and the diagnosis count against it)."""
    search = job.spec.search
    study = optuna.create_study(
        study_name=attrs.study_name(job.id), storage=ctx.storage, direction="maximize",
        load_if_exists=True,
    )
    time_budget.start(study, search.max_minutes, now=began)
    if study.user_attrs.get("setup_done"):
        plan = saved_plan(study)  # a resumed job: its plan was made by an earlier owner
    else:
        # The diagnosis comes first: forward passes only, before any trial trains
        with ctx.session() as session:
            store.update_progress(session, job.id, results.progress(
                [], search.max_trials, phase="diagnosing",
                deadline=time_budget.deadline(study)))
        diagnosis, diagnosis_note = diagnose_job(inputs, job.spec.seed)
        ranking = auto_order(diagnosis) if search.strategy == "auto" else None
        profile = inputs.rgn_profile() if search.strategy in NEEDS_RGN_PROFILE else None
        plan = plan_search(PlanInputs(
            strategy=search.strategy,
            group_names=tuple(inputs.group_names),
            max_trials=search.max_trials,
            lr_min=search.lr_min,
            lr_max=search.lr_max,
            epochs=search.epochs,
            baselines=search.baselines,
            rgn_profile=profile,
            prefer=search.prefer,
            diagnosis_ranking=ranking,
        ))
        facts = StudyFacts(inputs.baseline(), tuple((g.name, g.num_params) for g in inputs.groups),
                           inputs.data_record,
                           diagnosis.model_dump(mode="json") if diagnosis is not None else None,
                           diagnosis_note)
        study.set_user_attr(PLAN_ATTR, plan.inputs.to_attr())
        study.set_user_attr(FACTS_ATTR, facts.to_attr())
        describe_study(study, job, inputs)
        for key, value in dashboard_attrs(diagnosis, diagnosis_note).items():
            study.set_user_attr(key, value)
        plot = upload_diagnosis(ctx.artifact_store, study, diagnosis)
        if plot is not None:  # listed at once: users look at it while the trials run
            with ctx.session() as session:
                store.add_artifact(session, job.id, plot)
        for spec, source in zip(plan.enqueued, plan.sources, strict=True):
            params, user_attrs = encode(plan.space, spec)
            # An earlier owner that lost the database mid-setup may have enqueued some already
            study.enqueue_trial(params, user_attrs={**user_attrs, attrs.SOURCE: source},
                                skip_if_exists=True)
        study.set_user_attr("setup_done", True)
    seeded = open_study(ctx, job, plan, seed=job.spec.seed)
    return StudyHandle(seeded, plan, inputs)


def activation_cache(ctx: WorkerContext, inputs: JobInputs) -> ActivationCache | None:
    """The job's cross-trial prefix cache on this worker (kept on its inputs, so it lives and
    is evicted with them); None when the setting is 0."""
    limit = ctx.settings.activation_cache_mb << 20
    if limit <= 0:
        return None
    if inputs.activations is None:
        inputs.activations = ActivationCache(limit)
    return inputs.activations


#: The objective's name on the dashboard (which otherwise says "Objective 0").
METRIC_NAMES = ["val_acc"]


def describe_study(study: optuna.Study, job: ClaimedJob, inputs: JobInputs) -> None:
    """Name the objective and put the job's model and data in the study's user attributes,
    so the dashboard shows what was searched."""
    study.set_metric_names(METRIC_NAMES)
    study.set_user_attr("model", job.spec.model.model_dump(mode="json", exclude_none=True))
    sizes = {"train": len(inputs.train), "val": len(inputs.val),  # type: ignore[arg-type]
             "test": None if inputs.test is None else len(inputs.test)}  # type: ignore[arg-type]
    study.set_user_attr("data", {**job.spec.data.model_dump(mode="json", exclude_none=True),
                                 "sizes": sizes})
    study.set_user_attr("groups", {g.name: g.num_params for g in inputs.groups})


def run_trials(ctx: WorkerContext, job: ClaimedJob, handle: StudyHandle) -> str:
    """Run trials one at a time until the budget is reserved ("budget"), the job is cancelled
    ("cancelled"), its time budget runs out ("time"), the worker is asked to stop or ownership
    of the job is lost ("stopping"). Returns which of these happened."""
    budget = handle.plan.budget
    inputs = handle.inputs
    deadline = time_budget.deadline(handle.study)
    setup = TrainingSetup(
        model=inputs.model,
        groups=inputs.groups,
        train=inputs.train,
        val=inputs.val,
        test=inputs.test,
        epochs=handle.plan.inputs.epochs,
        batch_size=job.spec.search.batch_size,
        seed=job.spec.seed,
        device=ctx.device,
        precision=job.spec.search.precision,
        deterministic=job.spec.search.deterministic,
        activation_cache=activation_cache(ctx, inputs),
        deadline=deadline,
    )
    objective = make_objective(
        handle.plan.space, setup, worker_id=ctx.worker_id,
        on_result=keep_if_best(ctx.artifact_store, job, inputs.model),
    )
    progress_cb = _progress_callback(ctx, job.id, handle)
    progress_cb(handle.study, None)  # the diagnosis's verdict shows before the first trial ends
    while True:
        if ctx.stop.is_set() or ctx.job_lost.is_set():
            return "stopping"
        with ctx.session() as session:
            if store.is_cancel_requested(session, job.id):
                return "cancelled"
        if budget and time_budget.expired(deadline):  # a diagnose job (budget 0) has no trials
            with ctx.session() as session:
                store.close_trial_slots(session, job.id)  # helpers stop joining
            return "time"
        optuna.storages.fail_stale_trials(handle.study)
        with ctx.session() as session:
            if not store.reserve_trial_slot(session, job.id, budget):
                return "budget"
        handle.study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[progress_cb])
        verdict = failure_verdict(handle.study.get_trials(deepcopy=False))
        if verdict is not None:
            raise JobFailed(verdict)


def _progress_callback(ctx: WorkerContext, job_id: str, handle: StudyHandle,
                       phase: JobPhase = "searching",
                       ) -> Callable[[optuna.Study, FrozenTrial | None], None]:
    """Writes the job's progress (an Optuna callback after each trial, and called directly).
    The diagnosis's verdict is fixed once the study is set up: read once, not every trial."""
    said = diagnosis_verdict(handle.study.user_attrs.get(DIAGNOSIS_ATTR))
    budget, prefer = handle.plan.budget, handle.plan.inputs.prefer
    deadline = time_budget.deadline(handle.study)

    def callback(study: optuna.Study, _trial: FrozenTrial | None) -> None:
        progress = results.progress(study.get_trials(deepcopy=False), budget, prefer,
                                    phase=phase, diagnosis=said, deadline=deadline)
        with ctx.session() as session:
            store.update_progress(session, job_id, progress)

    return callback


def finishing(ctx: WorkerContext, job: ClaimedJob, handle: StudyHandle) -> optuna.Study:
    """Show the 'finishing' phase (the result and the artifacts take a few seconds)."""
    _progress_callback(ctx, job.id, handle, phase="finishing")(handle.study, None)
    return handle.study


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


#: How long a reserved slot may take to become a running trial (a helper samples its
#: parameters in between) before the owner takes it for a dead worker's.
RESERVATION_SETTLE_S = 5.0


def reconcile_budget(ctx: WorkerContext, job_id: str, handle: StudyHandle,
                     settle: float = RESERVATION_SETTLE_S) -> bool:
    """Owner, with no trial running: give back slots that never became trials (a worker died
    between reserving a slot and starting its trial). True when trials are still owed.

    A slot without a trial may also be a helper's that is about to start one: the owner waits
    ``settle`` seconds (and for any trial that starts meanwhile) before it counts again, and
    writes the count only if no slot was reserved in between, so a helper's trial is never
    given a second slot (which would overshoot the budget by one)."""
    with ctx.session() as session:
        reserved = store.trial_slots_in_use(session, job_id)
    done = _trials_done(handle)
    if reserved > done:
        time.sleep(settle)
        wait_for_running_trials(ctx, handle)
        with ctx.session() as session:
            reserved = store.trial_slots_in_use(session, job_id)
        done = _trials_done(handle)
    with ctx.session() as session:
        if not store.set_trial_slots(session, job_id, done, expected=reserved):
            return True  # a slot was reserved meanwhile: run_trials sorts it out
    # Trials still waiting in the queue once the budget is spent are not owed: waiting for
    # them would never end, since no slot is left to run them.
    return done < handle.plan.budget


def _trials_done(handle: StudyHandle) -> int:
    """Trials that count against the budget."""
    return sum(1 for t in handle.study.get_trials(deepcopy=False)
               if results.counts_against_budget(t))


@dataclass(frozen=True)
class FinalState:
    """How an owned job ends: ``release`` hands it back to the queue (the worker stops)."""

    state: str  # "succeeded" | "cancelled" | "failed" | "release"
    result: JobResult | None = None
    error: JobError | None = None


#: Errors that mean "the database is unreachable right now" rather than "this job is broken":
#: SQLAlchemy's connection-level errors, and Optuna's wrapper around any SQLAlchemy error.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    optuna.exceptions.StorageInternalError,
)


def execute_as_owner(ctx: WorkerContext, job: ClaimedJob) -> None:
    """Run a claimed job to a final state; the state is written whatever happens."""
    final = FinalState("release")
    began = time.time()
    try:
        inputs = ctx.inputs(job)
        handle = setup_study(ctx, job, inputs, began)
        with ctx.session() as session:
            store.mark_study_ready(session, job.id, ctx.worker_id)
        while True:
            outcome = run_trials(ctx, job, handle)
            if outcome == "stopping":
                break
            wait_for_running_trials(ctx, handle)
            if outcome == "cancelled":
                final = FinalState("cancelled", finalize_job(ctx, job, finishing(ctx, job, handle),
                                                              cancelled=True))
                break
            # out of time, trials still owed are not run; else only when none is owed
            if outcome == "time" or not reconcile_budget(ctx, job.id, handle):
                final = FinalState("succeeded", finalize_job(ctx, job, finishing(ctx, job, handle),
                                                              cancelled=False,
                                                              out_of_time=outcome == "time"))
                break
    except JobFailed as error:
        final = FinalState("failed", error=JobError(type="job-failed", detail=str(error)))
    except DATABASE_ERRORS as error:
        # The database went away (a restart, a network cut): not the job's fault. Hand it back;
        # its next owner resumes the study (or, if this write fails too, the job goes stale
        # and is requeued by the first worker that can reach the database again).
        log.warning("job %s: database unavailable (%s); handing the job back", job.id,
                    one_line(error))
        final = FinalState("release")
    except Exception as error:  # the job's final state must be written; the worker survives
        log.exception("job %s failed", job.id)
        final = FinalState("failed", error=JobError(type=type(error).__name__, detail=one_line(error)))
    finally:
        write_final_state(ctx, job.id, final)


def execute_as_helper(ctx: WorkerContext, job: ClaimedJob) -> None:
    """Run trials of a job another worker owns; never changes the job's state."""
    try:
        inputs = ctx.inputs(job)
        study = optuna.load_study(study_name=attrs.study_name(job.id), storage=ctx.storage)
        plan = saved_plan(study)
        seed = job.spec.seed + 1 + (hash(ctx.worker_id) % 10_000)
        handle = StudyHandle(open_study(ctx, job, plan, seed), plan, inputs)
        run_trials(ctx, job, handle)
    except JobFailed:
        pass  # the owner sees the same failures and fails the job
    except Exception:
        log.exception("helping job %s failed; leaving it to its owner", job.id)


def write_final_state(ctx: WorkerContext, job_id: str, final: FinalState) -> None:
    with ctx.session() as session:
        if final.state == "succeeded":
            assert final.result is not None
            store.finish(session, job_id, ctx.worker_id, final.result)
        elif final.state == "cancelled":
            store.finish_cancelled(session, job_id, ctx.worker_id, final.result)
        elif final.state == "failed":
            assert final.error is not None
            store.fail(session, job_id, ctx.worker_id, final.error)
        else:
            store.release(session, job_id, ctx.worker_id)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:500]
