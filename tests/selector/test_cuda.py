"""The engine on a CUDA device: what only a GPU exercises (autocast in bf16 and fp16 with its
grad scaler, channels_last, cudnn's kernels, tensors crossing between devices).

CI has no GPU, so these skip there; they run wherever CUDA is present (the GPU check in
``benchmarks/gpu_check.sh`` runs them on a lent machine). Accuracies are compared with the
same trial on the CPU in fp32 within a tolerance, since bf16 and TF32 round differently."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.utils.data import TensorDataset

from selector import auto_rgn_finetune, diagnose_shift, evaluate, surgical_finetune
from selector.finetune.activation_cache import ActivationCache

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (runs on a GPU machine)")

#: Accuracy may differ between CPU fp32 and CUDA (bf16 autocast, TF32 convolutions) by this much.
TOLERANCE = 0.04


@pytest.fixture
def larger_splits(digits) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """600 / 400 / 400 digits: enough validation images that a 4-point tolerance is not noise."""
    x, y = digits
    return (TensorDataset(x[:600], y[:600]), TensorDataset(x[600:1000], y[600:1000]),
            TensorDataset(x[1000:1400], y[1000:1400]))


def _frozen_unchanged(model: torch.nn.Module, result) -> None:
    """Every tensor outside the tuned parameters equals the model's own, bit for bit, and the
    result's weights are contiguous CPU tensors (what safetensors can save)."""
    original = model.state_dict()
    tuned = set(result.tuned_parameter_names)
    for name, value in result.state_dict.items():
        assert value.device.type == "cpu", name
        if name not in tuned:
            assert torch.equal(value, original[name]), f"{name} changed but was frozen"
    assert tuned and any(not torch.equal(result.state_dict[n], original[n]) for n in tuned)


def test_auto_precision_on_cuda_trains_in_half_precision_and_matches_the_cpu(
        tiny_resnet, larger_splits):
    train, val, test = larger_splits
    common = dict(lr=1e-2, epochs=4, seed=0, batch_size=64)
    cpu = surgical_finetune(tiny_resnet, ["block1"], train, val, test, device="cpu",
                            precision="fp32", **common)
    gpu = surgical_finetune(tiny_resnet, ["block1"], train, val, test, device="cuda", **common)
    assert gpu.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    assert gpu.best_val_acc > gpu.initial_val_acc + 0.05, "it learned"
    assert abs(gpu.best_val_acc - cpu.best_val_acc) <= TOLERANCE
    assert abs(gpu.initial_val_acc - cpu.initial_val_acc) <= 2 / len(val)
    _frozen_unchanged(tiny_resnet, gpu)
    # the weights a CUDA trial returns load into the CPU model and score what it reported
    patched = copy.deepcopy(tiny_resnet)
    patched.load_state_dict(gpu.state_dict)
    _, val_acc = evaluate(patched, val, device="cpu")
    assert abs(val_acc - gpu.best_val_acc) <= 2 / len(val)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fp32_and_fp16_with_its_grad_scaler_train_on_cuda(tiny_resnet, larger_splits, precision):
    train, val, test = larger_splits
    common = dict(lr=1e-2, epochs=4, seed=0, batch_size=64)
    cpu = surgical_finetune(tiny_resnet, ["block3"], train, val, test, device="cpu",
                            precision="fp32", **common)
    gpu = surgical_finetune(tiny_resnet, ["block3"], train, val, test, device="cuda",
                            precision=precision, **common)
    assert gpu.precision == precision and gpu.stop_reason is None
    assert all(torch.isfinite(torch.tensor(m.train_loss)) for m in gpu.epochs)
    assert abs(gpu.best_val_acc - cpu.best_val_acc) <= TOLERANCE
    _frozen_unchanged(tiny_resnet, gpu)


def test_the_cross_trial_cache_is_bit_identical_on_cuda_with_deterministic_kernels(
        tiny_resnet, larger_splits):
    train, val, test = larger_splits
    store = ActivationCache(256 << 20)
    for tune, lr in (("head", 1e-1), ("head", 1e-2), ("block3", 1e-3)):
        common = dict(lr=lr, epochs=2, seed=0, device="cuda", batch_size=64, deterministic=True)
        shared = surgical_finetune(tiny_resnet, [tune], train, val, test, **common,
                                   activation_cache=store)
        alone = surgical_finetune(tiny_resnet, [tune], train, val, test, **common)
        assert [m.val_acc for m in shared.epochs] == [m.val_acc for m in alone.epochs]
        assert [m.train_loss for m in shared.epochs] == [m.train_loss for m in alone.epochs]
        assert shared.test_acc == alone.test_acc
        assert all(torch.equal(shared.state_dict[k], alone.state_dict[k])
                   for k in shared.state_dict)
    assert store.hits > 0


def test_auto_rgn_on_cuda_matches_the_cpu(tiny_resnet, larger_splits):
    train, val, test = larger_splits
    common = dict(lr=1e-2, epochs=3, seed=0, batch_size=64)
    cpu = auto_rgn_finetune(tiny_resnet, train, val, test, device="cpu", precision="fp32",
                            **common)
    gpu = auto_rgn_finetune(tiny_resnet, train, val, test, device="cuda", **common)
    assert gpu.rgn_profile is not None and len(gpu.rgn_profile) == 3
    assert abs(gpu.best_val_acc - cpu.best_val_acc) <= TOLERANCE
    # the first epoch's relative gradient norms come from the same weights on both devices
    first_cpu, first_gpu = cpu.rgn_profile[0], gpu.rgn_profile[0]
    assert first_cpu.keys() == first_gpu.keys()
    assert first_gpu == pytest.approx(first_cpu, abs=0.05)


def test_the_diagnosis_of_a_model_on_cuda_matches_the_cpu_and_leaves_it_unchanged(
        tiny_resnet, larger_splits):
    train, _, _ = larger_splits
    shifted = TensorDataset(1.0 - train.tensors[0], train.tensors[1])  # inverted images
    on_cpu = diagnose_shift(tiny_resnet, shifted, max_examples=400)
    model = copy.deepcopy(tiny_resnet).cuda()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    on_gpu = diagnose_shift(model, shifted, max_examples=400)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert on_gpu.kind == on_cpu.kind and on_gpu.ranking == on_cpu.ranking
    for a, b in zip(on_cpu.groups, on_gpu.groups, strict=True):
        assert a.name == b.name
        assert b.value == pytest.approx(a.value, rel=1e-3, abs=1e-6)
