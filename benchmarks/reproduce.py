"""Reproduce the paper's protocol (Lee et al., ICLR 2023) with our engine on the built-in case.

For every shift, regime (labelled images per class), seed, method and learning rate, one
fine-tuning run: Adam, weight decay 1e-4, batch 64, constant lr, BatchNorm in eval mode, a fresh
copy of the source model each time. Per (shift, regime, seed, method) the (lr, epoch) with the
best validation accuracy is selected and its test accuracy reported; tables show mean ± standard
error over seeds. See ``benchmarks/README.md`` for the grid, its cost and the results.

Every finished run is appended to ``runs.csv`` at once; a later invocation skips the runs already
there, so an interrupted benchmark resumes where it stopped. ``table.md`` and ``figure2.png`` are
rewritten from the CSV at the end (``--report-only`` rewrites them without running anything).

    .venv/bin/python benchmarks/reproduce.py --quick               # < 1 minute smoke run
    .venv/bin/python benchmarks/reproduce.py --estimate            # time a few runs, cost the grid
    .venv/bin/python benchmarks/reproduce.py --out benchmarks/results --workers 2
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import functools
import math
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from benchmarks import cases, heldout_shifts  # noqa: E402  (after the sys.path line above)

if TYPE_CHECKING:  # the engine is imported inside the worker processes, not at start-up
    from selector.builtin.case import Case

# ---------------------------------------------------------------------------------------------
# The grid

#: The committed plan (benchmarks/README.md explains every choice): three MNIST-C corruptions
#: at their calibrated default severity (one noise, one blur, one overlay; shot_noise barely
#: hurts, fog/brightness/canny_edges sit at chance, motion_blur and spatter qualify but cost
#: time) and the three other shifts; at 100 per class one seed on four shifts.
INPUT_SHIFTS = ("impulse_noise", "glass_blur", "zigzag")
OTHER_SHIFTS = ("subpopulation", "label_flip", "spurious")
DEFAULT_SHIFTS = INPUT_SHIFTS + OTHER_SHIFTS
DEFAULT_SHIFTS_FOR = ("100=impulse_noise,subpopulation,label_flip,spurious",)
DEFAULT_SEEDS_FOR = ("100=0",)
NONE = "none"
SURGICAL = ("all", "head", "block1", "block2", "block3")
AUTO = ("auto-rgn", "auto-snr")
METHODS = (NONE, *SURGICAL, *AUTO)
KIND_ORDER = ("input", "feature", "output")
#: Column order of the tables (the paper's: tuned parts, then the automatic methods).
COLUMNS = (NONE, "all", "block1", "block2", "block3", "head", "auto-rgn", "auto-snr")
LABELS = {NONE: "no FT", "all": "all", "block1": "block 1", "block2": "block 2",
          "block3": "block 3", "head": "last layer", "auto-rgn": "Auto-RGN",
          "auto-snr": "Auto-SNR"}

QUICK = dict(shifts=("impulse_noise", "label_flip"), seeds=(0,), lrs=(1e-2, 1e-3), epochs=3,
             regimes=(10,), n_val=10, n_test=20)


@dataclass(frozen=True)
class Task:
    """One fine-tuning run (``method == "none"``: one evaluation, ``lr`` is NaN)."""

    shift: str
    severity: int | None
    regime: int                  # labelled training images per class
    n_val: int
    n_test: int
    seed: int
    method: str
    lr: float
    epochs: int
    bn_mode: str

    def key(self) -> tuple[str, ...]:
        return (self.shift, _fmt_int(self.severity), str(self.regime), str(self.n_val),
                str(self.n_test), str(self.seed), self.method, _fmt_lr(self.lr),
                str(self.epochs), self.bn_mode)


CSV_FIELDS = ("shift", "kind", "severity", "regime", "n_val", "n_test", "seed", "method", "lr",
              "epochs", "bn_mode", "best_epoch", "val_acc", "val_loss", "test_acc",
              "initial_val_acc", "tuned_share", "tuned_groups", "seconds", "cpu_seconds", "val_curve",
              "rgn_profile", "finished_at")
KEY_FIELDS = ("shift", "severity", "regime", "n_val", "n_test", "seed", "method", "lr",
              "epochs", "bn_mode")


def _fmt_lr(lr: float) -> str:
    return "" if lr is None or math.isnan(lr) else f"{lr:g}"


def _fmt_int(value: int | None) -> str:
    return "" if value is None else str(value)


@dataclass(frozen=True)
class BenchmarkGrid:
    """The benchmark's grid of runs (not a job's :class:`workers.strategies.SearchPlan`).
    ``regimes`` in run order; each regime may use its own shifts and seeds, each method its own
    learning rates (``lrs_for``; others use ``lrs``)."""

    regimes: tuple[int, ...]
    shifts: dict[int, tuple[str, ...]]
    seeds: dict[int, tuple[int, ...]]
    methods: tuple[str, ...]
    lrs: tuple[float, ...]
    lrs_for: dict[str, tuple[float, ...]]
    epochs: int
    n_val: int
    n_test: int
    bn_mode: str
    severities: dict[str, int | None]

    def method_lrs(self, method: str) -> tuple[float, ...]:
        return (math.nan,) if method == NONE else self.lrs_for.get(method, self.lrs)

    def all_shifts(self) -> list[str]:
        seen: dict[str, None] = {}
        for regime in self.regimes:
            seen.update(dict.fromkeys(self.shifts[regime]))
        return list(seen)


def build_tasks(grid: BenchmarkGrid) -> list[Task]:
    """Seed-major, then the regimes in the given order: an interrupted run leaves whole
    (seed, regime) blocks behind, and both regimes get their first seed early. Within a case,
    costly methods first (better load balance)."""
    cost = {"auto-rgn": 0, "auto-snr": 1, "all": 2, "block1": 3, "block2": 4, "block3": 5,
            "head": 6, NONE: 7}
    seeds = sorted({seed for regime in grid.regimes for seed in grid.seeds[regime]})
    tasks = []
    for seed in seeds:
        for regime in (r for r in grid.regimes if seed in grid.seeds[r]):
            for shift in grid.shifts[regime]:
                for method in sorted(grid.methods, key=lambda m: cost.get(m, 0)):
                    for lr in grid.method_lrs(method):
                        tasks.append(Task(shift, grid.severities[shift], regime, grid.n_val,
                                          grid.n_test, seed, method, lr,
                                          0 if method == NONE else grid.epochs, grid.bn_mode))
    return tasks


# ---------------------------------------------------------------------------------------------
# One run (executed in a worker process)

def _init_worker() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch
    import torch._dynamo  # noqa: F401  (imported by the first optimizer: ~2-6 s, once)

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)
    # Diverging runs (lr 1e-1) fill the weights with denormals, which run ~2x slower on x86.
    torch.set_flush_denormal(True)


@functools.lru_cache(maxsize=4)
def _case(shift: str, severity: int | None, seed: int, regime: int, n_val: int, n_test: int,
          data_dir: str) -> Case:
    return cases.load_case(shift, seed, severity=severity, n_per_class=regime, n_val=n_val,
                           n_test=n_test, data_dir=data_dir)


class TrainArgs(TypedDict):
    """The keyword arguments every method's run shares, typed so that ``**`` of them checks
    against each fine-tuning function's signature."""

    lr: float
    epochs: int
    seed: int
    bn_mode: str
    device: str
    test_each_epoch: bool


