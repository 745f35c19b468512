"""Issue 12 for users' own data: ``data.source_reference`` (clean images of the model's source
distribution) reaches the shift diagnosis over HTTP, through a real server and a real worker.
A LayerNorm model, which keeps no running statistics, can be diagnosed only with one; a
BatchNorm model uses it instead of the analytic null; the Optuna study shows the verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from app.schemas import MAX_REFERENCE_IMAGES
from tests.app.conftest import Databases
from tests.workers.conftest import Service, _service
from workers.diagnosing import DIAGNOSIS_ATTR, DIVERGENCE_ATTR
from workers.loop import build_context, run_worker

CLASSES = ("apple", "banana", "cherry")
DIAGNOSE = {"strategy": "diagnose", "batch_size": 16}


class LayerNormNet(nn.Module):
    """A tiny ViT-like model: patch embedding, a residual LayerNorm mixer, a final LayerNorm."""

    def __init__(self, classes: int = 3, width: int = 16) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, width, 4, stride=4)
        self.mix = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = tokens + self.mix(tokens)
        return self.head(self.norm(tokens).mean(1))


class BatchNormNet(nn.Module):
    """A tiny CNN whose BatchNorm keeps running statistics (fresh: mean 0, variance 1)."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stem(x).mean(dim=(2, 3)))


def layer_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return LayerNormNet().eval()


def batch_norm_net() -> nn.Module:
    torch.manual_seed(0)
    return BatchNormNet().eval()


def factory(name: str) -> dict[str, Any]:
    return {"source": "factory", "target": f"{__name__}:{name}"}


@pytest.fixture
def service(worker_databases: Databases, tmp_path: Path) -> Iterator[Service]:
    yield from _service("sqlite", worker_databases, tmp_path, tmp_path / "data",
                        factory_allowlist=[__name__])


def photos(root: Path, per_class: int, brighten: int = 0) -> Path:
    """Class-coloured 16 px photos (PNG); ``brighten`` shifts every pixel: an input-level shift."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (16, 16, 3))
            pixels[..., c] += 80
            pixels = np.clip(pixels + brighten, 0, 255)
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"img{i}.png")
    return root


def run_all(service: Service, specs: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    """Submit every spec, drain one in-process worker, return each (job, result)."""
    with service.client() as client:
        ids = [client.submit(spec).id for spec in specs]
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        jobs = [client.get(job_id) for job_id in ids]
        return [(job, client.result(job.id) if job.state == "succeeded" else None)
                for job in jobs]


def test_own_data_with_a_source_reference_is_diagnosed_against_it(service: Service) -> None:
    root = service.settings.data_roots[0]
    target = photos(root / "target", 12, brighten=120)
    reference = photos(root / "reference", 10)
    images = np.stack([np.asarray(Image.open(f)) for f in sorted(reference.rglob("*.png"))])
    np.savez(root / "reference.npz", images=images, labels=np.repeat(np.arange(3), 10))
    own = {"source": "imagefolder", "root": target.as_uri(),
           "split": {"train": 8, "val": 2, "test": 2}}
    (with_ref, with_result), (without, without_result), (bn, bn_result) = run_all(service, [
        {"model": factory("layer_norm_net"), "search": DIAGNOSE,
         "data": {**own, "source_reference": {"root": reference.as_uri()}}},
        {"model": factory("layer_norm_net"), "search": DIAGNOSE, "data": own},
        {"model": factory("batch_norm_net"), "search": DIAGNOSE,
         "data": {**own, "source_reference": {"path": (root / "reference.npz").as_uri()}}},
    ])
    for job in (with_ref, without, bn):
        assert job.state == "succeeded", job.error

    # No running statistics: the reference is what the target is compared with.
    diagnosis = with_result.diagnosis
    assert diagnosis.null == "source-two-sample" and diagnosis.forward_passes == 2
    assert diagnosis.source_examples == 30 <= MAX_REFERENCE_IMAGES
    assert diagnosis.kind == "input", diagnosis.explanation
    assert "source data" in diagnosis.explanation
    assert without_result.diagnosis.kind == "unavailable"
    assert "source" in without_result.diagnosis.reason
    # Running statistics and a reference: the bootstrap null on the reference, not the analytic.
    assert bn_result.diagnosis.null == "source-bootstrap"
    assert bn_result.diagnosis.source_examples == 30

    # The dashboard shows the verdict and the per-group numbers as study user attributes.
    attrs = service.study(with_ref.id).user_attrs
    verdict = attrs[DIAGNOSIS_ATTR]
    assert verdict["kind"] == "input" and verdict["ranking"] == diagnosis.ranking
    assert verdict["null"] == "source-two-sample"
    assert verdict["explanation"] == diagnosis.explanation
    assert 0 <= verdict["confidence"] <= 1
    divergence = attrs[DIVERGENCE_ATTR]
    assert list(divergence) == [g.name for g in diagnosis.groups]
    decisive = next(g for g in diagnosis.groups if g.exceeds)
    assert divergence[decisive.name].endswith(": exceeds")
    assert "null mean" in divergence[decisive.name]
    assert service.study(without.id).user_attrs[DIAGNOSIS_ATTR]["kind"] == "unavailable"


def test_an_unreadable_source_reference_fails_the_job_naming_the_field(
        service: Service) -> None:
    root = service.settings.data_roots[0]
    target = photos(root / "target", 6)
    (root / "empty").mkdir()  # inside the data roots, so the API accepts it; no class folders
    [(job, _)] = run_all(service, [{
        "model": factory("batch_norm_net"), "search": DIAGNOSE,
        "data": {"source": "imagefolder", "root": target.as_uri(),
                 "split": {"train": 2, "val": 2, "test": 2},
                 "source_reference": {"root": (root / "empty").as_uri()}},
    }])
    assert job.state == "failed"
    assert "data.source_reference" in job.error.detail and "no image files" in job.error.detail
