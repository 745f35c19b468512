"""Registries and rules written twice because of the torch boundary, pinned to each other.

The API (``app``) may not import torch or ``selector``, and ``selector`` may not import ``app``
(``tests/test_layering.py``), so a few tables exist on both sides: what the API accepts in a job
and what the engine and the workers can run. Each row below names the two sides; a change to one
side fails here until the other agrees.
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from app import uris, validation
from app.schemas import PATCH_FORMAT, BuiltinData, BuiltinModel, SearchSpec
from app.schemas.spec import DEFAULT_BUILTIN_MODEL, SHIFT_KINDS, SHIFT_MODELS
from selector import builtin
from selector.builtin.corruptions import SEVERITIES
from selector.builtin.shifts import SHIFTS
from selector.errors import ModelLoadError
from selector.io import models_io
from selector.layers.groups import GRANULARITIES
from workers.strategies import STRATEGIES


def _choices(model: type, field: str) -> set[str]:
    """The values a ``Literal[...]`` (or ``Literal[...] | None``) field accepts."""
    annotation = model.model_fields[field].annotation
    args = typing.get_args(annotation)
    literals = [a for a in args if typing.get_origin(a) is typing.Literal] or [annotation]
    return {value for literal in literals for value in typing.get_args(literal)}


def _bounds(model: type, field: str) -> tuple[int | None, int | None]:
    info: FieldInfo = model.model_fields[field]
    ge = next((m.ge for m in info.metadata if getattr(m, "ge", None) is not None), None)
    le = next((m.le for m in info.metadata if getattr(m, "le", None) is not None), None)
    return ge, le


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


REGISTRIES = [
    pytest.param(SHIFT_KINDS, builtin.list_shifts(), id="shift-names-and-kinds"),
    pytest.param({name: SHIFT_MODELS.get(name, DEFAULT_BUILTIN_MODEL) for name in SHIFT_KINDS},
                 {name: spec.model_name for name, spec in SHIFTS.items()}, id="shift-source-models"),
    pytest.param(_choices(BuiltinModel, "name"), set(builtin.SOURCES), id="builtin-model-names"),
    pytest.param(_choices(BuiltinData, "name"), {"mnist"}, id="builtin-dataset-names"),
    pytest.param(_choices(SearchSpec, "strategy"), set(STRATEGIES), id="strategy-names"),
    pytest.param(_choices(SearchSpec, "granularity"), set(GRANULARITIES), id="granularities"),
    pytest.param(_bounds(BuiltinData, "severity"), (min(SEVERITIES), max(SEVERITIES)),
                 id="severity-range"),
    pytest.param({name: BuiltinData.model_fields[name].default for name in ("n_per_class", "n_val", "n_test")},
                 {name: _default(builtin.load_case, name) for name in ("n_per_class", "n_val", "n_test")},
                 id="builtin-split-sizes"),
    pytest.param(set(uris.LOCAL_SCHEMES), set(models_io.LOCAL_SCHEMES), id="local-uri-schemes"),
    pytest.param(PATCH_FORMAT, "surgical-patch/1", id="patch-format"),
]


@pytest.mark.parametrize(("api", "engine"), REGISTRIES)
def test_both_sides_of_the_torch_boundary_agree(api, engine):
    assert api == engine


def test_the_load_case_model_default_is_the_shifts_own():
    """A job without ``model.name`` gets the shift's model; so does ``load_case(model=None)``."""
    assert _default(builtin.load_case, "model") is None
    assert BuiltinModel.model_fields["name"].default is None


@pytest.mark.parametrize(
    ("module", "prefixes", "allowed"),
    [
        ("mypkg.models", ["mypkg"], True),
        ("mypkg.models", ["mypkg."], True),  # a trailing dot means the same as none
        ("mypkg", ["mypkg"], True),
        ("mypkg", ["mypkg."], True),
        ("mypkgevil.models", ["mypkg"], False),
        ("mypkgevil.models", ["mypkg."], False),
        ("other.mypkg", ["mypkg"], False),
        ("mypkg.models.deep", ["mypkg.models"], True),
        ("mypkg.modelsx", ["mypkg.models"], False),
        ("anything", [], False),
        ("anything", [""], False),
        ("anything", ["."], False),
        ("b.x", ["a", "b"], True),
    ],
)
def test_the_factory_allowlist_is_one_rule(module: str, prefixes: list[str], allowed: bool):
    """The API refuses exactly the factories a worker would refuse."""
    assert validation.factory_allowed(module, prefixes) is allowed
    assert models_io.factory_allowed(module, prefixes) is allowed


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("/data/x.pt", "/data/x.pt"),
        ("file:///data/x.pt", "/data/x.pt"),
        ("file://localhost/data/x.pt", "/data/x.pt"),
        ("local:///data/x.pt", "/data/x.pt"),
        ("local:/data/x.pt", "/data/x.pt"),
        ("file:///data/with%20space.pt", "/data/with space.pt"),
        ("s3://bucket/x.pt", None),
        ("https://example.org/x.pt", None),
    ],
)
def test_a_reference_names_the_same_file_for_the_api_and_the_engine(uri: str, path: str | None):
    """The API confines the path it reads; the engine must open that same path."""
    assert uris.local_path(uri) == (None if path is None else Path(path))
    if path is None:
        with pytest.raises(ModelLoadError, match="only local files"):
            models_io.local_path(uri)
    else:
        assert models_io.local_path(uri) == Path(path)


@pytest.mark.parametrize("uri", ["http:/etc/passwd", "s3:bucket/x.pt", "data:,x", "git:repo"])
def test_a_scheme_without_a_host_is_no_local_path_on_either_side(uri: str):
    """``http:/etc/passwd`` is neither remote nor local: the API refuses it at submit, and the
    engine must not read it as a relative path (which would skip confinement)."""
    with pytest.raises(ValueError):
        uris.local_path(uri)
    with pytest.raises(ModelLoadError, match="only local files"):
        models_io.local_path(uri)


def test_the_diagnosis_crosses_the_torch_boundary_whole():
    """``selector.ShiftDiagnosis.to_dict()`` is exactly what ``app.schemas.Diagnosis`` accepts:
    same kinds, same fields, every field kept (a real diagnosis of a tiny model)."""
    import torch
    from torch.utils.data import TensorDataset

    from app.schemas import Diagnosis
    from selector import diagnose_shift
    from selector.cifar_resnet import CifarResNet
    from selector.diagnosis import KINDS

    assert _choices(Diagnosis, "kind") == set(KINDS)
    torch.manual_seed(0)
    model = CifarResNet(depth=8, widths=(4, 8, 16), in_channels=1).eval()
    data = TensorDataset(torch.randn(40, 1, 8, 8), torch.randint(0, 10, (40,)))
    found = diagnose_shift(model, data, source=data).to_dict()
    assert Diagnosis.model_validate(found).model_dump(mode="json") == found
