"""``save_shift_grid``: one PNG with a row of example target images per built-in shift.

For looking, not measuring: it lets a person check that corruptions look like MNIST-C's and
that the synthetic shifts do what their docs say. Input-level rows show the same ten clean
digits (one per class) under each corruption, so rows compare directly; feature- and
output-level rows show target test images titled with their label. matplotlib is imported
lazily with the Agg backend, so importing ``selector.builtin`` stays light and headless-safe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from selector.builtin.corruptions import corrupt
from selector.builtin.mnist import denormalise, load_split
from selector.builtin.shifts import SHIFTS, get_shift, resolve_severity, target_splits
from selector.builtin.synthetic import derangement

COLUMNS = 10


def _row(shift: str, severity: int | None, seed: int) -> tuple[np.ndarray, list[str]]:
    """Ten 0..255 images for ``shift`` and a caption for each."""
    pool = load_split()
    kind = get_shift(shift).kind
    if kind in ("input", "none"):
        first = [int(np.flatnonzero(pool.pool_labels == d)[0]) for d in range(COLUMNS)]
        images = pool.pool_images[first]
        if kind == "input":
            images = corrupt(images, shift, severity or 1, seed)
        return images, [str(d) for d in range(COLUMNS)]
    test = target_splits(shift, severity, seed, n_per_class=1, n_val=0,
                         n_test=COLUMNS).test
    x, y = test.tensors
    order = np.argsort(y.numpy(), kind="stable")
    pick = order[np.linspace(0, len(order) - 1, COLUMNS).round().astype(int)]
    images = denormalise(x[pick])
    labels = y.numpy()[pick]
    if shift == "label_flip":  # caption "digit→label": label = permutation[digit]
        digit_of = np.argsort(derangement(10, seed))
        return images, [f"{digit_of[t]}→{t}" for t in labels]
    return images, [f"y={t}" for t in labels]


def save_shift_grid(path: str | os.PathLike[str], shifts: Sequence[str] | None = None,
                    severity: int | None = None, seed: int = 0) -> Path:
    """Write a PNG grid to ``path``: a clean row, then one row per shift (all by default).

    ``severity=None`` shows each shift at its calibrated default; an int forces that level on
    every shift that has levels. Returns the path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = [n for n, s in SHIFTS.items() if s.kind != "none"] if shifts is None else list(shifts)
    for name in names:
        get_shift(name)  # fail fast on unknown names, before plotting anything
    rows = ["clean", *(n for n in names if n not in ("clean", "none"))]
    fig, axes = plt.subplots(len(rows), COLUMNS, figsize=(COLUMNS * 0.9 + 1.6, len(rows) * 1.0),
                             squeeze=False)
    for r, name in enumerate(rows):
        kind = get_shift(name).kind
        level = resolve_severity(name, severity)
        images, captions = _row(name, level, seed)
        label = name if level is None else f"{name} s{level}"
        if kind != "none":
            label += f"\n({kind})"
        for c in range(COLUMNS):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if kind in ("feature", "output"):
                ax.set_title(captions[c], fontsize=6, pad=1)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.16, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.3)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
