"""A user's own data: transforms, split rules, few-shot sampling, CIFAR-10-C severities, hub
weights, and the decode-once cache (issue 10)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

from selector import ConfigError, DataError, ImageShapeError, ModelLoadError, load_datasets
from selector.finetune.batches import SplitData, has_random_transform
from selector.io.decode_cache import DecodedImages
from selector.io.inputs import ImageOptions, SplitRule, load_model, stratified_split
from selector.io.transforms import IMAGENET_MEAN, IMAGENET_STD, resolve_transform

TV = {"source": "torchvision", "arch": "resnet18", "num_classes": 2}


def make_folder(root: Path, per_class: int = 6, classes: tuple[str, ...] = ("cat", "dog"),
                sizes: tuple[tuple[int, int], ...] = ((20, 30), (33, 25), (40, 40)),
                suffix: str = ".jpg", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // 2 + 60 * c
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i:03d}{suffix}")
    return root


# --- transforms --------------------------------------------------------------------------


def test_presets_and_defaults_resolve_to_recorded_transforms() -> None:
    imagenet = resolve_transform(None, TV).record()  # torchvision models default to imagenet
    assert imagenet == {"preset": "imagenet", "resize": 256, "image_size": [224, 224],
                        "channels": 3, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                        "weights": None, "interpolation": "bilinear"}
    assert resolve_transform(None, {"source": "torchscript", "path": "m.pt"}).record()[
        "preset"] == "none"
    small = resolve_transform({"preset": "imagenet", "image_size": 32}, TV)
    assert (small.resize, small.image_size, small.mean) == (37, (32, 32), IMAGENET_MEAN)
    explicit = resolve_transform(ImageOptions(image_size=(20, 24), channels=1, mean=(0.5,),
                                              std=(0.25,)), TV)
    assert explicit.record()["image_size"] == [20, 24] and explicit.channels == 1
    weights = resolve_transform({"preset": "weights"}, {**TV, "weights": "IMAGENET1K_V1"})
    assert weights.weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert (weights.resize, weights.image_size) == (256, (224, 224))


@pytest.mark.parametrize(("options", "model", "match"), [
    ({"preset": "fancy"}, TV, "unknown transform preset 'fancy'"),
    ({"mean": [0.5, 0.5], "std": [0.2, 0.2, 0.2]}, None, "mean has 2 values but std 3"),
    ({"channels": 3, "mean": [0.5], "std": [0.2]}, None, "mean has 1 values for 3 channels"),
    ({"image_size": 0}, None, "image_size must be positive"),
    ({"preset": "weights"}, TV, "needs a torchvision model whose weights name"),
    ({"preset": "weights"}, {**TV, "weights": "NOPE_V9"}, "resnet18 has no weights 'NOPE_V9'"),
])
def test_bad_transforms_are_config_errors(options: dict, model: dict | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve_transform(options, model)


def test_first_batch_mean_and_std_follow_the_normalisation(tmp_path: Path) -> None:
    """Lossless PNGs of known pixels: after the transform the first training batch has exactly
    the mean and std that (x / 255 - mean) / std predicts."""
    make_folder(tmp_path / "train", per_class=4, sizes=((16, 16),), suffix=".png")
    make_folder(tmp_path / "val", per_class=2, sizes=((16, 16),), suffix=".png", seed=1)
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    splits = load_datasets({"source": "imagefolder", "train": tmp_path / "train",
                            "val": tmp_path / "val",
                            "transform": {"mean": list(mean), "std": list(std)}})
    raw = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy())
                       for f in sorted((tmp_path / "train").rglob("*.png"))])
    raw = raw.permute(0, 3, 1, 2).double() / 255
    x, _ = next(SplitData(splits.train, "train").batches(64))
    assert x.shape == (8, 3, 16, 16)
    for c in range(3):
        assert float(x[:, c].mean()) == pytest.approx((float(raw[:, c].mean()) - mean[c]) / std[c],
                                                      abs=1e-5)
        assert float(x[:, c].std()) == pytest.approx(float(raw[:, c].std()) / std[c], rel=1e-4)


@pytest.mark.parametrize("workers", [0, 2])
def test_mixed_sizes_without_a_transform_name_the_field(tmp_path: Path, workers: int) -> None:
    make_folder(tmp_path)
    with pytest.raises(ImageShapeError, match=r"images of different sizes.*data\.transform\."
                                               r"image_size"):
        load_datasets({"source": "imagefolder", "root": tmp_path}, loader_workers=workers)
    fixed = load_datasets({"source": "imagefolder", "root": tmp_path,
                           "transform": {"image_size": [12, 10]}, "split": {"val": 1, "test": 1}})
    assert SplitData(fixed.train, "train").sample_shape == (3, 12, 10)


# --- split rules and few-shot sampling -----------------------------------------------------


def test_split_rule_counts_fractions_and_few_shot(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=10, sizes=((8, 8),))
    counts = load_datasets({"source": "imagefolder", "root": tmp_path,
                            "split": {"train": 5, "val": 2, "test": 3}, "n_per_class": 2,
                            "transform": {"preset": "none"}})
    assert (len(counts.train), len(counts.val), len(counts.test)) == (4, 4, 6)
    fractions = load_datasets({"source": "imagefolder", "root": tmp_path,
                               "split": {"val": 0.2, "test": 0.3}})
    assert (len(fractions.train), len(fractions.val), len(fractions.test)) == (10, 4, 6)
    labels = torch.arange(30) % 3
    a = stratified_split(labels, SplitRule(train=6, val=2, n_per_class=3, seed=4))
    b = stratified_split(labels, SplitRule(train=6, val=2, n_per_class=3, seed=4))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # seeded
    assert torch.bincount(labels[a[0]]).tolist() == [3, 3, 3]  # stratified


def test_split_counts_larger_than_a_class_name_the_class(tmp_path: Path) -> None:
    make_folder(tmp_path, per_class=4, classes=("ant", "bee"), sizes=((8, 8),))
    (tmp_path / "bee" / "000.jpg").unlink()
    with pytest.raises(DataError, match="class 'bee' has 3 examples, fewer than the split"):
        load_datasets({"source": "imagefolder", "root": tmp_path,
                       "split": {"train": 2, "val": 1, "test": 1}})
    with pytest.raises(DataError, match="class 'bee' has 2 training examples, fewer than "
                                        "n_per_class=3"):
        load_datasets({"source": "imagefolder", "root": tmp_path,
                       "split": {"val": 1}, "n_per_class": 3})


def test_cifar10c_severity_labels_path_split_and_transform(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5 * 40, 8, 8, 3), dtype=np.uint8)
    images[3 * 40:4 * 40] = 7  # severity 4 is recognisable
    np.save(tmp_path / "fog.npy", images)
    np.save(tmp_path / "y.npy", np.tile(np.arange(4), 50))
    splits = load_datasets({"source": "tensors", "path": tmp_path / "fog.npy", "severity": 4,
                            "labels": str(tmp_path / "y.npy"),
                            "split": {"train": 5, "val": 2, "test": 3}, "n_per_class": 4,
                            "transform": {"image_size": 4, "mean": [0.0] * 3,
                                          "std": [1.0] * 3}})
    x, y = splits.train.tensors
    assert x.shape == (16, 3, 4, 4) and torch.allclose(x, torch.full_like(x, 7 / 255))
    assert len(splits.val) == 8 and len(splits.test) == 12
    assert splits.transform.record()["image_size"] == [4, 4]
    with pytest.raises(DataError, match="severity must be 1..5"):
        load_datasets({"source": "tensors", "path": tmp_path / "fog.npy", "severity": 6,
                       "labels": str(tmp_path / "y.npy")})


# --- models --------------------------------------------------------------------------------


def test_torchvision_weights_enum_loads_from_the_hub_cache(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = {"source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1",
           "num_classes": 3}
    with pytest.raises(ModelLoadError, match="pre-seed the hub cache"):
        load_model(ref)
    state = torchvision.models.resnet18().state_dict()
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    torch.save(state, tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = load_model(ref)
    assert model.fc.out_features == 3
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


# --- the decode cache ------------------------------------------------------------------------


def test_decode_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=6, sizes=((16, 16),))
    cache = tmp_path / "cache"
    spec = {"source": "imagefolder", "root": root, "transform": {"image_size": 8},
            "split": {"val": 1, "test": 1}}
    first = load_datasets(spec, cache_dir=cache)
    files = sorted(cache.glob("*.npy"))
    assert len(files) == 1
    stamp, inode = files[0].stat().st_mtime_ns, files[0].stat().st_ino
    time.sleep(0.01)
    second = load_datasets(spec, cache_dir=cache)  # another trial, another load: the same file
    assert sorted(cache.glob("*.npy")) == files and files[0].stat().st_ino == inode
    assert files[0].stat().st_mtime_ns > stamp  # marked as recently used (for eviction)
    base = first.train.dataset
    assert isinstance(base, DecodedImages) and base.path == second.train.dataset.path
    changed = root / "dog" / "002.jpg"
    Image.new("RGB", (16, 16), (250, 0, 0)).save(changed)
    os.utime(changed, ns=(stamp + 10**9, stamp + 10**9))
    third = load_datasets(spec, cache_dir=cache)
    rebuilt = sorted(cache.glob("*.npy"))
    assert len(rebuilt) == 1 and rebuilt != files  # a new key; the stale file is gone
    # files are cat/000..005 then dog/000..005: dog/002 is image 8 of the decoded folder
    assert third.train.dataset.images[8][0].mean() > 200  # the red image was decoded


def test_decode_cache_evicts_the_least_recently_used_folders_beyond_its_limit(tmp_path: Path
                                                                             ) -> None:
    cache = tmp_path / "cache"

    def load(name: str, limit: int | None) -> DecodedImages:
        root = tmp_path / name
        if not root.exists():
            make_folder(root, per_class=4, sizes=((16, 16),), seed=len(name))
        spec = {"source": "imagefolder", "root": root, "transform": {"image_size": 8},
                "split": {"val": 1, "test": 1}}
        dataset = load_datasets(spec, cache_dir=cache, cache_limit_bytes=limit).train.dataset
        assert isinstance(dataset, DecodedImages) and dataset.path is not None
        time.sleep(0.01)  # distinct mtimes
        return dataset

    a = load("a", None)
    one = a.path.stat().st_size
    limit = 2 * one + one // 2  # room for two folders
    b = load("bb", limit)
    load("a", limit)  # a is used again: b is now the least recently used
    c = load("ccc", limit)
    assert sorted(p.name for p in cache.glob("*.npy")) == sorted([a.path.name, c.path.name])
    assert not b.path.exists()
    assert b.images[0].shape == (3, 8, 8)  # a mapping made before the eviction still reads
    again = load("bb", limit)  # evicted: decoded again, transparently, evicting a
    assert again.path == b.path and again.path.exists() and not a.path.exists()
    assert np.array_equal(np.asarray(again.images), np.asarray(b.images))
    # a single folder larger than the limit is still kept (it is in use)
    assert load("dddd", 1).path.exists()


def test_streamed_batches_equal_materialised_ones(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "photos", per_class=8, sizes=((12, 12),))
    splits = load_datasets({"source": "imagefolder", "root": root, "split": {"val": 1},
                            "transform": {"preset": "imagenet", "image_size": 8}},
                           cache_dir=tmp_path / "cache", loader_workers=2)
    in_memory = SplitData(splits.train, "train")
    streamed = SplitData(splits.train, "train", limit_bytes=1)
    assert in_memory.x is not None and streamed.streams
    order = torch.randperm(in_memory.n, generator=torch.Generator().manual_seed(0))
    for (xa, ya), (xb, yb) in zip(in_memory.batches(5, order), streamed.batches(5, order),
                                  strict=True):
        assert torch.equal(ya, yb) and torch.allclose(xa, xb)


def test_random_transforms_are_never_materialised_nor_cached() -> None:
    from torchvision import transforms

    class Flipping(TensorDataset):
        transform = transforms.Compose([transforms.RandomHorizontalFlip()])

    data = Flipping(torch.rand(6, 1, 4, 4), torch.zeros(6, dtype=torch.long))
    assert has_random_transform(Subset(data, [0, 1]))
    assert not has_random_transform(TensorDataset(torch.rand(2, 1, 4, 4), torch.zeros(2)))
    split = SplitData(data, "train")
    assert split.random and split.x is None


# --- precision -----------------------------------------------------------------------------


@pytest.mark.parametrize(("precision", "expected"), [("auto", "fp32"), ("fp32", "fp32"),
                                                      ("bf16", "bf16"), ("fp16", "fp16")])
def test_precisions_train_on_cpu(precision: str, expected: str) -> None:
    """bf16 and fp16 autocast (fp16 with a grad scaler) run on CPU through the same loop as on
    CUDA; "auto" means fp32 on CPU."""
    from torch import nn

    from selector import surgical_finetune
    from selector.finetune.precision import resolve_precision

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    x, y = torch.rand(24, 3, 8, 8), torch.arange(24) % 3
    data = TensorDataset(x, y)
    result = surgical_finetune(model, "all", data, data, lr=1e-2, epochs=2, batch_size=8,
                               precision=precision, device="cpu")
    assert result.precision == expected
    assert result.epochs[-1].train_loss == pytest.approx(result.epochs[-1].train_loss)  # finite
    changed = [k for k, v in result.state_dict.items() if not torch.equal(v, model.state_dict()[k])]
    assert changed  # the optimizer stepped (a scaler that skipped every step would fail here)
    cuda = resolve_precision("auto", torch.device("cuda"), model)
    assert cuda.channels_last and cuda.name in ("bf16", "fp16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        resolve_precision("fp8", torch.device("cpu"))


def test_per_split_tensors_keep_their_splits_and_few_shot_applies_to_train(tmp_path: Path
                                                                          ) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"{s}_{k}": v for s, n in (("train", 30), ("val", 6)) for k, v in (
        ("images", rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)),
        ("labels", np.arange(n) % 3))}
    np.savez(tmp_path / "data.npz", **arrays)
    splits = load_datasets({"source": "tensors", "path": tmp_path / "data.npz",
                            "n_per_class": 4, "transform": {"channels": 3}})
    x, y = splits.train.tensors
    assert x.shape == (12, 3, 8, 8) and torch.bincount(y).tolist() == [4, 4, 4]
    assert len(splits.val) == 6 and splits.transform.record()["channels"] == 3


# --- source references (the diagnosis's null) ---------------------------------------------


def test_a_source_reference_is_a_capped_seeded_sample_read_with_the_targets_transform(
        tmp_path: Path) -> None:
    from selector.errors import LabelRangeError
    from selector.io.inputs import load_reference

    folder = make_folder(tmp_path / "ref", per_class=5)
    transform = {"image_size": 16, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    first = load_reference({"root": str(folder)}, limit=4, transform=transform, seed=3,
                           classes=["cat", "dog"], num_classes=2)
    again = load_reference({"root": folder.as_uri()}, limit=4, transform=transform, seed=3)
    assert len(first) == 4 and first[0][0].shape == (3, 16, 16)
    assert all(torch.equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(first, again, strict=True))
    whole = load_reference({"root": str(folder)}, limit=1000, transform=transform)
    assert len(whole) == 10  # fewer than the cap: all of them
    # A dog-only target names its classes; the reference's cat folder then is not among them.
    with pytest.raises(DataError, match="not in the train split"):
        load_reference({"root": str(folder)}, limit=4, classes=["dog"], transform=transform)

    images = np.random.default_rng(0).integers(0, 255, (50, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "clean.npy", images)
    np.save(tmp_path / "clean_labels.npy", np.arange(50) % 5)
    reference = {"path": str(tmp_path / "clean.npy"),
                 "labels": str(tmp_path / "clean_labels.npy")}
    sample = load_reference(reference, limit=7, num_classes=5)
    assert len(sample) == 7 and sample[0][0].shape == (3, 8, 8)
    with pytest.raises(LabelRangeError, match="source reference"):
        load_reference(reference, limit=50, num_classes=3)
