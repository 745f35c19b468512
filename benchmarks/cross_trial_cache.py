"""What the cross-trial activation cache saves (issue 11): CPU seconds of single trials and
of a paper grid, with and without it, on the built-in case at 10 epochs, one thread.

* single trials (impulse noise, 100 images/class): the head and block 3 at lr 1e-3, each
  uncached (``cache_prefix=False``), with the per-trial prefix cache (the engine's default),
  and warm from the cross-trial cache (another learning rate of the same part ran first);
* the paper grid (each block, the head, all; lrs 1e-3 and 1e-4; 25 images/class) with the
  cross-trial cache and without it (``activation_cache=None``: the code before the change).

    .venv/bin/python benchmarks/cross_trial_cache.py --out benchmarks/results/cross_trial_cache.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from selector import surgical_finetune  # noqa: E402
from selector.builtin import load_case  # noqa: E402
from selector.finetune.activation_cache import ActivationCache  # noqa: E402


def cpu(run) -> tuple[float, object]:
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
    totals = {}
    for label, store in (("without", None), ("with", ActivationCache(1 << 30))):
        started = time.process_time()
        for part, lr in cells:
            tune = "all" if part == "all" else [part]
            surgical_finetune(grid_case.model, tune, grid_case.train, grid_case.val,
                              grid_case.test, lr=lr, activation_cache=store, **common)
        totals[label] = time.process_time() - started
        print(label, totals[label], flush=True)
    lines += ["", f"Paper grid ({len(cells)} trials: block1-3, head, all x lr 1e-3, 1e-4; "
              f"{args.grid_n_per_class}/class, {args.epochs} epochs): "
              f"{totals['without']:.1f} CPU s without the cross-trial cache, "
              f"{totals['with']:.1f} with it: {totals['without'] / totals['with']:.2f}x faster.", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
