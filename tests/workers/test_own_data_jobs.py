"""Issue 10's proofs: a user's own model and data, submitted over HTTP to a real server and run
by a real worker (drain mode), on tiny images so each job takes seconds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from tests.app.conftest import Databases
from tests.workers.conftest import Service, _service
from workers.loop import build_context, run_worker

pytestmark = pytest.mark.slow

SEARCH = {"strategy": "tpe", "max_trials": 2, "epochs": 1, "batch_size": 16}


@pytest.fixture
def service(worker_databases: Databases, tmp_path: Path) -> Iterator[Service]:
    yield from _service("sqlite", worker_databases, tmp_path, tmp_path / "data")


def datasets(service: Service) -> Path:
    root = service.settings.data_roots[0]
    root.mkdir(parents=True, exist_ok=True)
    return root


def photos(root: Path, per_class: int, sizes: list[tuple[int, int]], suffix: str = ".jpg"
           ) -> Path:
    """Class folders of photos: each class has its own colour cast, sizes vary."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("apple", "banana", "cherry")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            pixels = rng.integers(0, 120, (h, w, 3))
            pixels[..., c] += 120
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"img{i}{suffix}")
    return root


class TinyNet(nn.Module):
    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def scripted(path: Path) -> Path:
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(TinyNet().eval()), str(path))
    return path


def run(service: Service, spec: dict[str, Any]) -> tuple[Any, Any]:
    with service.client() as client:
        job = client.submit(spec)
        run_worker(build_context(service.settings, device="cpu"), drain=True)
        job = client.get(job.id)
        result = client.result(job.id) if job.state == "succeeded" else None
        trials = client.trials(job.id)
    return job, result, trials


def test_mixed_size_jpegs_with_a_resnet18_weights_file_and_the_imagenet_preset(
        service: Service) -> None:
    import torchvision

    root = datasets(service)
    for split, n in (("train", 4), ("val", 2)):
        photos(root / split, n, [(40, 60), (57, 33), (32, 32)])
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), root / "r18.pt")
    job, result, _ = run(service, {
        "model": {"source": "torchvision", "arch": "resnet18",
                  "weights": (root / "r18.pt").as_uri(), "num_classes": 3},
        "data": {"source": "imagefolder", "train": (root / "train").as_uri(),
                 "val": (root / "val").as_uri(),
                 "transform": {"preset": "imagenet", "image_size": 32}},
        "search": SEARCH,
    })
    assert job.state == "succeeded", job.error
    transform = result.data["transform"]
    assert transform["preset"] == "imagenet"
    assert transform["mean"] == [0.485, 0.456, 0.406] and transform["std"] == [0.229, 0.224, 0.225]
    assert (transform["resize"], transform["image_size"]) == (37, [32, 32])  # 256/224 kept
    assert result.data["sizes"] == {"train": 12, "val": 6}
    assert result.recommendation is not None
    assert list((service.settings.data_dir / "decoded").glob("*.npy"))  # decoded once, on disk


def test_torchscript_model_on_cifar10c_style_arrays_with_a_severity(service: Service) -> None:
    root = datasets(service)
    rng = np.random.default_rng(1)
    labels = np.tile(np.arange(3), 20)
    images = rng.integers(0, 100, (5 * 60, 16, 16, 3)).astype(np.uint8)
    for level in range(5):
        block = images[level * 60:(level + 1) * 60]
        block[np.arange(60), :, :, labels] += np.uint8(150)  # class-coloured, all severities
    (root / "CIFAR-10-C").mkdir()
    np.save(root / "CIFAR-10-C" / "fog.npy", images)
    np.save(root / "CIFAR-10-C" / "labels.npy", np.tile(labels, 5))
    job, result, trials = run(service, {
        "model": {"source": "torchscript", "path": scripted(root / "tiny.pt").as_uri()},
        "data": {"source": "tensors", "path": (root / "CIFAR-10-C" / "fog.npy").as_uri(),
                 "severity": 5, "split": {"train": 8, "val": 4, "test": 4},
                 "transform": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}},
        "search": {**SEARCH, "precision": "bf16"},
    })
    assert job.state == "succeeded", job.error
    assert result.data["transform"]["preset"] == "none"  # a TorchScript model's default
    assert result.data["transform"]["mean"] == [0.5, 0.5, 0.5]
    assert result.data["sizes"] == {"train": 24, "val": 12, "test": 12}
    assert result.recommendation is not None and result.recommendation.test_acc is not None
    trained = [t for t in service.study(job.id).get_trials() if "precision" in t.user_attrs]
    assert trained and {t.user_attrs["precision"] for t in trained} == {"bf16"}


def test_one_root_folder_cut_by_a_split_rule_with_few_shot_train(service: Service) -> None:
    root = datasets(service)
    photos(root / "fruit", 12, [(16, 16)], suffix=".png")
    spec = {
        "model": {"source": "torchscript", "path": scripted(root / "tiny.pt").as_uri()},
        "data": {"source": "imagefolder", "root": (root / "fruit").as_uri(),
                 "split": {"train": 6, "val": 3, "test": 3}, "n_per_class": 4},
        "search": SEARCH,
    }
    job, result, _ = run(service, spec)
    assert job.state == "succeeded", job.error
    assert result.data["sizes"] == {"train": 12, "val": 9, "test": 9}
    assert result.data["classes"] == ["apple", "banana", "cherry"]

    # counts larger than a class holds: the job fails before any trial, naming the class
    (root / "fruit" / "cherry" / "img0.png").unlink()
    too_many = {**spec, "data": {**spec["data"], "split": {"train": 6, "val": 3, "test": 3},
                                 "n_per_class": None}}
    job, _, trials = run(service, too_many)
    assert job.state == "failed" and trials == []
    assert "class 'cherry' has 11 examples" in job.error.detail


def test_mixed_sizes_without_a_transform_fail_naming_the_field(service: Service) -> None:
    root = datasets(service)
    photos(root / "fruit", 6, [(16, 16), (20, 12)])
    job, _, trials = run(service, {
        "model": {"source": "torchscript", "path": scripted(root / "tiny.pt").as_uri()},
        "data": {"source": "imagefolder", "root": (root / "fruit").as_uri(),
                 "split": {"train": 3, "val": 2}},
        "search": SEARCH,
    })
    assert job.state == "failed" and trials == []
    assert "data.transform.image_size" in job.error.detail
