"""The decision rule, the ranking of parts and the sentence a user reads (pure functions).

Rule (fixed before any benchmark ran, never fitted to which part wins):

1. A group *clearly exceeds* its null when its divergence is above both the null's 99% point
   (``NULL_QUANTILE``) and ``RATIO_FLOOR`` times the null's mean. The quantile guards against
   sampling noise; the floor asks for an effect (twice what unshifted data shows), because with
   many examples the null band gets so narrow that any tiny systematic difference would pass.
2. The EARLIEST such group locates the shift (raw divergence grows with depth under an input
   shift, so the argmax would point at the last stage). If it is the first watched group, the
   shift is input-level and the first group is the part to tune (the paper's "first block");
   otherwise it is feature-level and that group is the part.
3. No group exceeds: if the labels moved, the shift is output-level: tune the head. The labels
   moved when the untouched model is confidently wrong (its confidence exceeds its accuracy by
   more than the null's gap) or, given labelled source data, clearly less accurate on the
   target than on the source (two-proportion test). Each is a one-sided z-test at 1%, at 0.5%
   when both run (Bonferroni), so unshifted data raises the alarm at most 1% of the time.
   Otherwise: no shift detected.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

__all__ = ["NULL_QUANTILE", "RATIO_FLOOR", "LABEL_LEVEL", "label_z", "decide", "rank_parts",
           "explain"]

NULL_QUANTILE = 0.99
RATIO_FLOOR = 2.0
LABEL_LEVEL = 0.01  # the label tests' false-alarm rate together, NULL_QUANTILE's level


def label_z(tests: int) -> float:
    """One-sided critical z of each of ``tests`` label tests (Bonferroni): 2.326 for one, 2.576
    for two."""
    return NormalDist().inv_cdf(1.0 - LABEL_LEVEL / tests)


def decide(names: Sequence[str], exceeds: Sequence[bool], watched: Sequence[bool],
           labels_moved: bool, head: str) -> tuple[str, str, str | None]:
    """(kind, top part, earliest exceeding group or None) from the per-group tests."""
    first_watched = next((i for i, w in enumerate(watched) if w), None)
    earliest = next((i for i, (e, w) in enumerate(zip(exceeds, watched, strict=True)) if e and w), None)
    if earliest is not None:
        if earliest == first_watched:
            return "input", names[0], names[earliest]
        return "feature", names[earliest], names[earliest]
    if labels_moved:
        return "output", head, None
    return "none", head, None


def rank_parts(names: Sequence[str], top: str | None, kind: str) -> tuple[str, ...]:
    """Every group plus "all", best first: the diagnosed part, its nearer neighbour (deeper one
    first unless the shift is input-level), full fine-tuning (the robust fallback), then the
    rest by distance from the diagnosed part. Unknown location: "all" first, then deep to
    shallow (the cheapest trials first)."""
    parts = list(names)
    if top is None or top not in parts:
        return ("all", *reversed(parts))
    at = parts.index(top)
    deeper_first = kind != "input"
    rest = sorted((p for p in parts if p != top),
                  key=lambda p: (abs(parts.index(p) - at),
                                 -parts.index(p) if deeper_first else parts.index(p)))
    return (top, *rest[:1], "all", *rest[1:])


def explain(kind: str, top: str, *, earliest: str | None, ratio: float | None,
            threshold_ratio: float | None, reference: str, previous: str | None,
            accuracy: float | None, confidence: float, null: str, reason: str | None,
            source_accuracy: float | None = None, confidently_wrong: bool = True) -> str:
    """One or two plain sentences for the user."""
    weak = (" (null: sampling noise only, since no clean source data was given)"
            if null == "analytic" else "")
    if kind == "unavailable":
        return f"No diagnosis: {reason}."
    if kind in ("input", "feature") and ratio is not None and threshold_ratio is not None:
        where = "first-stage" if kind == "input" else f"{earliest}"
        lead = (f"Statistics stay within the unshifted range up to {previous}, then "
                if kind == "feature" and previous else "")
        what = f"{where} statistics diverge" if not lead else f"{where} diverges"
        sentence = (f"{lead}{what} {ratio:.1f}x more from {reference} than unshifted data does "
                    f"(threshold {threshold_ratio:.1f}x){weak}.")
        sentence = sentence[0].upper() + sentence[1:]
        caveat = (" Unconfirmed: past the first stage, activations also drift between training "
                  "and evaluation mode, which this null cannot see (benchmarks/diagnosis_null.py: "
                  "false alarms on unshifted data for some architectures); clean source images "
                  "(source=, data.source_reference) would settle it."
                  if kind == "feature" and null == "analytic" else "")
        # the measured limit of the paper's taxonomy (benchmarks/README.md, held-out shifts)
        limit = (" (unless it moves pixels rather than changing how they look: after rotations, "
                 "flips and warps a later block is usually better, which a search checks)"
                 if kind == "input" else "")
        return f"{sentence} The shift looks {kind}-level: tune {top}{limit}.{caveat}"
    acc = "unknown" if accuracy is None else f"{accuracy:.0%}"
    if kind == "output" and not confidently_wrong and source_accuracy is not None:
        return (f"Feature statistics stay within the unshifted range in every group, but the "
                f"untouched model is clearly less accurate on the target labels than on the "
                f"source's ({acc} against {source_accuracy:.0%}): the images look the same, what "
                f"decides their label changed (a relabelling or a broken shortcut); tune {top}.")
    if kind == "output":
        return (f"Feature statistics stay within the unshifted range in every group{weak}, but the "
                f"untouched model is confidently wrong (accuracy {acc} at {confidence:.0%} mean "
                f"confidence): the labels changed, tune {top}.")
    return (f"Feature statistics stay within the unshifted range{weak} and the untouched model is "
            f"about as accurate as it is confident (accuracy {acc} at {confidence:.0%}): no "
            f"shift found, {top} is the cheapest part to try.")
