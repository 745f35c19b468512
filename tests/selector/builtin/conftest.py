"""Fixtures for the built-in case: the suite's shared data directory, one trained source model.

The session points ``SURGICAL_DATA_DIR`` at the suite's data directory (``builtin_data_dir`` in
tests/conftest.py, never the user's cache), so ``mnist-resnet`` is trained at most once for the
whole suite (about a minute on two cores), by whichever test first asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from torch import nn

from selector.builtin import cache
from selector.builtin.pretrain import PretrainRecipe
from selector.builtin.sources import SOURCES, SourceSpec


@pytest.fixture(scope="session", autouse=True)
def _data_dir_env(builtin_data_dir: Path) -> Iterator[Path]:
    """Export the suite's data directory as ``SURGICAL_DATA_DIR`` for these tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(cache.ENV_VAR, str(builtin_data_dir))
        yield builtin_data_dir


@pytest.fixture(scope="session")
def clean_model(builtin_data_dir: Path) -> nn.Module:
    """``mnist-resnet`` trained with the real recipe, once per session."""
    from selector.builtin import load_source_model

    return load_source_model("mnist-resnet")


@pytest.fixture
def tiny_source(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register ``tiny-test``: the clean model's data, one epoch on 200 images (about 1 s)."""
    clean = SOURCES["mnist-resnet"]

    def small_data():
        data = clean.data()
        images, labels = data.train
        return type(data)((images[::15], labels[::15]),
                          {"accuracy": tuple(a[::20] for a in data.evaluations["accuracy"])})

    spec = SourceSpec("tiny-test", 10, "test-only: 200 clean source digits", small_data,
                      PretrainRecipe(epochs=1, batch_size=25))
    monkeypatch.setitem(SOURCES, spec.name, spec)
    return spec.name
