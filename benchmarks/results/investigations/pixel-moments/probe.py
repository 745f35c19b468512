"""Probe: does a raw-pixel moment test tell geometric from pixel-level corruptions apart?

Statistic: symmetric KL between Gaussians fitted to the pixel values (mean, variance) of the
corrupted target pool and of clean digits; null: the same between two disjoint clean samples of
the same size (300 draws); "exceeds" = above max(99% point, 2 x mean), the diagnosis's rule.
Run from the repository root: ``.venv/bin/python benchmarks/results/investigations/pixel-moments/probe.py``.
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[4]))

from benchmarks import heldout_shifts  # noqa: E402
from selector.builtin.corruptions import CORRUPTIONS, corrupt  # noqa: E402
from selector.builtin.mnist import load_split  # noqa: E402
from selector.builtin.shifts import recommended_severity  # noqa: E402

AFFINE = ("shear", "scale", "rotate", "translate")


def skl(a: np.ndarray, b: np.ndarray) -> float:
    ma, va = a.mean(), a.var() + 1e-8
    mb, vb = b.mean(), b.var() + 1e-8
    return float(0.5 * ((va / vb + vb / va) - 2 + (ma - mb) ** 2 * (1 / va + 1 / vb)) / 2)


def main() -> None:
    pool = load_split()
    clean = pool.pool_images / 255.0
    rng = np.random.default_rng(0)
    names = [(c, "affine" if c in AFFINE else "pixel") for c in CORRUPTIONS]
    names += [(heldout_shifts.PREFIX + k, "HO-" + ("geom" if v.family == "geometric" else "pixel"))
              for k, v in heldout_shifts.HELDOUT.items()]
    for n in (250, 1000):
        null = []
        for _ in range(300):
            p = rng.permutation(len(clean))
            null.append(skl(clean[p[:n]], clean[p[n:2 * n]]))
        high, mean = np.quantile(null, 0.99), np.mean(null)
        threshold = max(high, 2 * mean)
        print(f"n={n}: null mean {mean:.2e} 99% {high:.2e} thr {threshold:.2e}")
        rows = []
        for name, fam in names:
            if heldout_shifts.is_heldout(name):
                level = heldout_shifts.calibrated_level(name, ".cache/bench-data")
                x = heldout_shifts.corrupt(pool.pool_images, name, level, 0) / 255.0
            else:
                x = corrupt(pool.pool_images, name, recommended_severity(name) or 1, 0) / 255.0
            p = rng.permutation(len(clean))
            rows.append((fam, name, skl(x[p[:n]], clean[p[n:2 * n]]) / threshold))
        for fam, name, ratio in sorted(rows):
            print(f"  {fam:9s} {name:24s} {ratio:10.2f} {'EXCEEDS' if ratio > 1 else ''}")


if __name__ == "__main__":
    main()
