"""Search efficiency (issue 11): how close each strategy's recommendation comes to the
exhaustive grid's, and at what compute.

Cases: built-in shifts of the reproduction benchmark x seeds, 25 labelled images per class
(20 val / 80 test per class), the paper's protocol (Adam, BN eval, batch 64, 15 epochs).

Runs, per case, through the workers' own plan, sampler, pruner and objective (an in-memory
Optuna study, one thread):

* ``grid``   the reference. ``--grid csv`` re-scores the committed exhaustive grid of
  ``benchmarks/results/runs.csv`` (same protocol, epochs, seeds and data; one cell is re-run
  to check that it reproduces); ``--grid live`` re-runs those cells here, now.
* ``paper``  (only with ``--runs``) the product's ``paper`` strategy run as a job runs it: every
  part (blocks, the head, all, Auto-RGN) at every learning rate of the paper's grid
  (1e-1 ... 1e-5), 30 trials, never pruned. The issue's "the `paper` grid"; every table is
  written against both references.
* ``auto``   the product's default strategy as a job runs it: the shift diagnosis first
  (``selector.diagnose_shift`` with the built-in source reference, its CPU seconds counted),
  whose ranking orders the first rung; ``max_trials`` = ``--auto-trials``.
* ``auto-fixed``  the same without the diagnosis (the first rung in its fixed order).
* ``auto-sh`` (only with ``--runs``) an ablation: ``auto`` with Optuna's
  ``SuccessiveHalvingPruner`` instead of ``workers.halving`` (no one-standard-error tolerance).
* ``auto-async`` (only with ``--runs``) an ablation: ``auto`` whose first rung promotes the top
  third of the trials *so far* (the rule before the first rung's planned size was used), so the
  early candidates face fewer competitors.
* ``auto-tolerant`` (only with ``--runs``) an ablation: ``auto`` whose later rungs keep every
  trial within one standard error of the cut (the default until the parsimony rule of
  ``workers.halving``: from the second rung on, only a trial that could still be recommended
  keeps that tolerance).
* ``tpe`` and ``random`` (TPE's space and pruner with a seeded ``RandomSampler``), each run
  trial by trial until its CPU seconds reach what ``auto`` spent on the case (equal compute).

Every run (the live grid too) trains with a fresh cross-trial activation cache, as one job on
one worker does. Every run's recommendation is chosen by the same rule (``--prefer``, default the product's
one-standard-error rule) and scored by its test accuracy; regret = grid's selected test
accuracy minus the run's (points). Compute = the sum of trial CPU seconds
(``time.process_time`` around each trial, single thread), and trained epochs.

    .venv/bin/python benchmarks/search_efficiency.py --out benchmarks/results/search_efficiency
    .venv/bin/python benchmarks/search_efficiency.py --quick --out /tmp/se   # seconds, for tests
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402
import torch  # noqa: E402

from app import trial_attrs as attrs  # noqa: E402
from benchmarks import cases  # noqa: E402
from workers import results  # noqa: E402
from workers.auto_search import REDUCTION_FACTOR, first_rung_epochs, make_auto_pruner  # noqa: E402
from workers.objective import TrainingSetup, encode, make_objective, run_spec  # noqa: E402
from workers.strategies import PlanInputs, make_pruner, make_sampler, plan_search  # noqa: E402

SHIFTS = ("impulse_noise", "glass_blur", "zigzag", "subpopulation", "label_flip", "spurious")
GRID_CSV = ROOT / "benchmarks" / "results" / "runs.csv"
#: The committed run's rows (its grid rows are the live grid of ``COMMAND.md``, measured on that
#: session's machine: compare with them only on the same machine).
LIVE_GRID_RUNS = ROOT / "benchmarks" / "results" / "search_efficiency" / "runs.csv"
#: The committed grid's methods that the ``paper`` strategy has (Auto-SNR is not searched).
GRID_METHODS = ("all", "block1", "block2", "block3", "head", "auto-rgn")
RUN_NAMES = ("grid", "paper", "auto", "auto-fixed", "auto-sh", "auto-async", "auto-tolerant", "tpe",
             "random")
#: The references compute and regret are measured against: the committed reproduction grid's 13
#: cells, and the product's ``paper`` strategy (every part at every learning rate of the paper's
#: grid, 30 trials with the default range: what a job that asks for the paper's protocol runs).
REFERENCES = ("grid", "paper")
#: Runs ordered by the shift diagnosis (its CPU seconds counted).
DIAGNOSED = ("auto", "auto-sh", "auto-async", "auto-tolerant")
FIELDS = ("shift", "seed", "run", "trials", "completed", "epochs_trained", "cpu_seconds",
          "compute_share", "recommended", "lr", "val_acc", "test_acc", "regret", "grid_test_acc")


@dataclass
class Run:
    """One strategy on one case: its recommendation and what it cost."""

    shift: str
    seed: int
    run: str
    trials: int
    completed: int
    epochs_trained: int
    cpu_seconds: float
    recommended: str
    lr: float | None
    val_acc: float | None
    test_acc: float | None
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# The reference: the committed exhaustive grid


def _grid_rows(path: Path, shift: str, seed: int, regime: int, epochs: int) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return [r for r in csv.DictReader(handle)
                if r["shift"] == shift and int(r["seed"]) == seed and int(r["regime"]) == regime
                and r["method"] in GRID_METHODS and int(r["epochs"]) == epochs
                and r["bn_mode"] == "eval"]


def _as_trials(rows: Sequence[dict[str, str]], n_val: int) -> list[optuna.trial.FrozenTrial]:
    """The grid's rows as recorded trials, so the product's own rule selects among them."""
    out = []
    for number, row in enumerate(rows):
        label = "head" if row["method"] == "head" else row["method"]
        frozen = optuna.trial.create_trial(
            value=float(row["val_acc"]),
            user_attrs={attrs.LABEL: label, attrs.LR: float(row["lr"]),
                        attrs.TEST_ACC: float(row["test_acc"]),
                        attrs.TUNED_SHARE: float(row["tuned_share"]),
                        attrs.TUNED_PARAMS: round(float(row["tuned_share"]) * 1_000_000),
                        attrs.N_VAL: n_val, attrs.METHOD: "auto-rgn" if label == "auto-rgn" else "surgical"})
        frozen.number = number
        out.append(frozen)
    return out


def grid_from_csv(path: Path, shift: str, seed: int, *, regime: int, epochs: int, n_val: int,
                  prefer: str) -> Run:
    rows = _grid_rows(path, shift, seed, regime, epochs)
    if not rows:
        raise SystemExit(f"no grid rows for {shift} seed {seed} at {regime}/class, {epochs} epochs")
    trials = _as_trials(rows, n_val)
    pick = results.recommended_trial(trials, prefer)
    assert pick is not None
    return Run(shift, seed, "grid", len(rows), len(rows), epochs * len(rows),
               sum(float(r["cpu_seconds"]) for r in rows), pick.user_attrs[attrs.LABEL],
               pick.user_attrs[attrs.LR], pick.value, pick.user_attrs[attrs.TEST_ACC])


# ---------------------------------------------------------------------------------------------
# Strategies, run through the workers' plan, sampler, pruner and objective


@dataclass
class SearchCase:
    """One (shift, seed) the strategies are compared on (not :class:`selector.builtin.Case`)."""

    shift: str
    seed: int
    setup: TrainingSetup
    group_sizes: tuple[tuple[str, int], ...]
    n_val: int
    #: The shift diagnosis's ranking of parts (what a job's ``auto`` orders its first rung by)
    #: and the CPU seconds it took.
    diagnosis_ranking: tuple[str, ...] | None = None
    diagnosis_cpu: float = 0.0


def load_search_case(shift: str, seed: int, *, regime: int, n_val: int, n_test: int,
                     epochs: int, severity: int | None, data_dir: str | None) -> SearchCase:
    from selector import discover_groups

    case = cases.load_case(shift, seed, severity=severity, n_per_class=regime, n_val=n_val,
                           n_test=n_test, data_dir=data_dir)
    groups = discover_groups(case.model)
    setup = TrainingSetup(case.model, groups, case.train, case.val, case.test, epochs=epochs,
                          batch_size=64, seed=seed, device="cpu")
    ranking, cpu = diagnose_case(case, groups, shift, seed, regime=regime, n_val=n_val, n_test=n_test)
    return SearchCase(shift, seed, setup, tuple((g.name, g.num_params) for g in groups),
                      len(case.val), ranking, cpu)  # type: ignore[arg-type]


def diagnose_case(case: Any, groups: Sequence[Any], shift: str, seed: int, *, regime: int,
                  n_val: int, n_test: int) -> tuple[tuple[str, ...] | None, float]:
    """The ranking a job's diagnosis gives ``auto`` (the workers' ``diagnose_job`` and
    ``auto_order``, with the built-in source reference a job loads) and its CPU seconds."""
    from workers.diagnosing import auto_order, diagnose_job
    from workers.loading import JobInputs

    started = time.process_time()
    source = cases.source_reference(shift, seed, n_per_class=regime, n_val=n_val, n_test=n_test)
    inputs = JobInputs(case.model, list(groups), case.train, case.val, case.test, "benchmark",
                       "cpu", source=source)
    diagnosis, _ = diagnose_job(inputs, seed)
    return auto_order(diagnosis), time.process_time() - started


#: The workers' default ``SURGICAL_ACTIVATION_CACHE_MB`` (512).
ACTIVATION_CACHE_BYTES = 512 << 20


def as_a_job(case: SearchCase) -> TrainingSetup:
    """The case's setup with a fresh cross-trial activation cache, as one job on one worker
    has (every run gets its own: nothing is shared between strategies)."""
    from selector.finetune.activation_cache import ActivationCache

    return dataclasses.replace(case.setup, activation_cache=ActivationCache(ACTIVATION_CACHE_BYTES))


def run_strategy(case: SearchCase, run: str, *, max_trials: int, prefer: str,
                 cpu_cap: float | None = None, lr_min: float = 1e-5, lr_max: float = 1e-1) -> Run:
    """``run``: "auto", "tpe", "random" or "paper"; with ``cpu_cap`` trials start only while
    the CPU seconds spent are below it."""
    strategy = {"random": "tpe", "auto-fixed": "auto", "auto-sh": "auto",
                "auto-async": "auto", "auto-tolerant": "auto"}.get(run, run)
    names = tuple(name for name, _ in case.group_sizes)
    ranking = case.diagnosis_ranking if run in DIAGNOSED else None
    plan = plan_search(PlanInputs(strategy, names, max_trials, lr_min, lr_max,
                                  case.setup.epochs, prefer=prefer, diagnosis_ranking=ranking))
    sampler = (optuna.samplers.RandomSampler(seed=case.seed) if run == "random"
               else make_sampler(plan, case.seed))
    pruner = make_pruner(plan)
    if run == "auto-sh":  # the ablation: Optuna's successive halving, no noise tolerance
        pruner = optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first_rung_epochs(case.setup.epochs), reduction_factor=REDUCTION_FACTOR,
            min_early_stopping_rate=0)
    if run == "auto-async":  # the ablation: the first rung's cut from the trials so far
        pruner = make_auto_pruner(case.setup.epochs)
    if run == "auto-tolerant":  # the ablation: the full tolerance at every rung
        pruner = make_auto_pruner(case.setup.epochs, plan.first_rung_size)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    for spec, source in zip(plan.enqueued, plan.sources, strict=True):
        params, user_attrs = encode(plan.space, spec)
        study.enqueue_trial(params, user_attrs={**user_attrs, attrs.SOURCE: source})
    objective = make_objective(plan.space, as_a_job(case), worker_id="bench")

    def timed(trial: optuna.Trial) -> float:
        started = time.process_time()
        try:
            return objective(trial)
        finally:
            trial.set_user_attr("cpu_s", time.process_time() - started)

    diagnosed = run in DIAGNOSED
    spent = case.diagnosis_cpu if diagnosed else 0.0
    budget = plan.budget if cpu_cap is None else 10_000
    for _ in range(budget):
        if cpu_cap is not None and spent >= cpu_cap:
            break
        study.optimize(timed, n_trials=1, catch=(Exception,))
        spent = sum(t.user_attrs.get("cpu_s", 0.0) for t in study.get_trials(deepcopy=False))
        spent += case.diagnosis_cpu if diagnosed else 0.0
    trials = study.get_trials(deepcopy=False)
    pick = results.recommended_trial(trials, prefer)
    epochs = sum(len(t.user_attrs.get(attrs.VAL_ACC_PER_EPOCH, [])) for t in trials
                 if attrs.DUPLICATE_OF not in t.user_attrs)
    keys = [t.user_attrs.get(attrs.SPEC_KEY) for t in trials if attrs.DUPLICATE_OF not in t.user_attrs]
    return Run(case.shift, case.seed, run, len(trials), len(results.completed(trials)), epochs,
               spent, "—" if pick is None else pick.user_attrs.get(attrs.LABEL, "?"),
               None if pick is None else pick.user_attrs.get(attrs.LR),
               None if pick is None else pick.value,
               None if pick is None else pick.user_attrs.get(attrs.TEST_ACC),
               {"duplicates_trained": len(keys) - len(set(keys)),
                "ranking": ranking,
               "trial_log": [(t.number, t.state.name, t.user_attrs.get(attrs.LABEL),
                               t.user_attrs.get(attrs.LR), t.value,
                               len(t.user_attrs.get(attrs.VAL_ACC_PER_EPOCH, [])))
                              for t in trials]})


#: The committed grid's cells (``benchmarks/results/COMMAND.md``): every conv part, full
#: fine-tuning and Auto-RGN at {1e-3, 1e-4}, the last layer at {1e-1, 1e-2, 1e-3}.
GRID_CELLS = (*((part, lr) for part in ("all", "block1", "block2", "block3", "auto-rgn")
                for lr in (1e-3, 1e-4)),
              ("head", 1e-1), ("head", 1e-2), ("head", 1e-3))


def grid_live(case: SearchCase, *, prefer: str, cells: Sequence[tuple[str, float]] = GRID_CELLS) -> Run:
    """The committed grid's cells re-run here, now, through the workers' ``run_spec``."""
    from workers.objective import SearchSpace

    names = tuple(name for name, _ in case.group_sizes)
    space = SearchSpace("paper", names, 1e-5, 1e-1)
    setup = as_a_job(case)
    rows, cpu = [], 0.0
    for part, lr in cells:
        spec = space.part_spec(names[-1] if part == "head" else part, lr)
        started = time.process_time()
        result = run_spec(spec, setup)
        cpu += time.process_time() - started
        rows.append({"method": part, "lr": str(lr), "val_acc": str(result.best_val_acc),
                     "test_acc": str(result.test_acc), "tuned_share": str(result.tuned_share),
                     "cpu_seconds": "0"})
    trials = _as_trials(rows, case.n_val)
    pick = results.recommended_trial(trials, prefer)
    assert pick is not None
    return Run(case.shift, case.seed, "grid", len(rows), len(rows), case.setup.epochs * len(rows),
               cpu, pick.user_attrs[attrs.LABEL], pick.user_attrs[attrs.LR], pick.value,
               pick.user_attrs[attrs.TEST_ACC])


def grid_from_runs(path: Path, shift: str, seed: int) -> Run:
    """The grid's row for one case from a ``runs.csv`` of an earlier ``--grid live`` run."""
    for run in read_runs(path):
        if (run.shift, run.seed, run.run) == (shift, seed, "grid"):
            return run
    raise SystemExit(f"no grid row for {shift} seed {seed} in {path}")


