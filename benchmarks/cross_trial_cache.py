"""What the cross-trial activation cache saves (issue 11): CPU seconds of single trials and
of a paper grid, with and without it, on the built-in case at 10 epochs, one thread.

* single trials (impulse noise, 100 images/class): the head and block 3 at lr 1e-3, each
  uncached (``cache_prefix=False``), with the per-trial prefix cache (the engine's default),
  and warm from the cross-trial cache (another learning rate of the same part ran first);
* the paper grid (each block, the head, all; lrs 1e-3 and 1e-4; 25 images/class) with the
  cross-trial cache and without it (``activation_cache=None``), both as the workers run a
  trial now (test accuracy evaluated once, at the validation-selected epoch);
* with ``--before-src DIR`` (a checkout of an older main, e.g. ``git archive a92afa4``), the
  same grid as that code's workers ran it (its ``surgical_finetune`` defaults: test accuracy
  every epoch, a per-trial prefix cache), in a subprocess with its own data directory.

    git archive a92afa4 | tar -x -C /tmp/before-src
    .venv/bin/python benchmarks/cross_trial_cache.py --before-src /tmp/before-src \
        --out benchmarks/results/cross_trial_cache.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from selector import surgical_finetune  # noqa: E402
from selector.builtin import load_case  # noqa: E402
from selector.finetune.activation_cache import ActivationCache  # noqa: E402

T = TypeVar("T")


def cpu(run: Callable[[], T]) -> tuple[float, T]:
    """CPU seconds of ``run()`` in this process (not wall time: the machine is shared) and
    its result, typed as ``run``'s so the caller can compare the results' epochs."""
    started = time.process_time()
    result = run()
    return time.process_time() - started, result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-per-class", type=int, default=100)
    p.add_argument("--grid-n-per-class", type=int, default=25)
    p.add_argument("--before-src", type=Path, default=None,
                   help="an older checkout: time the same grid with its code, as its workers ran it")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["# Cross-trial activation cache", "",
             f"Command: `benchmarks/cross_trial_cache.py {' '.join(argv or sys.argv[1:])}`", "",
             "| trial | uncached CPU s | per-trial cache CPU s | cross-trial (warm) CPU s | "
             "uncached / warm |", "|---|---|---|---|---|"]
    case = load_case("mnist", "impulse_noise", 4, 0, n_per_class=args.n_per_class,
                     data_dir=args.data_dir)
    common = dict(epochs=args.epochs, seed=0, device="cpu", test_each_epoch=False)
    for part in ("head", "block3"):
        store = ActivationCache(1 << 30)
        off, a = cpu(lambda: surgical_finetune(case.model, [part], case.train, case.val,  # noqa: B023
                                               case.test, lr=1e-3, cache_prefix=False, **common))
        per, b = cpu(lambda: surgical_finetune(case.model, [part], case.train, case.val,  # noqa: B023
                                               case.test, lr=1e-3, **common))
        surgical_finetune(case.model, [part], case.train, case.val, case.test, lr=1e-2,
                          activation_cache=store, **common)  # another lr fills the cache
        warm, c = cpu(lambda: surgical_finetune(case.model, [part], case.train, case.val,  # noqa: B023
                                                case.test, lr=1e-3, activation_cache=store,  # noqa: B023
                                                **common))
        same = [m.val_acc for m in b.epochs] == [m.val_acc for m in c.epochs]
        lines.append(f"| {part} (lr 1e-3) | {off:.1f} | {per:.1f} | {warm:.1f} | "
                     f"{off / warm:.1f}x{'' if same else ' (RESULTS DIFFER)'} |")
        print(lines[-1], flush=True)
    grid_case = load_case("mnist", "impulse_noise", 4, 0, n_per_class=args.grid_n_per_class,
                          data_dir=args.data_dir)
    cells = [(part, lr) for part in ("block1", "block2", "block3", "head", "all")
             for lr in (1e-3, 1e-4)]
    totals, walls = {}, {}
    for label, grid_store in (("without", None), ("with", ActivationCache(1 << 30))):
        started, wall = time.process_time(), time.perf_counter()
        for part, lr in cells:
            tune = "all" if part == "all" else [part]
            surgical_finetune(grid_case.model, tune, grid_case.train, grid_case.val,
                              grid_case.test, lr=lr, activation_cache=grid_store, **common)
        totals[label] = time.process_time() - started
        walls[label] = time.perf_counter() - wall
        print(label, totals[label], flush=True)
    lines += ["", f"Paper grid ({len(cells)} trials: block1-3, head, all x lr 1e-3, 1e-4; "
              f"{args.grid_n_per_class}/class, {args.epochs} epochs): "
              f"{totals['without']:.1f} CPU s without the cross-trial cache, "
              f"{totals['with']:.1f} with it: {totals['without'] / totals['with']:.2f}x faster.", ""]
    if args.before_src is not None:
        before = grid_before(args.before_src, cells, args.grid_n_per_class, args.epochs)
        lines += [f"The same grid with the code in {args.before_src} as its workers ran it (test "
                  f"accuracy every epoch, per-trial prefix cache; its own source model and data "
                  f"from the same recipe): {before['cpu']:.1f} CPU s ({before['wall']:.1f} s "
                  f"wall); now {totals['with']:.1f} CPU s ({walls['with']:.1f} s wall): "
                  f"**{before['cpu'] / totals['with']:.2f}x** faster in CPU seconds, "
                  f"{before['wall'] / walls['with']:.2f}x in wall time.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


#: Run in the older checkout: its ``surgical_finetune`` with its own defaults, as its
#: ``workers.objective.run_spec`` called it (lr, epochs, batch 64, seed, device, groups).
_BEFORE = """
import json, sys, time, torch
torch.set_num_threads(1)
from selector import surgical_finetune
from selector.builtin import load_case
cells, n, epochs, data_dir = json.loads(sys.argv[1])
case = load_case("mnist", "impulse_noise", 4, 0, n_per_class=n, data_dir=data_dir)
started, wall = time.process_time(), time.perf_counter()
for part, lr in cells:
    surgical_finetune(case.model, "all" if part == "all" else [part], case.train, case.val,
                      case.test, lr=lr, epochs=epochs, batch_size=64, seed=0, device="cpu")
print(json.dumps({"cpu": time.process_time() - started, "wall": time.perf_counter() - wall}))
"""


def grid_before(src: Path, cells: list[tuple[str, float]], n_per_class: int,
                epochs: int) -> dict[str, float]:
    """CPU and wall seconds of the grid run by the code in ``src`` (a fresh interpreter)."""
    with tempfile.TemporaryDirectory(prefix="before-data-") as data_dir:
        env = {**os.environ, "PYTHONPATH": str(src.resolve()), "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", _BEFORE,
                               json.dumps([cells, n_per_class, epochs, data_dir])],
                              cwd=src, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
