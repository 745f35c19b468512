"""The statistic and its null: symmetric KL between per-channel Gaussians, and how large it is
on data of the source distribution.

Statistic, per watched layer: for every channel, fit a Gaussian to the layer's input (mean and
variance over examples and positions) and take the symmetric KL divergence to the reference
Gaussian (the layer's running statistics, or the same fit on source data); average over
channels. A group's value is the mean over its layers.

Null (what the statistic is on *unshifted* data with the same number of examples), best first:

* ``source-bootstrap``: running statistics are the reference; the pseudo-target is a bootstrap
  resample of the clean source data the size of the target. It captures both the sampling noise
  and the systematic gap between eval-mode activations and running statistics (which were
  averaged in train mode).
* ``source-two-sample``: no running statistics; the statistic compares target with source, and
  under the null both are samples of the source distribution: two independent bootstrap
  resamples of the source, of the target's and the source's sizes.
* ``analytic``: running statistics and no source: each channel's sample mean and variance are
  drawn from their sampling distributions under the running Gaussian (mean ~ N(mu, var / n),
  variance ~ var * chi2(n - 1) / (n - 1)), with n the number of *images*, a conservative
  effective sample size (positions of one image are correlated). Sampling noise only: it knows
  nothing of the train/eval gap, so it is the weakest null and the diagnosis says so.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selector.diagnosis.moments import ChunkMoments

__all__ = ["analytic_null", "bootstrap_weights", "layer_values", "sym_kl"]


def sym_kl(mean_p: Tensor, var_p: Tensor, mean_q: Tensor, var_q: Tensor, eps: float) -> Tensor:
    """Symmetric KL (KL(p||q) + KL(q||p)) between per-channel Gaussians, averaged over the last
    (channel) dimension. ``eps`` (the layer's own epsilon) keeps dead channels finite."""
    vp, vq = var_p + eps, var_q + eps
    diff2 = (mean_p - mean_q) ** 2
    per_channel = 0.5 * (vp / vq + vq / vp - 2.0 + diff2 * (1.0 / vp + 1.0 / vq))
    return per_channel.mean(-1)


def bootstrap_weights(chunk_size: Tensor, draws_for: int, replicates: int,
                      generator: torch.Generator) -> Tensor:
    """(replicates, K) counts: each row resamples chunks with replacement until about
    ``draws_for`` examples are drawn (at least two chunks), so a resample of a larger source
    set mimics a sample of the target's size."""
    k = len(chunk_size)
    per_chunk = float(chunk_size.sum()) / k
    draws = max(2, round(draws_for / per_chunk))
    picks = torch.randint(0, k, (replicates, draws), generator=generator)
    weights = torch.zeros(replicates, k, dtype=torch.float64)
    weights.scatter_add_(1, picks, torch.ones(replicates, draws, dtype=torch.float64))
    return weights


def analytic_null(running_mean: Tensor, running_var: Tensor, eps: float, n: int,
                  replicates: int, generator: torch.Generator) -> Tensor:
    """(replicates,) values of the statistic for ``n`` images drawn from the running Gaussian."""
    mean = running_mean.to(torch.float64)
    var = running_var.to(torch.float64).clamp_min(0)
    c = len(mean)
    dof = max(n - 1, 1)
    z = torch.randn(replicates, c, generator=generator, dtype=torch.float64)
    # chi2(k) = 2 Gamma(k / 2, 1); torch's samplers take no generator, so draw it ourselves
    g = _gamma(dof / 2.0, (replicates, c), generator) * 2.0
    sample_mean = mean + z * (var / n).sqrt()
    sample_var = var * g / dof
    return sym_kl(sample_mean, sample_var, mean, var, eps)


def _gamma(shape: float, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Gamma(shape, 1) draws from ``generator`` (Marsaglia-Tsang; shape < 1, i.e. n = 2, uses
    the usual boost Gamma(a) = Gamma(a + 1) * U ** (1 / a))."""
    boost = shape < 1.0
    a = shape + 1.0 if boost else shape
    d = a - 1.0 / 3.0
    c = 1.0 / (9.0 * d) ** 0.5
    out = torch.empty(size, dtype=torch.float64)
    todo = torch.ones(size, dtype=torch.bool)
    while bool(todo.any()):
        x = torch.randn(size, generator=generator, dtype=torch.float64)
        v = (1.0 + c * x) ** 3
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        ok = (v > 0) & (torch.log(u) < 0.5 * x * x + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        take = ok & todo
        out[take] = (d * v)[take]
        todo &= ~ok
    if boost:
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        out = out * u ** (1.0 / shape)
    return out


def layer_values(moments: ChunkMoments, weights: Tensor | None, ref_mean: Tensor,
                 ref_var: Tensor, eps: float) -> Tensor:
    """The statistic of one layer against a fixed reference; (R,) with ``weights`` (R, K)."""
    mean, var = moments.moments(weights)
    return sym_kl(mean, var, ref_mean.to(torch.float64), ref_var.to(torch.float64), eps)
