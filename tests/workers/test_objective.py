"""The objective on a real (tiny) training run: a trial whose loss turns non-finite completes
with its finite epochs; one that diverges in epoch 1 is pruned with its reason; one running
when the job's time budget runs out completes after its current epoch."""

from __future__ import annotations

import time

import optuna
import torch
from torch import nn
from torch.utils.data import TensorDataset

from app import trial_attrs as attrs
from selector import discover_groups
from workers.objective import SearchSpace, TrainingSetup, encode, make_objective
from workers.space import TrialSpec, contiguous_parts, label_for


class DivergesAfter(nn.Module):
    """A linear classifier whose logits turn NaN after ``finite_steps`` training batches: the
    loss of a too-high learning rate, made exact so the test knows which epoch diverges."""

    def __init__(self, finite_steps: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 3)
        self.finite_steps, self.steps = finite_steps, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.fc(torch.relu(self.features(x.flatten(1))))
        if torch.is_grad_enabled():  # a training batch (evaluation runs under no_grad)
            self.steps += 1
        return logits * float("nan") if self.steps > self.finite_steps else logits


def _run_one_trial(finite_steps: int, deadline: float | None = None) -> optuna.trial.FrozenTrial:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 4, 4, generator=generator)
    y = (x.flatten(1)[:, :3].argmax(dim=1))  # learnable: the brightest of three pixels
    model = DivergesAfter(finite_steps).eval()
    groups = discover_groups(model)
    setup = TrainingSetup(model=model, groups=groups, train=TensorDataset(x[:48], y[:48]),
                          val=TensorDataset(x[48:72], y[48:72]),
                          test=TensorDataset(x[72:], y[72:]), epochs=5, batch_size=16, seed=0,
                          device="cpu", deadline=deadline)
    names = tuple(g.name for g in groups)
    space = SearchSpace("tpe", names, 1e-3, 1e-1,
                        parts=tuple(part.label for part in contiguous_parts(names)))
    params, user_attrs = encode(space, TrialSpec("surgical", names, 1e-2,
                                                 label_for(names, names)))
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial(params, user_attrs=user_attrs)
    study.optimize(make_objective(space, setup, worker_id="w"), n_trials=1)
    return study.trials[0]


def test_a_trial_that_diverges_completes_with_its_finite_epochs() -> None:
    trial = _run_one_trial(finite_steps=6)  # 3 batches per epoch: epoch 3 turns NaN
    assert trial.state == optuna.trial.TrialState.COMPLETE
    per_epoch = trial.user_attrs[attrs.VAL_ACC_PER_EPOCH]
    assert len(per_epoch) == 2 and trial.value == max(per_epoch)
    assert trial.intermediate_values == {1: per_epoch[0], 2: per_epoch[1]}
    assert trial.user_attrs[attrs.STOP_REASON] == (
        "training diverged in epoch 3 (non-finite loss); epochs 1-2 kept as candidates")
    assert attrs.FAIL_REASON not in trial.user_attrs
    assert trial.user_attrs[attrs.TEST_ACC] is not None


def test_a_trial_that_diverges_in_epoch_1_is_pruned_with_its_reason() -> None:
    trial = _run_one_trial(finite_steps=1)
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.user_attrs[attrs.FAIL_REASON] == "training diverged in epoch 1 (non-finite loss)"
    assert trial.intermediate_values == {}


def test_a_trial_that_stays_finite_has_no_stop_reason() -> None:
    trial = _run_one_trial(finite_steps=100)
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert len(trial.user_attrs[attrs.VAL_ACC_PER_EPOCH]) == 5
    assert attrs.STOP_REASON not in trial.user_attrs


def test_a_trial_records_the_parameters_its_part_may_train_and_pruned_ones_keep_them() -> None:
    """The pruner compares running trials by ``part_params``: set before the first epoch, equal
    to what the finished trial reports as tuned."""
    trial = _run_one_trial(finite_steps=100)
    assert trial.user_attrs[attrs.PART_PARAMS] == trial.user_attrs[attrs.TUNED_PARAMS] > 0
    pruned = _run_one_trial(finite_steps=0)  # diverged in epoch 1: pruned before any result
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert pruned.user_attrs[attrs.PART_PARAMS] == trial.user_attrs[attrs.PART_PARAMS]
    assert attrs.TUNED_PARAMS not in pruned.user_attrs


def test_part_params_counts_every_group_for_auto_rgn() -> None:
    from workers.objective import part_params

    groups = discover_groups(DivergesAfter(0))
    total = sum(g.num_params for g in groups)
    assert part_params(TrialSpec("auto-rgn", (), 1e-3, "auto-rgn"), groups) == total
    first = groups[0]
    assert part_params(TrialSpec("surgical", (first.name,), 1e-3, first.name),
                       groups) == first.num_params


def test_trials_record_the_device_they_train_on_resolved():
    from workers.objective import device_label

    assert device_label("cpu") == "cpu"
    assert device_label(None) == ("cuda:0" if torch.cuda.is_available() else "cpu")


def test_a_trial_past_the_jobs_deadline_completes_after_its_current_epoch() -> None:
    trial = _run_one_trial(finite_steps=100, deadline=time.time())  # already past
    assert trial.state == optuna.trial.TrialState.COMPLETE
    per_epoch = trial.user_attrs[attrs.VAL_ACC_PER_EPOCH]
    assert len(per_epoch) == 1 and trial.value == per_epoch[0]
    assert trial.user_attrs[attrs.STOP_REASON] == (
        "stopped after epoch 1 of 5: the job's time budget ran out")
    assert trial.user_attrs[attrs.TEST_ACC] is not None


def test_a_deadline_still_ahead_changes_nothing() -> None:
    trial = _run_one_trial(finite_steps=100, deadline=time.time() + 3600)
    assert len(trial.user_attrs[attrs.VAL_ACC_PER_EPOCH]) == 5
    assert attrs.STOP_REASON not in trial.user_attrs


def test_the_deadline_is_fixed_once_per_job() -> None:
    from workers import time_budget

    study = optuna.create_study()
    time_budget.start(study, None, now=100.0)
    assert time_budget.deadline(study) is None and not time_budget.expired(None)
    time_budget.start(study, 2.5, now=100.0)
    time_budget.start(study, 2.5, now=500.0)  # a resumed job keeps the first deadline
    assert time_budget.deadline(study) == 250.0
    assert not time_budget.expired(250.0, now=249.9) and time_budget.expired(250.0, now=250.0)