def check_grid_cell(case: SearchCase, path: Path, *, regime: int, epochs: int) -> str:
    """Re-run the grid's block-1 cell at lr 1e-3 and compare its validation curve."""
    from workers.space import TrialSpec

    rows = [r for r in _grid_rows(path, case.shift, case.seed, regime, epochs)
            if r["method"] == "block1" and abs(float(r["lr"]) - 1e-3) < 1e-12]
    if not rows:
        return "no block1 cell at lr 1e-3 to compare"
    started = time.process_time()
    result = run_spec(TrialSpec("surgical", ("block1",), 1e-3, "block1"), case.setup)
    cpu = time.process_time() - started
    curve = ";".join(f"{m.val_acc:.3f}" for m in result.epochs)
    same = curve == rows[0]["val_curve"] and f"{result.test_acc:.4f}" == rows[0]["test_acc"]
    return (f"{case.shift} seed {case.seed} block1 lr 1e-3: val curve and test acc "
            f"{'identical' if same else 'DIFFERENT'} to runs.csv (test {result.test_acc:.4f} vs "
            f"{rows[0]['test_acc']}); CPU {cpu:.1f} s now vs {rows[0]['cpu_seconds']} s then")


# ---------------------------------------------------------------------------------------------
# Output


def write_outputs(out: Path, runs: Sequence[Run], notes: Sequence[str], command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    grid = references(runs, "grid")
    with (out / "runs.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for r in runs:
            ref = grid.get((r.shift, r.seed))
            writer.writerow({
                "shift": r.shift, "seed": r.seed, "run": r.run, "trials": r.trials,
                "completed": r.completed, "epochs_trained": r.epochs_trained,
                "cpu_seconds": f"{r.cpu_seconds:.1f}",
                "compute_share": "" if ref is None else f"{r.cpu_seconds / ref.cpu_seconds:.3f}",
                "recommended": r.recommended, "lr": "" if r.lr is None else f"{r.lr:.4g}",
                "val_acc": "" if r.val_acc is None else f"{r.val_acc:.4f}",
                "test_acc": "" if r.test_acc is None else f"{r.test_acc:.4f}",
                "regret": "" if ref is None or r.test_acc is None or ref.test_acc is None
                else f"{100 * (ref.test_acc - r.test_acc):.2f}",
                "grid_test_acc": "" if ref is None or ref.test_acc is None else f"{ref.test_acc:.4f}",
            })
    lines = ["# Search efficiency", "", f"Command: `{command}`", ""]
    lines += [f"- {note}" for note in notes] + [""]
    present = [name for name in RUN_NAMES if any(r.run == name for r in runs)]
    for reference in REFERENCES:
        if references(runs, reference):
            lines += summary_lines(runs, reference)
    lines += ["Per case (test accuracy % of the recommendation; CPU s):", "",
              "| shift | seed | " + " | ".join(present) + " |",
              "|---|---|" + "---|" * len(present)]
    for (shift, seed), _ref in sorted(grid.items()):
        cells = []
        for name in present:
            hit = next((x for x in runs if (x.shift, x.seed, x.run) == (shift, seed, name)), None)
            cells.append("—" if hit is None or hit.test_acc is None else
                         f"{100 * hit.test_acc:.1f} ({hit.recommended} @ {hit.lr:g}; "
                         f"{hit.cpu_seconds:.0f} s)")
        lines.append(f"| {shift} | {seed} | " + " | ".join(cells) + " |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    plot(out / "regret_vs_compute.png", runs, "grid")
    if references(runs, "paper"):
        plot(out / "regret_vs_compute_paper.png", runs, "paper")


def references(runs: Sequence[Run], reference: str) -> dict[tuple[str, int], Run]:
    """The reference run of each case, by (shift, seed)."""
    return {(r.shift, r.seed): r for r in runs if r.run == reference}


def summary_lines(runs: Sequence[Run], reference: str) -> list[str]:
    """The summary table of every run against one reference (regret to its pick, share of its
    CPU seconds and epochs), over the cases that reference has."""
    ref = references(runs, reference)
    cells = sorted({r.trials for r in ref.values()})
    title = (f"the grid's {'/'.join(map(str, cells))} cells" if reference == "grid"
             else "the `paper` strategy (every part at every learning rate of the paper's grid)")
    lines = [f"Against {title}:", "",
             f"| run | cases | within 0.5 pt of {reference} | same part and lr as {reference}'s pick | "
             f"mean regret (pt) | worst regret (pt) | compute vs {reference} (CPU s) | "
             f"epochs vs {reference} |",
             "|---|---|---|---|---|---|---|---|"]
    for name in RUN_NAMES:
        rows = [r for r in runs if r.run == name and (r.shift, r.seed) in ref]
        if not rows:
            continue
        regrets = [100 * ((ref[(r.shift, r.seed)].test_acc or 0) - (r.test_acc or 0)) for r in rows]
        within = sum(1 for g in regrets if g <= 0.5 + 1e-9)
        same = sum(1 for r in rows if _same_pick(r, ref[(r.shift, r.seed)]))
        cpu = sum(r.cpu_seconds for r in rows) / sum(ref[(r.shift, r.seed)].cpu_seconds for r in rows)
        ep = sum(r.epochs_trained for r in rows) / sum(ref[(r.shift, r.seed)].epochs_trained for r in rows)
        lines.append(f"| {name} | {len(rows)} | {within}/{len(rows)} ({100 * within / len(rows):.0f}%) | "
                     f"{same}/{len(rows)} | {statistics.mean(regrets):.2f} | {max(regrets):.2f} | "
                     f"{100 * cpu:.1f}% | {100 * ep:.1f}% |")
    return [*lines, ""]


def _same_pick(run: Run, grid: Run) -> bool:
    return run.recommended == grid.recommended and run.lr is not None and grid.lr is not None \
        and abs(run.lr / grid.lr - 1) < 1e-3


def read_runs(path: Path) -> list[Run]:
    """Runs back from a ``runs.csv`` this script wrote (for ``--merge``)."""
    with path.open(newline="") as handle:
        return [Run(r["shift"], int(r["seed"]), r["run"], int(r["trials"]), int(r["completed"]),
                    int(r["epochs_trained"]), float(r["cpu_seconds"]), r["recommended"],
                    float(r["lr"]) if r["lr"] else None,
                    float(r["val_acc"]) if r["val_acc"] else None,
                    float(r["test_acc"]) if r["test_acc"] else None)
                for r in csv.DictReader(handle)]


def plot(path: Path, runs: Sequence[Run], reference: str) -> None:
    """Regret against compute, both relative to ``reference``'s run of each case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = references(runs, reference)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    colours = {"grid": "black", "paper": "#636363", "auto": "#e6550d", "auto-fixed": "#fdae6b", "auto-sh": "#8c6d31",
               "auto-async": "#9e9ac8", "auto-tolerant": "#bcbddc", "tpe": "#3182bd",
               "random": "#31a354"}
    for name, colour in colours.items():
        rows = [r for r in runs if r.run == name and (r.shift, r.seed) in grid]
        if not rows:
            continue
        xs = [100 * r.cpu_seconds / grid[(r.shift, r.seed)].cpu_seconds for r in rows]
        ys = [100 * ((grid[(r.shift, r.seed)].test_acc or 0) - (r.test_acc or 0)) for r in rows]
        ax.scatter(xs, ys, color=colour, label=name, s=22, alpha=0.8)
        ax.scatter([statistics.mean(xs)], [statistics.mean(ys)], color=colour, marker="D", s=70,
                   edgecolor="black")
    ax.axhline(0.5, color="grey", ls=":", lw=1, label="0.5 pt")
    ax.axvline(25, color="grey", ls="--", lw=1, label=f"25% of {reference}")
    ax.set_xlabel(f"compute (% of {reference}'s CPU seconds)")
    ax.set_ylabel(f"regret (test accuracy points below {reference}'s pick)")
    ax.set_title(f"Search efficiency against {reference} (diamonds: means)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "search_efficiency")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--shifts", type=lambda s: tuple(s.split(",")), default=SHIFTS)
    p.add_argument("--seeds", type=lambda s: tuple(int(x) for x in s.split(",")), default=(0, 1, 2))
    p.add_argument("--regime", type=int, default=25)
    p.add_argument("--n-val", type=int, default=20)
    p.add_argument("--n-test", type=int, default=80)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--auto-trials", type=int, default=8)
    p.add_argument("--runs", type=lambda s: tuple(s.split(",")),
                   default=("auto", "auto-fixed", "tpe", "random"),
                   help="tpe and random run until they have spent auto's CPU seconds")
    p.add_argument("--prefer", default="parsimony", choices=results.PREFER)
    p.add_argument("--grid", default="csv", choices=("csv", "live", "runs"),
                   help="csv: re-score the committed grid (runs.csv); live: re-run its cells here; "
                   "runs: the grid rows of an earlier live run of this script (--grid-runs)")
    p.add_argument("--grid-csv", type=Path, default=GRID_CSV)
    p.add_argument("--grid-runs", type=Path, default=LIVE_GRID_RUNS,
                   help="with --grid runs: a runs.csv this script wrote (its grid rows); default: "
                   "the committed one, measured on another machine")
    p.add_argument("--check-grid", action="store_true",
                   help="re-run one grid cell per case and compare with runs.csv")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="DIR",
                   help="only write the table and plot from the runs.csv of these output dirs")
    p.add_argument("--quick", action="store_true",
                   help="one tiny case, 2 epochs, a 3-cell live grid: a smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.shifts, args.seeds, args.regime, args.n_val, args.n_test = ("impulse_noise",), (0,), 8, 5, 10
        args.epochs, args.auto_trials, args.grid = 2, 6, "live"
    return args


SEVERITIES = {"impulse_noise": 4, "glass_blur": 2}


def merge(folders: Sequence[Path], out: Path, command: str) -> None:
    """Write the table and plot of several output folders' runs (the first folder that has a
    (shift, seed, run) wins)."""
    seen: set[tuple[str, int, str]] = set()
    runs = []
    for folder in folders:
        for run in read_runs(folder / "runs.csv"):
            if (run.shift, run.seed, run.run) not in seen:
                seen.add((run.shift, run.seed, run.run))
                runs.append(run)
    notes = [line[2:] for folder in folders
             for line in (folder / "table.md").read_text().splitlines() if line.startswith("- ")]
    write_outputs(out, runs, notes, command)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = " ".join(["benchmarks/search_efficiency.py", *(argv if argv is not None else sys.argv[1:])])
    if args.merge:
        merge(args.merge, args.out, command)
        return 0
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: list[Run] = []
    notes: list[str] = []
    started = time.time()
    for seed in args.seeds:
        for shift in args.shifts:
            case = load_search_case(shift, seed, regime=args.regime, n_val=args.n_val, n_test=args.n_test,
                             epochs=args.epochs, severity=SEVERITIES.get(shift),
                             data_dir=args.data_dir)
            if args.grid == "csv":
                grid = grid_from_csv(args.grid_csv, shift, seed, regime=args.regime,
                                     epochs=args.epochs, n_val=case.n_val, prefer=args.prefer)
                if args.check_grid and not notes:
                    notes.append(check_grid_cell(case, args.grid_csv, regime=args.regime,
                                                 epochs=args.epochs))
            elif args.grid == "runs":
                grid = grid_from_runs(args.grid_runs, shift, seed)
                if not notes:
                    notes.append(f"grid rows (test accuracy, CPU s, epochs) from {args.grid_runs}: "
                                 "the live grid measured earlier, not re-run")
            elif args.quick:
                grid = grid_live(case, prefer=args.prefer,
                                 cells=(("block1", 1e-3), ("head", 1e-1), ("all", 1e-3)))
            else:
                grid = grid_live(case, prefer=args.prefer)
            runs.append(grid)
            cap = None
            for name in args.runs:
                # tpe and random get auto's trial count as their plan's budget (it sets TPE's
                # startup trials) and run until they have spent auto's CPU seconds.
                run = run_strategy(case, name, max_trials=args.auto_trials, prefer=args.prefer,
                                   cpu_cap=cap if name in ("tpe", "random") else None)
                if name == "auto":
                    cap = run.cpu_seconds
                runs.append(run)
                print(f"[{time.time() - started:6.0f} s] {shift} seed {seed} {name}: "
                      f"{run.recommended}@{run.lr} test {run.test_acc} cpu {run.cpu_seconds:.0f} s "
                      f"(grid {grid.recommended}@{grid.lr} test {grid.test_acc}, "
                      f"cpu {grid.cpu_seconds:.0f} s); duplicates trained "
                      f"{run.extra.get('duplicates_trained')}", flush=True)
                if name == "auto":
                    print(f"    first rung ordered by the diagnosis: {run.extra.get('ranking')}")
                print("   ", run.extra.get("trial_log"), flush=True)
            write_outputs(args.out, runs, notes, command)
    notes.append(f"wall time {time.time() - started:.0f} s")
    write_outputs(args.out, runs, notes, command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
