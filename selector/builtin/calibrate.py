"""Severity calibration: no-fine-tuning accuracy of the source model under every shift.

The paper evaluates at CIFAR-10-C severity 5, where its source model keeps 56.5% on average
(27-91% per corruption). MNIST-C's published levels hurt an MNIST model very unevenly (some
corruptions barely matter at level 5, glass blur destroys the digit), and the CPU probe found
that shifts which push accuracy to chance let full fine-tuning catch up. So each corruption's
default severity (``shifts.RECOMMENDED_SEVERITY``) is the published level whose no-fine-tuning
accuracy is closest to 50% (ties to the higher level): really hurt, signal kept.

Run ``python -m selector.builtin.calibrate`` to print the table kept in ``CALIBRATION.md``.
Accuracies are on the whole clean/corrupted target pool (2,000 images, seed 0).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping

import torch
from torch import nn

from selector.builtin.corruptions import CORRUPTIONS, SEVERITIES, corrupt
from selector.builtin.mnist import load_split
from selector.builtin.pretrain import accuracy
from selector.builtin.shifts import RECOMMENDED_SEVERITY, SHIFTS, target_splits
from selector.builtin.sources import load_source_model

TARGET_ACCURACY = 0.5
BAND = (0.25, 0.75)  # the "really hurt, signal kept" range, like CIFAR-10-C's spread


def choose_severity(accuracies: Mapping[int, float], target: float = TARGET_ACCURACY) -> int:
    """The severity whose accuracy is closest to ``target``; ties go to the higher severity."""
    return min(accuracies, key=lambda s: (round(abs(accuracies[s] - target), 4), -s))


def corruption_table(model: nn.Module, seed: int = 0) -> dict[str, dict[int, float]]:
    """name -> {severity: accuracy} on the corrupted target pool; level-less names get {1: acc}."""
    pool = load_split()
    table: dict[str, dict[int, float]] = {}
    for name, spec in CORRUPTIONS.items():
        levels = SEVERITIES if spec.levels is not None else (1,)
        table[name] = {s: accuracy(model, corrupt(pool.pool_images, name, s, seed),
                                   pool.pool_labels) for s in levels}
    return table


@torch.no_grad()
def _split_accuracy(model: nn.Module, shift: str, seed: int) -> float:
    test = target_splits(shift, None, seed, n_per_class=1, n_val=0, n_test=80).test
    model.eval()
    x, y = test.tensors
    return float((model(x).argmax(1) == y).float().mean())


def render(table: Mapping[str, Mapping[int, float]], clean: float,
           others: Mapping[str, float]) -> str:
    """The markdown tables of ``CALIBRATION.md``."""
    def band(acc: float) -> str:
        return "yes" if BAND[0] <= acc <= BAND[1] else ("above" if acc > BAND[1] else "below")

    lines = [f"Clean target pool: {clean:.1%}", "",
             "| corruption | s1 | s2 | s3 | s4 | s5 | default | in 25-75% |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in table.items():
        if len(row) == 1:
            cells, chosen, acc = [f"{row[1]:.1%}"] + ["″"] * 4, "— (no levels)", row[1]
        else:
            level = choose_severity(row)
            cells, chosen, acc = [f"{row[s]:.1%}" for s in SEVERITIES], str(level), row[level]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {chosen} | {band(acc)} |")
    lines += ["", "| shift | model | no-fine-tuning accuracy (test split, 80/class) |",
              "|---|---|---|"]
    lines += [f"| {name} | {SHIFTS[name].model_name} | {acc:.1%} |"
              for name, acc in others.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = load_source_model("mnist-resnet", args.data_dir)
    pool = load_split()
    clean = accuracy(model, pool.pool_images, pool.pool_labels)
    table = corruption_table(model, args.seed)
    others = {name: _split_accuracy(load_source_model(spec.model_name, args.data_dir),
                                    name, args.seed)
              for name, spec in SHIFTS.items() if spec.kind != "input" and name != "none"}
    print(render(table, clean, others))
    chosen = {n: choose_severity(r) for n, r in table.items() if len(r) > 1}
    print(f"\nRECOMMENDED_SEVERITY = {chosen}")
    stale = {n: s for n, s in chosen.items() if RECOMMENDED_SEVERITY.get(n) != s}
    if stale:
        print(f"# differs from shifts.RECOMMENDED_SEVERITY for {sorted(stale)}")
    print(f"\n({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