def run_task(task: Task, data_dir: str) -> dict[str, Any]:
    """Run one task and return its CSV row."""
    from selector import auto_rgn_finetune, auto_snr_finetune, surgical_finetune

    started, cpu_started = time.perf_counter(), time.process_time()
    case = _case(task.shift, task.severity, task.seed, task.regime, task.n_val, task.n_test,
                 data_dir)
    common = TrainArgs(lr=0.0 if task.method == NONE else task.lr, epochs=task.epochs,
                       seed=task.seed, bn_mode=task.bn_mode, device="cpu", test_each_epoch=False)
    if task.method == NONE:
        result = surgical_finetune(case.model, [], case.train, case.val, case.test, **common)
    elif task.method == "auto-rgn":
        result = auto_rgn_finetune(case.model, case.train, case.val, case.test, **common)
    elif task.method == "auto-snr":
        result = auto_snr_finetune(case.model, case.train, case.val, case.test, **common)
    else:
        tune = "all" if task.method == "all" else [task.method]
        result = surgical_finetune(case.model, tune, case.train, case.val, case.test, **common)
    best = result.epochs[result.best_epoch - 1] if result.best_epoch else None
    if best is None:  # no training: the untouched model
        from selector import evaluate

        val_loss, _ = evaluate(case.model, case.val)
    else:
        val_loss = best.val_loss
    profile = ""
    if result.rgn_profile:
        first = result.rgn_profile[0]
        profile = ";".join(f"{k}={v:.3f}" for k, v in first.items())
    return {
        **{f: v for f, v in zip(KEY_FIELDS, task.key(), strict=True)},
        "kind": case.kind,
        "best_epoch": result.best_epoch,
        "val_acc": f"{result.best_val_acc:.4f}",
        "val_loss": f"{val_loss:.4f}",
        "test_acc": f"{result.test_acc:.4f}",
        "initial_val_acc": f"{result.initial_val_acc:.4f}",
        "tuned_share": f"{result.tuned_share:.4f}",
        "tuned_groups": "+".join(result.tuned_groups),
        "seconds": f"{time.perf_counter() - started:.2f}",
        "cpu_seconds": f"{time.process_time() - cpu_started:.2f}",
        "val_curve": ";".join(f"{m.val_acc:.3f}" for m in result.epochs),
        "rgn_profile": profile,
        "finished_at": dt.datetime.now().isoformat(timespec="seconds"),
    }


