"""Auto-RGN and Auto-SNR against hand computations and the reference code's protocol."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import selector.finetune.rgn as rgn_module
from selector import auto_rgn_finetune, auto_snr_finetune, relative_gradient_norms
from selector.finetune.rgn import gradient_snr, rgn_weights
from selector.layers.module_types import normalisation_parameter_names


class Tiny(nn.Module):
    """Linear -> BatchNorm (not named "bn") -> ReLU -> LayerNorm -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3, 4)
        self.feat = nn.BatchNorm1d(4)
        self.mix = nn.LayerNorm(4)
        self.out = nn.Linear(4, 2)
        self.feat.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
        self.feat.running_var.copy_(torch.tensor([1.5, 0.5, 2.0, 1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.mix(torch.relu(self.feat(self.proj(x)))))


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(6, 3, generator=g), torch.randint(0, 2, (6,), generator=g))
            for _ in range(2)]


def hand_gradients(model: Tiny, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cross-entropy gradients of the two Linear layers, derived by hand (eval-mode BN is a
    fixed affine map; LayerNorm's Jacobian is written out)."""
    with torch.no_grad():
        u = x @ model.proj.weight.T + model.proj.bias
        scale = model.feat.weight / torch.sqrt(model.feat.running_var + model.feat.eps)
        a = (u - model.feat.running_mean) * scale + model.feat.bias
        r = a.clamp(min=0)
        mu, var = r.mean(1, keepdim=True), r.var(1, unbiased=False, keepdim=True)
        std = torch.sqrt(var + model.mix.eps)
        n = (r - mu) / std
        h = n * model.mix.weight + model.mix.bias
        z = h @ model.out.weight.T + model.out.bias
        dz = (torch.softmax(z, 1) - F.one_hot(y, 2).float()) / len(y)
        grads = {"out.weight": dz.T @ h, "out.bias": dz.sum(0)}
        dn = (dz @ model.out.weight) * model.mix.weight
        dr = (dn - dn.mean(1, keepdim=True) - n * (dn * n).mean(1, keepdim=True)) / std
        du = dr * (a > 0) * scale
        grads.update({"proj.weight": du.T @ x, "proj.bias": du.sum(0)})
    return grads


def test_rgn_equals_a_hand_computation_and_skips_norms_by_type() -> None:
    model = Tiny().eval()
    norms = relative_gradient_norms(model, batches())
    assert set(norms) == {"proj.weight", "proj.bias", "out.weight", "out.bias"}
    params = dict(model.named_parameters())
    for name, value in norms.items():
        ratios = [float(hand_gradients(model, x, y)[name].norm() / params[name].detach().norm())
                  for x, y in batches()]
        assert value == pytest.approx(sum(ratios) / len(ratios), rel=1e-5)
    assert all(p.grad is None for p in model.parameters()), ".grad untouched"


def test_norms_are_excluded_by_module_type_not_by_name(tiny_resnet, splits) -> None:
    norms = relative_gradient_norms(tiny_resnet, [splits[0][:16]])
    assert "layer2.0.downsample.0.weight" in norms
    assert "layer2.0.downsample.1.weight" not in norms  # a BatchNorm without "bn" in its name
    assert not set(norms) & normalisation_parameter_names(tiny_resnet)
    tiny_resnet.fc.requires_grad_(False)
    assert "fc.weight" not in relative_gradient_norms(tiny_resnet, [splits[0][:16]])


def test_weights_are_divided_by_the_max() -> None:
    assert rgn_weights({"a": 2.0, "b": 1.0, "c": math.inf, "d": 0.0}) == {
        "a": 1.0, "b": 0.5, "c": 1.0, "d": 0.0}


def test_auto_rgn_sets_per_tensor_learning_rates_every_epoch(tiny_resnet, splits, monkeypatch
                                                             ) -> None:
    measured, optimizers = [], []
    real_norms, real_make = rgn_module.relative_gradient_norms, rgn_module.make_optimizer

    def spy_norms(model, batch_list, loss_fn=None):
        assert not model.training, "scored in eval mode, as the reference"
        assert len(batch_list) == 5 and all(len(y) == 16 for _, y in batch_list)
        measured.append(real_norms(model, batch_list, loss_fn))
        return measured[-1]

    def spy_make(name, groups, **kwargs):
        optimizers.append(real_make(name, groups, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(rgn_module, "relative_gradient_norms", spy_norms)
    monkeypatch.setattr(rgn_module, "make_optimizer", spy_make)
    lr = 1e-2
    result = auto_rgn_finetune(tiny_resnet, *splits, lr=lr, epochs=2, batch_size=16)
    assert len(measured) == len(optimizers) == 2, "re-created every epoch"
    non_norm = [n for n, _ in tiny_resnet.named_parameters()
                if n not in normalisation_parameter_names(tiny_resnet)]
    for norms, optimizer in zip(measured, optimizers, strict=True):
        top = max(norms.values())
        assert [g["name"] for g in optimizer.param_groups] == non_norm
        for group in optimizer.param_groups:
            assert len(group["params"]) == 1
            assert group["lr"] == pytest.approx(lr * norms[group["name"]] / top)
        assert max(g["lr"] for g in optimizer.param_groups) == pytest.approx(lr)
        assert optimizer.defaults["weight_decay"] == 1e-4
    assert result.method == "auto-rgn" and result.tuned_parameter_names == non_norm
    assert result.tuned_groups == ["block1", "block2", "block3", "head"]
    assert len(result.rgn_profile) == 2 and result.epochs[0].rgn == result.rgn_profile[0]
    assert set(result.rgn_profile[0]) == set(result.tuned_groups)
    before = tiny_resnet.state_dict()
    for name in normalisation_parameter_names(tiny_resnet):
        assert torch.equal(result.state_dict[name], before[name]), "norm layers stay frozen"
    assert not torch.equal(result.state_dict["fc.weight"], before["fc.weight"])


def test_keep_optimizer_state_reuses_adam(tiny_resnet, splits, monkeypatch) -> None:
    calls = []
    real_make = rgn_module.make_optimizer
    monkeypatch.setattr(rgn_module, "make_optimizer",
                        lambda *a, **k: calls.append(1) or real_make(*a, **k))
    auto_rgn_finetune(tiny_resnet, *splits, lr=1e-2, epochs=3, batch_size=32,
                      keep_optimizer_state=True)
    assert len(calls) == 1


def test_snr_is_the_reference_eb_criterion() -> None:
    model = Tiny().eval()
    scores = gradient_snr(model, batches())
    params = dict(model.named_parameters())
    assert set(scores) == {"proj.weight", "proj.bias", "out.weight", "out.bias"}
    for name, value in scores.items():
        per_batch = []
        for x, y in batches():
            (g,) = torch.autograd.grad(F.cross_entropy(model(x), y), [params[name]])
            per_batch.append(float((g ** 2 / (g.var(dim=0, keepdim=True) + 1e-8)).mean()))
        assert value == pytest.approx(sum(per_batch) / 2, rel=1e-5)


def test_auto_snr_freezes_tensors_under_the_threshold(tiny_resnet, splits) -> None:
    before = tiny_resnet.state_dict()
    nothing = auto_snr_finetune(tiny_resnet, *splits, lr=1e-2, epochs=1, threshold=math.inf)
    assert nothing.method == "auto-snr" and nothing.tuned_parameter_names == []
    assert nothing.tuned_groups == [] and nothing.tuned_params == 0
    assert all(torch.equal(v, before[k]) for k, v in nothing.state_dict.items())
    everything = auto_snr_finetune(tiny_resnet, *splits, lr=1e-2, epochs=1, threshold=-math.inf)
    assert len(everything.tuned_parameter_names) == len(
        [n for n, _ in tiny_resnet.named_parameters()]) - len(
        normalisation_parameter_names(tiny_resnet))
    assert everything.rgn_profile is None
