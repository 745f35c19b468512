"""Data at scale (issue 10): a synthetic JPEG folder larger than the in-memory cap, decoded once
into the memory-mapped uint8 cache, then resnet18 head and all trials on CPU.

Reports, in a Markdown file:

- the first load (decode every JPEG into ``$cache/decoded``), a second load (maps the cache)
  and the cache file's size;
- per trial kind, the first epoch's time and the later epochs' time per image, streamed from
  the memory-mapped cache (``SplitData`` streaming path, ``--loader-workers`` DataLoader
  processes) versus the same images as in-memory float tensors (the tensors-file path);
- the peak resident memory of this process (it plays the worker) and of its DataLoader
  children, and the machine's load average while it ran.

The folder is cut per class by the job spec's split rule. Training on all 27,000 images is
hours of CPU time per epoch for resnet18 on a shared 2-core machine, so trials train on
``--train-per-class`` images per class (the paper's few-shot regime) and the streaming path is
forced for them (``MATERIALISE_LIMIT_BYTES`` lowered, as for a split larger than memory): the
code path and its per-image cost are those of a large split, the epoch is short.

    python benchmarks/data_scale.py --images 30000 --out benchmarks/results/data_scale.md
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from selector import load_datasets, surgical_finetune
from selector.finetune import batches
from selector.io.data_spec import DataSplits
from selector.io.decode_cache import DecodedImages
from selector.io.models_io import build_torchvision


def make_folder(root: Path, images: int, classes: int, side: int) -> None:
    """``images`` JPEGs of ``side`` px in ``classes`` folders: noise with a class colour cast."""
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
    tint = rng.integers(0, 100, (classes, 3))
    for i in range(images):
        c = i % classes
        pixels = rng.integers(0, 155, (side, side, 3)) + tint[c]
        Image.fromarray(pixels.astype(np.uint8)).save(root / f"class{c:02d}" / f"{i:06d}.jpg",
                                                      quality=90)


def peak_rss_gib() -> tuple[float, float]:
    """(this process, its largest waited-for child) peak RSS in GiB (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return own, children


def decoded_subsets(splits: DataSplits) -> tuple[Subset[Any], Subset[Any], DecodedImages, Path]:
    """Train, val, the decoded images under both and its cache file. A ``root`` folder loaded
    with a ``cache_dir`` comes back as Subsets of one memory-mapped :class:`DecodedImages`;
    the report reads that file's size and raw uint8 batches of it, so anything else is a bug
    in the loader this script measures, not something to work around."""
    train, val = splits.train, splits.val
    if not (isinstance(train, Subset) and isinstance(val, Subset)
            and isinstance(train.dataset, DecodedImages) and train.dataset.path is not None):
        raise TypeError("expected train and val as Subsets of a cached DecodedImages, got "
                        f"{type(train).__name__} and {type(val).__name__}")
    return train, val, train.dataset, train.dataset.path


def trial(kind: str, train: Any, val: Any, epochs: int, batch_size: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_torchvision("resnet18", num_classes=10).eval()
    tune = ["head"] if kind == "head" else "all"
    started = time.perf_counter()
    result = surgical_finetune(model, tune, train, val, lr=1e-3, epochs=epochs,
                               batch_size=batch_size, device="cpu", test_each_epoch=False)
    wall = time.perf_counter() - started
    n = len(train)
    later = [m.seconds for m in result.epochs[1:]]
    return {"first_s": result.epochs[0].seconds, "later_ms_per_image":
            1000 * float(np.mean(later)) / n if later else float("nan"),
            "trial_s": wall, "setup_s": wall - sum(m.seconds for m in result.epochs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=30000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=10)
    parser.add_argument("--val-per-class", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternate the two paths this many times; the best run counts")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--loader-workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the folder here")
    parser.add_argument("--full-head", action="store_true",
                        help="instead: one head trial on the whole folder (val and test 5%% "
                        "each), streamed because it is larger than the in-memory cap")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="data-scale-"))
    folder, cache = work / "photos", work / "decoded"
    lines = [f"# Data at scale ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)", "",
             f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}`",
             f"Machine: {os.cpu_count()} CPUs, load average before {load_before[0]:.2f}; "
             f"torch {torch.__version__}, {args.threads} threads.", ""]

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    started = time.perf_counter()
    if not folder.is_dir():
        make_folder(folder, args.images, args.classes, args.side)
    say(f"- made {args.images} JPEGs of {args.side}x{args.side} px in {args.classes} classes: "
        f"{time.perf_counter() - started:.1f} s")
    spec = {"source": "imagefolder", "root": folder, "transform": {"preset": "none"},
            "split": {"train": args.train_per_class, "val": args.val_per_class}}
    if args.full_head:
        spec["split"] = {"val": 0.05, "test": 0.05}
    started = time.perf_counter()
    splits = load_datasets(spec, cache_dir=cache, loader_workers=args.loader_workers)
    first_load = time.perf_counter() - started
    started = time.perf_counter()
    splits = load_datasets(spec, cache_dir=cache, loader_workers=args.loader_workers)
    second_load = time.perf_counter() - started
    train, val, base, cache_file = decoded_subsets(splits)
    float_gib = base.images.size * 4 / 2**30
    say(f"- first load (decode all {len(base)} into the cache): {first_load:.1f} s; second "
        f"load (memory-map it): {second_load:.2f} s; cache file "
        f"{cache_file.stat().st_size / 2**20:.0f} MiB uint8 (as float32: {float_gib:.2f} GiB, "
        f"in-memory cap {batches.MATERIALISE_LIMIT_BYTES / 2**30:.0f} GiB)")
    if not args.full_head:
        say(f"- trials: train {len(train)} images ({args.train_per_class}/class), val "
            f"{len(val)}, {args.epochs} epochs, batch {args.batch_size}; streamed from "
            f"the cache with {args.loader_workers} DataLoader workers vs in-memory float tensors")
    if args.full_head:
        torch.manual_seed(0)
        model = build_torchvision("resnet18", num_classes=10).eval()
        started = time.perf_counter()
        result = surgical_finetune(model, ["head"], train, val, splits.test,
                                   lr=1e-3, epochs=args.epochs, batch_size=args.batch_size,
                                   device="cpu", test_each_epoch=False)
        wall = time.perf_counter() - started
        epochs = sum(m.seconds for m in result.epochs)
        test = splits.test
        if not isinstance(test, Subset):  # the 5% test share above always makes one
            raise TypeError(f"expected a test Subset, got {type(test).__name__}")
        say(f"- head trial on the whole folder: train {len(train)}, val "
            f"{len(val)}, test {len(test)} (streamed: float32 train alone is "
            f"{len(train) * base.images[0].size * 4 / 2**30:.2f} GiB); {wall:.1f} s, of "
            f"which {wall - epochs:.1f} s set-up (one streamed forward pass of the frozen "
            f"prefix over every image) and epochs of "
            + ", ".join(f"{m.seconds:.1f}" for m in result.epochs) + " s")
        own, children = peak_rss_gib()
        say(f"- peak RSS: worker process {own:.2f} GiB, largest DataLoader child "
            f"{children:.2f} GiB; load average after {os.getloadavg()[0]:.2f}")
        if args.out is not None:
            args.out.write_text("\n".join(lines) + "\n")
        return 0
    say("")
    say("| trial | data path | first epoch s | later epochs ms/image, best | trial s (setup s) |")
    say("|---|---|---|---|---|")
    x, y = base.uint8_batch(torch.as_tensor(train.indices))
    in_memory = TensorDataset(base.transform.normalise(x), y)
    xv, yv = base.uint8_batch(torch.as_tensor(val.indices))
    val_memory = TensorDataset(base.transform.normalise(xv), yv)
    ratios = {}
    trial("all", in_memory, val_memory, 1, args.batch_size)  # warm-up: kernels, allocator
    for kind in ("head", "all"):
        results: dict[str, list[dict[str, float]]] = {"in-memory": [], "streamed": []}
        for _ in range(args.repeats):  # alternate, so load changes hit both paths alike
            results["in-memory"].append(trial(kind, in_memory, val_memory, args.epochs,
                                              args.batch_size))
            batches.MATERIALISE_LIMIT_BYTES = 0  # as for a split larger than memory
            try:
                results["streamed"].append(trial(kind, train, val, args.epochs, args.batch_size))
            finally:
                batches.MATERIALISE_LIMIT_BYTES = 1 << 30
        best = {}
        for path, runs in results.items():
            best[path] = min(runs, key=lambda r: r["later_ms_per_image"])
            r = best[path]
            runs_text = " / ".join(f"{x['later_ms_per_image']:.2f}" for x in runs)
            say(f"| {kind} | {path} | {r['first_s']:.1f} | {r['later_ms_per_image']:.2f} "
                f"(runs: {runs_text}) | {r['trial_s']:.1f} ({r['setup_s']:.1f}) |")
        ratios[kind] = (best["streamed"]["later_ms_per_image"]
                        / best["in-memory"]["later_ms_per_image"])
    own, children = peak_rss_gib()
    load_after = os.getloadavg()
    say("")
    say("- later epochs, streamed / in-memory per image: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in ratios.items()) + " (goal: within 1.2x)")
    say(f"- peak RSS: worker process {own:.2f} GiB, largest DataLoader child {children:.2f} GiB "
        "(goal: <= 2 GiB; the memory-mapped cache's pages count while resident)")
    say(f"- load average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min); the "
        "machine's 2 cores are shared with other agents, so absolute times are noisy")
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
