"""Where Optuna meets the engine: an Optuna trial becomes a plain :class:`TrialSpec`, the spec
runs through ``selector``, and the outcome goes back to Optuna as a value and user attributes.

It is the only module that runs ``selector`` inside an Optuna trial (``workers/context.py`` also
imports both, to upload a trial's weights as an Optuna artifact). The encoding of the search
space into Optuna parameters lives here too, so strategies (which enqueue trials) and the
objective (which reads them back) can never disagree about parameter names.

Parameters by strategy:

* ``paper`` — ``part`` (categorical: a group name, ``all`` or ``auto-rgn``) and ``lr``
  (categorical over the paper's grid), explored exhaustively by a grid sampler.
* ``tpe`` and ``auto`` — ``part`` (categorical over the plan's parts: every contiguous range
  of groups exactly once, labelled like the leaderboard, plus ``auto-rgn`` for ``auto``) and
  ``lr`` (log-uniform over the user's range). The former (start, length) integers clipped at
  the head mapped several pairs onto one range and ran duplicates.
* ``auto-rgn`` — ``lr`` only.

A job never trains the same (method, groups, lr, epochs) twice: a trial whose spec matches a
completed one takes its outcome without training (``duplicate_of``), one that matches a running
trial is pruned with that reason.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import TrialState
from torch import nn
from torch.utils.data import Dataset

from app import trial_attrs as attrs
from selector import (
    EpochMetrics,
    FinetuneResult,
    LayerGroup,
    auto_rgn_finetune,
    auto_snr_finetune,
    surgical_finetune,
)
from selector.finetune.activation_cache import ActivationCache
from selector.finetune.records import NON_FINITE_LOSS
from selector.finetune.training import resolve_device
from workers import time_budget
from workers.space import TrialSpec, contiguous_parts

PART = "part"
LR = "lr"


@dataclass(frozen=True)
class SearchSpace:
    """What the objective needs to decode a trial: the model's groups and the user's ranges."""

    strategy: str
    group_names: tuple[str, ...]
    lr_min: float
    lr_max: float
    lr_choices: tuple[float, ...] = ()
    parts: tuple[str, ...] = ()

    def part_spec(self, part: str, lr: float) -> TrialSpec:
        """The trial a part names: a contiguous range's label (a group, ``first..last`` or
        ``all``) or ``auto-rgn`` (the one mapping, used to enqueue trials and to decode them)."""
        if part in ("auto-rgn", "auto-snr"):
            return TrialSpec(part, (), lr, part)
        for candidate in contiguous_parts(self.group_names):
            if candidate.label == part:
                return TrialSpec("surgical", candidate.groups, lr, candidate.label)
        raise ValueError(f"unknown part {part!r} for groups {list(self.group_names)}")

    def decode(self, trial: optuna.Trial) -> TrialSpec:
        """Map a live Optuna trial onto a plain spec, suggesting any parameter not yet fixed."""
        if self.strategy == "auto-rgn":
            return TrialSpec("auto-rgn", (), trial.suggest_float(LR, self.lr_min, self.lr_max,
                                                                 log=True), "auto-rgn")
        part = str(trial.suggest_categorical(PART, list(self.parts)))
        if self.strategy == "paper":
            lr = float(trial.suggest_categorical(LR, list(self.lr_choices)))
        else:
            lr = trial.suggest_float(LR, self.lr_min, self.lr_max, log=True)
        return self.part_spec(part, lr)


def encode(space: SearchSpace, spec: TrialSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parameters and user attributes that make ``decode`` return ``spec`` (for enqueueing)."""
    user_attrs: dict[str, Any] = {attrs.METHOD: spec.method, attrs.LABEL: spec.label}
    if space.strategy == "auto-rgn":
        return {LR: spec.lr}, user_attrs
    part = spec.method if spec.method in ("auto-rgn", "auto-snr") else spec.label
    return {PART: part, LR: spec.lr}, user_attrs


def spec_key(spec: TrialSpec, epochs: int) -> str:
    """What makes two trials the same run: method, groups, learning rate (4 significant
    digits) and epochs."""
    return f"{spec.method}|{'+'.join(spec.groups)}|{spec.lr:.4g}|{epochs}"


