"""The fine-tuning loop shared by surgical fine-tuning, Auto-RGN and Auto-SNR.

:func:`run_finetune` owns everything the three methods have in common: the deep copy, the
explicit freezing step, the checks on the data, the seeded shuffling, the optional prefix cache,
per-epoch evaluation and best-epoch selection. What differs between methods is an
:class:`EpochPolicy`, asked at the start of every epoch for the optimizer to use.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from selector.errors import ConfigError, DataError, ImageShapeError
from selector.finetune.activation_cache import ActivationCache
from selector.finetune.batches import SplitData
from selector.finetune.freeze import OPTIMIZERS, set_trainable
from selector.finetune.precision import PRECISIONS, Precision, cudnn_benchmark, resolve_precision
from selector.finetune.prefix_cache import build_prefix_cache
from selector.finetune.records import (
    NON_FINITE_LOSS,
    STOPPED_BY_CALLER,
    EpochMetrics,
    FinetuneResult,
)

__all__ = [
    "CPU_EVAL_BATCH_SIZE",
    "EVAL_BATCH_SIZE",
    "EpochPolicy",
    "OnEpoch",
    "TrainConfig",
    "check_model_accepts",
    "eval_batch_size",
    "evaluate_split",
    "logits_of",
    "resolve_device",
    "run_finetune",
]

#: Forward-only batch size on accelerators.
EVAL_BATCH_SIZE = 256
#: ... and on a CPU, where a batch's activations should fit the core's cache: for the built-in
#: ResNet on one thread, 128 images cost 30% less per image than 256 (64 is no cheaper).
#: Predictions do not depend on it (bit-identical logits for the built-in ResNet).
CPU_EVAL_BATCH_SIZE = 128


def eval_batch_size(device: torch.device) -> int:
    """The forward-only batch size for ``device`` (see :data:`CPU_EVAL_BATCH_SIZE`)."""
    return CPU_EVAL_BATCH_SIZE if device.type == "cpu" else EVAL_BATCH_SIZE

OnEpoch = Callable[[EpochMetrics], "bool | None"]


@dataclass(frozen=True)
class TrainConfig:
    """The keyword arguments of one fine-tuning call, validated once."""

    lr: float
    epochs: int
    weight_decay: float = 1e-4
    batch_size: int = 64
    optimizer: str = "adam"
    bn_mode: str = "eval"
    seed: int = 0
    device: str | torch.device | None = None
    cache_prefix: bool = True
    test_each_epoch: bool = True
    precision: str = "auto"
    deterministic: bool = False

    def validate(self) -> None:
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ConfigError(f"lr must be a finite number >= 0, got {self.lr!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ConfigError(f"epochs must be an integer >= 0, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.bn_mode not in ("eval", "train"):
            raise ConfigError(f"bn_mode must be 'eval' or 'train', got {self.bn_mode!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


class EpochPolicy(Protocol):
    """What changes from epoch to epoch: the optimizer (and Auto-RGN's per-group weights)."""

    def begin_epoch(self, epoch: int, model: nn.Module, train: SplitData,
                    previous: torch.optim.Optimizer | None
                    ) -> tuple[torch.optim.Optimizer, dict[str, float] | None]: ...

    def trainable_names(self) -> list[str]:
        """Parameters with ``requires_grad=True`` during the run (all others are frozen)."""
        ...

    def tuned_names(self) -> list[str]:
        """Parameters reported as tuned, known after the run."""
        ...


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def run_finetune(model: nn.Module, train: Dataset[Any], val: Dataset[Any],
                 test: Dataset[Any] | None, *, method: str, tuned_groups: list[str],
                 policy: EpochPolicy, config: TrainConfig, on_epoch: OnEpoch | None = None,
                 activation_cache: ActivationCache | None = None) -> FinetuneResult:
    """The training loop shared by surgical fine-tuning, Auto-RGN and Auto-SNR.
    ``activation_cache``: the frozen prefix's captured inputs shared across trials."""
    started = time.perf_counter()
    config.validate()
    device = resolve_device(config.device)
    splits = _make_splits(train, val, test, device)
    work = fresh_copy(model).to(device)
    trainable = policy.trainable_names()
    set_trainable(work, trainable)
    work.eval()
    initial = {k: v.detach().to("cpu", copy=True) for k, v in work.state_dict().items()}
    check_model_accepts(work, splits)
    train_now = bool(trainable) and config.epochs > 0 and method != "none"
    precision = resolve_precision(config.precision, device, work)
    precision.prepare_model(work)
    run = _Run(work, splits, config, device, precision, initial)
    with torch.random.fork_rng(devices=_cuda_indices(device)), \
            cudnn_benchmark(device, config.deterministic):
        torch.manual_seed(config.seed)
        # a random transform makes the prefix's output differ between epochs: never cache it
        random = any(split.random for split in splits.values())
        if train_now and config.bn_mode == "eval" and config.cache_prefix and not random:
            # the test split is captured when first evaluated: a trial stopped early never is
            built = build_prefix_cache(work, trainable, splits, batch_size=eval_batch_size(device),
                                       store=activation_cache, deferred=("test",))
            if built is not None:
                run.cache, run.splits = built
        try:
            _, initial_val_acc = run.untouched_val(activation_cache)
            if train_now:
                run.train(policy, on_epoch)
            test_acc = run.final_test_acc()
        finally:
            if run.cache is not None:
                run.cache.close()
    state = {**initial, **run.best_state}
    names = set(policy.tuned_names()) if method != "none" else set()
    ordered = [n for n, _ in model.named_parameters() if n in names]
    sizes = {n: p.numel() for n, p in model.named_parameters()}
    total = sum(sizes.values())
    tuned = sum(sizes[n] for n in ordered)
    best = run.best_epoch
    return FinetuneResult(
        method=method, tuned_groups=tuned_groups, lr=config.lr,
        epochs=run.history, best_epoch=best,
        best_val_acc=run.history[best - 1].val_acc if best else initial_val_acc,
        test_acc=test_acc, initial_val_acc=initial_val_acc, tuned_params=tuned,
        total_params=total, tuned_share=tuned / total if total else 0.0,
        wall_seconds=time.perf_counter() - started, state_dict=state,
        tuned_parameter_names=ordered,
        rgn_profile=[m.rgn for m in run.history if m.rgn is not None] or None,
        precision=precision.name, stop_reason=run.stop_reason)


@dataclass
class _Run:
    """Mutable state of one fine-tuning run (kept out of the public result types)."""

    model: nn.Module
    splits: dict[str, SplitData]
    config: TrainConfig
    device: torch.device
    precision: Precision
    initial: dict[str, Tensor]  # CPU copy of the starting weights
    cache: Any = None
    stop_reason: str | None = None
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0
    best_state: dict[str, Tensor] = field(default_factory=dict)
    scaler: Any = None  # a GradScaler for fp16, False once known not to need one

    def forward(self, x: Tensor) -> Tensor:
        """Logits in fp32 (under autocast when the precision asks for it)."""
        with self.precision.autocast():
            if self.cache is not None:
                out = self.cache(x)
            else:
                out = self.model(self.precision.prepare_input(x))
        return logits_of(out).float()

    def untouched_val(self, store: ActivationCache | None) -> tuple[float, float]:
        """The untouched model's validation loss and accuracy: the same for every trial that
        evaluates it the same way (entry, precision, device), so computed once per store."""
        if store is None:
            return self.eval("val")
        key = ("untouched", "val", self.cache.entry if self.cache is not None else None,
               self.precision.name, str(self.device), self.splits["val"].n)
        return store.remember(key, lambda: self.eval("val"))

    def eval(self, split: str) -> tuple[float, float]:
        if self.cache is not None and self.cache.is_deferred(split):
            self.splits[split] = self.cache.materialize(split)
        return evaluate_split(self.forward, self.splits[split], eval_batch_size(self.device))

    def train(self, policy: EpochPolicy, on_epoch: OnEpoch | None) -> None:
        generator = torch.Generator().manual_seed(self.config.seed)
        optimizer: torch.optim.Optimizer | None = None
        train = self.splits["train"]
        for epoch in range(1, self.config.epochs + 1):
            started = time.perf_counter()
            optimizer, rgn = policy.begin_epoch(epoch, self.model, train, optimizer)
            if self.config.bn_mode == "train":
                self.model.train()
            order = torch.randperm(train.n, generator=generator)
            loss, acc = self._train_epoch(optimizer, order)
            self.model.eval()
            val_loss, val_acc = (self.eval("val") if math.isfinite(loss)
                                 else (math.nan, math.nan))
            if not (math.isfinite(loss) and math.isfinite(val_loss)):
                # Diverged: these weights are no candidate (argmax over NaN logits is noise) and
                # later epochs cannot recover them. The finite epochs so far stay candidates.
                self.stop_reason = NON_FINITE_LOSS
                break
            test_acc = (self.eval("test")[1] if "test" in self.splits
                        and self.config.test_each_epoch else None)
            metrics = EpochMetrics(epoch, loss, acc, val_loss, val_acc, test_acc,
                                   time.perf_counter() - started, rgn)
            self.history.append(metrics)
            if not self.best_epoch or val_acc > self.history[self.best_epoch - 1].val_acc:
                self.best_epoch, self.best_state = epoch, self._snapshot()
            if on_epoch is not None and on_epoch(metrics):
                self.stop_reason = STOPPED_BY_CALLER
                break

    def final_test_acc(self) -> float | None:
        if "test" not in self.splits:
            return None
        if self.best_epoch and self.config.test_each_epoch:
            return self.history[self.best_epoch - 1].test_acc
        # load the best weights back (the starting ones when no epoch is a candidate: training
        # may have diverged in epoch 1) and evaluate once
        if self.best_epoch or self.stop_reason == NON_FINITE_LOSS:
            current = self.model.state_dict()
            with torch.no_grad():
                for key, value in (self.best_state if self.best_epoch else self.initial).items():
                    current[key].copy_(value)
        return self.eval("test")[1]

    def _train_epoch(self, optimizer: torch.optim.Optimizer, order: Tensor) -> tuple[float, float]:
        split = self.splits["train"]
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        if self.scaler is None:
            self.scaler = self.precision.scaler() or False
        for x, y in split.batches(self.config.batch_size, order):
            logits = self.forward(x)
            loss = F.cross_entropy(logits, y)
            if loss.requires_grad:  # False when no tuned parameter is on the forward path
                optimizer.zero_grad(set_to_none=True)
                if self.scaler:  # fp16: scale the loss so small gradients survive
                    self.scaler.scale(loss).backward()
                    self.scaler.step(optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            total_loss += loss.detach() * len(y)
            correct += (logits.detach().argmax(dim=1) == y).sum()
        return float(total_loss) / split.n, float(correct) / split.n

    def _snapshot(self) -> dict[str, Tensor]:
        """CPU copies of what training can change: trainable parameters, and buffers too when
        BatchNorm statistics move (``bn_mode="train"``)."""
        state = self.model.state_dict(keep_vars=True)
        return {
            key: value.detach().to("cpu", copy=True)
            for key, value in state.items()
            if (value.requires_grad if isinstance(value, nn.Parameter)
                else self.config.bn_mode == "train")
        }


def evaluate_split(forward: Callable[[Tensor], Any], split: SplitData, batch_size: int
              ) -> tuple[float, float]:
    total_loss, correct = 0.0, 0
    with torch.no_grad():
        for x, y in split.batches(batch_size):
            logits = logits_of(forward(x))
            total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(dim=1) == y).sum())
    return total_loss / split.n, correct / split.n