# ---------------------------------------------------------------------------------------------
# The CSV (append-only, resumable)

def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row.get("test_acc")]


def migrate_header(path: Path) -> None:
    """Rewrite a CSV written by an older version of this script with the current columns
    (new columns empty), so that appended rows line up."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) == CSV_FIELDS:
            return
        rows = list(reader)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: r.get(k) or "" for k in CSV_FIELDS} for r in rows)
    tmp.replace(path)


def append_row(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in CSV_FIELDS})
        handle.flush()
        os.fsync(handle.fileno())


def row_key(row: dict[str, str]) -> tuple[str, ...]:
    return tuple(row[f] for f in KEY_FIELDS)


def run_all(tasks: list[Task], csv_path: Path, data_dir: str, workers: int,
            reuse: Sequence[Path] = ()) -> int:
    """Run the tasks not yet in the CSV (or in the ``reuse`` CSVs); returns how many ran."""
    from tqdm import tqdm

    migrate_header(csv_path)
    done = {row_key(r) for path in (csv_path, *reuse) for r in read_rows(path)}
    todo = [t for t in tasks if t.key() not in done]
    print(f"{len(tasks)} runs in the grid, {len(tasks) - len(todo)} already done, "
          f"{len(todo)} to run on {workers} worker(s)", flush=True)
    if not todo:
        return 0
    bar = tqdm(total=len(tasks), initial=len(tasks) - len(todo), unit="run", smoothing=0.05,
               dynamic_ncols=True)
    ran = 0
    if workers <= 1:
        _init_worker()
        for task in todo:
            append_row(csv_path, run_task(task, data_dir))
            ran += 1
            bar.set_postfix_str(_describe(task))
            bar.update()
        bar.close()
        return ran
    context = mp.get_context("spawn")  # no fork after torch has started threads
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker)
    pending = {}
    queue = iter(todo)
    try:
        # Keep the queue short (2 per worker) so an interrupt loses little and order is kept.
        for task in queue:
            pending[pool.submit(run_task, task, data_dir)] = task
            if len(pending) >= 2 * workers:
                break
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                task = pending.pop(future)
                append_row(csv_path, future.result())
                ran += 1
                bar.set_postfix_str(_describe(task))
                bar.update()
                nxt = next(queue, None)
                if nxt is not None:
                    pending[pool.submit(run_task, nxt, data_dir)] = nxt
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM): finished runs are in the CSV; drop the running ones.
        for future in pending:
            future.cancel()
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    bar.close()
    return ran


def _describe(task: Task) -> str:
    lr = "" if task.method == NONE else f" lr={task.lr:g}"
    return f"n={task.regime} seed={task.seed} {task.shift} {task.method}{lr}"


# ---------------------------------------------------------------------------------------------
# Selection and statistics

@dataclass(frozen=True)
class Selected:
    shift: str
    kind: str
    severity: str
    regime: int
    seed: int
    method: str
    lr: str
    best_epoch: int
    val_acc: float
    test_acc: float
    tuned_share: float


def select(rows: Iterable[dict[str, str]], tasks: Sequence[Task] | None = None
           ) -> list[Selected]:
    """Per (shift, regime, seed, method): the run (lr) whose best epoch has the highest val
    accuracy; ties go to the lower val loss, then the larger lr.

    With ``tasks`` (the current grid), only its rows count, and only complete (shift, regime,
    seed) blocks (every method at every lr finished), so that an interrupted run never
    compares methods over different seeds."""
    groups: dict[tuple[str, ...], list[dict[str, str]]] = defaultdict(list)
    keys = None if tasks is None else {t.key() for t in tasks}
    for row in rows:
        if keys is not None and row_key(row) not in keys:
            continue
        groups[(row["shift"], row["regime"], row["seed"], row["method"])].append(row)
    complete = None
    if tasks is not None:
        need: dict[tuple[str, str, str], int] = defaultdict(int)
        have: dict[tuple[str, str, str], int] = defaultdict(int)
        for t in tasks:
            need[(t.shift, str(t.regime), str(t.seed))] += 1
        for (shift, regime, seed, _), runs in groups.items():
            have[(shift, regime, seed)] += len({row_key(r) for r in runs})
        complete = {block for block, n in need.items() if have.get(block) == n}
    chosen = []
    for (shift, regime, seed, method), runs in groups.items():
        if complete is not None and (shift, regime, seed) not in complete:
            continue
        best = max(runs, key=_preference)
        chosen.append(Selected(shift, best["kind"], best["severity"], int(regime), int(seed),
                               method, best["lr"], int(best["best_epoch"]),
                               float(best["val_acc"]), float(best["test_acc"]),
                               float(best["tuned_share"])))
    return chosen


def _preference(row: dict[str, str]) -> tuple[float, float, float]:
    """Higher val accuracy, then lower val loss (NaN: a diverged run, last), then larger lr."""
    loss = float(row["val_loss"])
    return (float(row["val_acc"]), -loss if math.isfinite(loss) else -math.inf,
            float(row["lr"] or 0))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def by_cell(selected: Iterable[Selected]) -> dict[tuple[int, str, str], dict[int, Selected]]:
    """(regime, shift, method) -> seed -> selected run."""
    cells: dict[tuple[int, str, str], dict[int, Selected]] = defaultdict(dict)
    for s in selected:
        cells[(s.regime, s.shift, s.method)][s.seed] = s
    return cells


def per_shift_relative(selected: Sequence[Selected], regime: int, method: str
                       ) -> dict[str, float]:
    """shift -> seed-mean of test_acc(method) - test_acc(all) (paired by seed)."""
    cells = by_cell(selected)
    out = {}
    for shift in sorted({s.shift for s in selected if s.regime == regime}):
        full = cells.get((regime, shift, "all"), {})
        mine = cells.get((regime, shift, method), {})
        seeds = sorted(set(full) & set(mine))
        if seeds:
            out[shift] = sum(mine[x].test_acc - full[x].test_acc for x in seeds) / len(seeds)
    return out


def relative_to_full(selected: Sequence[Selected], regime: int, methods: Sequence[str]
                     ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """kind -> method -> (mean, SE, n) of test_acc(method) - test_acc(all) over the (shift,
    seed) pairs of that kind where both exist (paired by seed)."""
    cells = by_cell(selected)
    kinds = {s.shift: s.kind for s in selected}
    out: dict[str, dict[str, tuple[float, float, int]]] = {}
    for kind in KIND_ORDER:
        shifts = sorted({s for s, k in kinds.items() if k == kind})
        out[kind] = {}
        for method in methods:
            diffs = []
            for shift in shifts:
                full = cells.get((regime, shift, "all"), {})
                mine = cells.get((regime, shift, method), {})
                diffs += [mine[seed].test_acc - full[seed].test_acc
                          for seed in sorted(set(full) & set(mine))]
            if diffs:
                mean, se = mean_se(diffs)
                out[kind][method] = (mean, se, len(diffs))
    return out


# ---------------------------------------------------------------------------------------------
# Reports

def _pct(mean: float, se: float) -> str:
    if math.isnan(se):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * se:.1f}"


def markdown(selected: Sequence[Selected], regimes: Sequence[int], shifts: Sequence[str],
             methods: Sequence[str], title: str) -> str:
    cells = by_cell(selected)
    kinds = {s.shift: s.kind for s in selected}
    severities = {s.shift: s.severity for s in selected}
    cols = [c for c in COLUMNS if c in methods]
    lines = [f"# {title}", ""]
    for regime in regimes:
        present = [s for s in shifts if any((regime, s, m) in cells for m in cols)]
        if not present:
            continue
        seeds = sorted({seed for (r, _, _), runs in cells.items() if r == regime
                        for seed in runs})
        lines += [f"## {regime} labelled images per class",
                  "",
                  f"Test accuracy (%), mean ± standard error over seeds {seeds}; lr and epoch "
                  "selected on validation. Bold: best in the row (ties within 0.05 points).",
                  "",
                  "| kind | shift | " + " | ".join(LABELS[c] for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for kind in KIND_ORDER:
            for shift in [s for s in present if kinds.get(s) == kind]:
                stats = {}
                for c in cols:
                    runs = cells.get((regime, shift, c), {})
                    if runs:
                        stats[c] = mean_se([r.test_acc for r in runs.values()])
                top = max((m for m, _ in stats.values()), default=0.0)
                name = shift if not severities.get(shift) else f"{shift} (s{severities[shift]})"
                row = []
                for c in cols:
                    if c not in stats:
                        row.append("–")
                        continue
                    text = _pct(*stats[c])
                    row.append(f"**{text}**" if stats[c][0] >= top - 5e-4 else text)
                lines.append(f"| {kind} | {name} | " + " | ".join(row) + " |")
        # Per-kind means over shifts (of the per-shift seed means).
        lines += ["", "Mean over the shifts of each kind (of the per-shift means):", "",
                  "| kind | shifts | " + " | ".join(LABELS[c] for c in cols) + " |",
                  "|---|---|" + "---|" * len(cols)]
        for kind in KIND_ORDER:
            ks = [s for s in present if kinds.get(s) == kind]
            if not ks:
                continue
            means = {}
            for c in cols:
                per_shift = [mean_se([r.test_acc for r in cells[(regime, s, c)].values()])[0]
                             for s in ks if cells.get((regime, s, c))]
                if len(per_shift) == len(ks):
                    means[c] = sum(per_shift) / len(per_shift)
            top = max(means.values(), default=0.0)
            row = [("–" if c not in means else
                    (f"**{100 * means[c]:.1f}**" if means[c] >= top - 5e-4
                     else f"{100 * means[c]:.1f}")) for c in cols]
            lines.append(f"| {kind} | {len(ks)} | " + " | ".join(row) + " |")
        rel = relative_to_full(selected, regime, [c for c in cols if c not in (NONE, "all")])
        lines += ["", "Difference to full fine-tuning (points), mean ± SE over the (shift, "
                  "seed) pairs of each kind (the data of `figure2.png`):", "",
                  "| kind | " + " | ".join(LABELS[c] for c in cols if c not in (NONE, "all"))
                  + " |", "|---|" + "---|" * (len(cols) - 2)]
        for kind, per in rel.items():
            if per:
                lines.append(f"| {kind} | " + " | ".join(
                    (f"{100 * per[c][0]:+.1f} ± {100 * per[c][1]:.1f}"
                     if c in per and not math.isnan(per[c][1]) else
                     (f"{100 * per[c][0]:+.1f}" if c in per else "–"))
                    for c in cols if c not in (NONE, "all")) + " |")
        # Auto-RGN vs full per shift (seed-paired means).
        if "auto-rgn" in cols and "all" in cols:
            wins = sum(1 for s in present
                       if cells.get((regime, s, "auto-rgn")) and cells.get((regime, s, "all"))
                       and mean_se([r.test_acc for r in cells[(regime, s, "auto-rgn")].values()])[0]
                       > mean_se([r.test_acc for r in cells[(regime, s, "all")].values()])[0])
            lines += ["", f"Auto-RGN above full fine-tuning on {wins} of {len(present)} shifts."]
        lines.append("")
    return "\n".join(lines)


def figure(selected: Sequence[Selected], regimes: Sequence[int], methods: Sequence[str],
           path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [m for m in ("block1", "block2", "block3", "head", "auto-rgn", "auto-snr")
            if m in methods]
    colours = {"block1": "#1f77b4", "block2": "#2ca02c", "block3": "#ff7f0e", "head": "#d62728",
               "auto-rgn": "#7f7f7f", "auto-snr": "#bcbd22"}
    regimes = [r for r in regimes if any(s.regime == r for s in selected)]
    fig, axes = plt.subplots(1, max(len(regimes), 1), figsize=(6.2 * max(len(regimes), 1), 4.2),
                             squeeze=False, sharey=True)
    for ax, regime in zip(axes[0], regimes, strict=False):
        rel = relative_to_full(selected, regime, bars)
        kinds = [k for k in KIND_ORDER if rel.get(k)]
        width = 0.8 / len(bars)
        for i, method in enumerate(bars):
            xs, ys, es = [], [], []
            for j, kind in enumerate(kinds):
                if method in rel[kind]:
                    mean, se, _ = rel[kind][method]
                    xs.append(j + (i - (len(bars) - 1) / 2) * width)
                    ys.append(100 * mean)
                    es.append(0.0 if math.isnan(se) else 100 * se)
            hatch = "//" if method.startswith("auto") else None
            ax.bar(xs, ys, width, yerr=es, capsize=2, color=colours[method], hatch=hatch,
                   edgecolor="white" if hatch else None, label=LABELS[method])
            # One dot per shift (its seed mean), so a kind mixing opposite shifts shows it.
            kind_of = {x.shift: x.kind for x in selected}
            for shift, diff in per_shift_relative(selected, regime, method).items():
                if kind_of[shift] in kinds:
                    j = kinds.index(kind_of[shift])
                    ax.plot(j + (i - (len(bars) - 1) / 2) * width, 100 * diff, "o",
                            markersize=2.5, color="black", zorder=3)
        ax.axhline(0, color="black", linewidth=0.8)
        n_shifts = {k: len({s.shift for s in selected if s.kind == k and s.regime == regime})
                    for k in kinds}
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels([f"{k}-level\n({n_shifts[k]} shift{'s' * (n_shifts[k] > 1)})"
                            for k in kinds])
        ax.set_title(f"{regime} labelled images per class")
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("test accuracy − full fine-tuning (points)\n"
                          "bars: mean ± SE over (shift, seed); dots: shifts")
    axes[0][-1].legend(fontsize=8, loc="best")
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title, 80 * len(regimes))), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def lr_summary(selected: Sequence[Selected], regimes: Sequence[int], methods: Sequence[str]
               ) -> str:
    """How often each lr was selected, per regime and method (checks the lr grid's edges)."""
    methods = [c for c in COLUMNS if c in methods]
    lines = ["## Selected learning rates (count over shifts x seeds)", "",
             "| regime | " + " | ".join(LABELS[m] for m in methods if m != NONE) + " |",
             "|---|" + "---|" * (len(methods) - 1)]
    for regime in regimes:
        cells = []
        for method in (m for m in methods if m != NONE):
            counts: dict[str, int] = defaultdict(int)
            for s in selected:
                if s.regime == regime and s.method == method:
                    counts[s.lr] += 1
            cells.append(", ".join(f"{lr}: {n}" for lr, n in
                                   sorted(counts.items(), key=lambda kv: -float(kv[0]))) or "–")
        lines.append(f"| {regime} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_reports(out: Path, grid: BenchmarkGrid, tasks: Sequence[Task], title: str,
                  reuse: Sequence[Path] = ()) -> list[Selected]:
    rows = {row_key(r): r for path in (*reuse, out / "runs.csv") for r in read_rows(path)}
    selected = select(rows.values(), tasks)
    text = markdown(selected, grid.regimes, grid.all_shifts(), grid.methods, title)
    (out / "table.md").write_text(text + "\n" + lr_summary(selected, grid.regimes, grid.methods))
    figure(selected, grid.regimes, grid.methods, out / "figure2.png", title)
    return selected


# ---------------------------------------------------------------------------------------------
# Cost estimate

def estimate(grid: BenchmarkGrid, tasks: Sequence[Task], data_dir: str, workers: int) -> None:
    """Time a 2-epoch run of every method at each regime on one 10-class corruption (lr 1e-3)
    and cost the planned tasks from it: a run costs the no-fine-tuning evaluation (copy, val
    and test passes) plus epochs x its per-epoch cost; both scale with the number of images,
    so 5- and 2-class shifts are scaled by their class count."""
    _init_worker()
    shift = "impulse_noise"
    severity = grid.severities.get(shift) or 4
    per_epoch: dict[tuple[int, str], float] = {}
    fixed: dict[int, float] = {}
    probe_epochs = 2
    cpu_started = time.process_time()
    wall_started = time.perf_counter()
    for regime in grid.regimes:
        _case(shift, severity, 0, regime, grid.n_val, grid.n_test, data_dir)
        for method in [NONE] + [m for m in grid.methods if m != NONE]:
            task = Task(shift, severity, regime, grid.n_val, grid.n_test, 0, method, 1e-3,
                        0 if method == NONE else probe_epochs, grid.bn_mode)
            started = time.perf_counter()
            run_task(task, data_dir)
            total = time.perf_counter() - started
            if method == NONE:
                fixed[regime] = total
            else:
                per_epoch[(regime, method)] = max(total - fixed[regime], 0.0) / probe_epochs
            print(f"  n={regime:<4} {method:9s} {total:6.1f} s for {task.epochs} epochs",
                  flush=True)
    share = (time.process_time() - cpu_started) / max(time.perf_counter() - wall_started, 1e-9)
    seconds = 0.0
    per_regime: dict[int, float] = defaultdict(float)
    for t in tasks:
        scale = cases.num_classes(t.shift) / 10
        cost = (fixed[t.regime] + (per_epoch[(t.regime, t.method)] * t.epochs
                                   if t.method != NONE else 0.0)) * scale
        seconds += cost
        per_regime[t.regime] += cost
    for regime, cost in per_regime.items():
        print(f"n={regime}: {sum(t.regime == regime for t in tasks)} runs, "
              f"{cost / 60 / workers:.0f} min on {workers} worker(s)")
    print(f"this process got {share:.0%} of a core while timing; estimated total "
          f"{seconds / 3600:.2f} worker-hours = {seconds / 60 / workers:.0f} min wall on "
          f"{workers} worker(s) at that load")


# ---------------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default benchmarks/results, or "
                        "benchmarks/results-quick with --quick)")
    p.add_argument("--data-dir", default=None,
                   help="built-in data dir (default $SURGICAL_DATA_DIR, else .cache/test-data)")
    p.add_argument("--shifts", type=_csv_list(str), default=DEFAULT_SHIFTS)
    p.add_argument("--shifts-for", action="append", default=list(DEFAULT_SHIFTS_FOR),
                   metavar="REGIME=S1,S2",
                   help="shifts of one regime (else --shifts); repeatable, the last one for a "
                        f"regime wins. Default: {' '.join(DEFAULT_SHIFTS_FOR)}")
    p.add_argument("--severity", action="append", default=[], metavar="SHIFT=LEVEL",
                   help="override a corruption's calibrated severity; repeatable")
    p.add_argument("--regimes", type=_csv_list(int), default=(25, 100),
                   help="labelled training images per class, in run order")
    p.add_argument("--seeds", type=_csv_list(int), default=(0, 1, 2))
    p.add_argument("--seeds-for", action="append", default=list(DEFAULT_SEEDS_FOR),
                   metavar="REGIME=0,1",
                   help="seeds of one regime (else --seeds); repeatable, the last one for a "
                        f"regime wins. Default: {' '.join(DEFAULT_SEEDS_FOR)}")
    p.add_argument("--lrs", type=_csv_list(float), default=(1e-3, 1e-4))
    p.add_argument("--lrs-for", action="append", default=["head=1e-1,1e-2,1e-3"],
                   metavar="METHOD=LR,LR",
                   help="learning rates of one method (default --lrs); repeatable. "
                        "Default: head=1e-1,1e-2,1e-3 (see benchmarks/README.md)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--methods", type=_csv_list(str), default=METHODS)
    p.add_argument("--n-val", type=int, default=20, help="validation images per class")
    p.add_argument("--n-test", type=int, default=80, help="test images per class")
    p.add_argument("--bn-mode", default="eval", choices=("eval", "train"))
    p.add_argument("--reuse", action="append", default=[], type=Path, metavar="CSV",
                   help="another run's runs.csv: its runs are not rerun and count in the "
                        "reports (read only); repeatable")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny smoke slice (< 1 minute)")
    p.add_argument("--estimate", action="store_true",
                   help="time a few runs and print the plan's estimated cost; runs nothing else")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite table.md and figure2.png from runs.csv")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {METHODS}")
    if args.out is None:
        args.out = ROOT / "benchmarks" / ("results-quick" if args.quick else "results")
    return args


