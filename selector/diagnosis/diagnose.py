"""``diagnose_shift``: locate a distribution shift from forward passes alone (no training).

A pretrained BatchNorm model carries its source data's per-channel statistics (the running
means and variances). Comparing the target data's activations with them, layer by layer, shows
where the target stops looking like the source: at the first stage for corruptions
(input-level), only in later stages for new subpopulations (feature-level), nowhere for
relabelled classes, whose signature is instead a model that is confidently wrong
(output-level). Lee et al. (ICLR 2023) tie each of these kinds to the part worth tuning.

Cost: one forward pass over at most ``max_examples`` target images, one more over as many
source images when ``source`` is given; the bootstrap works on per-chunk sums and takes
milliseconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from selector.diagnosis.divergence import analytic_null, bootstrap_weights, layer_values, sym_kl
from selector.diagnosis.findings import (
    GroupDivergence,
    LabelSignals,
    LayerDivergence,
    ShiftDiagnosis,
)
from selector.diagnosis.moments import PassRecord, record_pass, running_stats_layers, subsample
from selector.diagnosis.rule import NULL_QUANTILE, RATIO_FLOOR, decide, explain, label_z, rank_parts
from selector.layers.groups import LayerGroup, discover_groups
from selector.layers.module_types import is_normalisation

__all__ = ["diagnose_shift"]

REPLICATES = 500


def diagnose_shift(model: nn.Module, data: Dataset, *, groups: Sequence[LayerGroup] | None = None,
                   max_examples: int = 1000, source: Dataset | None = None, seed: int = 0,
                   replicates: int = REPLICATES) -> ShiftDiagnosis:
    """Diagnose where the shift from the model's source data to ``data`` lives.

    ``data`` and ``source`` are map-style datasets of (image, label) pairs; at most
    ``max_examples`` of each are used (a seeded random subset). ``source``: clean images of the
    source distribution, the null's reference (required for models without running
    statistics). ``groups``: the layer groups the ranking is made of (default: stage groups).
    The model is left exactly as it was (eval-mode pass, pre-hooks only, flags restored).
    """
    start = time.perf_counter()
    groups = list(groups) if groups is not None else discover_groups(model)
    names = [g.name for g in groups]
    head = names[-1]
    gen = torch.Generator().manual_seed(seed)
    running = running_stats_layers(model)
    if running:
        watched: dict[str, nn.Module] = dict(running)
        null = "source-bootstrap" if source is not None else "analytic"
    else:
        watched = {n: m for n, m in model.named_modules() if is_normalisation(m)}
        null = "source-two-sample" if (watched and source is not None) else "none"
    reason = None
    if null == "none":
        reason = ("the model has no normalisation layer" if not watched else
                  "no normalisation layer keeps running statistics (LayerNorm, GroupNorm, ...) "
                  "and no source data was given to compare with: pass a few hundred clean "
                  "source images as source=")
        watched = {}
    try:
        target = record_pass(model, subsample(data, max_examples, seed), watched,
                             num_outputs=None)
        src = (record_pass(model, subsample(source, max_examples, seed + 1), watched,
                           num_outputs=None) if source is not None and null != "none" else None)
    except RuntimeError as exc:  # TorchScript modules refuse Python hooks
        if "hook" not in str(exc).lower():
            raise
        reason = f"its normalisation layers cannot be hooked ({exc})"
        null, watched = "none", {}
        target = record_pass(model, subsample(data, max_examples, seed), {}, num_outputs=None)
        src = None
    labels = _label_signals(target, src)
    layer_group = _layer_groups(target.order, groups) if null != "none" else {}
    if null != "none" and not layer_group:
        reason = ("no watched normalisation layer lies in a layer group" if target.order else
                  "the normalisation layers never ran through Python hooks (a TorchScript "
                  "model?): nothing was measured")
        null = "none"
    if null == "none":
        return ShiftDiagnosis(
            kind="unavailable", ranking=rank_parts(names, None, "unavailable"), groups=(),
            labels=labels, confidence=0.0, null=null, examples=target.n,
            source_examples=src.n if src else None, forward_passes=1 + (src is not None),
            seconds=time.perf_counter() - start, reason=reason,
            explanation=explain("unavailable", "all", earliest=None, ratio=None,
                                threshold_ratio=None, reference="", previous=None,
                                accuracy=labels.accuracy, confidence=labels.confidence,
                                null=null, reason=reason))

    t_weights = bootstrap_weights(target.chunk_size, target.n, replicates, gen)
    s_weights: tuple[Tensor, Tensor | None] | None = None
    if src is not None:  # pseudo-targets of the target's size (and pseudo-sources of the source's)
        s_weights = (bootstrap_weights(src.chunk_size, target.n, replicates, gen),
                     bootstrap_weights(src.chunk_size, src.n, replicates, gen)
                     if null == "source-two-sample" else None)
    observed: dict[str, float] = {}
    null_draws: dict[str, Tensor] = {}
    target_draws: dict[str, Tensor] = {}
    for name in target.order:
        value, null_draws[name], target_draws[name] = _layer_statistics(
            name, watched[name], target, src, s_weights, t_weights, gen)
        observed[name] = value

    results: list[GroupDivergence] = []
    group_null: list[Tensor] = []
    group_target: list[Tensor] = []
    for group in names:
        members = [n for n in target.order if layer_group.get(n) == group]
        if not members:
            results.append(GroupDivergence(group, 0.0, 0.0, 0.0, 0.0, 0.0, False, ()))
            group_null.append(torch.zeros(replicates, dtype=torch.float64))
            group_target.append(torch.zeros(replicates, dtype=torch.float64))
            continue
        nd = torch.stack([null_draws[n] for n in members]).mean(0)
        td = torch.stack([target_draws[n] for n in members]).mean(0)
        value = sum(observed[n] for n in members) / len(members)
        null_mean = float(nd.mean())
        null_high = float(torch.quantile(nd, NULL_QUANTILE))
        threshold = max(null_high, RATIO_FLOOR * null_mean)
        layers = tuple(LayerDivergence(
            name=n, group=group, channels=target.layers[n].channels, value=observed[n],
            null_mean=float(null_draws[n].mean()),
            null_high=float(torch.quantile(null_draws[n], NULL_QUANTILE))) for n in members)
        results.append(GroupDivergence(
            name=group, value=value, null_mean=null_mean, null_high=null_high,
            threshold=threshold, ratio=value / null_mean if null_mean > 0 else math.inf,
            exceeds=value > threshold, layers=layers))
        group_null.append(nd)
        group_target.append(td)

    watched_groups = [bool(g.layers) for g in results]
    kind, top, earliest = decide(names, [g.exceeds for g in results], watched_groups,
                                 labels.labels_moved, head)
    confidence = _stability(top, names, results, group_target, watched_groups, target, src,
                            t_weights, head)
    decisive = next((g for g in results if g.name == earliest), None)
    previous = None
    if decisive is not None:
        before = [g.name for g in results[:names.index(decisive.name)] if g.layers]
        previous = before[-1] if before else None
    reference = ("the source data's statistics" if null == "source-two-sample"
                 else "the running statistics")
    return ShiftDiagnosis(
        kind=kind, ranking=rank_parts(names, top, kind), groups=tuple(results), labels=labels,
        confidence=confidence, null=null, examples=target.n,
        source_examples=src.n if src is not None else None,
        forward_passes=1 + (src is not None), seconds=time.perf_counter() - start,
        explanation=explain(
            kind, top, earliest=earliest,
            ratio=decisive.ratio if decisive else None,
            threshold_ratio=(decisive.threshold / decisive.null_mean
                             if decisive and decisive.null_mean > 0 else None),
            reference=reference, previous=previous, accuracy=labels.accuracy,
            confidence=labels.confidence, null=null, reason=None,
            source_accuracy=labels.source_accuracy,
            confidently_wrong=labels.confidently_wrong))


def _layer_statistics(name: str, module: nn.Module, target: PassRecord, src: PassRecord | None,
                      s_weights: tuple[Tensor, Tensor | None] | None, t_weights: Tensor,
                      gen: torch.Generator) -> tuple[float, Tensor, Tensor]:
    """(observed value, null draws, target bootstrap draws) of one watched layer."""
    eps = float(getattr(module, "eps", 1e-5))
    moments = target.layers[name]
    replicates = len(t_weights)
    if src is not None and s_weights is not None and s_weights[1] is not None:
        # no running statistics: the reference is the source sample itself
        ref_mean, ref_var = src.layers[name].moments()
        m1, v1 = src.layers[name].moments(s_weights[0])
        m2, v2 = src.layers[name].moments(s_weights[1])
        null = sym_kl(m1, v1, m2, v2, eps)
    else:
        ref_mean = cast(Tensor, module.running_mean).detach().cpu()
        ref_var = cast(Tensor, module.running_var).detach().cpu()
        null = (layer_values(src.layers[name], s_weights[0], ref_mean, ref_var, eps)
                if src is not None and s_weights is not None else
                analytic_null(ref_mean, ref_var, eps, target.n, replicates, gen))
    value = float(layer_values(moments, None, ref_mean, ref_var, eps))
    return value, null, layer_values(moments, t_weights, ref_mean, ref_var, eps)


def _layer_groups(layers: Sequence[str], groups: Sequence[LayerGroup]) -> dict[str, str]:
    """Watched layer -> the group holding its parameters (or lying inside one of its modules);
    layers in no group (custom groups that leave them out) are not counted."""
    by_param = {p: g.name for g in groups for p in g.parameters}
    out: dict[str, str] = {}
    for layer in layers:
        group = by_param.get(f"{layer}.weight") or by_param.get(f"{layer}.bias")
        if group is None:
            group = next((g.name for g in groups for m in g.modules
                          if layer == m or layer.startswith(m + ".")), None)
        if group is not None:
            out[layer] = group
    return out


def _binomial_var(p: float, n: int) -> float:
    """Variance of an accuracy over ``n`` examples at rate ``p``, never below one error's."""
    floor = (1.0 / n) * (1.0 - 1.0 / n)
    return max(p * (1.0 - p), floor) / n


