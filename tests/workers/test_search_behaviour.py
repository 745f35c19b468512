"""Search semantics on one in-process worker: reproducible, robust to bad trials, resumable."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from torch import nn

from app import trial_attrs as attrs
from tests.app.conftest import Databases
from tests.workers.conftest import Service, _service, tiny_job
from workers.loop import build_context, run_worker

pytestmark = pytest.mark.slow


def _run(service: Service, spec: dict) -> tuple[str, list[optuna.trial.FrozenTrial]]:
    with service.client() as client:
        job = client.submit(spec)
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        job = client.get(job.id)
    return job.state, service.study(job.id).get_trials()


def test_a_seeded_search_is_reproducible_on_one_worker(sqlite_service: Service):
    spec = tiny_job(strategy="tpe", max_trials=3, epochs=1)
    state_a, trials_a = _run(sqlite_service, spec)
    state_b, trials_b = _run(sqlite_service, spec)
    assert state_a == state_b == "succeeded"
    assert [t.params for t in trials_a] == [t.params for t in trials_b]
    assert [t.value for t in trials_a] == [t.value for t in trials_b]


class DivergingHead(nn.Linear):
    """A classifier head whose logits turn NaN from its fifth training batch on: what too high a
    learning rate leaves behind, made exact so the test knows the epoch (the tiny case trains
    3-4 batches per epoch, so epoch 2 diverges). The batch count is a buffer, so every trial's
    fresh copy of the pretrained weights starts from zero; evaluation runs under no_grad and
    does not count."""

    FINITE_BATCHES = 4

    def __init__(self, features: int, classes: int) -> None:
        super().__init__(features, classes)
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        if torch.is_grad_enabled():
            self.batches += 1
        return logits * math.nan if int(self.batches) > self.FINITE_BATCHES else logits


def diverging_net() -> nn.Module:
    """A user's model (a factory the operator allowlisted) that diverges in epoch 2."""
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                             nn.Flatten())
    return nn.Sequential(features, DivergingHead(8 * 16, 10)).eval()


@pytest.fixture
def factory_service(worker_databases: Databases, tmp_path: Path, builtin_data_dir: Path,
                    mnist_resnet: Any) -> Iterator[Service]:
    yield from _service("sqlite", worker_databases, tmp_path, builtin_data_dir,
                        factory_allowlist=[__name__])


def test_diverging_trials_are_recorded_and_do_not_fail_the_job(factory_service: Service):
    # The model is the user's, not ours patched: every trial's loss turns non-finite in epoch 2
    # whatever part it tunes (the head runs in every part's forward). The engine must stop
    # there and keep epoch 1; the worker must record why and complete the trial; the job must
    # succeed.
    spec = {**tiny_job(strategy="tpe", max_trials=3, epochs=3),
            "model": {"source": "factory", "target": f"{__name__}:diverging_net"}}
    state, trials = _run(factory_service, spec)
    assert state == "succeeded"
    assert len(trials) == 3
    trained = [t for t in trials if attrs.DUPLICATE_OF not in t.user_attrs]
    assert trained and all(attrs.STOP_REASON in t.user_attrs for t in trained), \
        [t.user_attrs for t in trials]
    for trial in trials:
        assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs
        assert "diverged in epoch 2 (non-finite loss)" in trial.user_attrs[attrs.STOP_REASON]
        assert trial.user_attrs[attrs.BEST_EPOCH] == 1
        assert len(trial.user_attrs[attrs.VAL_ACC_PER_EPOCH]) == 1
        assert math.isfinite(trial.value)


def test_paper_strategy_runs_the_papers_grid_exactly_once(sqlite_service: Service):
    spec = tiny_job(strategy="paper", epochs=1, lr_min=1e-3, lr_max=1e-2, baselines=False)
    state, trials = _run(sqlite_service, spec)
    assert state == "succeeded"
    cells = [(t.user_attrs[attrs.LABEL], t.user_attrs[attrs.LR]) for t in trials]
    assert len(cells) == len(set(cells)) == 5 * 2  # block1..3, head, all  x  {1e-3, 1e-2}
    with sqlite_service.client() as client:
        jobs = list(client.iter_jobs())
        result = client.result(jobs[0].id)
    # The dashboard names the objective and shows what was searched.
    study = sqlite_service.study(jobs[0].id)
    assert study.metric_names == ["val_acc"]
    assert study.user_attrs["model"]["source"] == "builtin"
    assert study.user_attrs["data"]["shift"] == "impulse_noise"
    assert study.user_attrs["data"]["sizes"]["train"] > 0
    assert list(study.user_attrs["groups"]) == ["block1", "block2", "block3", "head"]
    assert [row.label for row in result.leaderboard] == [
        "no fine-tuning", "block1", "block2", "block3", "head", "all"]


@pytest.mark.timeout(240)
def test_a_setup_cut_short_after_enqueueing_some_trials_is_resumed_without_duplicates(
        sqlite_service: Service):
    """An owner that lost the database halfway through enqueueing the plan leaves some trials
    waiting and no ``setup_done``; the next owner sets the study up again. It must not enqueue
    them twice (they would run twice, and the owner would wait forever for queued trials past
    the budget)."""
    spec = tiny_job(strategy="paper", epochs=1, lr_min=1e-3, lr_max=1e-2, baselines=False)
    with sqlite_service.client() as client:
        job = client.submit(spec)
        study = optuna.create_study(study_name=attrs.study_name(job.id), direction="maximize",
                                    storage=sqlite_service.settings.storage_url)
        for params in ({"part": "block1", "lr": 0.001}, {"part": "head", "lr": 0.01}):
            study.enqueue_trial(params, user_attrs={attrs.SOURCE: "grid"})
        run_worker(build_context(sqlite_service.settings, device="cpu"), drain=True)
        job = client.get(job.id)
    trials = sqlite_service.study(job.id).get_trials()
    assert job.state == "succeeded", job.error
    cells = [(t.params["part"], t.params["lr"]) for t in trials]
    assert len(cells) == len(set(cells)) == 5 * 2, cells
    assert all(t.state.is_finished() for t in trials)
