"""How often does the shift diagnosis cry wolf? ``selector.diagnose_shift`` on principled nulls,
on architectures that are not in the built-in benchmark.

The built-in benchmark (``benchmarks/diagnosis.py``) asks whether the diagnosis names the part
the grid finds best; this one asks what it says when the answer is known by construction, on
models it was never looked at with:

* **models**: torchvision architectures with fresh weights (nothing is downloaded): BatchNorm
  ones whose running statistics are then set, in train mode with a cumulative average, on
  images of a synthetic *source distribution* (so they carry their source's statistics as a
  pretrained model does), and LayerNorm ones (no running statistics: ``source=`` or nothing);
* **labels**: the model's own predictions on the images, so the untouched model is exactly
  right on unshifted data (a perfectly fit source model; random labels would make any model
  "confidently wrong");
* **conditions**: ``unshifted`` (fresh draws of the source distribution: every answer but
  "none" is a false alarm), ``noise`` and ``contrast`` (input-level by construction: the right
  kind is "input") and ``permuted`` (unshifted images, labels permuted without fixed points:
  "output");
* **nulls**: with a source reference (``source=``: 200 fresh source images) and without
  (the analytic null a user job without ``data.source_reference`` gets).

The source distribution is smooth random images (Gaussian noise box-filtered over 9 pixels,
per-channel offsets), 64x64 RGB. Nothing here was tuned: the diagnosis's rule was fixed before
this script existed (``selector/diagnosis/rule.py``).

    .venv/bin/python benchmarks/diagnosis_null.py --out benchmarks/results/diagnosis_null.md
    .venv/bin/python benchmarks/diagnosis_null.py --quick        # one model, 2 seeds: seconds
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from selector import diagnose_shift  # noqa: E402

MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny")
CONDITIONS = {"unshifted": "none", "noise": "input", "contrast": "input", "permuted": "output"}
SIZE = 64


def source_images(n: int, seed: int) -> torch.Tensor:
    """n images of the synthetic source distribution."""
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.randn(n, 3, SIZE + 8, SIZE + 8, generator=g), 9, stride=1) * 3.0
    return x + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)


def shifted(x: torch.Tensor, condition: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if condition == "noise":
        return x + 0.5 * torch.randn(x.shape, generator=g)
    if condition == "contrast":
        return 0.5 * (x - x.mean()) + x.mean()
    return x


def build(arch: str) -> nn.Module:
    """Fresh weights; BatchNorm running statistics set on 1,280 source images (train mode,
    cumulative average), so the model carries its source's statistics."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for batch in range(20):
                model(source_images(64, 10_000 + batch))
    return model.eval()


def labelled(model: nn.Module, x: torch.Tensor, permute: bool, seed: int) -> TensorDataset:
    with torch.no_grad():
        y = model(x).argmax(1)
    if permute:  # a cyclic shift of the classes: no fixed points
        offset = 1 + seed % 9
        y = (y + offset) % 10
    return TensorDataset(x, y)


def run(models: Sequence[str], seeds: int, n: int,
        log: Callable[[str], None]) -> dict[tuple[str, str, str], collections.Counter[str]]:
    counts: dict[tuple[str, str, str], collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    for arch in models:
        model = build(arch)
        for condition in CONDITIONS:
            for seed in range(seeds):
                images = shifted(source_images(n, 100 + seed), condition, 200 + seed)
                data = labelled(model, images, condition == "permuted", seed)
                reference = labelled(model, source_images(200, 5_000 + seed), False, seed)
                for null, source in (("source", reference), ("no source", None)):
                    found = diagnose_shift(model, data, source=source, seed=seed)
                    counts[(arch, condition, null)][found.kind] += 1
            log(f"{arch} {condition}: " + ", ".join(
                f"{null} {dict(counts[(arch, condition, null)])}" for null in ("source", "no source")))
    return counts


def report(counts: dict[tuple[str, str, str], collections.Counter[str]], models: Sequence[str],
           seeds: int, n: int, command: str, seconds: float) -> str:
    lines = ["# Shift diagnosis on principled nulls", "", f"Command: `{command}` ({seconds:.0f} s)", "",
             f"{seeds} seeds per cell, {n} target images, 200 source images; the cell is how "
             "often the diagnosis said the right kind, then every answer it gave.", "",
             "| model | condition (right kind) | with source | without source |",
             "|---|---|---|---|"]
    totals: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for arch in models:
        for condition, right in CONDITIONS.items():
            cells = []
            for null in ("source", "no source"):
                seen = counts[(arch, condition, null)]
                total = sum(seen.values())
                ok = seen.get(right, 0)
                unavailable = seen.get("unavailable", 0) == total
                cells.append("unavailable" if unavailable else
                             f"{ok}/{total} ({', '.join(f'{k} {v}' for k, v in sorted(seen.items()))})")
                if not unavailable:
                    key = f"{null}: {'false alarms on unshifted data' if right == 'none' else right + ' found'}"
                    totals[key][0] += (total - ok) if right == "none" else ok
                    totals[key][1] += total
            lines.append(f"| {arch} | {condition} ({right}) | {cells[0]} | {cells[1]} |")
    lines += ["", "| summary | count |", "|---|---|"]
    lines += [f"| {key} | {a}/{b} |" for key, (a, b) in sorted(totals.items())]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--models", type=lambda s: tuple(s.split(",")), default=MODELS)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--n", type=int, default=200, help="target images per case")
    p.add_argument("--quick", action="store_true", help="resnet18, 2 seeds, 64 images")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.seeds, args.n = ("resnet18",), 2, 64
    torch.set_num_threads(1)
    started = time.time()
    counts = run(args.models, args.seeds, args.n, lambda line: print(line, flush=True))
    command = " ".join(["benchmarks/diagnosis_null.py", *(argv if argv is not None else sys.argv[1:])])
    text = report(counts, args.models, args.seeds, args.n, command, time.time() - started)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
