"""How often does a successive-halving rung judge the eventual winner while it is still behind?

``auto`` stops a candidate at a rung (``workers.auto_search``: epochs 2 and 6 of 15) when its
best validation accuracy so far is more than one standard error below the cut. A part that
learns slowly at the learning rate it starts at (block 3 under the subpopulation shift on the
held-out seed of ``results/search_efficiency/held-out-seed3/``) can be behind there and far
ahead at the end. This script measures that on validation curves that are already on disk, with
no training: the committed reproduction grid's per-epoch validation accuracy
(``results/runs.csv``), each candidate part at the learning rate ``auto``'s first rung starts it
at (``workers.auto_search.first_rung``).

For every (shift, regime, seed) and every rung it records:

* the rung's leader (best validation accuracy up to the rung) and the final winner (best over
  all epochs, the value a trial that runs to the end is ranked by);
* **behind**: the winner is not the leader and trails it at the rung by more than one binomial
  standard error of the leader's value (what ``workers.halving`` tolerates) - a rung that
  promoted only the leader would stop it;
* **matters**: the winner also ends more than one standard error above the leader's own final
  value, so the recommendation rule (the fewest tuned parameters within one standard error of
  the best) could not have forgiven stopping it.

It measures; it fits nothing. Which rule should follow from it is a separate decision.

    .venv/bin/python benchmarks/late_bloomers.py --out benchmarks/results/late_bloomers.md
"""

from __future__ import annotations

import argparse
import collections
import csv
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from selector.builtin.shifts import get_shift  # noqa: E402
from workers.auto_search import REDUCTION_FACTOR, first_rung, first_rung_epochs  # noqa: E402
from workers.results import standard_error  # noqa: E402

RUNS_CSV = ROOT / "benchmarks" / "results" / "runs.csv"
#: The built-in ResNet's groups, as ``discover_groups`` names them.
GROUPS = ("block1", "block2", "block3", "head")


@dataclass(frozen=True)
class RungOutcome:
    """One case at one rung."""

    shift: str
    regime: int
    seed: int
    rung: int
    leader: str
    leader_at_rung: float
    leader_final: float
    winner: str
    winner_at_rung: float
    winner_final: float
    n_val: int

    @property
    def standard_error(self) -> float:
        """One binomial standard error of the leader's value at the rung (the pruner's
        tolerance, ``workers.results.standard_error``)."""
        return standard_error(self.leader_at_rung, self.n_val) or 0.0

    @property
    def behind(self) -> bool:
        return (self.winner != self.leader
                and self.leader_at_rung - self.winner_at_rung > self.standard_error)

    @property
    def matters(self) -> bool:
        return self.behind and (self.winner_final - self.leader_final
                                > (standard_error(self.leader_final, self.n_val) or 0.0))


def starting_lrs() -> dict[str, float]:
    """Each first-rung candidate's label -> the learning rate ``auto`` starts it at."""
    out = {}
    for spec in first_rung(GROUPS, 1e-5, 1e-1):
        out["auto-rgn" if spec.method == "auto-rgn" else spec.label] = spec.lr
    return out


def rungs(epochs: int) -> list[int]:
    """The rungs ``auto`` judges at, below the last epoch (a trial at the last one completes)."""
    out, rung = [], first_rung_epochs(epochs)
    while rung < epochs:
        out.append(rung)
        rung *= REDUCTION_FACTOR
    return out


Case = tuple[str, int, int]  # (shift, regime, seed)


def curves(path: Path, epochs: int) -> dict[Case, tuple[int, dict[str, list[float]]]]:
    """(shift, regime, seed) -> (validation images, part -> validation curve at the part's
    starting learning rate)."""
    lrs = starting_lrs()
    parts: dict[Case, dict[str, list[float]]] = collections.defaultdict(dict)
    n_val: dict[Case, int] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            part = row["method"]
            if (row["bn_mode"] != "eval" or int(row["epochs"]) != epochs or part not in lrs
                    or abs(float(row["lr"]) / lrs[part] - 1) > 1e-6 or not row["val_curve"]):
                continue
            key = (row["shift"], int(row["regime"]), int(row["seed"]))
            parts[key][part] = [float(v) for v in row["val_curve"].split(";")]
            n_val[key] = int(row["n_val"]) * get_shift(row["shift"]).num_classes
    return {key: (n_val[key], found) for key, found in parts.items()}


def outcomes(table: dict[Case, tuple[int, dict[str, list[float]]]], epochs: int) -> list[RungOutcome]:
    found = []
    for (shift, regime, seed), (n_val, parts) in sorted(table.items()):
        runs = {p: c for p, c in parts.items() if len(c) == epochs}
        if len(runs) < 2:
            continue
        final = {p: max(c) for p, c in runs.items()}
        winner = max(final, key=lambda p: final[p])
        for rung in rungs(epochs):
            at = {p: max(c[:rung]) for p, c in runs.items()}
            leader = max(at, key=lambda p: at[p])
            found.append(RungOutcome(shift, regime, seed, rung, leader, at[leader], final[leader],
                                     winner, at[winner], final[winner], n_val))
    return found


def report(found: Sequence[RungOutcome], command: str) -> str:
    lines = ["# Late bloomers: the eventual winner behind at a rung", "",
             f"Command: `{command}`", "",
             "From the committed grid's validation curves (`results/runs.csv`), each part at the "
             "learning rate `auto` starts it at; no training. *behind*: the final winner trails "
             "the rung's leader by more than one standard error there; *matters*: it also ends "
             "more than one standard error above the leader's final value.", "",
             "| rung (epoch) | cases | winner is the leader | behind | matters |",
             "|---|---|---|---|---|"]
    for rung in sorted({o.rung for o in found}):
        at = [o for o in found if o.rung == rung]
        lines.append(f"| {rung} | {len(at)} | {sum(o.winner == o.leader for o in at)} | "
                     f"{sum(o.behind for o in at)} | {sum(o.matters for o in at)} |")
    lines += ["", "Every case where the winner was behind:", "",
              "| shift | regime | seed | rung | leader (at rung -> final) | winner (at rung -> final) | one SE | matters |",
              "|---|---|---|---|---|---|---|---|"]
    for o in found:
        if o.behind:
            lines.append(f"| {o.shift} | {o.regime} | {o.seed} | {o.rung} | {o.leader} "
                         f"({100 * o.leader_at_rung:.1f} -> {100 * o.leader_final:.1f}) | "
                         f"{o.winner} ({100 * o.winner_at_rung:.1f} -> {100 * o.winner_final:.1f}) | "
                         f"{100 * o.standard_error:.1f} | {'yes' if o.matters else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-csv", type=Path, default=RUNS_CSV)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--out", type=Path, default=None, help="write the Markdown here (default: print)")
    args = p.parse_args(argv)
    command = " ".join(["benchmarks/late_bloomers.py", *(argv if argv is not None else sys.argv[1:])])
    found = outcomes(curves(args.runs_csv, args.epochs), args.epochs)
    if not found:
        print(f"error: no {args.epochs}-epoch curves at the starting learning rates in {args.runs_csv}",
              file=sys.stderr)
        return 2
    text = report(found, command)
    if args.out is None:
        print(text, end="")
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
