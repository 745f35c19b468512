"""Names of the Optuna trial user attributes that workers write and the API reads.

This module is the whole contract between a worker's trial record and ``GET /v1/jobs/{id}/trials``:
both sides import these constants, so a rename cannot silently break one of them.
"""

LABEL = "label"                    # leaderboard row, e.g. "block1", "head", "all", "auto-rgn"
METHOD = "method"                  # "none" | "surgical" | "auto-rgn" | "auto-snr"
GROUPS = "groups"                  # list[str]: tuned layer groups, input -> output
LR = "lr"                          # float: base learning rate
VAL_ACC_PER_EPOCH = "val_acc_per_epoch"   # list[float], epoch 1..E
BEST_EPOCH = "best_epoch"          # int, 1-based, chosen by validation accuracy
N_VAL = "n_val"                    # int: validation examples (the standard error's n)
TEST_ACC = "test_acc"              # float | None: test accuracy at best_epoch
TUNED_PARAMS = "tuned_params"      # int
TUNED_SHARE = "tuned_share"        # float in [0, 1]
PART_PARAMS = "part_params"        # int: parameters the trial's part may train, set at its start
DURATION_S = "duration_s"          # float: wall seconds of the trial
WORKER = "worker"                  # str: worker id that ran the trial
DEVICE = "device"                  # str: "cpu", "cuda:0", ...
PRECISION = "precision"            # str: what the trial trained in: "fp32" | "bf16" | "fp16"
FAIL_REASON = "fail_reason"        # str: why a trial failed or was pruned
STOP_REASON = "stop_reason"        # str: why a complete trial trained fewer epochs than asked
SPEC_KEY = "spec_key"              # str: method|groups|lr|epochs, equal for duplicate runs
DUPLICATE_OF = "duplicate_of"      # int: the trial whose run this one reused (not trained)
SOURCE = "source"                  # "first-rung" | "grid" | "sampler": why the trial ran

STUDY_PREFIX = "job-"


def study_name(job_id: str) -> str:
    """The Optuna study that holds a job's trials (one study per job)."""
    return f"{STUDY_PREFIX}{job_id}"
