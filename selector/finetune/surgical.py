"""Surgical fine-tuning (Lee et al., ICLR 2023) following the reference code's protocol.

One call = one (tuned part, learning rate) cell of the paper's grid:

- the caller's model is deep-copied, so every call starts from the same pretrained weights
  (the reference reloads the model for every cell);
- parameters outside the tuned groups get ``requires_grad=False`` (:func:`set_trainable`);
- ``bn_mode="eval"`` (the reference's ``train_mode: eval``): ``model.train()`` is never called,
  so BatchNorm running statistics stay frozen and dropout is off; ``"train"`` calls it every epoch;
- Adam with coupled weight decay 1e-4, constant learning rate, batch 64, cross-entropy, no
  augmentation, examples shuffled every epoch by a ``torch.Generator`` seeded with ``seed``;
- after every epoch val (and test) are evaluated; the result is the epoch with the best val
  accuracy among the trained epochs 1..E, ties going to the earliest (``np.argmax`` in the
  reference). The untouched model's val accuracy is reported as ``initial_val_acc`` but is not a
  candidate: "no fine-tuning" is its own trial (``tune=[]``), and letting epoch 0 win would make
  every trial at least as good as that baseline by construction. ``best_epoch`` is 0 only when
  nothing was trained.

The loop itself lives in :mod:`selector.finetune.training`; Auto-RGN and Auto-SNR (:mod:`selector.finetune.rgn`)
reuse it with their own epoch policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from selector.finetune.activation_cache import ActivationCache
from selector.finetune.batches import SplitData
from selector.finetune.freeze import make_optimizer, resolve_tune, tuned_parameter_names
from selector.finetune.records import FinetuneResult
from selector.finetune.training import (
    OnEpoch,
    TrainConfig,
    check_model_accepts,
    eval_batch_size,
    evaluate_split,
    run_finetune,
)
from selector.layers.groups import LayerGroup, discover_groups

__all__ = ["FixedPolicy", "evaluate", "surgical_finetune"]


@dataclass
class FixedPolicy:
    """Surgical fine-tuning: one optimizer over the tuned parameters for the whole run."""

    names: list[str]
    config: TrainConfig

    def begin_epoch(self, epoch: int, model: nn.Module, train: SplitData,
                    previous: torch.optim.Optimizer | None
                    ) -> tuple[torch.optim.Optimizer, dict[str, float] | None]:
        if previous is not None:
            return previous, None
        wanted = set(self.names)
        params = [p for n, p in model.named_parameters() if n in wanted]
        return make_optimizer(self.config.optimizer, params, lr=self.config.lr,
                              weight_decay=self.config.weight_decay), None

    def trainable_names(self) -> list[str]:
        return list(self.names)

    def tuned_names(self) -> list[str]:
        return list(self.names)


def surgical_finetune(
    model: nn.Module,
    tune: str | Iterable[LayerGroup | str],
    train: Dataset[Any],
    val: Dataset[Any],
    test: Dataset[Any] | None = None,
    *,
    lr: float,
    epochs: int,
    weight_decay: float = 1e-4,
    batch_size: int = 64,
    optimizer: str = "adam",
    bn_mode: str = "eval",
    seed: int = 0,
    device: str | torch.device | None = None,
    on_epoch: OnEpoch | None = None,
    groups: Sequence[LayerGroup] | None = None,
    cache_prefix: bool = True,
    test_each_epoch: bool = True,
    precision: str = "auto",
    deterministic: bool = False,
    activation_cache: ActivationCache | None = None,
) -> FinetuneResult:
    """Fine-tune only the layer groups in ``tune`` on a deep copy of ``model``.

    ``tune``: group names or :class:`LayerGroup` objects, ``"all"`` for every group, ``[]`` for
    evaluation only (method ``"none"``, the no-fine-tuning baseline). ``groups`` defaults to
    ``discover_groups(model)``. ``on_epoch(metrics)`` returning True stops after that epoch;
    its exceptions propagate (the workers raise ``optuna.TrialPruned`` there).
    ``cache_prefix``: reuse the frozen prefix's activations when exact (``bn_mode="eval"``, see
    :mod:`selector.finetune.prefix_cache`). ``test_each_epoch=False`` evaluates test only once, at the
    best epoch (then ``EpochMetrics.test_acc`` is None). ``precision``: "auto" | "fp32" |
    "bf16" | "fp16" (:mod:`selector.finetune.precision`; ``result.precision`` says what ran);
    ``deterministic`` keeps ``cudnn.benchmark`` off on CUDA. ``activation_cache``: share the
    prefix's captured inputs with other trials on the same ``model`` and data
    (:mod:`selector.finetune.activation_cache`; results are bit-identical).
    """
    config = TrainConfig(lr, epochs, weight_decay, batch_size, optimizer, bn_mode, seed, device,
                         cache_prefix, test_each_epoch, precision, deterministic)
    all_groups = list(groups) if groups is not None else discover_groups(model)
    chosen = resolve_tune(all_groups, tune)
    names = tuned_parameter_names(model, chosen)
    return run_finetune(model, train, val, test, method="surgical" if names else "none",
                        tuned_groups=[g.name for g in chosen], policy=FixedPolicy(names, config),
                        config=config, on_epoch=on_epoch, activation_cache=activation_cache)


def evaluate(model: nn.Module, dataset: Dataset[Any], *, batch_size: int | None = None,
             device: str | torch.device | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset``, in eval mode, no grad.

    ``device=None`` uses the device the model's parameters are on (the caller's model is not
    moved); the modules' train/eval flags are restored afterwards.
    """
    first = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (
        first.device if first is not None else torch.device("cpu"))
    model.to(dev)
    split = SplitData(dataset, "dataset").to(dev)
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        check_model_accepts(model, {"dataset": split}, probe="dataset")
        return evaluate_split(model, split, batch_size or eval_batch_size(dev))
    finally:
        for module, training in flags:
            module.training = training


