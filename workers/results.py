"""Turn a job's finished trials into what users read: progress, the leaderboard, the
recommendation.

The recommendation follows the one-standard-error rule by default: validation sets are small,
so the fewest tuned parameters within one standard error of the best validation accuracy wins
(``search.prefer``; :class:`Choice`).

The leaderboard follows the paper's table: one row per tuned part (no fine-tuning, each block,
the last layer, all, Auto-RGN, and any other range the search tried), each row at the learning
rate and epoch that validation accuracy selects, with the test accuracy at that choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from optuna.trial import FrozenTrial, TrialState

from app import trial_attrs as attrs
from app.schemas import (
    GroupInfo,
    JobPhase,
    JobProgress,
    JobResult,
    LeaderboardRow,
    Recommendation,
    Selection,
    StoppedPart,
)
from workers import time_budget
from workers.space import ALL, NO_FINETUNING

#: The notes a result may carry, so tests and readers can match them.
NOTE_NO_GAIN = "no trial beat the untouched model on validation: consider not fine-tuning"
NOTE_NOT_TRIED = "not tried as a single part: "
NOTE_STOPPED_EARLY = "stopped early (pruned), so not in the leaderboard: "
NOTE_CANCELLED = "cancelled before the trial budget was spent: the result covers the trials run"
NOTE_NOTHING_COMPLETED = "no trial completed (every trial was pruned or failed): nothing to recommend"
NOTE_OUT_OF_TIME = "the time budget ran out"


def out_of_time_note(max_minutes: float, trials: Sequence[FrozenTrial], planned: int) -> str:
    """What a result says when ``search.max_minutes`` ended the search before its trials."""
    ran = sum(1 for t in trials if counts_against_budget(t))
    stopped = sum(1 for t in trials if t.state == TrialState.COMPLETE
                  and str(t.user_attrs.get(attrs.STOP_REASON, "")).endswith(time_budget.STOPPED))
    cut = ("" if not stopped else "; the trial running then stopped after its epoch"
           if stopped == 1 else f"; the {stopped} trials running then stopped after their epoch")
    return (f"{NOTE_OUT_OF_TIME} ({max_minutes:g} min): {ran} of the {planned} planned trials "
            f"ran{cut}; the result covers those")

#: The recommendation rules (``search.prefer``); see :class:`Choice`.
PREFER = ("parsimony", "accuracy")
#: Accuracies are fractions of whole images: a tolerance for float noise at the band's edge.
EPS = 1e-9


@dataclass(frozen=True)
class Baseline:
    """The untouched model's accuracy: the leaderboard's "no fine-tuning" row."""

    val_acc: float
    test_acc: float | None = None


def counts_against_budget(trial: FrozenTrial) -> bool:
    """Complete, pruned, or failed by its own error (not by a dead worker).

    Trials failed because their worker died are retried by Optuna's heartbeat callback and do
    not count; trials that failed on their own (an exception in training) carry a fail reason.
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and attrs.FAIL_REASON in trial.user_attrs


def completed(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]


def merit(val_acc: float, tuned_params: int) -> tuple[float, int]:
    """The best trial: validation accuracy, then fewer tuned parameters (the paper's argument
    for surgical fine-tuning); remaining ties go to the earlier trial."""
    return (val_acc, -tuned_params)


def trial_merit(trial: FrozenTrial) -> tuple[float, int]:
    return merit(float(trial.value or 0.0), _tuned(trial))


