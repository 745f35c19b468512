"""A whole job on a CUDA device: the worker trains its trials there (bf16 autocast by default)
and the patch it writes, applied to the pretrained model on the CPU, scores what the job
reported. Skipped without CUDA (CI has none); ``benchmarks/gpu_check.sh`` runs it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from app import trial_attrs as attrs
from app.client import apply_patch
from selector import evaluate
from selector.builtin import load_case
from tests.workers.conftest import Service, tiny_job
from workers.loop import build_context, run_worker

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (runs on a GPU machine)")]


def test_a_job_runs_on_cuda_and_its_patch_reproduces_on_the_cpu(sqlite_service: Service,
                                                                   tmp_path: Path):
    service = sqlite_service
    with service.client() as client:
        job = client.submit(tiny_job(max_trials=4))
        run_worker(build_context(service.settings, device="cuda"), drain=True)
        job = client.get(job.id)
        assert job.state == "succeeded", job.error
        result = client.result(job.id)
        patch = client.download(job.id, "patch.safetensors", tmp_path)
    trials = [t for t in service.trials(job.id) if attrs.DEVICE in t.user_attrs]
    assert trials and {t.user_attrs[attrs.DEVICE] for t in trials} == {"cuda:0"}
    half = "bf16" if torch.cuda.is_bf16_supported() else "fp16"  # recorded when a trial ends
    assert {t.user_attrs[attrs.PRECISION] for t in trials if attrs.PRECISION in t.user_attrs
            } == {half}

    case = load_case("mnist", shift="impulse_noise", severity=4, seed=0, n_per_class=10,
                     n_val=5, n_test=5, data_dir=service.settings.data_dir)
    model = copy.deepcopy(case.model)
    apply_patch(model, patch)
    _, patched = evaluate(model, case.val, device="cpu")
    # trained and scored in bf16 on the GPU, re-scored in fp32 on the CPU: a rounding apart
    assert patched == pytest.approx(result.recommendation.val_acc, abs=2 / len(case.val))