def _csv_list(kind: type) -> Any:
    def parse(text: str) -> tuple[Any, ...]:
        return tuple(kind(part) for part in text.split(",") if part.strip())

    return parse


def _mapping(items: Sequence[str], key: type, value: type, option: str) -> dict[Any, tuple]:
    out = {}
    for item in items:
        name, sep, rest = item.partition("=")
        if not sep:
            raise SystemExit(f"{option} {item!r}: expected KEY=V1,V2")
        out[key(name)] = _csv_list(value)(rest)
    return out


def grid_from_args(args: argparse.Namespace) -> BenchmarkGrid:
    from selector.builtin import list_shifts

    shifts_for = _mapping(args.shifts_for, int, str, "--shifts-for")
    seeds_for = _mapping(args.seeds_for, int, int, "--seeds-for")
    lrs_for = {} if args.quick else _mapping(args.lrs_for, str, float, "--lrs-for")
    shifts = {r: tuple(shifts_for.get(r, args.shifts)) for r in args.regimes}
    every = {s for ss in shifts.values() for s in ss}
    known = list_shifts()
    missing = sorted(s for s in every if s not in known and not heldout_shifts.is_heldout(s))
    if missing:
        raise SystemExit(f"unknown shifts {missing}; built-in: {sorted(known)}; held-out: "
                         f"{', '.join(heldout_shifts.PREFIX + n for n in heldout_shifts.HELDOUT)}"
                         f"; or {heldout_shifts.heldout_model.PREFIX}SHIFT (the held-out model)")
    severities = {s: cases.default_level(s) for s in every}
    for name, levels in _mapping(args.severity, str, int, "--severity").items():
        if name not in severities:
            raise SystemExit(f"--severity {name}: not among the shifts")
        severities[name] = levels[0]
    return BenchmarkGrid(tuple(args.regimes), shifts,
                {r: tuple(seeds_for.get(r, args.seeds)) for r in args.regimes},
                tuple(args.methods), tuple(args.lrs), lrs_for, args.epochs, args.n_val,
                args.n_test, args.bn_mode, severities)


