"""Clean source-distribution images for a built-in case: the null of the shift diagnosis.

``selector.diagnose_shift(source=...)`` calibrates its statistic on data the source model
could have seen: unshifted digits (``mnist-resnet``), subpopulation A (``mnist-resnet-subpop``),
or digits with the 95%-agreeing corner patch (``mnist-resnet-spurious``). The images come from
the target pool, never from the images the models trained on (which they may have memorised),
and never from the case's *training* split, so the reference is independent of the images the
diagnosis looks at. (They may share digits with the val/test splits, in clean form: the
diagnosis reads no val/test labels.)
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import TensorDataset

from selector.builtin import synthetic
from selector.builtin.mnist import load_split, sample_splits, to_dataset
from selector.builtin.shifts import get_shift

__all__ = ["source_reference"]


def source_reference(shift: str, seed: int = 0, *, n: int | None = None, n_per_class: int = 100,
                     n_val: int = 20, n_test: int = 80) -> TensorDataset:
    """At most ``n`` (default: the case's training-set size) labelled clean images of the
    source distribution of ``shift``'s source model, disjoint from the case's training split."""
    spec = get_shift(shift)
    pool = load_split()
    images, digits = pool.pool_images, pool.pool_labels
    size = n if n is not None else n_per_class * spec.num_classes
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5041]))
    if shift == "subpopulation":
        mask, classes = synthetic.superclass_of(digits, "A")  # the target uses B: disjoint
        ids = rng.permutation(np.flatnonzero(mask))[:size]
        return to_dataset(images[ids], classes[ids])
    if shift == "spurious":
        labels = synthetic.binary_label(digits)
        train = sample_splits(labels, n_per_class=n_per_class, n_val=n_val, n_test=n_test,
                              seed=seed).train
        ids = rng.permutation(np.setdiff1d(np.arange(len(labels)), train))[:size]
        patches = synthetic.assign_patches(labels[ids], synthetic.SOURCE_AGREEMENT, rng)
        return to_dataset(synthetic.add_patches(images[ids], patches), labels[ids])
    # clean digits: the source of every corruption, of label_flip and of the clean control
    train = sample_splits(digits, n_per_class=n_per_class, n_val=n_val, n_test=n_test,
                          seed=seed).train
    ids = rng.permutation(np.setdiff1d(np.arange(len(digits)), train))[:size]
    return to_dataset(images[ids], digits[ids])
