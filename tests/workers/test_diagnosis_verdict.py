"""The diagnosis as the job's live progress and the dashboard show it (pure mapping)."""

from __future__ import annotations

import pytest

from workers.diagnosing import DIAGNOSIS_ATTR, dashboard_attrs, verdict


@pytest.mark.parametrize("attr,said", [
    ({"kind": "input", "ranking": ["block1", "block2"]}, "input-level: tune block1 first"),
    ({"kind": "output", "ranking": ["head"]}, "output-level: tune head first"),
    ({"kind": "none", "ranking": ["all"]}, "no shift found in the feature statistics or the labels"),
    ({"kind": "unavailable", "reason": "no running statistics"}, "unavailable: no running statistics"),
    ({"kind": "failed", "reason": None}, "failed: no reason given"),
    (None, None),
    ({"ranking": ["block1"]}, None),
])
def test_the_verdict_is_a_few_words(attr, said):
    assert verdict(attr) == said


def test_a_failed_diagnosis_reads_as_failed():
    attrs = dashboard_attrs(None, "the shift diagnosis failed: ValueError: x")
    assert verdict(attrs[DIAGNOSIS_ATTR]) == "failed: the shift diagnosis failed: ValueError: x"
