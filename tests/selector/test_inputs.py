"""Model and data loaders: formats, head replacement and readable errors."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file

from selector import (
    CheckpointMismatchError,
    DataError,
    EmptySplitError,
    FactoryNotAllowedError,
    ImageShapeError,
    LabelRangeError,
    MissingFileError,
    ModelLoadError,
    discover_groups,
    load_datasets,
    load_model,
)
from selector.cifar_resnet import CifarResNet
from selector.io.inputs import ImageOptions, SplitRule, stratified_split


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), path)
    return path


def test_torchvision_weights_and_num_classes_head_replacement(resnet18_weights) -> None:
    saved = torch.load(resnet18_weights, weights_only=True)
    same = load_model("resnet18", weights=resnet18_weights)
    assert same.fc.out_features == 7 and not same.training
    assert torch.equal(same.fc.weight, saved["fc.weight"])
    model = load_model({"source": "torchvision", "arch": "resnet18",
                        "weights": resnet18_weights.as_uri(), "num_classes": 10})
    assert model.fc.out_features == 10 and model.fc.in_features == 512
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if not k.startswith("fc."))
    again = load_model("resnet18", weights=resnet18_weights, num_classes=10)
    assert torch.equal(again.fc.weight, model.fc.weight), "the new head is seeded"
    assert discover_groups(model)[-1].parameters == ("fc.weight", "fc.bias")


def test_checkpoint_for_another_architecture_names_the_keys(resnet18_weights) -> None:
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("resnet34", weights=resnet18_weights)
    message = str(info.value)
    assert "resnet34" in message and "missing keys: layer1.2." in message


def test_safetensors_and_wrapped_checkpoints(tmp_path) -> None:
    model = CifarResNet(depth=8)
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}},
               tmp_path / "wrapped.pt")
    save_file(model.state_dict(), str(tmp_path / "w.safetensors"))
    from selector.io.inputs import load_state_dict_file

    for name in ("wrapped.pt", "w.safetensors"):
        state = load_state_dict_file(tmp_path / name)
        assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_pickled_module_is_refused(tmp_path) -> None:
    torch.save(CifarResNet(depth=8), tmp_path / "module.pt")
    with pytest.raises(ModelLoadError, match="weights_only"):
        load_model("resnet18", weights=tmp_path / "module.pt")


def test_missing_files_are_named(tmp_path) -> None:
    with pytest.raises(MissingFileError, match="nope.pt"):
        load_model("resnet18", weights=tmp_path / "nope.pt")
    with pytest.raises(MissingFileError, match="model.ts"):
        load_model(str(tmp_path / "model.ts"))
    with pytest.raises(FileNotFoundError):
        load_datasets(tmp_path / "data.npz")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_and_factories(tmp_path) -> None:
    model = CifarResNet(depth=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(tmp_path / "m.ts"))
    scripted = load_model(tmp_path / "m.ts")
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(scripted(x), model.eval()(x))
    factory = load_model("selector.cifar_resnet:cifar_resnet", kwargs={"num_classes": 3})
    assert factory.fc.out_features == 3
    assert load_model({"source": "factory", "target": "selector.cifar_resnet:cifar_resnet",
                       "kwargs": {"depth": 14}}).depth == 14
    assert isinstance(load_model("cifar_resnet"), CifarResNet)
    with pytest.raises(FactoryNotAllowedError):
        load_model({"source": "factory", "target": "selector.cifar_resnet:cifar_resnet"},
                   allowed_factory_prefixes=["mypkg"])
    with pytest.raises(ModelLoadError, match="did you mean resnet18"):
        load_model("resnet81")


def write_pngs(root: Path, counts: dict[str, int], size: int = 6) -> None:
    for label, count in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(count):
            pixels = np.full((size, size, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")


def test_imagefolder_directories(tmp_path) -> None:
    write_pngs(tmp_path / "train", {"cat": 3, "dog": 2})
    write_pngs(tmp_path / "val", {"dog": 2})  # no "cat" folder: indices must still match
    splits = load_datasets({"source": "imagefolder", "train": str(tmp_path / "train"),
                            "val": (tmp_path / "val").as_uri(), "image_size": 4})
    assert splits.num_classes == 2 and splits.classes == ("cat", "dog") and splits.test is None
    image, label = splits.val[0]
    assert image.shape == (3, 4, 4) and label == 1
    whole = load_datasets(tmp_path / "train", split=SplitRule(per_class=(1, 1, 0)))
    assert len(whole.train) == len(whole.val) == 2 and whole.test is None
    write_pngs(tmp_path / "test", {"bird": 1})
    with pytest.raises(LabelRangeError, match="bird"):
        load_datasets(tmp_path)


def test_tensor_files(tmp_path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (60, 5, 5, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(3), 20)
    torch.save({"images": torch.from_numpy(images), "labels": torch.from_numpy(labels)},
               tmp_path / "pool.pt")
    splits = load_datasets({"source": "tensors", "path": str(tmp_path / "pool.pt"),
                            "per_class": [10, 4, 6], "mean": [0.5] * 3, "std": [0.25] * 3})
    assert (len(splits.train), len(splits.val), len(splits.test)) == (30, 12, 18)
    x, _ = splits.train[0]
    assert x.shape == (3, 5, 5) and x.dtype == torch.float32
    assert float(x.min()) >= -2.0 - 1e-6 and float(x.max()) <= 2.0 + 1e-6
    np.savez(tmp_path / "xy.npz", x=images[:, :, :, 0], y=labels)
    fractions = load_datasets(tmp_path / "xy.npz", options=ImageOptions(channels=3))
    assert fractions.train[0][0].shape == (3, 5, 5) and fractions.num_classes == 3
    assert (len(fractions.train), len(fractions.val), len(fractions.test)) == (42, 6, 12)
    np.savez(tmp_path / "explicit.npz", train_x=images[:10], train_y=labels[:10],
             val_x=images[10:12], val_y=labels[10:12])
    explicit = load_datasets(tmp_path / "explicit.npz", num_classes=5)
    assert len(explicit.train) == 10 and explicit.test is None and explicit.num_classes == 5


def test_cifar_c_severity_slice(tmp_path) -> None:
    images = np.zeros((50, 4, 4, 3), dtype=np.uint8)
    images[:, 0, 0, 0] = np.arange(50)  # row index encoded in a pixel
    np.save(tmp_path / "impulse_noise.npy", images)
    np.save(tmp_path / "labels.npy", np.tile(np.arange(2), 25))
    splits = load_datasets({"source": "tensors", "path": str(tmp_path / "impulse_noise.npy"),
                            "severity": 3, "per_class": [2, 1, 2]})
    rows = {round(float(ds[i][0][0, 0, 0]) * 255) for ds in (splits.train, splits.val,
                                                              splits.test)
            for i in range(len(ds))}
    assert rows <= set(range(20, 30)) and len(rows) == 10
    with pytest.raises(DataError, match="severity"):
        load_datasets(tmp_path / "impulse_noise.npy", severity=6)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(MissingFileError, match="labels.npy"):
        load_datasets(tmp_path / "impulse_noise.npy", severity=1)


@pytest.mark.parametrize("labels_bad", [False, True])
def test_malicious_or_broken_npy_is_a_data_error(tmp_path, labels_bad: bool) -> None:
    """A pickled object array could run code when loaded: it is refused as DataError (the job
    fails with a reason), like a truncated file, never a bare ValueError."""
    good, evil = np.zeros((10, 4, 4), dtype=np.uint8), np.array([{"x": 1}] * 10, dtype=object)
    np.save(tmp_path / "shot_noise.npy", good if labels_bad else evil, allow_pickle=True)
    np.save(tmp_path / "labels.npy", evil if labels_bad else np.zeros(10), allow_pickle=True)
    with pytest.raises(DataError, match="not a readable .npy"):
        load_datasets(tmp_path / "shot_noise.npy")
    (tmp_path / "shot_noise.npy").write_bytes(b"\x93NUMPY truncated")
    with pytest.raises(DataError, match="not a readable .npy"):
        load_datasets(tmp_path / "shot_noise.npy")


def test_data_errors(tmp_path) -> None:
    labels = np.repeat(np.arange(2), 5)
    np.savez(tmp_path / "flat.npz", images=np.zeros((10, 16)), labels=labels)
    with pytest.raises(ImageShapeError, match=r"\(10, 16\)"):
        load_datasets(tmp_path / "flat.npz")
    np.savez(tmp_path / "big.npz", images=np.zeros((10, 4, 4)), labels=labels * 7)
    with pytest.raises(LabelRangeError, match="label 7 is outside"):
        load_datasets(tmp_path / "big.npz", num_classes=3)
    torch.save({"train": {"x": torch.zeros(4, 1, 4, 4), "y": torch.zeros(4)},
                "val": (torch.zeros(0, 1, 4, 4), torch.zeros(0))}, tmp_path / "empty.pt")
    with pytest.raises(EmptySplitError, match="val"):
        load_datasets(tmp_path / "empty.pt")


def test_stratified_split_is_seeded_and_per_class() -> None:
    labels = torch.tensor([0] * 10 + [1] * 20)
    a = stratified_split(labels, SplitRule(val_fraction=0.2, test_fraction=0.3, seed=1))
    b = stratified_split(labels, SplitRule(val_fraction=0.2, test_fraction=0.3, seed=1))
    assert all(torch.equal(i, j) for i, j in zip(a, b, strict=True))
    train, val, test = a
    assert [int((labels[val] == c).sum()) for c in (0, 1)] == [2, 4]
    assert [int((labels[test] == c).sum()) for c in (0, 1)] == [3, 6]
    assert len(set(torch.cat(a).tolist())) == 30
    with pytest.raises(DataError, match="fewer"):
        stratified_split(labels, SplitRule(per_class=(8, 2, 1)))