def _tuned(trial: FrozenTrial) -> int:
    return int(trial.user_attrs.get(attrs.TUNED_PARAMS, 0))


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The trial with the best :func:`merit`, then the earlier one (the band's top)."""
    done = completed(trials)
    if not done:
        return None
    return max(done, key=lambda t: (*trial_merit(t), -t.number))


def standard_error(val_acc: float, n_val: int | None) -> float | None:
    """Binomial standard error of an accuracy measured on ``n_val`` examples (None: unknown).

    With 200 validation images, 94.0% has a standard error of 1.7 points: two trials one image
    apart cannot be told apart.
    """
    if not n_val or n_val < 1:
        return None
    p = min(max(val_acc, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / n_val)


def _n_val(trial: FrozenTrial) -> int | None:
    value = trial.user_attrs.get(attrs.N_VAL)
    return int(value) if value else None


@dataclass(frozen=True)
class Choice:
    """The recommendation and the band it was chosen from.

    The band is ``[best - SE(best), best]`` of validation accuracy. ``parsimony`` picks the
    fewest tuned parameters inside it (then the higher accuracy, then the earlier trial);
    ``accuracy`` picks the best. The band's lower edge only rises as the best improves (for
    accuracies above a few percent), so a trial outside the band when it finishes can never be
    recommended later: the workers upload weights only for trials inside it.
    """

    rule: str
    pick: FrozenTrial
    best: FrozenTrial
    standard_error: float | None
    band_low: float
    n_val: int | None
    in_band: tuple[FrozenTrial, ...]


def choose(trials: Sequence[FrozenTrial], prefer: str = "parsimony") -> Choice | None:
    """The recommendation among the completed trials under rule ``prefer`` (None: none done)."""
    if prefer not in PREFER:
        raise ValueError(f"unknown preference {prefer!r}; expected one of {PREFER}")
    best = best_trial(trials)
    if best is None:
        return None
    best_val = float(best.value or 0.0)
    n_val = _n_val(best)
    se = standard_error(best_val, n_val)
    low = best_val - (se or 0.0)
    in_band = tuple(t for t in completed(trials) if float(t.value or 0.0) >= low - EPS)
    if prefer == "parsimony":
        pick = min(in_band, key=lambda t: (_tuned(t), -float(t.value or 0.0), t.number))
    else:
        pick = best
    return Choice(prefer, pick, best, se, low, n_val, in_band)


def recommended_trial(trials: Sequence[FrozenTrial], prefer: str = "parsimony") -> FrozenTrial | None:
    choice = choose(trials, prefer)
    return None if choice is None else choice.pick


def may_be_recommended(done: Sequence[FrozenTrial], val_acc: float, tuned_params: int,
                       n_val: int | None, prefer: str = "parsimony") -> bool:
    """Whether a trial that just finished (not in ``done``) may be the recommendation, now or
    after later trials: under ``accuracy`` when it beats every trial so far, under
    ``parsimony`` when it lies inside the band (see :class:`Choice`)."""
    scored = completed(done)
    best = max((trial_merit(t) for t in scored), default=None)
    if best is None or merit(val_acc, tuned_params) > best:
        return True
    if prefer == "accuracy":
        return False
    top = max(scored, key=lambda t: (*trial_merit(t), -t.number))
    se = standard_error(float(top.value or 0.0), _n_val(top) or n_val) or 0.0
    return val_acc >= float(top.value or 0.0) - se - EPS


def pareto_labels(rows: Sequence[LeaderboardRow]) -> list[str]:
    """Labels of the rows no other row dominates (at least as accurate on validation with no
    larger tuned share, better on one), fewest tuned parameters first."""
    scored = [r for r in rows if r.method != "none" and r.tuned_share is not None]

    def dominated(row: LeaderboardRow) -> bool:
        return any(
            o is not row and o.val_acc >= row.val_acc and (o.tuned_share or 0) <= (row.tuned_share or 0)
            and (o.val_acc > row.val_acc or (o.tuned_share or 0) < (row.tuned_share or 0))
            for o in scored
        )

    front = [r for r in scored if not dominated(r)]
    return [r.label for r in sorted(front, key=lambda r: (r.tuned_share or 0, -r.val_acc))]


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def reason(choice: Choice) -> str:
    """Why the recommendation won, in words (the result's ``selection.reason``)."""
    pick, best = choice.pick, choice.best
    label = pick.user_attrs.get(attrs.LABEL, "?")
    best_label = best.user_attrs.get(attrs.LABEL, "?")
    share = float(pick.user_attrs.get(attrs.TUNED_SHARE) or 0.0)
    best_share = float(best.user_attrs.get(attrs.TUNED_SHARE) or 0.0)
    se_text = ("standard error unknown (no validation size recorded)" if choice.standard_error is None
               else f"standard error {100 * choice.standard_error:.1f} points on {choice.n_val} "
               "validation images")
    others = sorted({t.user_attrs.get(attrs.LABEL, "?") for t in choice.in_band} - {label})
    if pick is not best:
        return (f"{label} tunes {_pct(share)} of the parameters and its validation accuracy "
                f"({_pct(float(pick.value or 0))}) is within one standard error of the best, "
                f"{best_label} ({_pct(float(best.value or 0))}, {_pct(best_share)} tuned; "
                f"{se_text}): the difference is within noise, so the smaller change wins")
    text = f"{label} has the best validation accuracy ({_pct(float(best.value or 0))}; {se_text})"
    if choice.rule == "accuracy":
        if others:
            return text + (f"; rule 'accuracy' keeps it although {', '.join(others)} "
                           "are within one standard error")
        return text
    if others:
        return text + (f", and the other parts within one standard error ({', '.join(others)}) "
                       "tune at least as many parameters")
    return text + ", and no other part is within one standard error of it"


def progress(trials: Sequence[FrozenTrial], budget: int, prefer: str = "parsimony", *,
             phase: JobPhase = "searching", diagnosis: str | None = None,
             deadline: float | None = None) -> JobProgress:
    """The job's live progress (replaced whole on every write, so it carries the diagnosis's
    verdict along).

    A "searching" write made once the budget is spent and no trial runs says "finishing": any
    worker may write progress after its last trial, and the last such write can land after the
    owner has said "finishing"; it must not take the phase back while the result is built."""
    best = recommended_trial(trials, prefer)
    done = sum(1 for t in trials if counts_against_budget(t))
    if phase == "searching" and done >= budget and not any(
            t.state == TrialState.RUNNING for t in trials):
        phase = "finishing"
    return JobProgress(
        trials_done=done,
        trials_budget=budget,
        best_val_acc=None if best is None else best.value,
        best_label=None if best is None else best.user_attrs.get(attrs.LABEL),
        best_groups=None if best is None else list(best.user_attrs.get(attrs.GROUPS, [])),
        phase=phase,
        diagnosis=diagnosis,
        deadline=None if deadline is None else datetime.fromtimestamp(deadline, UTC),
    )


def trial_row(trial: FrozenTrial) -> LeaderboardRow:
    """A completed trial as a leaderboard row (its user attributes: ``app.trial_attrs``)."""
    ua = trial.user_attrs
    assert trial.value is not None, "only completed trials have a row"
    return LeaderboardRow(
        label=ua.get(attrs.LABEL, "?"),
        method=ua.get(attrs.METHOD, "surgical"),
        groups=list(ua.get(attrs.GROUPS, [])),
        lr=ua.get(attrs.LR),
        val_acc=trial.value,
        test_acc=ua.get(attrs.TEST_ACC),
        tuned_params=ua.get(attrs.TUNED_PARAMS),
        tuned_share=ua.get(attrs.TUNED_SHARE),
        best_epoch=ua.get(attrs.BEST_EPOCH),
        trial_number=trial.number,
        val_se=standard_error(trial.value, _n_val(trial)),
        stop_reason=ua.get(attrs.STOP_REASON),
    )


def baseline_row(baseline: Baseline, n_val: int | None = None) -> LeaderboardRow:
    return LeaderboardRow(
        label=NO_FINETUNING, method="none", groups=[], lr=None, val_acc=baseline.val_acc,
        test_acc=baseline.test_acc, tuned_params=0, tuned_share=0.0, best_epoch=0,
        trial_number=None, val_se=standard_error(baseline.val_acc, n_val),
    )


def leaderboard(
    trials: Sequence[FrozenTrial],
    group_names: Sequence[str],
    baseline: Baseline | None,
    choice: Choice | None = None,
) -> list[LeaderboardRow]:
    """One row per tuned part at its validation-selected learning rate, paper order first;
    with ``choice``, each trial row says whether it lies in the band and on the Pareto front."""
    best_by_label: dict[str, FrozenTrial] = {}
    for trial in completed(trials):
        label = trial.user_attrs.get(attrs.LABEL, "?")
        current = best_by_label.get(label)
        if current is None or (trial.value or 0) > (current.value or 0):
            best_by_label[label] = trial
    order = [*group_names, ALL, "auto-rgn", "auto-snr"]
    n_val = None if choice is None else choice.n_val
    rows: list[LeaderboardRow] = [] if baseline is None else [baseline_row(baseline, n_val)]
    rows.extend(trial_row(best_by_label.pop(label)) for label in order if label in best_by_label)
    rows.extend(
        trial_row(trial) for trial in sorted(best_by_label.values(), key=lambda t: -(t.value or 0))
    )
    if choice is None:
        return rows
    front = set(pareto_labels(rows))
    return [
        row if row.method == "none" else row.model_copy(update={
            "within_band": row.val_acc >= choice.band_low - EPS, "pareto": row.label in front})
        for row in rows
    ]


def selection(choice: Choice, rows: Sequence[LeaderboardRow]) -> Selection:
    """The band, the Pareto front and the reason, as the result reports them."""
    return Selection(
        rule=choice.rule,  # type: ignore[arg-type]
        best_label=choice.best.user_attrs.get(attrs.LABEL, "?"),
        best_val_acc=float(choice.best.value or 0.0),
        standard_error=choice.standard_error,
        band_low=choice.band_low,
        n_val=choice.n_val,
        within_band=[r.label for r in rows if r.within_band],
        pareto_front=pareto_labels(rows),
        reason=reason(choice),
    )


def coverage_notes(trials: Sequence[FrozenTrial], names: Sequence[str],
                   stopped: Sequence[StoppedPart]) -> list[str]:
    """Which single groups the leaderboard lacks, and why: a part that successive halving (or
    a divergence in epoch 1) stopped early *was* tried, and its best validation accuracy before
    it was stopped (``stopped``: :func:`stopped_parts`) is evidence too, so it is named apart
    from the parts never tried."""
    if len(names) <= 1:
        return []
    finished = {t.user_attrs.get(attrs.LABEL) for t in completed(trials)}
    pruned = {t.user_attrs.get(attrs.LABEL) for t in trials if t.state == TrialState.PRUNED}
    accuracy = {part.label: part.val_acc for part in stopped}
    halted = [name for name in names if name not in finished and name in pruned]
    never = [name for name in names if name not in finished and name not in pruned]
    notes = []
    if halted:
        notes.append(NOTE_STOPPED_EARLY + ", ".join(
            f"{name} (best val {accuracy[name]:.1%} before it was stopped)" if name in accuracy
            else name for name in halted))
    if never:
        notes.append(NOTE_NOT_TRIED + ", ".join(never))
    return notes


def stopped_parts(trials: Sequence[FrozenTrial]) -> list[StoppedPart]:
    """Each part with no completed trial whose pruned trials reported at least one epoch: its
    best such trial, best validation accuracy first."""
    finished = {t.user_attrs.get(attrs.LABEL) for t in completed(trials)}
    best: dict[str, tuple[float, FrozenTrial]] = {}
    for t in trials:
        label = t.user_attrs.get(attrs.LABEL)
        if t.state != TrialState.PRUNED or not isinstance(label, str) or label in finished \
                or not t.intermediate_values:
            continue
        value = max(t.intermediate_values.values())
        if value == value and (label not in best or value > best[label][0]):
            best[label] = (value, t)
    out = []
    for label, (value, t) in best.items():
        ua, values = t.user_attrs, t.intermediate_values
        out.append(StoppedPart(
            label=label, method=ua.get(attrs.METHOD, "surgical"), groups=list(ua.get(attrs.GROUPS, [])),
            lr=ua.get(attrs.LR), val_acc=value, val_se=standard_error(value, _n_val(t)),
            best_epoch=max(values, key=values.__getitem__), stopped_at_epoch=max(values),
            trial_number=t.number))
    return sorted(out, key=lambda part: (-part.val_acc, part.trial_number))


def build_result(
    trials: Sequence[FrozenTrial],
    group_sizes: Sequence[tuple[str, int]],
    *,
    baseline: Baseline | None,
    rgn_profile: dict[str, float] | None,
    notes: Sequence[str] = (),
    prefer: str = "parsimony",
) -> JobResult:
    """The job's result: the recommendation under rule ``prefer``, the leaderboard behind it,
    the band and Pareto front it was chosen from, and notes on all of them."""
    names = [name for name, _ in group_sizes]
    total = sum(size for _, size in group_sizes) or 1
    choice = choose(trials, prefer)
    rows = leaderboard(trials, names, baseline, choice)
    notes = list(notes)
    recommendation = None
    chosen = None
    if choice is None:
        notes.append(NOTE_NOTHING_COMPLETED)
    else:
        row = trial_row(choice.pick)
        recommendation = Recommendation(**row.model_dump(include=set(Recommendation.model_fields)))
        chosen = selection(choice, rows)
        if baseline is not None and float(choice.best.value or 0.0) <= baseline.val_acc:
            notes.append(NOTE_NO_GAIN)
    stopped = stopped_parts(trials)
    notes.extend(coverage_notes(trials, names, stopped))
    return JobResult(
        recommendation=recommendation,
        leaderboard=rows,
        stopped_early=stopped,
        selection=chosen,
        groups=[GroupInfo(name=name, num_params=size, share=size / total) for name, size in group_sizes],
        rgn_profile=rgn_profile,
        baseline_val_acc=None if baseline is None else baseline.val_acc,
        notes=notes,
    )
