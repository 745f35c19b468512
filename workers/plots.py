"""PNG plots of a finished job: what people would rather look at than tables.

* ``accuracy_by_part.png`` — test (and validation) accuracy per tuned part at its selected
  learning rate, with no fine-tuning and full fine-tuning as reference lines (the paper's Fig. 2).
* ``auto_rgn_profile.png`` — Auto-RGN's mean normalised relative gradient norm per layer group.
* ``search_history.png`` — validation accuracy of every trial in order, with the best so far.
* ``selection.png`` — validation accuracy (± one standard error) against the tuned share of
  parameters: the band the recommendation is chosen from, the Pareto front, the recommendation.
* ``diagnosis.png`` — the shift diagnosis: divergence per normalisation layer against the band
  unshifted data shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

from app import trial_attrs as attrs
from app.schemas import Diagnosis, JobResult, LeaderboardRow

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend_beside(ax: Axes) -> None:
    """The legend right of the axes, where it cannot hide a bar or a point."""
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _save(plt: ModuleType, fig: Figure, path: Path, **savefig: Any) -> Path:
    """Lay ``fig`` out, write it to ``path`` and close it (pyplot keeps open figures alive)."""
    fig.tight_layout()
    fig.savefig(path, **savefig)
    plt.close(fig)
    return path


def accuracy_axis(leaderboard: Sequence[LeaderboardRow]) -> tuple[float, float]:
    """The accuracy plot's y range (%): every bar and every reference line inside it, the
    "no fine-tuning" line included even when it sits far below the fine-tuned bars."""
    values = [100 * r.val_acc for r in leaderboard]
    values += [100 * r.test_acc for r in leaderboard if r.test_acc is not None]
    low = min(values, default=0.0)
    return max(0.0, low - 10), 100.0


def plot_accuracy_by_part(path: Path, leaderboard: Sequence[LeaderboardRow], title: str) -> Path:
    plt = _pyplot()
    rows = [r for r in leaderboard if r.method != "none"]
    reference = {r.label: r for r in leaderboard}
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(rows) + 2), 3.8), dpi=110)
    labels = [r.label for r in rows]
    test = [100 * (r.test_acc if r.test_acc is not None else r.val_acc) for r in rows]
    val = [100 * r.val_acc for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], val, width=0.4, label="validation", color="#9ecae1")
    ax.bar([x + 0.2 for x in xs], test, width=0.4, label="test", color="#3182bd")
    if "no fine-tuning" in reference:
        ax.axhline(100 * reference["no fine-tuning"].val_acc, color="grey", ls=":", label="no fine-tuning (val)")
    full = reference.get("all")
    if full is not None and full.test_acc is not None:
        ax.axhline(100 * full.test_acc, color="#e6550d", ls="--", label="full fine-tuning (test)")
    ax.set_xticks(list(xs), labels, rotation=30, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(*accuracy_axis(leaderboard))
    ax.set_title(title)
    _legend_beside(ax)
    return _save(plt, fig, path, bbox_inches="tight")


def plot_rgn_profile(path: Path, profile: dict[str, float], group_names: Sequence[str]) -> Path:
    plt = _pyplot()
    names = [n for n in group_names if n in profile]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(names) + 2), 3.2), dpi=110)
    ax.bar(names, [profile[n] for n in names], color="#31a354")
    ax.set_ylabel("mean RGN weight (max = 1)")
    ax.set_title("Auto-RGN: relative gradient norm per layer group")
    ax.set_ylim(0, 1.05)
    ax.tick_params(axis="x", rotation=30)
    return _save(plt, fig, path)


def plot_search_history(path: Path, trials: Sequence[FrozenTrial]) -> Path:
    """Every complete trial's validation accuracy by trial number, coloured by tuned part;
    a pruned trial is a cross at the last value it reported."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    done = sorted(
        ({"number": t.number, "value": t.value, "label": t.user_attrs.get(attrs.LABEL, "?")}
         for t in trials if t.state == TrialState.COMPLETE and t.value is not None),
        key=lambda t: t["number"],
    )
    pruned = [{"number": t.number, "pruned_at": t.intermediate_values[max(t.intermediate_values)]}
              for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    fig, ax = plt.subplots(figsize=(6.0, 3.5), dpi=110)
    labels = sorted({t["label"] for t in done})
    cmap = plt.get_cmap("tab10")
    for index, label in enumerate(labels):
        points = [t for t in done if t["label"] == label]
        ax.scatter([t["number"] for t in points], [100 * t["value"] for t in points],
                   label=label, color=cmap(index % 10), s=24)
    best, running = [], float("-inf")
    for t in done:
        running = max(running, t["value"])
        best.append(100 * running)
    if pruned:
        ax.scatter([t["number"] for t in pruned], [100 * t["pruned_at"] for t in pruned],
                   marker="x", color="grey", s=24, label="pruned")
    ax.step([t["number"] for t in done], best, where="post", color="black", lw=1, label="best so far")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Search history")
    _legend_beside(ax)
    return _save(plt, fig, path, bbox_inches="tight")


def plot_selection(path: Path, result: JobResult) -> Path:
    """Each leaderboard row at (tuned share, val accuracy) with its standard error; the shaded
    band is ``[best - SE, best]``, the line the Pareto front, the star the recommendation."""
    plt = _pyplot()
    selection, pick = result.selection, result.recommendation
    rows = [r for r in result.leaderboard if r.method != "none" and r.tuned_share is not None]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    if selection is not None:
        ax.axhspan(100 * selection.band_low, 100 * selection.best_val_acc, color="#fdd0a2",
                   alpha=0.6, lw=0, label="within one SE of the best")
    for row in rows:
        colour = "#e6550d" if row.within_band else "#3182bd"
        ax.errorbar(100 * (row.tuned_share or 0), 100 * row.val_acc,
                    yerr=None if row.val_se is None else 100 * row.val_se,
                    fmt="o", color=colour, ms=5, capsize=3)
        ax.annotate(row.label, (100 * (row.tuned_share or 0), 100 * row.val_acc), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.tuned_share or 0)
    if front:
        ax.step([100 * (r.tuned_share or 0) for r in front], [100 * r.val_acc for r in front],
                where="post", color="black", lw=1, label="Pareto front")
    if pick is not None:
        ax.scatter([100 * (pick.tuned_share or 0)], [100 * pick.val_acc], marker="*", s=220,
                   facecolor="none", edgecolor="black", lw=1.2, label=f"recommended: {pick.label}",
                   zorder=5)
    baseline = next((r for r in result.leaderboard if r.method == "none"), None)
    if baseline is not None:
        ax.axhline(100 * baseline.val_acc, color="grey", ls=":", label="no fine-tuning (val)")
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, 160)
    ax.set_xlabel("tuned parameters (% of the model, symlog)")
    ax.set_ylabel("validation accuracy (%)")
    rule = "fewest tuned within one SE" if selection is None or selection.rule == "parsimony" \
        else "best validation accuracy"
    ax.set_title(f"Recommendation: {rule}")
    _legend_beside(ax)
    return _save(plt, fig, path, bbox_inches="tight")


