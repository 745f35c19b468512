"""What a fine-tuning run returns: per-epoch metrics and the run's result (plain records)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

__all__ = ["NON_FINITE_LOSS", "STOPPED_BY_CALLER", "EpochMetrics", "FinetuneResult"]

#: ``FinetuneResult.stop_reason`` when the training or validation loss of epoch
#: ``len(result.epochs) + 1`` was NaN or infinite (a learning rate too high for the model): that
#: epoch is not a candidate and training stopped there; the finite epochs before it are kept,
#: as the reference's selection over epochs keeps them.
NON_FINITE_LOSS = "non-finite loss"
#: ``FinetuneResult.stop_reason`` when ``on_epoch`` returned True.
STOPPED_BY_CALLER = "stopped by on_epoch"


@dataclass
class EpochMetrics:
    epoch: int  # 1-based
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    test_acc: float | None
    seconds: float
    rgn: dict[str, float] | None = None  # per-group mean normalised RGN weight (Auto-RGN)


@dataclass
class FinetuneResult:
    method: str  # "none" | "surgical" | "auto-rgn" | "auto-snr"
    tuned_groups: list[str]
    lr: float
    epochs: list[EpochMetrics]
    best_epoch: int  # 1-based; 0 = nothing trained
    best_val_acc: float
    test_acc: float | None  # at best_epoch
    initial_val_acc: float
    tuned_params: int
    total_params: int
    tuned_share: float
    wall_seconds: float
    state_dict: dict[str, Tensor]  # full weights at best_epoch, CPU
    tuned_parameter_names: list[str]
    rgn_profile: list[dict[str, float]] | None = None
    precision: str = "fp32"  # what the training ran in: fp32 | bf16 | fp16
    stop_reason: str | None = None  # None: every epoch ran; NON_FINITE_LOSS | STOPPED_BY_CALLER