@dataclass(frozen=True)
class _SourceRates:
    """The untouched model's accuracy and mean confidence on labelled source data: the label
    tests' reference, summed once (the stability bootstrap tests every resample against it)."""

    accuracy: float
    confidence: float
    n: int


def _source_rates(src: PassRecord | None) -> _SourceRates | None:
    if src is None or src.correct is None:
        return None
    return _SourceRates(float(src.correct.sum()) / src.n, float(src.confidence.sum()) / src.n,
                        src.n)


def _gap_z(correct: float, conf: float, n: int, source: _SourceRates | None
           ) -> tuple[float, float, float]:
    """(gap, null gap, z) for the confidently-wrong test."""
    gap = conf - correct
    var = _binomial_var(conf, n)
    null_gap = 0.0
    if source is not None:
        null_gap = source.confidence - source.accuracy
        var += _binomial_var(source.confidence, source.n)
    return gap, null_gap, (gap - null_gap) / math.sqrt(var)


def _drop_z(correct: float, n: int, source: _SourceRates | None) -> tuple[float, float] | None:
    """(source accuracy - target accuracy, its two-proportion z), or None without labelled
    source data. The source images must be ones the model did not train on (a held-out
    accuracy), or the drop is overstated."""
    if source is None:
        return None
    drop = source.accuracy - correct
    return drop, drop / math.sqrt(_binomial_var(correct, n)
                                  + _binomial_var(source.accuracy, source.n))


