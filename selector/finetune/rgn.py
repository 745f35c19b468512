"""Auto-RGN and Auto-SNR: the paper's automatic alternatives to choosing the tuned block.

Both follow the reference code (``get_lr_weights`` and the ``RGN`` / ``eb-criterion`` branches of
``main.py``): at the start of every epoch, score each parameter tensor on 5 shuffled training
batches with the model in eval mode, turn the scores into per-tensor learning rates, and
re-create the optimizer (so Adam's moments reset every epoch). Normalisation parameters are
never scored and stay frozen.

One deliberate difference from the reference: normalisation parameters are recognised by
module type (:func:`selector.layers.module_types.is_normalisation`), not by the letters ``"bn"`` in the
parameter name. The reference's test misses ResNet-50's ``downsample.1`` BatchNorms and every
LayerNorm, which it therefore scores and trains like weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from selector.errors import ConfigError
from selector.finetune.batches import SplitData
from selector.finetune.freeze import make_optimizer, per_tensor_groups
from selector.finetune.records import FinetuneResult
from selector.finetune.training import OnEpoch, TrainConfig, logits_of, run_finetune
from selector.layers.groups import LayerGroup, discover_groups
from selector.layers.module_types import normalisation_parameter_names

__all__ = [
    "auto_rgn_finetune",
    "auto_snr_finetune",
    "gradient_snr",
    "relative_gradient_norms",
    "rgn_weights",
]

SCORE_BATCHES = 5  # the reference scores on the first 5 batches of a shuffled loader
SNR_THRESHOLD = 0.95  # the reference's eb-criterion cut-off
LossFn = Callable[[Tensor, Tensor], Tensor]


def relative_gradient_norms(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                            loss_fn: LossFn | None = None) -> dict[str, float]:
    """Relative gradient norm ``||g||_2 / ||theta||_2`` of every trainable, non-normalisation
    parameter tensor, averaged over ``batches`` (mean of the per-batch ratios, as the reference).

    ``g`` is the gradient of ``loss_fn(logits, y)`` (default: mean cross-entropy) on one batch.
    The model runs in whatever mode it is in (Auto-RGN puts it in eval mode first, as the
    reference) and its ``.grad`` fields are not touched. A tensor that takes no part in the
    forward gets 0; a tensor whose norm is 0 gets ``inf`` if its gradient is not zero (the
    reference would divide by zero; :func:`rgn_weights` maps it to weight 1).
    """
    totals: dict[str, float] = {}
    count = 0
    for grads in _batch_gradients(model, batches, loss_fn):
        count += 1
        for name, param, grad in grads:
            totals[name] = totals.get(name, 0.0) + _ratio(grad, param)
    if not count:
        raise ConfigError("relative_gradient_norms needs at least one batch")
    return {name: total / count for name, total in totals.items()}


def rgn_weights(norms: dict[str, float]) -> dict[str, float]:
    """Divide by the largest finite RGN (no shift of the minimum: the reference's
    normalisation); ``inf`` (a zero-norm tensor with a gradient) becomes 1."""
    finite = [v for v in norms.values() if math.isfinite(v)]
    top = max(finite, default=0.0)
    return {name: (1.0 if not math.isfinite(v) else (v / top if top > 0 else 0.0))
            for name, v in norms.items()}


def gradient_snr(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                 loss_fn: LossFn | None = None) -> dict[str, float]:
    """The reference code's ``eb-criterion`` score per trainable, non-normalisation tensor:
    ``mean(g**2 / (var(g, dim=0) + 1e-8))`` on the mini-batch-mean gradient ``g``, averaged
    over ``batches``.

    This is what the reference computes, not the paper's text: the paper describes a gradient
    signal-to-noise ratio with the noise measured across the examples of a mini-batch, while
    the code measures the (unbiased) variance of the averaged gradient across the tensor's
    first dimension (output channels / rows). A tensor whose first dimension has size 1 gets
    NaN (the variance of one number), which the reference's ``< 0.95`` test keeps trainable;
    we keep that behaviour. Unused tensors get 0.
    """
    totals: dict[str, float] = {}
    count = 0
    for grads in _batch_gradients(model, batches, loss_fn):
        count += 1
        for name, _, grad in grads:
            totals[name] = totals.get(name, 0.0) + _eb_criterion(grad)
    if not count:
        raise ConfigError("gradient_snr needs at least one batch")
    return {name: total / count for name, total in totals.items()}


def auto_rgn_finetune(
    model: nn.Module, train: Dataset[Any], val: Dataset[Any], test: Dataset[Any] | None = None,
    *, lr: float, epochs: int, weight_decay: float = 1e-4, batch_size: int = 64,
    optimizer: str = "adam", bn_mode: str = "eval", seed: int = 0,
    device: str | torch.device | None = None, on_epoch: OnEpoch | None = None,
    groups: Sequence[LayerGroup] | None = None, keep_optimizer_state: bool = False,
    score_batches: int = SCORE_BATCHES, test_each_epoch: bool = True,
    precision: str = "auto", deterministic: bool = False,
) -> FinetuneResult:
    """Auto-RGN: every non-normalisation tensor is tuned with ``lr * RGN / max RGN``, the
    weights recomputed at the start of every epoch (one optimizer group per tensor, the
    optimizer re-created unless ``keep_optimizer_state``). ``result.rgn_profile`` and
    ``EpochMetrics.rgn`` hold each group's mean weight per epoch. Other arguments as
    :func:`selector.surgical_finetune`."""
    config = TrainConfig(lr, epochs, weight_decay, batch_size, optimizer, bn_mode, seed, device,
                         cache_prefix=False, test_each_epoch=test_each_epoch,
                         precision=precision, deterministic=deterministic)
    all_groups = list(groups) if groups is not None else discover_groups(model)
    policy = _RgnPolicy(_scored_names(model), config, score_batches, groups=all_groups,
                        keep_state=keep_optimizer_state)
    result = run_finetune(model, train, val, test, method="auto-rgn", tuned_groups=[],
                          policy=policy, config=config, on_epoch=on_epoch)
    return _with_groups(result, all_groups)


def auto_snr_finetune(
    model: nn.Module, train: Dataset[Any], val: Dataset[Any], test: Dataset[Any] | None = None,
    *, lr: float, epochs: int, weight_decay: float = 1e-4, batch_size: int = 64,
    optimizer: str = "adam", bn_mode: str = "eval", seed: int = 0,
    device: str | torch.device | None = None, on_epoch: OnEpoch | None = None,
    groups: Sequence[LayerGroup] | None = None, threshold: float = SNR_THRESHOLD,
    score_batches: int = SCORE_BATCHES, test_each_epoch: bool = True,
    precision: str = "auto", deterministic: bool = False,
) -> FinetuneResult:
    """Auto-SNR (the reference's ``eb-criterion``, see :func:`gradient_snr`): at the start of
    every epoch, tensors scoring under ``threshold`` get learning rate 0 for that epoch, the
    others ``lr``. ``tuned_parameter_names`` lists every tensor trained in at least one epoch.
    Other arguments as :func:`selector.surgical_finetune`."""
    config = TrainConfig(lr, epochs, weight_decay, batch_size, optimizer, bn_mode, seed, device,
                         cache_prefix=False, test_each_epoch=test_each_epoch,
                         precision=precision, deterministic=deterministic)
    all_groups = list(groups) if groups is not None else discover_groups(model)
    policy = _SnrPolicy(_scored_names(model), config, score_batches, threshold=threshold)
    result = run_finetune(model, train, val, test, method="auto-snr", tuned_groups=[],
                          policy=policy, config=config, on_epoch=on_epoch)
    return _with_groups(result, all_groups)


# --- policies -----------------------------------------------------------------------------


@dataclass
class _ScoringPolicy:
    """What Auto-RGN and Auto-SNR share: every scored tensor is trainable, and every epoch
    starts by scoring them on a few shuffled training batches with the model in eval mode."""

    names: list[str]
    config: TrainConfig
    n_batches: int
    generator: torch.Generator = field(init=False)

    def __post_init__(self) -> None:
        # Its own stream: the training order stays the one surgical_finetune uses for the seed.
        self.generator = torch.Generator().manual_seed(self.config.seed + 7919)

    def scoring_batches(self, model: nn.Module, train: SplitData) -> list[tuple[Tensor, Tensor]]:
        """Put ``model`` in eval mode (as the reference scores) and draw this epoch's batches."""
        model.eval()
        return _shuffled_batches(train, self.n_batches, self.config.batch_size, self.generator)

    def trainable_names(self) -> list[str]:
        return list(self.names)

    def tuned_names(self) -> list[str]:
        return list(self.names)


@dataclass
class _RgnPolicy(_ScoringPolicy):
    groups: list[LayerGroup] = field(kw_only=True)
    keep_state: bool = field(kw_only=True)

    def begin_epoch(self, epoch: int, model: nn.Module, train: SplitData,
                    previous: torch.optim.Optimizer | None
                    ) -> tuple[torch.optim.Optimizer, dict[str, float] | None]:
        weights = rgn_weights(relative_gradient_norms(model, self.scoring_batches(model, train)))
        param_groups = per_tensor_groups(model, weights, self.config.lr)
        if self.keep_state and previous is not None:
            for old, new in zip(previous.param_groups, param_groups, strict=True):
                old["lr"] = new["lr"]
            optimizer = previous
        else:
            optimizer = make_optimizer(self.config.optimizer, param_groups, lr=self.config.lr,
                                       weight_decay=self.config.weight_decay)
        return optimizer, group_profile(weights, self.groups)


@dataclass
class _SnrPolicy(_ScoringPolicy):
    threshold: float = field(kw_only=True)
    kept: set[str] = field(default_factory=set)

    def begin_epoch(self, epoch: int, model: nn.Module, train: SplitData,
                    previous: torch.optim.Optimizer | None
                    ) -> tuple[torch.optim.Optimizer, dict[str, float] | None]:
        scores = gradient_snr(model, self.scoring_batches(model, train))
        keep = {n for n, v in scores.items() if not v < self.threshold}  # NaN is kept
        self.kept |= keep
        params = dict(model.named_parameters())
        param_groups = [
            {"params": [params[n] for n in self.names if (n in keep) == on], "lr": lr}
            for on, lr in ((True, self.config.lr), (False, 0.0))
        ]
        param_groups = [g for g in param_groups if g["params"]]
        return make_optimizer(self.config.optimizer, param_groups, lr=self.config.lr,
                              weight_decay=self.config.weight_decay), None

    def tuned_names(self) -> list[str]:
        return [n for n in self.names if n in self.kept]


# --- helpers ------------------------------------------------------------------------------


def group_profile(weights: dict[str, float], groups: Sequence[LayerGroup]) -> dict[str, float]:
    """Each group's mean weight over its scored tensors (groups with none are left out)."""
    profile = {}
    for group in groups:
        values = [weights[p] for p in group.parameters if p in weights]
        if values:
            profile[group.name] = sum(values) / len(values)
    return profile


def _scored_names(model: nn.Module) -> list[str]:
    norms = normalisation_parameter_names(model)
    return [n for n, _ in model.named_parameters() if n not in norms]


def _batch_gradients(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]],
                     loss_fn: LossFn | None
                     ) -> Iterator[list[tuple[str, nn.Parameter, Tensor | None]]]:
    norms = normalisation_parameter_names(model)
    scored = [(n, p) for n, p in model.named_parameters() if p.requires_grad and n not in norms]
    if not scored:
        return
    device = scored[0][1].device
    loss_fn = loss_fn or F.cross_entropy
    for x, y in batches:
        loss = loss_fn(logits_of(model(x.to(device))), y.to(device))
        grads = torch.autograd.grad(loss, [p for _, p in scored], allow_unused=True)
        yield [(name, param, grad) for (name, param), grad in zip(scored, grads, strict=True)]


def _ratio(grad: Tensor | None, param: Tensor) -> float:
    if grad is None:
        return 0.0
    g, p = float(grad.detach().norm()), float(param.detach().norm())
    if p == 0.0:
        return math.inf if g > 0 else 0.0
    return g / p


def _eb_criterion(grad: Tensor | None) -> float:
    if grad is None:
        return 0.0
    g = grad.detach().reshape(1) if grad.dim() == 0 else grad.detach()
    return float((g * g / (torch.var(g, dim=0, keepdim=True) + 1e-8)).mean())


def _shuffled_batches(train: SplitData, k: int, batch_size: int, generator: torch.Generator
                      ) -> list[tuple[Tensor, Tensor]]:
    order = torch.randperm(train.n, generator=generator)[: k * batch_size]
    return [train.batch(order[i:i + batch_size]) for i in range(0, len(order), batch_size)]


def _with_groups(result: FinetuneResult, groups: Sequence[LayerGroup]) -> FinetuneResult:
    tuned = set(result.tuned_parameter_names)
    names = [g.name for g in groups if tuned.intersection(g.parameters)]
    return dataclasses.replace(result, tuned_groups=names)
