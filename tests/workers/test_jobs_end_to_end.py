"""Issue 5's proofs: real HTTP, real databases, real worker processes, real training."""

from __future__ import annotations

import copy
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from app import store
from app import trial_attrs as attrs
from app.client import apply_patch
from app.db import session_scope
from app.schemas import JobSpec
from selector import evaluate
from selector.builtin import load_case
from tests.workers.conftest import Service, session_factory, tiny_job, wait_until
from workers.loop import build_context, run_worker
from workers.results import counts_against_budget

pytestmark = pytest.mark.slow


def _effective(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if counts_against_budget(t)]


def test_job_over_http_is_run_by_a_worker_and_its_patch_reproduces_the_best_trial(
    sqlite_service: Service, tmp_path: Path
):
    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=5))
        assert job.state == "queued"

        run_worker(build_context(service.settings, device="cpu"), drain=True)

        job = client.get(job.id)
        assert job.state == "succeeded", job.error
        assert job.progress.trials_done == 5
        result = client.result(job.id)
        # the diagnosis's verdict stays in the progress (shown before the first trial ended)
        kind, top = result.diagnosis.kind, result.diagnosis.ranking[0]
        assert job.progress.diagnosis == f"{kind}-level: tune {top} first"
        assert job.progress.phase is None  # done
        labels = [row.label for row in result.leaderboard]
        assert labels[0] == "no fine-tuning"
        trials = client.trials(job.id)
        assert len([t for t in trials if t.state in ("complete", "pruned")]) == 5
        # auto's first rung: five distinct parts; successive halving may stop some early
        assert len({t.label for t in trials}) == 5
        assert set(labels[1:]) == {t.label for t in trials if t.state == "complete"}
        best = max((t for t in trials if t.state == "complete"), key=lambda t: t.val_acc)
        # the fewest tuned parameters within one standard error of the best (search.prefer)
        assert result.selection is not None and result.selection.best_val_acc == pytest.approx(best.val_acc)
        assert result.recommendation.val_acc >= result.selection.band_low - 1e-9

        names = {artifact.name for artifact in client.artifacts(job.id)}
        assert {"patch.safetensors", "finetuned.safetensors", "patch-manifest.json",
                "accuracy_by_part.png", "search_history.png", "result.json"} <= names
        plot = client.download(job.id, "accuracy_by_part.png", tmp_path)
        assert plot.read_bytes().startswith(b"\x89PNG")
        patch = client.download(job.id, "patch.safetensors", tmp_path)

    # The patch is the recommended trial, applied to the pretrained model: same validation
    # accuracy.
    case = load_case("mnist", shift="impulse_noise", severity=4, seed=0, n_per_class=10,
                     n_val=5, n_test=5, data_dir=service.settings.data_dir)
    model = copy.deepcopy(case.model)
    _, untouched = evaluate(model, case.val)
    apply_patch(model, patch)
    _, patched = evaluate(model, case.val)
    assert patched == pytest.approx(result.recommendation.val_acc, abs=1e-9)
    assert result.baseline_val_acc == pytest.approx(untouched, abs=1e-9)

    # The dashboard reads the same data: the study is visible to plain Optuna.
    study = service.study(job.id)
    assert len(_effective(study.get_trials())) == 5
    assert study.user_attrs["plan"]["strategy"] == "auto"


#: Between a worker's last look at the clock and its trial's start time (a database round trip).
START_LATENCY_S = 2.0


