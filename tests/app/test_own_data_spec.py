"""The job spec's fields for a user's own data (issue 10): transform, split, n_per_class,
severity, labels, weights enums, precision. Bad values are 422 problems naming the field, over
a real server; the same values are refused by the selector's resolver (the contract)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.schemas import JobSpec
from app.settings import Settings
from tests.app.helpers import MINIMAL
from tests.app.server import Api, serve_api

PROBLEM = "application/problem+json"
TV = {"source": "torchvision", "arch": "resnet18", "num_classes": 3}


@pytest.fixture(scope="module")
def api(module_db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("own")
    (root / "data" / "photos").mkdir(parents=True)
    (root / "data" / "fog.npy").write_bytes(b"x")
    settings = Settings(data_dir=root, database_url=module_db_url, data_roots=[root / "data"])
    with serve_api(settings) as api:
        yield api


def folder(api: Api, **extra: Any) -> dict[str, Any]:
    return {"source": "imagefolder", "root": f"{api.settings.data_roots[0]}/photos", **extra}


@pytest.mark.parametrize(("data", "model", "field"), [
    ({"transform": {"preset": "fancy"}}, TV, "data.transform.preset"),
    ({"transform": {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}}, TV, "data.transform.std"),
    ({"transform": {"channels": 3, "mean": [0.5], "std": [0.2]}}, TV, "data.transform.mean"),
    ({"transform": {"channels": 1, "std": [0.2, 0.2, 0.2]}}, TV, "data.transform.std"),
    ({"transform": {"image_size": 0}}, TV, "data.transform.image_size"),
    ({"transform": {"image_size": [32, -1]}}, TV, "data.transform.image_size"),
    ({"transform": {"resize": 0}}, TV, "data.transform.resize"),
    ({"transform": {"channels": 2}}, TV, "data.transform.channels"),
    ({"transform": {"preset": "weights"}}, TV, "data.transform.preset"),
    ({"split": {"train": 5, "val": 1.5}}, TV, "data.split.val"),
    ({"split": {"train": 0, "val": 2}}, TV, "data.split.train"),
    ({"split": {"train": 5}}, TV, "data.split.val"),
    ({"n_per_class": 0}, TV, "data.n_per_class"),
    ({"n_per_class": 100_000}, TV, "data.n_per_class"),
    ({"split": {"train": 100_000, "val": 1}}, TV, "data.split.train"),
    ({"train": "/x/train"}, TV, "data.train"),
    ({"source_reference": {}}, TV, "data.source_reference.root"),
    ({"source_reference": {"root": "/x/ref", "path": "/x/ref.npz"}}, TV,
     "data.source_reference.root"),
    ({"source_reference": {"root": "/x/ref", "labels": "/x/labels.npy"}}, TV,
     "data.source_reference.labels"),
    ({"source_reference": {"root": "relative/ref"}}, TV, "data.source_reference.root"),
    ({"source_reference": {"path": "/etc/passwd"}}, TV, "data.source_reference.path"),
    ({"source_reference": {"root": "/x/ref", "size": 5}}, TV, "data.source_reference.size"),
])
def test_bad_own_data_fields_are_problems_naming_the_field(
    client: httpx.Client, api: Api, data: dict[str, Any], model: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/jobs", json={"model": model, "data": folder(api, **data)})
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["errors"][0]["field"] == field, response.text


def test_tensors_fields_and_precision(client: httpx.Client, api: Api) -> None:
    root = api.settings.data_roots[0]
    body = {"model": {**TV, "weights": "IMAGENET1K_V1"},
            "data": {"source": "tensors", "path": f"{root}/fog.npy", "severity": 6}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "data.severity"
    body["data"] = {"source": "tensors", "path": f"{root}/fog.npy", "severity": 5,
                    "labels": "/etc/passwd"}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "data.labels"
    body["data"]["labels"] = f"{root}/fog.npy"
    body["data"]["transform"] = {"preset": "weights"}
    body["search"] = {"precision": "bf16"}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    spec = client.get(f"/v1/jobs/{response.json()['id']}").json()["spec"]
    assert spec["model"]["weights"] == "IMAGENET1K_V1"  # an enum name is not a path
    assert spec["search"]["precision"] == "bf16" and spec["data"]["severity"] == 5
    response = client.post("/v1/jobs", json={**body, "search": {"precision": "fp8"}})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "search.precision"


def test_a_source_reference_is_confined_and_stored_canonical(client: httpx.Client,
                                                            api: Api) -> None:
    root = api.settings.data_roots[0]
    (root / "clean").mkdir(exist_ok=True)
    data = folder(api, source_reference={"root": f"{root}/photos/../clean"})
    response = client.post("/v1/jobs", json={"model": TV, "data": data})
    assert response.status_code == 202, response.text
    spec = client.get(f"/v1/jobs/{response.json()['id']}").json()["spec"]
    assert spec["data"]["source_reference"] == {"root": (root / "clean").resolve().as_uri(),
                                                "path": None, "labels": None}
    tensors = {"source": "tensors", "path": f"{root}/fog.npy",
               "source_reference": {"path": f"{root}/fog.npy", "labels": "/etc/labels.npy"}}
    response = client.post("/v1/jobs", json={"model": TV, "data": tensors})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "data.source_reference.labels"


def test_a_root_folder_gets_a_default_split(api: Api) -> None:
    spec = JobSpec.model_validate({**MINIMAL, "model": TV, "data": folder(api)})
    assert spec.data.split is not None and (spec.data.split.val, spec.data.split.test) == (
        0.1, 0.2)


@pytest.mark.parametrize("transform", [
    {"preset": "fancy"}, {"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]},
    {"channels": 3, "mean": [0.5], "std": [0.2]}, {"image_size": 0}, {"resize": 0},
    {"std": [0.0]},
])
def test_the_selector_refuses_what_the_api_refuses(transform: dict[str, Any]) -> None:
    """The contract across the torch boundary: both sides reject the same transforms."""
    from pydantic import ValidationError

    from selector import ConfigError
    from selector.io.transforms import resolve_transform

    with pytest.raises(ValidationError):
        JobSpec.model_validate({"model": TV, "data": {"source": "tensors", "path": "/d/x.pt",
                                                      "transform": transform}})
    with pytest.raises(ConfigError):
        resolve_transform(transform, TV)


@pytest.mark.parametrize(("split", "sizes"), [
    ({"train": 5, "val": 2, "test": 3}, (10, 4, 6)),
    ({"val": 0.2, "test": 0.3}, (10, 4, 6)),
    ({"train": 0.5, "val": 1}, (10, 2, 0)),
    ({"val": 2.0}, (16, 4, 0)),
])
def test_the_api_and_the_selector_read_a_split_alike(split: dict[str, Any],
                                                     sizes: tuple[int, int, int]) -> None:
    """The split the API accepts (normalised by SplitSpec) cuts a pool as documented."""
    import torch

    from selector.io.data_spec import SplitRule, stratified_split

    spec = JobSpec.model_validate({"model": TV, "data": {"source": "tensors", "path": "/d/x.pt",
                                                         "split": split}})
    fields = spec.data.split.model_dump()
    labels = torch.arange(20) % 2
    parts = stratified_split(labels, SplitRule(**fields))
    assert tuple(len(p) for p in parts) == sizes
