"""Turn a job's finished trials into what users read: progress, the leaderboard, the
recommendation.

The leaderboard follows the paper's table: one row per tuned part (no fine-tuning, each block,
the last layer, all, Auto-RGN, and any other range the search tried), each row at the learning
rate and epoch that validation accuracy selects, with the test accuracy at that choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from app import trial_attrs as attrs
from app.schemas import GroupInfo, JobProgress, JobResult, LeaderboardRow, Recommendation
from workers.space import ALL, NO_FINETUNING

#: The notes a result may carry, so tests and readers can match them.
NOTE_NO_GAIN = "no trial beat the untouched model on validation: consider not fine-tuning"
NOTE_NOT_TRIED = "not tried as a single part: "
NOTE_CANCELLED = "cancelled before the trial budget was spent: the result covers the trials run"
NOTE_NOTHING_COMPLETED = "no trial completed (every trial was pruned or failed): nothing to recommend"


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
    """How trials are ranked: validation accuracy, then fewer tuned parameters (the paper's
    argument for surgical fine-tuning); remaining ties go to the earlier trial."""
    return (val_acc, -tuned_params)


def trial_merit(trial: FrozenTrial) -> tuple[float, int]:
    return merit(float(trial.value or 0.0), int(trial.user_attrs.get(attrs.TUNED_PARAMS, 0)))


def best_trial(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    """The recommended trial: best :func:`merit`, then the earlier one."""
    done = completed(trials)
    if not done:
        return None
    return max(done, key=lambda t: (*trial_merit(t), -t.number))


def progress(trials: Sequence[FrozenTrial], budget: int) -> JobProgress:
    best = best_trial(trials)
    return JobProgress(
        trials_done=sum(1 for t in trials if counts_against_budget(t)),
        trials_budget=budget,
        best_val_acc=None if best is None else best.value,
        best_label=None if best is None else best.user_attrs.get(attrs.LABEL),
        best_groups=None if best is None else list(best.user_attrs.get(attrs.GROUPS, [])),
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
    )


def baseline_row(baseline: Baseline) -> LeaderboardRow:
    return LeaderboardRow(
        label=NO_FINETUNING, method="none", groups=[], lr=None, val_acc=baseline.val_acc,
        test_acc=baseline.test_acc, tuned_params=0, tuned_share=0.0, best_epoch=0,
        trial_number=None,
    )


def leaderboard(
    trials: Sequence[FrozenTrial],
    group_names: Sequence[str],
    baseline: Baseline | None,
) -> list[LeaderboardRow]:
    """One row per tuned part at its validation-selected learning rate, paper order first."""
    best_by_label: dict[str, FrozenTrial] = {}
    for trial in completed(trials):
        label = trial.user_attrs.get(attrs.LABEL, "?")
        current = best_by_label.get(label)
        if current is None or (trial.value or 0) > (current.value or 0):
            best_by_label[label] = trial
    order = [*group_names, ALL, "auto-rgn", "auto-snr"]
    rows: list[LeaderboardRow] = [] if baseline is None else [baseline_row(baseline)]
    rows.extend(trial_row(best_by_label.pop(label)) for label in order if label in best_by_label)
    rows.extend(
        trial_row(trial) for trial in sorted(best_by_label.values(), key=lambda t: -(t.value or 0))
    )
    return rows


def build_result(
    trials: Sequence[FrozenTrial],
    group_sizes: Sequence[tuple[str, int]],
    *,
    baseline: Baseline | None,
    rgn_profile: dict[str, float] | None,
    notes: Sequence[str] = (),
) -> JobResult:
    """The job's result: the recommendation, the leaderboard behind it, and notes on both."""
    names = [name for name, _ in group_sizes]
    total = sum(size for _, size in group_sizes) or 1
    best = best_trial(trials)
    notes = list(notes)
    recommendation = None
    if best is None:
        notes.append(NOTE_NOTHING_COMPLETED)
    else:
        row = trial_row(best)
        recommendation = Recommendation(**row.model_dump(include=set(Recommendation.model_fields)))
        if baseline is not None and row.val_acc <= baseline.val_acc:
            notes.append(NOTE_NO_GAIN)
    tried = {t.user_attrs.get(attrs.LABEL) for t in completed(trials)}
    missing = [name for name in names if name not in tried]
    if missing and len(names) > 1:
        notes.append(NOTE_NOT_TRIED + ", ".join(missing))
    return JobResult(
        recommendation=recommendation,
        leaderboard=leaderboard(trials, names, baseline),
        groups=[GroupInfo(name=name, num_params=size, share=size / total) for name, size in group_sizes],
        rgn_profile=rgn_profile,
        baseline_val_acc=None if baseline is None else baseline.val_acc,
        notes=notes,
    )
