"""surgical_finetune: the paper's protocol, freezing, determinism, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from selector import (
    ConfigError,
    EmptySplitError,
    GroupSpecError,
    ImageShapeError,
    LabelRangeError,
    discover_groups,
    evaluate,
    surgical_finetune,
)
from selector.finetune import batches as data_module
from selector.finetune.freeze import make_optimizer
from selector.finetune.records import NON_FINITE_LOSS, STOPPED_BY_CALLER

FAST = dict(lr=1e-2, epochs=2, batch_size=32)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_frozen_parameters_and_bn_statistics_are_unchanged(tiny_resnet, splits) -> None:
    before = state(tiny_resnet)
    result = surgical_finetune(tiny_resnet, ["block2"], *splits, **FAST)
    groups = {g.name: g for g in discover_groups(tiny_resnet)}
    tuned = set(groups["block2"].parameters)
    assert result.method == "surgical" and result.tuned_groups == ["block2"]
    assert result.tuned_parameter_names == list(groups["block2"].parameters)
    for key, value in result.state_dict.items():
        assert value.device.type == "cpu"
        if key in tuned and key.endswith("conv1.weight"):
            assert not torch.equal(value, before[key]), f"{key} should have been trained"
        elif key not in tuned:
            assert torch.equal(value, before[key]), f"{key} changed but is frozen"
    running = [k for k in before if "running_" in k or "num_batches" in k]
    assert running and all(torch.equal(result.state_dict[k], before[k]) for k in running)
    assert result.tuned_params == groups["block2"].num_params
    assert result.total_params == sum(p.numel() for p in tiny_resnet.parameters())
    assert result.tuned_share == pytest.approx(result.tuned_params / result.total_params)


def test_bn_mode_train_updates_running_statistics(tiny_resnet, splits) -> None:
    before = state(tiny_resnet)
    result = surgical_finetune(tiny_resnet, ["head"], *splits, bn_mode="train", **FAST)
    assert not torch.equal(result.state_dict["bn1.running_mean"], before["bn1.running_mean"])
    assert torch.equal(result.state_dict["conv1.weight"], before["conv1.weight"])


def test_callers_model_is_untouched(tiny_resnet, splits) -> None:
    tiny_resnet.layer2.requires_grad_(False)
    before = state(tiny_resnet)
    flags = [p.requires_grad for p in tiny_resnet.parameters()]
    surgical_finetune(tiny_resnet, "all", *splits, bn_mode="train", **FAST)
    after = state(tiny_resnet)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in tiny_resnet.parameters()] == flags
    assert not tiny_resnet.training
    assert all("forward" not in m.__dict__ for m in tiny_resnet.modules()), "no stub left"


def test_same_seed_same_result_and_another_seed_differs(tiny_resnet, splits) -> None:
    a = surgical_finetune(tiny_resnet, ["block1", "head"], *splits, seed=3, **FAST)
    b = surgical_finetune(tiny_resnet, ["block1", "head"], *splits, seed=3, **FAST)
    c = surgical_finetune(tiny_resnet, ["block1", "head"], *splits, seed=4, **FAST)
    assert [(e.train_loss, e.val_acc) for e in a.epochs] == [
        (e.train_loss, e.val_acc) for e in b.epochs]
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not torch.equal(a.state_dict["conv1.weight"], c.state_dict["conv1.weight"])


def test_prefix_cache_gives_the_uncached_result(tiny_resnet, splits) -> None:
    for tune in (["head"], ["block3"], ["block2", "head"]):
        cached = surgical_finetune(tiny_resnet, tune, *splits, cache_prefix=True, **FAST)
        plain = surgical_finetune(tiny_resnet, tune, *splits, cache_prefix=False, **FAST)
        assert [e.val_acc for e in cached.epochs] == [e.val_acc for e in plain.epochs]
        for key in plain.state_dict:
            torch.testing.assert_close(cached.state_dict[key], plain.state_dict[key],
                                       rtol=1e-4, atol=1e-5)


def test_no_tuning_is_evaluation_only(tiny_resnet, splits) -> None:
    train, val, test = splits
    result = surgical_finetune(tiny_resnet, [], train, val, test, lr=1e-3, epochs=5)
    assert result.method == "none" and result.epochs == [] and result.best_epoch == 0
    assert result.tuned_params == 0 and result.tuned_parameter_names == []
    assert result.best_val_acc == result.initial_val_acc == pytest.approx(
        evaluate(tiny_resnet, val)[1])
    assert result.test_acc == pytest.approx(evaluate(tiny_resnet, test)[1])
    assert all(torch.equal(v, tiny_resnet.state_dict()[k]) for k, v in result.state_dict.items())


def test_best_epoch_is_the_earliest_of_equal_val_accuracies(tiny_resnet, splits) -> None:
    result = surgical_finetune(tiny_resnet, ["head"], *splits, lr=0.0, epochs=3, batch_size=64)
    assert len({e.val_acc for e in result.epochs}) == 1
    assert result.best_epoch == 1
    assert result.test_acc == result.epochs[0].test_acc


def test_best_epoch_state_and_test_accuracy(tiny_resnet, splits) -> None:
    per_epoch = surgical_finetune(tiny_resnet, "all", *splits, lr=3e-2, epochs=4)
    best = max(range(4), key=lambda i: (per_epoch.epochs[i].val_acc, -i))
    assert per_epoch.best_epoch == best + 1
    assert per_epoch.best_val_acc == per_epoch.epochs[best].val_acc
    assert per_epoch.test_acc == per_epoch.epochs[best].test_acc
    once = surgical_finetune(tiny_resnet, "all", *splits, lr=3e-2, epochs=4,
                             test_each_epoch=False)
    assert all(e.test_acc is None for e in once.epochs)
    assert once.test_acc == pytest.approx(per_epoch.test_acc)
    reloaded = copy.deepcopy(tiny_resnet)
    reloaded.load_state_dict(per_epoch.state_dict)
    assert evaluate(reloaded, splits[1])[1] == pytest.approx(per_epoch.best_val_acc)


def test_on_epoch_stops_and_its_exceptions_propagate(tiny_resnet, splits) -> None:
    seen = []
    result = surgical_finetune(tiny_resnet, ["head"], *splits, lr=1e-2, epochs=5,
                               on_epoch=lambda m: seen.append(m.epoch) or m.epoch == 2)
    assert seen == [1, 2] and len(result.epochs) == 2
    assert all(e.seconds > 0 for e in result.epochs)
    assert result.stop_reason == STOPPED_BY_CALLER
    assert surgical_finetune(tiny_resnet, ["head"], *splits, **FAST).stop_reason is None

    class Pruned(Exception):
        pass

    def prune(metrics):
        raise Pruned

    with pytest.raises(Pruned):
        surgical_finetune(tiny_resnet, ["head"], *splits, lr=1e-2, epochs=3, on_epoch=prune)


def _finite(result) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in result.state_dict.values()
               if v.is_floating_point())


@pytest.mark.parametrize("test_each_epoch", [True, False])
def test_a_diverging_run_keeps_its_finite_epochs_and_stops(tiny_resnet, splits,
                                                            test_each_epoch) -> None:
    """SGD at lr 1e9 on the head: epochs 1-2 stay finite, epoch 3's loss is not. The finite
    epochs stay candidates (the reference selects over them), training stops at the first
    non-finite one, and the result says why."""
    seen = []
    result = surgical_finetune(tiny_resnet, ["head"], *splits, lr=1e9, epochs=6, optimizer="sgd",
                               test_each_epoch=test_each_epoch,
                               on_epoch=lambda m: seen.append(m.epoch))
    assert result.stop_reason == NON_FINITE_LOSS
    assert 1 <= len(result.epochs) < 6 and seen == [e.epoch for e in result.epochs]
    assert all(math.isfinite(v) for e in result.epochs
               for v in (e.train_loss, e.val_loss, e.val_acc))
    assert 1 <= result.best_epoch <= len(result.epochs)
    assert result.best_val_acc == max(e.val_acc for e in result.epochs)
    assert _finite(result) and result.test_acc is not None
    patched = copy.deepcopy(tiny_resnet)
    patched.load_state_dict(result.state_dict)
    assert evaluate(patched, splits[2])[1] == pytest.approx(result.test_acc)


def test_a_run_diverging_in_epoch_1_is_the_untouched_model(tiny_resnet, splits) -> None:
    result = surgical_finetune(tiny_resnet, ["all"], *splits, lr=1e20, epochs=3, optimizer="sgd",
                               test_each_epoch=False)
    assert result.stop_reason == NON_FINITE_LOSS and result.epochs == [] and result.best_epoch == 0
    assert result.best_val_acc == result.initial_val_acc and _finite(result)
    assert result.test_acc == evaluate(tiny_resnet, splits[2])[1]
    for key, value in tiny_resnet.state_dict().items():
        assert torch.equal(result.state_dict[key], value)


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_other_optimizers(tiny_resnet, splits, optimizer) -> None:
    result = surgical_finetune(tiny_resnet, ["head"], *splits, optimizer=optimizer, **FAST)
    assert len(result.epochs) == 2


def test_adam_has_coupled_weight_decay() -> None:
    param = nn.Parameter(torch.ones(2))
    adam = make_optimizer("adam", [param], lr=0.1, weight_decay=1e-4)
    assert type(adam) is torch.optim.Adam and adam.defaults["weight_decay"] == 1e-4
    assert type(make_optimizer("sgd", [param], lr=0.1, weight_decay=0)).__name__ == "SGD"


class ItemDataset(Dataset):
    """A plain map-style dataset (no tensors attribute): exercises the lazy path."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.base[i]
        return x, int(y)


