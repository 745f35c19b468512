"""The model cache: locked, atomic, verified; bad entries are rebuilt, never used."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from selector.builtin import cache, load_source_model
from selector.builtin.sources import RECIPE_VERSION, entry_dir, prepare_source

EXPECT = {"name": "toy", "recipe": 1}


class Builder:
    """Counts builds; each build returns different tensors so a rebuild is visible."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay

    def __call__(self) -> tuple[cache.Tensors, dict]:
        self.calls += 1
        time.sleep(self.delay)
        return {"w": torch.full((4, 4), float(self.calls))}, {**EXPECT, "seed": 0}


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    return tmp_path / "models" / "toy"


def test_builds_once_then_reads(entry):
    build = Builder()
    tensors, manifest, built = cache.load_or_build(entry, build, EXPECT)
    assert built and build.calls == 1 and float(tensors["w"][0, 0]) == 1
    tensors, manifest, built = cache.load_or_build(entry, build, EXPECT)
    assert not built and build.calls == 1
    assert manifest["weights"]["sha256"] == cache.sha256_file(entry / cache.WEIGHTS)
    assert sorted(p.name for p in entry.iterdir()) == [cache.MANIFEST, cache.WEIGHTS]


@pytest.mark.parametrize("damage", ["flip_weight_byte", "truncate_weights", "delete_weights",
                                    "delete_manifest", "garbage_manifest", "wrong_checksum",
                                    "stale_recipe"])
def test_damaged_entry_is_logged_and_rebuilt(entry, damage, caplog):
    build = Builder()
    cache.load_or_build(entry, build, EXPECT)
    weights, manifest_path = entry / cache.WEIGHTS, entry / cache.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    if damage == "flip_weight_byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "truncate_weights":
        weights.write_bytes(weights.read_bytes()[:20])
    elif damage == "delete_weights":
        weights.unlink()
    elif damage == "delete_manifest":
        manifest_path.unlink()
    elif damage == "garbage_manifest":
        manifest_path.write_text("{not json")
    elif damage == "wrong_checksum":
        manifest["weights"]["sha256"] = "0" * 64
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "stale_recipe":
        manifest["recipe"] = 0
        manifest_path.write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="selector.builtin.cache"):
        tensors, manifest, built = cache.load_or_build(entry, build, EXPECT)
    assert built and build.calls == 2 and float(tensors["w"][0, 0]) == 2
    assert "rebuilding cache entry" in caplog.text
    assert cache.read_entry(entry, EXPECT)[1]["weights"]["sha256"] == manifest["weights"]["sha256"]


def test_validation_failure_rebuilds(entry):
    build = Builder()
    cache.load_or_build(entry, build, EXPECT)

    def reject_first(tensors):
        if float(tensors["w"][0, 0]) == 1:
            raise cache.CacheEntryError("does not fit")

    _, _, built = cache.load_or_build(entry, build, EXPECT, validate=reject_first)
    assert built and build.calls == 2


def test_concurrent_first_use_builds_once(entry):
    build = Builder(delay=0.5)
    results: list[bool] = []

    def use() -> None:
        results.append(cache.load_or_build(entry, build, EXPECT)[2])

    threads = [threading.Thread(target=use) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert build.calls == 1 and sorted(results) == [False, False, True]


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path / "env"))
    assert cache.data_dir() == tmp_path / "env"
    assert cache.data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(cache.ENV_VAR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.data_dir() == tmp_path / "xdg" / "surgical"


def test_source_model_entry_is_rebuilt_when_its_weights_are_corrupt(tiny_source, tmp_path):
    first = prepare_source(tiny_source, tmp_path)
    assert first.built and first.path == entry_dir(tiny_source, tmp_path)
    manifest = first.manifest
    assert manifest["recipe"] == RECIPE_VERSION and manifest["seed"] == 0
    assert {"split", "train", "normalisation"} <= set(manifest["data"])
    assert manifest["training"]["epochs"] == 1 and 0 <= manifest["accuracy"]["accuracy"] <= 1
    assert not prepare_source(tiny_source, tmp_path).built
    (first.path / cache.WEIGHTS).write_bytes(b"\x00" * 64)
    again = prepare_source(tiny_source, tmp_path)
    assert again.built
    model = load_source_model(tiny_source, tmp_path)
    assert not model.training
    # Same seed, same recipe: the rebuilt weights equal the first ones.
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key
