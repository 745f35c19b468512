"""``execute``'s failure rule on recorded trials: when is a job, not one trial, broken?"""

from __future__ import annotations

import pytest

from tests.workers.trial_records import failed, numbered, pruned, trial
from workers.execute import MAX_FAILURES_WITHOUT_SUCCESS, failure_verdict


@pytest.mark.parametrize(
    ("trials", "fails"),
    [
        pytest.param([failed(), failed()], False, id="two-errors-may-be-bad-lrs"),
        pytest.param([failed("E: a"), failed("E: b"), failed("E: c")], True, id="three-errors"),
        pytest.param([failed(), trial("head", 0.5), failed(), failed()], False,
                     id="one-success-proves-the-job-runs"),
        pytest.param([failed(None), failed(None), failed(None)], False,
                     id="dead-workers-are-not-the-jobs-fault"),
        pytest.param([pruned(), pruned(), pruned()], False, id="pruned-is-not-failed"),
        pytest.param([], False, id="no-trials"),
    ],
)
def test_failure_verdict(trials, fails):
    verdict = failure_verdict(numbered(*trials))
    assert (verdict is not None) is fails
    if fails:
        assert verdict == (f"the first {MAX_FAILURES_WITHOUT_SUCCESS} trials failed; "
                           "last error: E: c")
