"""The cross-trial activation cache: trials that start at the same entry reuse one capture,
and the results are bit-identical to trials that capture (or do not cache) on their own."""

from __future__ import annotations

import pytest
import torch

from selector import surgical_finetune
from selector.finetune.activation_cache import ActivationCache
from selector.finetune.batches import SplitData


def _same(a, b) -> None:
    assert [m.val_acc for m in a.epochs] == [m.val_acc for m in b.epochs]
    assert [m.train_loss for m in a.epochs] == [m.train_loss for m in b.epochs]
    assert a.test_acc == b.test_acc and a.best_epoch == b.best_epoch
    assert a.state_dict.keys() == b.state_dict.keys()
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_trials_at_the_same_entry_reuse_the_capture_bit_identically(tiny_resnet, splits):
    train, val, test = splits
    store = ActivationCache(64 << 20)
    runs = [("head", 1e-1), ("head", 1e-2), ("block3", 1e-3), ("block3", 1e-4)]
    shared, alone, uncached = [], [], []
    for tune, lr in runs:
        common = dict(lr=lr, epochs=2, seed=0, device="cpu", batch_size=32)
        shared.append(surgical_finetune(tiny_resnet, [tune], train, val, test, **common,
                                        activation_cache=store))
        alone.append(surgical_finetune(tiny_resnet, [tune], train, val, test, **common))
        uncached.append(surgical_finetune(tiny_resnet, [tune], train, val, test, **common,
                                          cache_prefix=False))
    for a, b in zip(shared, alone, strict=True):
        _same(a, b)
    for a, b in zip(shared, uncached, strict=True):  # up to float rounding only
        assert abs(a.best_val_acc - b.best_val_acc) <= 1 / len(val)
    # train, val and test captured once per entry (head, block3), reused by the second lr
    assert (store.misses, store.hits, len(store)) == (6, 6, 6)


def test_the_store_is_bounded_and_least_recently_used_goes_first():
    def split(n: int) -> SplitData:
        return SplitData.from_tensors("train", torch.zeros(n, 256), torch.zeros(n, dtype=torch.long))

    one = split(4).x.numel() * 4 + 4 * 8  # float32 features + int64 labels
    store = ActivationCache(2 * one)
    store.fetch("a", lambda: split(4))
    store.fetch("b", lambda: split(4))
    store.fetch("a", lambda: split(4))  # a is now the most recent
    store.fetch("c", lambda: split(4))  # evicts b
    assert (store.hits, store.misses, len(store), store.nbytes) == (1, 3, 2, 2 * one)
    store.fetch("b", lambda: split(4))
    assert store.misses == 4
    assert ActivationCache(0).fetch("x", lambda: split(4)).n == 4  # too big: computed, not kept


class Pruned(Exception):
    """What a search's pruner raises from the epoch callback (``optuna.TrialPruned``)."""


def _prune_after_first_epoch(metrics) -> bool:
    raise Pruned


def test_a_trial_stopped_early_never_captures_the_test_split(tiny_resnet, splits):
    """The test split is captured when first evaluated: a pruned trial never evaluates it,
    and the capture a later trial makes after training equals the one taken before."""
    import copy

    from selector.finetune.prefix_cache import _capture

    train, val, test = splits
    store = ActivationCache(64 << 20)
    common = dict(epochs=2, seed=0, device="cpu", batch_size=32, test_each_epoch=False)
    with pytest.raises(Pruned):
        surgical_finetune(tiny_resnet, ["block3"], train, val, test, lr=1e-3, **common,
                          activation_cache=store, on_epoch=_prune_after_first_epoch)
    assert (store.misses, len(store)) == (2, 2), "train and val captured, test not"
    full = surgical_finetune(tiny_resnet, ["block3"], train, val, test, lr=1e-2, **common,
                             activation_cache=store)
    assert (store.misses, store.hits, len(store)) == (3, 2, 3)
    _same(full, surgical_finetune(tiny_resnet, ["block3"], train, val, test, lr=1e-2, **common))
    # the capture taken after 2 epochs of training equals one from the untouched model
    eager = _capture(copy.deepcopy(tiny_resnet).eval(), "layer3.0",
                     SplitData(test, "test"), 128)
    stored = store.fetch(("layer3.0", "test", len(test), "cpu", 128),
                         lambda: pytest.fail("the test capture is not in the store"))
    assert torch.equal(stored.x, eager.x) and torch.equal(stored.y, eager.y)


def test_the_untouched_models_validation_accuracy_is_computed_once_per_entry(tiny_resnet, splits):
    train, val, test = splits
    store = ActivationCache(64 << 20)
    common = dict(epochs=1, seed=0, device="cpu", batch_size=32)
    runs = [surgical_finetune(tiny_resnet, [tune], train, val, test, lr=lr, **common,
                              activation_cache=store)
            for tune, lr in (("head", 1e-1), ("head", 1e-2), ("block1", 1e-3), ("block1", 1e-4))]
    alone = surgical_finetune(tiny_resnet, ["head"], train, val, test, lr=1e-2, **common)
    assert {r.initial_val_acc for r in runs} == {alone.initial_val_acc}
    assert len(store._remembered) == 2, "one per way of evaluating it: cached at fc, uncached"