def test_a_job_with_a_time_budget_starts_no_trial_after_it_and_says_so(sqlite_service: Service):
    """``search.max_minutes``: 200 trials of 10 epochs would take minutes; the budget is 15 s.
    No trial starts after the deadline, the running one stops after its epoch, the job
    succeeds with what ran and its notes say how much that was."""
    from workers import time_budget
    from workers.results import NOTE_OUT_OF_TIME

    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(strategy="tpe", max_trials=200, epochs=10, max_minutes=0.25))
        began = time.monotonic()
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        elapsed = time.monotonic() - began
        job = client.get(job.id)
        assert job.state == "succeeded", job.error
        result = client.result(job.id)
    study = service.study(job.id)
    deadline = time_budget.deadline(study)
    assert deadline is not None and job.progress.deadline is not None
    assert job.progress.deadline.timestamp() == pytest.approx(deadline, abs=1e-3)
    trials = _effective(study.get_trials())
    assert 1 <= len(trials) < 200 and job.progress.trials_done == len(trials)
    # checked right before each trial starts: a trial may start a moment after the deadline
    assert all(t.datetime_start.timestamp() <= deadline + START_LATENCY_S for t in trials)
    assert elapsed < 15 + 30, "stopped within an epoch (and the result's writing) of the budget"
    note = next(n for n in result.notes if n.startswith(NOTE_OUT_OF_TIME))
    assert f"(0.25 min): {len(trials)} of the 200 planned trials ran" in note
    stopped = [t for t in trials if t.user_attrs.get(attrs.STOP_REASON, "").endswith(
        time_budget.STOPPED)]
    assert all(t.state == TrialState.COMPLETE for t in stopped)
    assert all(len(t.user_attrs[attrs.VAL_ACC_PER_EPOCH]) < 10 for t in stopped)
    # the leaderboard (each part's best trial) says which of its rows were cut short, and why
    reasons = {t.number: t.user_attrs.get(attrs.STOP_REASON) for t in trials}
    assert all(row.stop_reason == reasons[row.trial_number]
               for row in result.leaderboard if row.trial_number is not None)


def test_a_job_whose_data_cannot_be_loaded_fails_fast_with_its_reason(sqlite_service: Service):
    service = sqlite_service
    root = service.settings.data_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    broken = root / "broken.pt"
    broken.write_bytes(b"this is not a tensors file")
    with service.client() as client:
        job = client.submit({"model": {"source": "builtin", "name": "mnist-resnet"},
                             "data": {"source": "tensors", "path": broken.as_uri()},
                             "search": {"max_trials": 3, "epochs": 1}})
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        job = client.get(job.id)
        assert job.state == "failed"
        assert job.error is not None and "broken.pt" in job.error.detail
        assert client.trials(job.id) == []


def test_the_worker_checks_confinement_and_the_allowlist_again(sqlite_service: Service, tmp_path: Path):
    """What the API checked at submit is checked again, by the same code, right before the
    worker opens anything: a symlink swapped in after submit, and a factory whose module the
    operator has since removed from the allowlist, both fail their job naming the field."""
    service = sqlite_service
    root = service.settings.data_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    inside = root / f"swapped-{uuid.uuid4().hex}.pt"
    inside.write_bytes(b"placeholder")
    secret = tmp_path / "secret.pt"
    secret.write_bytes(b"outside every data root")
    try:
        with service.client() as client:
            swapped = client.submit({"model": {"source": "builtin", "name": "mnist-resnet"},
                                     "data": {"source": "tensors", "path": inside.as_uri()},
                                     "search": {"max_trials": 2, "epochs": 1}})
            inside.unlink()
            inside.symlink_to(secret)  # after the API confined the path
            with session_scope(session_factory(service.settings)) as session:
                factory = store.create_job(session, "local", JobSpec.model_validate({
                    "model": {"source": "factory", "target": "mypkg.models:build"},
                    "data": {"source": "builtin", "name": "mnist"},
                    "search": {"max_trials": 2, "epochs": 1}})).id
            run_worker(build_context(service.settings, device="cpu"), drain=True)
            swapped, factory_job = client.get(swapped.id), client.get(factory)
    finally:
        inside.unlink(missing_ok=True)
    assert swapped.state == "failed" and swapped.error is not None
    assert swapped.error.type == "InvalidSpec"
    assert "data.path" in swapped.error.detail and "outside the data roots" in swapped.error.detail
    assert factory_job.state == "failed" and factory_job.error is not None
    assert "model.target" in factory_job.error.detail and "allowlist" in factory_job.error.detail


@pytest.mark.postgres
def test_two_workers_on_postgres_share_one_job_without_running_a_trial_twice(
    postgres_service: Service,
):
    """Both drain workers start in the same instant: the one that does not own the job must
    wait while the owner sets the study up (it used to exit within a second), then help."""
    service = postgres_service
    budget = 8
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=budget))
        first = service.start_worker("--drain")
        second = service.start_worker("--drain")
        assert first.wait(timeout=300) == 0, service.worker_logs()
        assert second.wait(timeout=300) == 0, service.worker_logs()
        job = client.get(job.id)
        assert job.state == "succeeded", (job.error, service.worker_logs())

    trials = service.study(job.id).get_trials()
    effective = _effective(trials)
    assert len(effective) == budget == len(trials)
    workers = Counter(t.user_attrs[attrs.WORKER] for t in effective)
    assert len(workers) == 2, workers
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    enqueued = Counter(t.user_attrs[attrs.LABEL] for t in trials if t.user_attrs.get(attrs.SOURCE))
    assert all(count == 1 for count in enqueued.values()), enqueued