def plot_diagnosis(path: Path, diagnosis: Diagnosis) -> Path:
    """Divergence per watched layer (forward order, log scale) against the null band (its mean
    to its 99% point on unshifted data), groups separated by dotted lines with their threshold."""
    plt = _pyplot()
    layers = [(group, layer) for group in diagnosis.groups for layer in group.layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(layers) + 2.5), 3.8), dpi=110)
    xs = list(range(len(layers)))
    floor = 1e-6
    ax.fill_between(xs, [max(layer.null_mean, floor) for _, layer in layers],
                    [max(layer.null_high, floor) for _, layer in layers], step="mid",
                    color="#c7e9c0", alpha=0.9, lw=0, label="null: mean to 99% (unshifted data)")
    colours = {"input": "#e6550d", "feature": "#756bb1", "output": "#3182bd"}
    ax.plot(xs, [max(layer.value, floor) for _, layer in layers], "o-", ms=3, lw=1,
            color=colours.get(diagnosis.kind, "#636363"), label="target")
    start = 0
    for group in diagnosis.groups:
        if not group.layers:
            continue
        end = start + len(group.layers)
        ax.hlines(max(group.threshold, floor), start - 0.4, end - 0.6, colors="black",
                  linestyles="--", lw=0.8)
        ax.text((start + end - 1) / 2, 1.02, group.name + (" *" if group.exceeds else ""),
                transform=ax.get_xaxis_transform(), ha="center", fontsize=7)
        if start:
            ax.axvline(start - 0.5, color="grey", ls=":", lw=0.8)
        start = end
    ax.set_yscale("log")
    ax.set_xticks(xs, [layer.name for _, layer in layers], rotation=90, fontsize=6)
    ax.set_ylabel("mean symmetric KL per channel")
    ax.set_title(f"Shift diagnosis: {diagnosis.kind}, tune {diagnosis.ranking[0]} "
                 f"(dashed: group threshold, *: exceeds)", fontsize=9, pad=14)
    ax.legend(fontsize=7, loc="upper left")
    return _save(plt, fig, path, bbox_inches="tight")