def describe_grid(grid: BenchmarkGrid) -> str:
    lrs = ", ".join(f"{m}: {{{', '.join(f'{x:g}' for x in grid.method_lrs(m))}}}"
                    for m in grid.methods if m != NONE and m in grid.lrs_for)
    parts = [f"lrs {{{', '.join(f'{x:g}' for x in grid.lrs)}}}" + (f" ({lrs})" if lrs else ""),
             f"{grid.epochs} epochs", f"BN {grid.bn_mode}",
             f"val/test {grid.n_val}/{grid.n_test} per class"]
    for regime in grid.regimes:
        parts.append(f"n={regime}: {len(grid.shifts[regime])} shifts, seeds "
                     f"{list(grid.seeds[regime])}")
    return "; ".join(parts)


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    data_dir = str(args.data_dir or os.environ.get("SURGICAL_DATA_DIR")
                   or ROOT / ".cache" / "test-data")
    os.environ["SURGICAL_DATA_DIR"] = data_dir  # for the spawned workers too
    grid = grid_from_args(args)
    tasks = build_tasks(grid)
    print(describe_grid(grid), flush=True)
    if args.estimate:
        estimate(grid, tasks, data_dir, args.workers)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not args.report_only:
        # Build missing source models once, before the workers race for them.
        for shift in sorted({cases.model_name(s): s for s in grid.all_shifts()}.values()):
            cases.prepare_model(shift, data_dir)
        ran = run_all(tasks, args.out / "runs.csv", data_dir, args.workers, args.reuse)
        print(f"ran {ran} runs in {time.perf_counter() - started:.0f} s", flush=True)
    title = f"Surgical fine-tuning, built-in MNIST case: {describe_grid(grid)}"
    if args.reuse:
        title += f" (with the runs of {', '.join(str(p) for p in args.reuse)})"
    selected = write_reports(args.out, grid, tasks, title, args.reuse)
    print(f"wrote {args.out / 'runs.csv'}, {args.out / 'table.md'}, {args.out / 'figure2.png'} "
          f"({len(selected)} selected cells)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