def logits_of(output: Any) -> Tensor:
    """Logits from a model's output: a tensor, GoogLeNet/Inception's namedtuple (``.logits``;
    auxiliary logits are ignored), a tuple (first element) or a dict with ``"logits"``."""
    if isinstance(output, Tensor):
        return output
    if hasattr(output, "logits"):
        return output.logits
    if isinstance(output, dict) and "logits" in output:
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise DataError(f"cannot find logits in the model's output of type {type(output).__name__}")


def _make_splits(train: Dataset[Any], val: Dataset[Any], test: Dataset[Any] | None,
                 device: torch.device) -> dict[str, SplitData]:
    splits = {"train": SplitData(train, "train"), "val": SplitData(val, "val")}
    if test is not None:
        splits["test"] = SplitData(test, "test")
    shape = splits["train"].sample_shape
    for name, split in splits.items():
        if split.sample_shape != shape:
            raise ImageShapeError(f"{name} images have shape {split.sample_shape} but train "
                                  f"images have shape {shape}")
        split.to(device)
    return splits


def check_model_accepts(model: nn.Module, splits: dict[str, SplitData], probe: str = "val"
                         ) -> None:
    """One forward on two images: readable errors for shape mistakes, and the label range
    check of every split against the model's number of outputs."""
    x, _ = splits[probe].batch(torch.arange(min(2, splits[probe].n)))
    try:
        with torch.no_grad():
            logits = logits_of(model(x))
    except RuntimeError as exc:
        raise ImageShapeError(
            f"the model rejected images of shape {tuple(x.shape[1:])} (batch {tuple(x.shape)}): "
            f"{str(exc).splitlines()[0]}") from exc
    if logits.dim() != 2:
        raise DataError(f"the model's output has shape {tuple(logits.shape)}; a classifier must "
                        "return (batch, num_classes) logits")
    for split in splits.values():
        split.check_labels(logits.shape[1])


def fresh_copy(model: nn.Module) -> nn.Module:
    """A deep copy with leaf parameters. ``copy.deepcopy`` of a loaded TorchScript module gives
    parameters that are not leaves (no optimizer takes them), so those round-trip through
    ``torch.jit.save``/``load`` instead."""
    if isinstance(model, torch.jit.ScriptModule):
        import io
        import warnings

        buffer = io.BytesIO()
        with warnings.catch_warnings():  # torch deprecates TorchScript; we still read it
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(model, buffer)
            buffer.seek(0)
            return torch.jit.load(buffer, map_location="cpu")  # keeps each module's mode
    return copy.deepcopy(model)


def _cuda_indices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