@pytest.mark.postgres
def test_two_workers_both_stop_at_the_time_budget(postgres_service: Service):
    """The helper stops joining once the time is up (the owner closes the trial slots) and the
    owner finishes the job with both workers' trials."""
    from workers import time_budget
    from workers.results import NOTE_OUT_OF_TIME

    service = postgres_service
    with service.client() as client:
        job = client.submit(tiny_job(strategy="tpe", max_trials=200, epochs=10, max_minutes=0.3))
        began = time.monotonic()
        first = service.start_worker("--drain")
        second = service.start_worker("--drain")
        assert first.wait(timeout=120) == 0, service.worker_logs()
        assert second.wait(timeout=120) == 0, service.worker_logs()
        elapsed = time.monotonic() - began
        job = client.get(job.id)
        assert job.state == "succeeded", (job.error, service.worker_logs())
        result = client.result(job.id)
    study = service.study(job.id)
    deadline = time_budget.deadline(study)
    assert deadline is not None
    trials = _effective(study.get_trials())
    assert len(Counter(t.user_attrs[attrs.WORKER] for t in trials)) == 2
    assert all(t.datetime_start.timestamp() <= deadline + START_LATENCY_S for t in trials)
    assert elapsed < 18 + 60, "both stopped within an epoch of the budget (plus start-up)"
    assert any(n.startswith(NOTE_OUT_OF_TIME) and f"{len(trials)} of the 200" in n
               for n in result.notes)


@pytest.mark.postgres
def test_a_worker_killed_mid_trial_loses_nothing(postgres_service: Service):
    service = postgres_service
    budget, epochs = 4, 20
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=budget, epochs=epochs, strategy="tpe"))
        victim = service.start_worker()

        def running_trial():
            # early in its epochs, so it cannot finish between this query and the kill
            running = service.trials(job.id, states=(TrialState.RUNNING,))
            return (running[0] if running and 1 <= len(running[0].intermediate_values) <= epochs // 4
                    else None)

        killed = wait_until(running_trial, 180, "a trial in the middle of its epochs")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        stale = {t.number: t.state for t in service.trials(job.id)}
        assert stale[killed.number] == TrialState.RUNNING, "the trial ended before the kill"

        rescuer = service.start_worker("--drain")
        assert rescuer.wait(timeout=300) == 0, service.worker_logs()
        job = client.get(job.id)
        assert job.state == "succeeded", (job.error, service.worker_logs())

    trials = service.study(job.id).get_trials()
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == killed.params
    assert len(_effective(trials)) == budget


def test_cancel_while_running_ends_the_job_after_the_current_trial(sqlite_service: Service):
    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=20, epochs=4, strategy="tpe"))
        worker = service.start_worker()
        wait_until(lambda: service.trials(job.id, states=(TrialState.RUNNING,)), 120,
                   "a running trial")
        running = client.get(job.id).progress  # the verdict shows while the first trial trains
        assert running.phase == "searching" and running.diagnosis, running
        assert "diagnosis.png" in {a.name for a in client.artifacts(job.id)}  # before the end
        cancelled = client.cancel(job.id)
        assert cancelled.cancel_requested
        final = wait_until(lambda: (j := client.get(job.id)).done and j, 120, "the job to stop")
        assert final.state == "cancelled"
        finished = [t for t in service.study(job.id).get_trials() if t.state.is_finished()]
        assert 1 <= len(finished) < 20
        assert not service.study(job.id).get_trials(states=(TrialState.RUNNING,))
        assert worker.poll() is None  # the worker survives a cancelled job
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0


def test_untouched_pretrained_weights_in_cache(builtin_data_dir: Path, mnist_resnet):
    """Trials train copies: the cached source model is never modified by a job."""
    before = {k: v.clone() for k, v in mnist_resnet.state_dict().items()}
    from selector import surgical_finetune

    case = load_case("mnist", shift="impulse_noise", severity=4, n_per_class=5, n_val=2,
                     n_test=2, data_dir=builtin_data_dir)
    surgical_finetune(mnist_resnet, ["block1"], case.train, case.val, lr=1e-2, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in mnist_resnet.state_dict().items())
