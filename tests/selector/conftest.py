"""Shared fixtures for the selector tests: real digits (sklearn's 8x8 set) and tiny models."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from selector.cifar_resnet import CifarResNet


@pytest.fixture(autouse=True)
def one_thread(request: pytest.FixtureRequest):
    """Tiny models on a shared 2-core machine: intra-op threads only add contention (a 100x
    slow-down under load was measured), so each engine test runs single-threaded. The
    ``builtin`` tests below this directory decide for themselves."""
    if "builtin" in request.node.path.parts:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """1,797 real 8x8 digit images in [0, 1], shape (N, 1, 8, 8), shuffled with a fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


@pytest.fixture
def tiny_resnet() -> CifarResNet:
    torch.manual_seed(0)
    return CifarResNet(depth=8, widths=(4, 8, 16), in_channels=1).eval()


@pytest.fixture
def splits(digits) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Small train / val / test splits of the digits."""
    x, y = digits
    return (TensorDataset(x[:192], y[:192]), TensorDataset(x[192:256], y[192:256]),
            TensorDataset(x[256:320], y[256:320]))
