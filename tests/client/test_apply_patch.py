"""``apply_patch``: a downloaded patch goes into the model whole, or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from app.client import PatchMismatchError, apply_patch


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def _save(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "patch.safetensors"
    save_file(tensors, str(path))
    return path


def test_a_patch_replaces_exactly_its_tensors(tmp_path: Path):
    model = _model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    patch = {"2.weight": torch.full((2, 4), 0.5), "1.running_mean": torch.arange(4.0)}
    assert apply_patch(model, _save(tmp_path, patch)) is model
    after = model.state_dict()
    for name, tensor in after.items():
        expected = patch.get(name, before[name])
        assert torch.equal(tensor, expected), name


@pytest.mark.parametrize(
    ("tensors", "words"),
    [
        ({"2.weight": torch.zeros(2, 4), "3.weight": torch.zeros(2, 2)}, "does not have: ['3.weight']"),
        ({"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(4, 2)}, "shape differs"),
    ],
    ids=["unknown-key", "wrong-shape"],
)
def test_a_patch_that_does_not_fit_is_refused_and_changes_nothing(
    tmp_path: Path, tensors: dict[str, torch.Tensor], words: str
):
    model = _model()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(PatchMismatchError, match=words.replace("[", r"\[").replace("]", r"\]")) as raised:
        apply_patch(model, _save(tmp_path, tensors))
    assert isinstance(raised.value, ValueError)
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_the_patch_of_a_finished_job_fits_the_built_in_model(client, finished_jobs, mnist_resnet,
                                                             tmp_path: Path):
    import copy

    patch = client.download(finished_jobs.succeeded, "patch.safetensors", tmp_path)
    model = apply_patch(copy.deepcopy(mnist_resnet), patch)
    assert model.state_dict().keys() == mnist_resnet.state_dict().keys()
