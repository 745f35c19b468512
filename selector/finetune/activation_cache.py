"""Frozen-prefix activations shared across trials: one store per (pretrained model, data).

``selector.finetune.prefix_cache`` already trains a trial on the cached input of its entry
module (the first module holding a tuned parameter) instead of re-running the frozen prefix
every epoch. Under the paper's protocol (BatchNorm in eval mode, no augmentation) that input
depends only on the pretrained weights, the entry and the example, not on the learning rate
or on anything a trial trains: every trial that starts at the same entry (all learning rates
of the head, of block 3, ...) would capture exactly the same tensors. An
:class:`ActivationCache` keeps them between trials, so only the first trial per entry pays for
the capture; the probe that verifies the entry still runs in every trial.

The caller owns the scope: one cache per pretrained model and data set (the workers keep one
per job, per worker). Entries are evicted least recently used beyond ``limit_bytes``.

It also remembers small results that every trial would otherwise recompute identically, such as
the untouched model's validation accuracy (:meth:`ActivationCache.remember`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from selector.finetune.batches import SplitData

__all__ = ["ActivationCache"]


def _nbytes(split: SplitData) -> int:
    return sum(t.numel() * t.element_size() for t in (split.x, split.y) if t is not None)


class ActivationCache:
    """A bounded LRU map from (entry, split, ...) to the split's captured entry inputs.

    ``hits`` and ``misses`` count lookups (one per split per trial that could be cached).
    """

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = max(0, int(limit_bytes))
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[SplitData, int]] = OrderedDict()
        self._remembered: dict[Hashable, tuple[float, float]] = {}
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def fetch(self, key: Hashable, capture: Callable[[], SplitData]) -> SplitData:
        """The cached split for ``key``, or ``capture()``'s, kept when it fits."""
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return found[0]
            self.misses += 1
        split = capture()
        size = _nbytes(split)
        if size <= self.limit_bytes:
            with self._lock:
                self._items[key] = (split, size)
                self._items.move_to_end(key)
                while self.nbytes > self.limit_bytes and len(self._items) > 1:
                    self._items.popitem(last=False)
        return split

    def remember(self, key: Hashable, compute: Callable[[], tuple[float, float]]
                 ) -> tuple[float, float]:
        """``compute()``'s result for ``key``, computed once (a few bytes: never evicted)."""
        with self._lock:
            found = self._remembered.get(key)
        if found is None:
            found = compute()
            with self._lock:
                self._remembered[key] = found
        return found
