"""Rich tables of results, shared by the CLI and ``surgical run``."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table

from app.schemas import Diagnosis, JobPublic, JobResult, TrialPublic


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def _val(value: float, se: float | None) -> str:
    return _pct(value) if se is None else f"{100 * value:.1f} ± {100 * se:.1f}"


def _flag(value: bool | None) -> str:
    return "" if value is None else ("yes" if value else "")


def leaderboard_table(result: JobResult, title: str = "leaderboard") -> Table:
    """The paper's table for one job: each tuned part at its validation-selected learning rate,
    its validation accuracy ± one standard error, whether it lies within one standard error of
    the best (the band the recommendation is chosen from) and on the Pareto front."""
    table = Table(title=title)
    columns = ("tuned part", "method", "lr", "val acc % ± SE", "test acc %", "tuned params %",
               "epoch", "in band", "Pareto")
    for column in columns:
        table.add_column(column, justify="left" if column in ("tuned part", "method") else "right",
                         no_wrap=column == "tuned part")
    best = result.recommendation
    cut_short: list[str] = []
    for row in result.leaderboard:
        mark = " *" if best is not None and (row.label, row.lr) == (best.label, best.lr) else ""
        dagger = ""
        if row.stop_reason:  # ranked on fewer epochs than asked: say so where it is ranked
            cut_short.append(f"{row.label}: {row.stop_reason}")
            dagger = "†" * len(cut_short)
        table.add_row(
            row.label + mark, row.method, "—" if row.lr is None else f"{row.lr:g}",
            _val(row.val_acc, row.val_se), _pct(row.test_acc), _pct(row.tuned_share),
            f"{row.best_epoch}{dagger}", _flag(row.within_band), _flag(row.pareto),
        )
    for part in result.stopped_early:  # tried, stopped early: evidence, never a candidate
        table.add_row(
            part.label, part.method, "—" if part.lr is None else f"{part.lr:g}",
            _val(part.val_acc, part.val_se), "—", "—",
            f"{part.best_epoch}/{part.stopped_at_epoch}", "stop", "—", style="dim",
        )
    if best is None:
        table.caption = "no recommendation: no trial completed (see the result's notes)"
    else:
        lr = "—" if best.lr is None else f"{best.lr:g}"
        table.caption = (
            f"* recommended: tune {', '.join(best.groups) or best.label} at lr {lr} "
            f"({_pct(best.tuned_share)}% of parameters)"
        )
        if result.selection is not None:
            table.caption += f"\nwhy: {result.selection.reason}"
    for i, reason in enumerate(cut_short, start=1):
        table.caption = (table.caption or "") + f"\n{'†' * i} trained fewer epochs: {reason}"
    if result.stopped_early:
        table.caption = (table.caption or "") + (
            "\nstop: tried, then stopped early by successive halving (epoch: its best / the last "
            "it ran); its best validation accuracy before that, never recommended")
    return table


def trials_table(trials: Sequence[TrialPublic]) -> Table:
    table = Table(title="trials")
    for column in ("#", "state", "tuned part", "method", "lr", "val acc %", "test acc %", "s", "worker"):
        table.add_column(column)
    for trial in trials:
        table.add_row(
            str(trial.number), trial.state, trial.label or "", trial.method or "",
            "" if trial.lr is None else f"{trial.lr:.2g}", _pct(trial.val_acc), _pct(trial.test_acc),
            "" if trial.duration_s is None else f"{trial.duration_s:.1f}", trial.worker or "",
        )
    return table


def jobs_table(jobs: Sequence[JobPublic]) -> Table:
    table = Table(title="jobs", box=box.SIMPLE_HEAD)
    # Ids are what people copy into the next command: never fold or truncate them.
    table.add_column("id", no_wrap=True, min_width=max((len(job.id) for job in jobs), default=2))
    for column in ("state", "trials", "best val %", "best part", "created"):
        table.add_column(column, no_wrap=column in ("state", "trials"))
    for job in jobs:
        p = job.progress
        table.add_row(
            job.id, job.state, f"{p.trials_done}/{p.trials_budget or job.spec.search.max_trials}",
            _pct(p.best_val_acc), p.best_label or "", job.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    return table


def diagnosis_table(diagnosis: Diagnosis, title: str = "shift diagnosis") -> Table:
    """One row per layer group: its divergence from the reference statistics against what
    unshifted data shows (the null's mean and 99% point), the ratio, and whether it clearly
    exceeds; the caption gives the kind, the ranking and the explanation."""
    table = Table(title=f"{title}: {diagnosis.kind}-level" if diagnosis.kind != "unavailable"
                  else f"{title}: unavailable")
    for column in ("group", "layers", "divergence", "null mean", "null 99%", "ratio", "exceeds"):
        table.add_column(column, justify="left" if column == "group" else "right")
    for group in diagnosis.groups:
        watched = bool(group.layers)
        table.add_row(
            group.name, str(len(group.layers)),
            f"{group.value:.4f}" if watched else "—", f"{group.null_mean:.4f}" if watched else "—",
            f"{group.null_high:.4f}" if watched else "—",
            f"{group.ratio:.1f}x" if watched and group.ratio is not None else "—",
            "yes" if group.exceeds else "",
        )
    labels = diagnosis.labels
    accuracy = "—" if labels.accuracy is None else f"{100 * labels.accuracy:.1f}%"
    source = ("" if labels.source_accuracy is None
              else f" ({100 * labels.source_accuracy:.1f}% on the source data)")
    table.caption = (
        f"tune first: {' > '.join(diagnosis.ranking)} (confidence {diagnosis.confidence:.2f}, "
        f"null: {diagnosis.null})\nuntouched model on the target labels: accuracy {accuracy} at "
        f"{100 * labels.confidence:.1f}% mean confidence{source}\n{diagnosis.explanation}"
    )
    return table