def test_lazy_and_materialised_splits_train_identically(tiny_resnet, splits, monkeypatch
                                                        ) -> None:
    eager = surgical_finetune(tiny_resnet, ["head"], *splits, cache_prefix=False, **FAST)
    monkeypatch.setattr(data_module, "MATERIALISE_LIMIT_BYTES", 1)
    lazy = surgical_finetune(tiny_resnet, ["head"], *(ItemDataset(s) for s in splits),
                             cache_prefix=False, **FAST)
    assert [e.train_loss for e in lazy.epochs] == [e.train_loss for e in eager.epochs]


def test_readable_errors(tiny_resnet, splits, digits) -> None:
    train, val, _ = splits
    x, y = digits
    with pytest.raises(LabelRangeError, match=r"train split: label \d+ is outside \[0, 10\)"):
        surgical_finetune(tiny_resnet, ["head"], TensorDataset(x[:8], y[:8] + 12), val, **FAST)
    with pytest.raises(EmptySplitError, match="val split is empty"):
        surgical_finetune(tiny_resnet, ["head"], train, TensorDataset(x[:0], y[:0]), **FAST)
    rgb = TensorDataset(x[:8].repeat(1, 3, 1, 1), y[:8])
    with pytest.raises(ImageShapeError, match=r"rejected images of shape \(3, 8, 8\)"):
        surgical_finetune(tiny_resnet, ["head"], rgb, rgb, **FAST)
    with pytest.raises(ImageShapeError, match="val images have shape"):
        surgical_finetune(tiny_resnet, ["head"], train, rgb, **FAST)
    with pytest.raises(ImageShapeError, match="uint8"):
        surgical_finetune(tiny_resnet, ["head"], train,
                          TensorDataset((x[:8] * 255).to(torch.uint8), y[:8]), **FAST)
    with pytest.raises(GroupSpecError, match="block9.*available: block1"):
        surgical_finetune(tiny_resnet, ["block9"], train, val, **FAST)
    with pytest.raises(ConfigError, match="optimizer"):
        surgical_finetune(tiny_resnet, ["head"], train, val, optimizer="lamb", lr=1e-3, epochs=1)
    with pytest.raises(ConfigError, match="bn_mode"):
        surgical_finetune(tiny_resnet, ["head"], train, val, bn_mode="frozen", lr=1e-3, epochs=1)


def test_evaluate_restores_modes_and_checks_labels(tiny_resnet, splits, digits) -> None:
    tiny_resnet.train()
    loss, acc = evaluate(tiny_resnet, splits[1])
    assert tiny_resnet.training and loss > 0 and 0 <= acc <= 1
    x, y = digits
    with pytest.raises(LabelRangeError):
        evaluate(tiny_resnet, TensorDataset(x[:4], y[:4] - 20))