def _moved(gap_z: float, drop: tuple[float, float] | None) -> tuple[bool, bool]:
    """(confidently wrong, less accurate) from the two label tests' statistics, each at the
    Bonferroni level of the tests that run (``drop`` is None without labelled source data)."""
    critical = label_z(1 if drop is None else 2)
    return gap_z > critical, drop is not None and drop[1] > critical


def _label_signals(target: PassRecord, src: PassRecord | None) -> LabelSignals:
    conf = float(target.confidence.sum()) / target.n
    s_acc = (float(src.correct.sum()) / src.n if src is not None and src.correct is not None
             else None)
    s_conf = float(src.confidence.sum()) / src.n if src is not None else None
    if target.correct is None:
        return LabelSignals(None, conf, None, 0.0, None, False, s_acc, s_conf, target.label_note)
    acc = float(target.correct.sum()) / target.n
    source = _source_rates(src)
    gap, null_gap, z = _gap_z(acc, conf, target.n, source)
    drop = _drop_z(acc, target.n, source)
    wrong, less = _moved(z, drop)
    return LabelSignals(acc, conf, gap, null_gap, z, wrong, s_acc, s_conf,
                        drop=drop[0] if drop else None, drop_z=drop[1] if drop else None,
                        less_accurate=less)


def _stability(top: str, names: list[str], results: list[GroupDivergence],
               group_target: list[Tensor], watched: list[bool], target: PassRecord,
               src: PassRecord | None, weights: Tensor, head: str) -> float:
    """Share of bootstrap resamples of the target on which the same part comes out on top
    (thresholds held fixed: they belong to the null, not to the target)."""
    thresholds = torch.tensor([g.threshold for g in results], dtype=torch.float64)
    draws = torch.stack(group_target, 1)                       # (R, G)
    exceeds = (draws > thresholds) & torch.tensor(watched)
    n = weights @ target.chunk_size
    conf = (weights @ target.confidence) / n
    acc = (weights @ target.correct) / n if target.correct is not None else None
    source = _source_rates(src)
    same = 0
    for r in range(len(weights)):
        moved = False
        if acc is not None:
            a = float(acc[r])
            moved = any(_moved(_gap_z(a, float(conf[r]), target.n, source)[2],
                               _drop_z(a, target.n, source)))
        _, top_r, _ = decide(names, exceeds[r].tolist(), watched, moved, head)
        same += top_r == top
    return same / len(weights)
