"""The frozen-prefix cache engages where exact and refuses models where it would not be."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.data import TensorDataset

from selector import discover_groups, surgical_finetune
from selector.finetune.batches import SplitData
from selector.finetune.freeze import resolve_tune, set_trainable, tuned_parameter_names
from selector.finetune.prefix_cache import build_prefix_cache


class Branches(nn.Module):
    """Two parallel branches read the same input (an Inception module in miniature)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 2, 1)
        self.b = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x)], 1)


class Parallel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.mix = Branches()
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.mix(self.stem(x)).flatten(1))


class Skip(nn.Module):
    """A skip connection from the stem to the head bypasses any entry after the stem."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.body = nn.Conv2d(2, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        return self.fc((self.body(h) + h).flatten(1))


def entry_for(model: nn.Module, tune: list[str], data: TensorDataset) -> str | None:
    work = copy.deepcopy(model).eval()
    names = tuned_parameter_names(work, resolve_tune(discover_groups(work), tune))
    set_trainable(work, names)
    built = build_prefix_cache(work, names, {"train": SplitData(data, "train")})
    if built is None:
        return None
    built[0].close()
    return built[0].entry


def assert_cache_is_exact(model: nn.Module, tune: list[str], splits) -> None:
    cached = surgical_finetune(model, tune, *splits, lr=1e-2, epochs=2, batch_size=32)
    plain = surgical_finetune(model, tune, *splits, lr=1e-2, epochs=2, batch_size=32,
                              cache_prefix=False)
    assert [e.val_acc for e in cached.epochs] == [e.val_acc for e in plain.epochs]
    for key, value in plain.state_dict.items():
        torch.testing.assert_close(cached.state_dict[key], value, rtol=1e-4, atol=1e-6)


def test_entry_is_the_first_tuned_module(tiny_resnet, splits) -> None:
    assert entry_for(tiny_resnet, ["head"], splits[0]) == "fc"
    assert entry_for(tiny_resnet, ["block3", "head"], splits[0]) == "layer3.0"
    assert entry_for(tiny_resnet, ["block1"], splits[0]) is None  # nothing before block1


def test_parallel_branches_move_the_entry_up(splits) -> None:
    torch.manual_seed(0)
    model = Parallel()
    groups = discover_groups(model)
    assert [g.name for g in groups] == ["block1", "block2", "head"]
    assert entry_for(model, ["block2", "head"], splits[0]) == "mix", "not mix.a: b reads x too"
    assert_cache_is_exact(model, ["block2", "head"], splits)


def test_skip_connection_from_the_prefix_disables_the_cache(splits) -> None:
    torch.manual_seed(0)
    model = Skip()
    assert entry_for(model, ["block2", "head"], splits[0]) is None
    assert entry_for(model, ["head"], splits[0]) == "fc"
    assert_cache_is_exact(model, ["block2", "head"], splits)


class WritesIntoItsPrefix(Skip):
    """Its own forward adds to the stem's output in place before the tuned body (no skip
    connection): a stub's zeros handed out again would no longer be zeros."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h.add_(1.0)
        return self.fc(self.body(h).flatten(1))


def test_stubs_hand_out_zeros_on_every_call_even_after_an_in_place_write(splits) -> None:
    torch.manual_seed(0)
    model = WritesIntoItsPrefix().eval()
    set_trainable(model, ["body.weight", "body.bias", "fc.weight", "fc.bias"])
    built = build_prefix_cache(model, ["body.weight", "body.bias", "fc.weight", "fc.bias"],
                               {"train": SplitData(splits[0], "train")})
    assert built is not None
    cache, cached = built
    assert cache.entry == "body"
    stem = model.stem
    try:
        first = stem(torch.zeros(32, 1, 8, 8))
        assert not first.any()
        first.add_(1.0)  # what the model's forward does to it
        again = stem(torch.zeros(32, 1, 8, 8))
        assert not again.any(), "a stub handed out the tensor the model wrote into"
        untouched = stem(torch.zeros(32, 1, 8, 8))
        assert untouched is again, "an unwritten stub output is reused, not re-filled"
    finally:
        cache.close()
    assert_cache_is_exact(WritesIntoItsPrefix(), ["block2", "head"], splits)