def find_duplicate(study: optuna.Study, number: int, key: str) -> optuna.trial.FrozenTrial | None:
    """A completed, running or pruned trial of ``study`` other than ``number`` with the same
    key (completed ones first: their outcome can be reused)."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
    others = [t for t in study.get_trials(deepcopy=False, states=states)
              if t.number != number and t.user_attrs.get(attrs.SPEC_KEY) == key]
    others.sort(key=lambda t: (t.state != TrialState.COMPLETE, t.number))
    return others[0] if others else None


@dataclass
class TrainingSetup:
    """Everything a trial trains with; loaded once per worker per job."""

    model: nn.Module
    groups: Sequence[LayerGroup]
    train: Dataset
    val: Dataset
    test: Dataset | None
    epochs: int
    batch_size: int
    seed: int
    device: str | None
    precision: str = "auto"
    deterministic: bool = False
    #: Shared by the trials of one job on one worker (``selector.finetune.activation_cache``).
    activation_cache: ActivationCache | None = None
    #: The job's time budget (``workers.time_budget``): past it, a trial stops after its epoch.
    deadline: float | None = None


BestHook = Callable[[optuna.Trial, TrialSpec, FinetuneResult], None]


def make_objective(
    space: SearchSpace,
    setup: TrainingSetup,
    *,
    worker_id: str,
    on_result: BestHook | None = None,
) -> Callable[[optuna.Trial], float]:
    """The function handed to ``study.optimize``.

    It reports validation accuracy per epoch (the pruner's input), returns the best validation
    accuracy (the paper selects learning rate and epoch on validation), and records the test
    accuracy at that epoch plus cost figures as user attributes. ``on_result`` lets the caller
    keep the weights of a new best trial.
    """

    def objective(trial: optuna.Trial) -> float:
        spec = space.decode(trial)
        key = spec_key(spec, setup.epochs)
        trial.set_user_attr(attrs.SPEC_KEY, key)
        twin = find_duplicate(trial.study, trial.number, key)
        if twin is not None:
            return reuse(trial, twin)
        trial.set_user_attr(attrs.LABEL, spec.label)
        trial.set_user_attr(attrs.METHOD, spec.method)
        trial.set_user_attr(attrs.GROUPS, list(spec.groups) if spec.method == "surgical" else [])
        trial.set_user_attr(attrs.LR, spec.lr)
        trial.set_user_attr(attrs.WORKER, worker_id)
        trial.set_user_attr(attrs.DEVICE, device_label(setup.device))
        trial.set_user_attr(attrs.N_VAL, len(setup.val))  # type: ignore[arg-type]
        trial.set_user_attr(attrs.PART_PARAMS, part_params(spec, setup.groups))
        history: list[float] = []

        def on_epoch(metrics: EpochMetrics) -> bool:
            history.append(metrics.val_acc)
            trial.set_user_attr(attrs.VAL_ACC_PER_EPOCH, list(history))
            trial.report(metrics.val_acc, metrics.epoch)  # always finite: see stop_reason below
            # A trial that has trained all its epochs completes: pruning it then saves nothing.
            if metrics.epoch < setup.epochs and trial.should_prune():
                trial.set_user_attr(
                    attrs.FAIL_REASON,
                    f"pruned at epoch {metrics.epoch}: validation accuracy {metrics.val_acc:.4f} "
                    "below the pruner's threshold",
                )
                raise optuna.TrialPruned(f"pruned at epoch {metrics.epoch}")
            if metrics.epoch < setup.epochs and time_budget.expired(setup.deadline):
                trial.set_user_attr(attrs.STOP_REASON,
                                    time_budget.stop_reason(metrics.epoch, setup.epochs))
                return True  # the trial completes with the epochs it trained
            return False

        started = time.perf_counter()
        try:
            result = run_spec(spec, setup, on_epoch=on_epoch)
        except optuna.TrialPruned:
            trial.set_user_attr(attrs.DURATION_S, time.perf_counter() - started)
            raise
        except Exception as error:  # recorded, then re-raised so Optuna marks the trial FAIL
            trial.set_user_attr(attrs.FAIL_REASON, f"{type(error).__name__}: {error}")
            trial.set_user_attr(attrs.DURATION_S, time.perf_counter() - started)
            raise
        if result.stop_reason == NON_FINITE_LOSS:
            # The engine stopped at the first non-finite loss and kept the finite epochs before
            # it as candidates (as the reference's selection does): the trial completes with
            # them. With none (diverged in epoch 1) there is nothing to keep.
            diverged = f"training diverged in epoch {len(result.epochs) + 1} (non-finite loss)"
            if not result.epochs:
                trial.set_user_attr(attrs.FAIL_REASON, diverged)
                trial.set_user_attr(attrs.DURATION_S, time.perf_counter() - started)
                raise optuna.TrialPruned(diverged)
            trial.set_user_attr(attrs.STOP_REASON,
                                f"{diverged}; epochs 1-{len(result.epochs)} kept as candidates")
        trial.set_user_attr(attrs.VAL_ACC_PER_EPOCH, [m.val_acc for m in result.epochs])
        trial.set_user_attr(attrs.BEST_EPOCH, result.best_epoch)
        trial.set_user_attr(attrs.TEST_ACC, result.test_acc)
        trial.set_user_attr(attrs.TUNED_PARAMS, result.tuned_params)
        trial.set_user_attr(attrs.TUNED_SHARE, result.tuned_share)
        trial.set_user_attr(attrs.PRECISION, result.precision)
        trial.set_user_attr(attrs.DURATION_S, time.perf_counter() - started)
        if result.method != "surgical":  # the groups Auto-RGN/SNR actually changed
            trial.set_user_attr(attrs.GROUPS, list(result.tuned_groups))
        if on_result is not None:
            on_result(trial, spec, result)
        return float(result.best_val_acc)

    return objective


def device_label(device: str | None) -> str:
    """Where a trial trains, as "cpu" or "cuda:N" whatever the worker was started with (no
    device, or "cuda", resolve to the one that is used), so trials of workers on different
    devices can be told apart in the dashboard."""
    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = torch.device("cuda", torch.cuda.current_device())
    return str(resolved)


def part_params(spec: TrialSpec, groups: Sequence[LayerGroup]) -> int:
    """Parameters the spec's part may train, known before it runs (the pruner compares running
    trials by it): its groups for surgical fine-tuning, every group for Auto-RGN/SNR, which
    scale the learning rate of every tensor."""
    if spec.method == "surgical":
        names = set(spec.groups)
    elif spec.method in ("auto-rgn", "auto-snr"):
        names = {g.name for g in groups}
    else:
        return 0
    return sum(g.num_params for g in groups if g.name in names)


def reuse(trial: optuna.Trial, twin: optuna.trial.FrozenTrial) -> float:
    """A duplicate: take a completed twin's outcome without training, or prune when the twin
    is running (its outcome will be on the leaderboard) or was pruned."""
    trial.set_user_attr(attrs.DUPLICATE_OF, twin.number)
    if twin.state != TrialState.COMPLETE or twin.value is None:
        why = f"duplicate of {twin.state.name.lower()} trial {twin.number}"
        trial.set_user_attr(attrs.FAIL_REASON, why)
        raise optuna.TrialPruned(why)
    for name, value in twin.user_attrs.items():
        if name not in (attrs.DUPLICATE_OF, attrs.WORKER) and not name.endswith("_artifact_id"):
            trial.set_user_attr(name, value)
    trial.set_user_attr(attrs.DURATION_S, 0.0)
    return float(twin.value)


def run_spec(
    spec: TrialSpec,
    setup: TrainingSetup,
    *,
    on_epoch: Callable[[EpochMetrics], bool | None] | None = None,
) -> FinetuneResult:
    """Run one trial spec through the engine (a fresh copy of the pretrained weights)."""
    common: dict[str, Any] = dict(
        lr=spec.lr,
        epochs=setup.epochs,
        batch_size=setup.batch_size,
        seed=setup.seed,
        device=setup.device,
        on_epoch=on_epoch,
        groups=list(setup.groups),
        precision=setup.precision,
        deterministic=setup.deterministic,
        # Test accuracy is recorded only at the validation-selected epoch: evaluating the test
        # split every epoch would cost as much as training on 25 images per class.
        test_each_epoch=False,
    )
    if spec.method == "surgical":
        return surgical_finetune(
            setup.model, list(spec.groups), setup.train, setup.val, setup.test, **common,
            activation_cache=setup.activation_cache
        )
    if spec.method == "auto-rgn":
        return auto_rgn_finetune(setup.model, setup.train, setup.val, setup.test, **common)
    if spec.method == "auto-snr":
        return auto_snr_finetune(setup.model, setup.train, setup.val, setup.test, **common)
    return surgical_finetune(setup.model, [], setup.train, setup.val, setup.test, **common)

