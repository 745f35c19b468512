"""One forward pass that records per-channel moments at the input of every normalisation layer.

Why chunks: the decision needs the sampling distribution of the statistics (bootstrap over
examples), but keeping per-example moments of every channel would cost ``n x channels`` floats
per layer (hundreds of MB for a ResNet-50). Examples are dealt round-robin into ``K`` chunks and
only per-chunk sums are kept; resampling chunks with replacement has the same variance for a
mean over iid examples as resampling examples (each chunk mean is an iid draw), at ``K x
channels`` floats per layer.

The pass runs in eval mode under ``torch.no_grad`` with forward *pre*-hooks only, so no
parameter or buffer changes (BatchNorm does not update running statistics in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from selector.finetune.batches import SplitData

__all__ = ["ChunkMoments", "PassRecord", "record_pass", "running_stats_layers", "subsample"]

#: Chunks for the bootstrap: enough that a resample's variance is estimated well, few enough
#: that the sums of a large model stay small (64 x 26k channels for a ResNet-50).
MAX_CHUNKS = 64
BATCH_SIZE = 128


@dataclass
class ChunkMoments:
    """Per-chunk sums for one layer: ``count[k]`` values per channel went into ``total[k, c]``
    and ``squares[k, c]`` (float64, so sums of many activations keep their precision)."""

    count: Tensor      # (K,)
    total: Tensor      # (K, C)
    squares: Tensor    # (K, C)

    @property
    def channels(self) -> int:
        return int(self.total.shape[1])

    def moments(self, weights: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Per-channel mean and (biased) variance; ``weights`` (R, K) gives R resamples."""
        if weights is None:
            n = self.count.sum()
            mean = self.total.sum(0) / n
            return mean, (self.squares.sum(0) / n - mean ** 2).clamp_min(0)
        n = (weights @ self.count).unsqueeze(1)
        mean = (weights @ self.total) / n
        return mean, ((weights @ self.squares) / n - mean ** 2).clamp_min(0)


@dataclass
class PassRecord:
    """What one pass saw: moments per watched layer (forward order), and the label side."""

    layers: dict[str, ChunkMoments]
    n: int
    chunks: int
    chunk_size: Tensor                  # (K,) examples per chunk
    correct: Tensor | None              # (K,) correct predictions per chunk; None: no labels
    confidence: Tensor                  # (K,) sum of max softmax probability per chunk
    label_note: str | None = None       # why labels were not used, when they were not
    order: list[str] = field(default_factory=list)


def running_stats_layers(model: nn.Module) -> dict[str, nn.modules.batchnorm._NormBase]:
    """BatchNorm-like layers that keep running statistics and use them in eval mode."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._NormBase)
            and module.track_running_stats and module.running_mean is not None
            and module.running_var is not None}


def subsample(data: Dataset, max_examples: int, seed: int) -> Dataset:
    """At most ``max_examples`` examples, a seeded random subset when there are more."""
    n = len(data)  # type: ignore[arg-type]
    if n <= max_examples:
        return data
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_examples]
    return Subset(data, sorted(order.tolist()))


def _channels_first(x: Tensor, module: nn.Module) -> Tensor:
    """(B, C, ...) view: LayerNorm normalises the last dimension (tokens, channels-last), every
    other normalisation layer (and torchvision's LayerNorm2d, fed (B, C, H, W)) dimension 1."""
    if isinstance(module, nn.LayerNorm) and x.dim() > 2 and x.shape[-1] == module.normalized_shape[-1] \
            and x.shape[1] != module.normalized_shape[-1]:
        x = x.movedim(-1, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def record_pass(model: nn.Module, data: Dataset, layers: dict[str, nn.Module], *,
                num_outputs: int | None) -> PassRecord:
    """Run ``data`` through ``model`` once (eval, no grad) and record the chunked moments of the
    inputs of ``layers`` and, when labels fit the outputs, the prediction-label agreement."""
    split = SplitData(data, "diagnosis")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    split.to(device)
    n = split.n
    chunks = min(MAX_CHUNKS, n)
    chunk_of = torch.arange(n, device=device) % chunks
    sums: dict[str, list[Tensor]] = {}
    order: list[str] = []
    state = {"chunk": chunk_of[:0]}

    def hook_for(name: str, module: nn.Module):
        def hook(_mod: nn.Module, args: tuple) -> None:
            x = _channels_first(args[0].detach(), module).float()
            # per-image sums in float32 (a few thousand values each), accumulated in float64
            per_total = x.sum(2).to(torch.float64)                  # (B, C)
            per_sq = (x * x).sum(2).to(torch.float64)
            idx = state["chunk"]
            if name not in sums:
                c = per_total.shape[1]
                sums[name] = [torch.zeros(chunks, dtype=torch.float64, device=device),
                              torch.zeros(chunks, c, dtype=torch.float64, device=device),
                              torch.zeros(chunks, c, dtype=torch.float64, device=device)]
                order.append(name)
            acc = sums[name]
            acc[0].index_add_(0, idx, torch.full_like(idx, x.shape[2], dtype=torch.float64))
            acc[1].index_add_(0, idx, per_total)
            acc[2].index_add_(0, idx, per_sq)
        return hook

    handles = [module.register_forward_pre_hook(hook_for(name, module))
               for name, module in layers.items()]
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    correct = torch.zeros(chunks, dtype=torch.float64, device=device)
    confidence = torch.zeros(chunks, dtype=torch.float64, device=device)
    chunk_size = torch.zeros(chunks, dtype=torch.float64, device=device)
    labels_ok, note = True, None
    try:
        with torch.no_grad():
            for start in range(0, n, BATCH_SIZE):
                idx = torch.arange(start, min(start + BATCH_SIZE, n), device=device)
                x, y = split.batch(idx)
                state["chunk"] = chunk_of[idx]
                out = model(x)
                logits = out if isinstance(out, Tensor) else out[0]
                probs = logits.float().softmax(1)
                conf, pred = probs.max(1)
                chunk_size.index_add_(0, state["chunk"], torch.ones_like(conf, dtype=torch.float64))
                confidence.index_add_(0, state["chunk"], conf.to(torch.float64))
                width = num_outputs if num_outputs is not None else logits.shape[1]
                if labels_ok and (int(y.min()) < 0 or int(y.max()) >= width):
                    labels_ok = False
                    note = (f"target labels go up to {int(y.max())} but the model has "
                            f"{width} outputs: its predictions cannot be compared with them")
                if labels_ok:
                    correct.index_add_(0, state["chunk"], (pred == y).to(torch.float64))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in flags:
            module.training = training
    moments = {name: ChunkMoments(*(t.cpu() for t in sums[name])) for name in order}
    return PassRecord(layers=moments, n=n, chunks=chunks, chunk_size=chunk_size.cpu(),
                      correct=correct.cpu() if labels_ok else None,
                      confidence=confidence.cpu(), label_note=note, order=order)
