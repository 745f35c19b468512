"""Training throughput of one trial: images/s per trial kind, model, image size, device and
precision (issue 10's GPU-readiness table).

Each cell trains a torchvision model (random weights: throughput does not depend on them) with
``selector.surgical_finetune`` on synthetic images for ``--epochs`` epochs and reports the
training images per second of the last epoch (the first pays for cudnn autotuning and the
prefix cache) and the trial's wall time. Trial kinds: ``head`` (last layer; the frozen prefix
is cached), ``block1`` (stem + first stage), ``all``.

    python benchmarks/throughput.py --quick                       # CPU, a minute
    python benchmarks/throughput.py --device cuda --out benchmarks/results/throughput-gpu.md

The full grid is resnet18 and resnet50 at 64 and 224 px, every precision the device runs
(CPU: fp32, bf16; CUDA: fp32, bf16 when supported, fp16).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TypedDict

import torch
from torch.utils.data import TensorDataset

from selector import discover_groups, surgical_finetune
from selector.io.models_io import build_torchvision

KINDS = ("head", "block1", "all")


class Cell(TypedDict):
    """One trial's measurements and the precision it ran in (``result.precision``, what the
    table shows), so the row mixes numbers and a string."""

    images_per_s: float
    trial_s: float
    gpu_gib: float
    precision: str


def precisions(device: torch.device, quick: bool = False) -> list[str]:
    """What the device runs. CPU bf16 autocast works but is only fast on CPUs with native bf16
    (AVX512-BF16/AMX); on others a full-model trial is 50x slower, so --quick skips it."""
    if device.type != "cuda":
        return ["fp32"] if quick else ["fp32", "bf16"]
    return ["fp32", *(["bf16"] if torch.cuda.is_bf16_supported() else []), "fp16"]


def measure(arch: str, size: int, kind: str, precision: str, device: torch.device,
            images: int, batch_size: int, epochs: int) -> Cell:
    torch.manual_seed(0)
    model = build_torchvision(arch, num_classes=10).eval()
    groups = discover_groups(model)
    tune = {"head": [groups[-1].name], "block1": [groups[0].name], "all": "all"}[kind]
    train = TensorDataset(torch.randn(images, 3, size, size), torch.arange(images) % 10)
    val = TensorDataset(torch.randn(batch_size, 3, size, size), torch.arange(batch_size) % 10)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = surgical_finetune(model, tune, train, val, lr=1e-3, epochs=epochs,
                               batch_size=batch_size, device=device, precision=precision,
                               groups=groups, test_each_epoch=False)
    wall = time.perf_counter() - started
    last = result.epochs[-1].seconds  # includes one val batch: a small, constant overhead
    memory = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
              else float("nan"))
    return Cell(images_per_s=images / last, trial_s=wall, gpu_gib=memory,
                precision=result.precision)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="resnet18 at 64 px only, few images: a CPU smoke run")
    parser.add_argument("--archs", nargs="+", default=None)
    parser.add_argument("--sizes", nargs="+", type=int, default=None)
    parser.add_argument("--precisions", nargs="+", default=None)
    parser.add_argument("--images", type=int, default=None, help="training images per epoch")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    archs = args.archs or (["resnet18"] if args.quick else ["resnet18", "resnet50"])
    sizes = args.sizes or ([64] if args.quick else [64, 224])
    images = args.images or (32 if args.quick else 1024 if device.type == "cuda" else 256)
    chosen = args.precisions or precisions(device, args.quick)
    name = (torch.cuda.get_device_name(device) if device.type == "cuda"
            else platform.processor() or platform.machine())
    lines = [
        f"# Trial throughput ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `python benchmarks/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}`",
        f"Device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} "
        f"CPU threads; {images} training images of random noise per epoch, batch "
        f"{args.batch_size}, images/s of epoch {args.epochs} (of {args.epochs}).",
        "",
        "| model | px | precision | " + " | ".join(f"{k} img/s" for k in KINDS)
        + " | all: trial s | all: peak GPU GiB |",
        "|---|---|---|" + "---|" * len(KINDS) + "---|---|",
    ]
    print("\n".join(lines), flush=True)
    for arch in archs:
        for size in sizes:
            for precision in chosen:
                cells = {kind: measure(arch, size, kind, precision, device, images,
                                       args.batch_size, args.epochs) for kind in KINDS}
                row = (f"| {arch} | {size} | {cells['all']['precision']} | "
                       + " | ".join(f"{cells[k]['images_per_s']:.1f}" for k in KINDS)
                       + f" | {cells['all']['trial_s']:.1f} | {cells['all']['gpu_gib']:.2f} |")
                lines.append(row)
                print(row, flush=True)
    if args.out is not None:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
