"""The job specification, the settings-dependent checks, and error locations (no database)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.errors import InvalidSpec
from app.problems import field_path
from app.schemas import SHIFT_KINDS, JobResult, JobSpec
from app.settings import Settings
from app.validation import check_spec
from tests.app.helpers import MINIMAL, RESULT

REPO = Path(__file__).resolve().parents[2]


def _locs(body: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate(body)
    # the field app.problems reports: a validator's own "field", else the error's location
    return [(err.get("ctx") or {}).get("field") or field_path(err["loc"])
            for err in caught.value.errors()]


def test_architecture_example_is_valid() -> None:
    """The JSON in docs/ARCHITECTURE.md's "Job specification" section is the contract."""
    doc = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    section = doc.split("## Job specification", 1)[1]
    block = re.search(r"```json\n(.*?)```", section, re.S)
    assert block is not None
    example = json.loads(block.group(1))
    dumped = JobSpec.model_validate(example).model_dump(mode="json", exclude_defaults=False)
    # Every value the document gives survives as given; what it leaves out gets its default.
    for section, values in example.items():
        if isinstance(values, dict):
            assert {k: dumped[section][k] for k in values} == values, section
        else:
            assert dumped[section] == values, section
    assert (dumped["data"]["n_val"], dumped["data"]["n_test"]) == (20, 80)
    # The stored form parses back to itself (workers parse it once when they claim the job).
    assert JobSpec.model_validate(dumped).model_dump(mode="json") == dumped


@pytest.mark.parametrize(
    ("search", "epochs"),
    [({"strategy": "paper"}, 15), ({"strategy": "paper", "epochs": 10}, 10),
     ({"strategy": "auto"}, 10), ({}, 10), ({"strategy": "tpe", "epochs": 15}, 15)],
)
def test_paper_strategy_defaults_to_the_papers_epochs(search: dict[str, Any], epochs: int) -> None:
    spec = JobSpec.model_validate({**MINIMAL, "search": search})
    assert spec.search.epochs == epochs
    assert JobSpec.model_validate(spec.model_dump(mode="json")).search.epochs == epochs


def test_model_and_data_alone_are_valid_with_defaults() -> None:
    spec = JobSpec.model_validate(MINIMAL)
    assert spec.search.strategy == "auto" and spec.search.max_trials == 12
    assert spec.search.max_minutes is None  # no time budget unless asked for
    assert spec.search.epochs == 10 and spec.search.batch_size == 64 and spec.search.baselines
    assert (spec.search.lr_min, spec.search.lr_max) == (1e-5, 1e-1)
    assert spec.seed == 0 and spec.data.source == "builtin"


def test_json_schema_examples_validate() -> None:
    for example in JobSpec.model_json_schema()["examples"]:
        JobSpec.model_validate(example)
    for example in JobResult.model_json_schema()["examples"]:
        JobResult.model_validate(example)
    JobResult.model_validate(RESULT)


@pytest.mark.parametrize("shift", sorted(SHIFT_KINDS))
def test_every_known_shift_is_accepted(shift: str) -> None:
    JobSpec.model_validate({"model": {"source": "builtin"}, "data": {"source": "builtin", "shift": shift}})


def test_shift_kinds_cover_the_three_families() -> None:
    assert SHIFT_KINDS["impulse_noise"] == "input"
    assert SHIFT_KINDS["subpopulation"] == "feature"
    assert SHIFT_KINDS["label_flip"] == SHIFT_KINDS["spurious"] == "output"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**MINIMAL, "data": {"source": "builtin", "shift": "snow"}}, "data.shift"),
        ({**MINIMAL, "data": {"source": "builtin", "severity": 6}}, "data.severity"),
        ({**MINIMAL, "model": {"source": "builtin", "name": "vit"}}, "model.name"),
        ({**MINIMAL, "model": {"source": "onnx"}}, "model"),
        ({**MINIMAL, "model": {"source": "builtin", "extra": 1}}, "model.extra"),
        ({**MINIMAL, "colour": "red"}, "colour"),
        ({**MINIMAL, "search": {"max_trials": 0}}, "search.max_trials"),
        ({**MINIMAL, "search": {"max_minutes": 0}}, "search.max_minutes"),
        ({**MINIMAL, "search": {"max_minutes": 7 * 24 * 60 + 1}}, "search.max_minutes"),
        ({**MINIMAL, "search": {"strategy": "grid"}}, "search.strategy"),
        ({**MINIMAL, "search": {"lr_min": 0.1, "lr_max": 0.01}}, "search.lr_max"),
        ({**MINIMAL, "search": {"groups": {"a": "("}}}, "search.groups"),
        ({**MINIMAL, "search": {"groups": {"a": []}}}, "search.groups"),
        ({**MINIMAL, "search": {"granularity": "layer"}}, "search.granularity"),
        ({**MINIMAL, "model": {"source": "factory", "target": "no-colon"}}, "model.target"),
        ({**MINIMAL, "model": {"source": "torchscript", "path": "rel/m.pt"}}, "model.path"),
        ({**MINIMAL, "data": {"source": "tensors", "path": "file://host/x.pt"}}, "data.path"),
        ({**MINIMAL, "data": {"source": "tensors", "path": "ftpx://x/y.pt"}}, "data.path"),
        (
            {**MINIMAL, "data": {"source": "tensors", "path": "simplecache::file:///etc/x"}},
            "data.path",
        ),
        ({**MINIMAL, "data": {"source": "imagefolder", "train": "/d/train"}}, "data.val"),
    ],
)
def test_invalid_specs_name_the_field(body: dict[str, Any], field: str) -> None:
    assert _locs(body)[0] == field


def test_custom_groups_keep_their_order() -> None:
    groups = {"stem": r"^conv1$", "body": ["layer1", "layer2"], "head": ["fc"]}
    spec = JobSpec.model_validate({**MINIMAL, "search": {"groups": groups}})
    assert list(spec.search.groups or {}) == ["stem", "body", "head"]


def test_fsspec_uris_are_accepted_when_fsspec_is_installed() -> None:
    pytest.importorskip("fsspec")
    spec = JobSpec.model_validate({**MINIMAL, "data": {"source": "tensors", "path": "s3://b/x.pt"}})
    assert spec.data.source == "tensors"


@pytest.mark.parametrize(
    ("loc", "field"),
    [
        (("body", "search", "max_trials"), "search.max_trials"),
        (("body", "data", "builtin", "shift"), "data.shift"),
        (("body", "model", "factory", "target"), "model.target"),
        (("body", 17), "body"),
        (("body",), "body"),
        (("query", "page_size"), "page_size"),
        (("header", "Idempotency-Key"), "Idempotency-Key"),
    ],
)
def test_field_path(loc: tuple[str | int, ...], field: str) -> None:
    assert field_path(loc) == field


# --- check_spec: the rules that depend on the operator's settings --------------------------


@pytest.fixture
def roots(tmp_path: Path) -> Settings:
    root = tmp_path / "data"
    (root / "sets").mkdir(parents=True)
    (root / "sets" / "x.pt").write_bytes(b"x")
    (tmp_path / "secret.pt").write_bytes(b"s")
    return Settings(data_dir=tmp_path, data_roots=[root], factory_allowlist=["mypkg"])


def _check(settings: Settings, **parts: Any) -> JobSpec:
    return check_spec(JobSpec.model_validate({**MINIMAL, **parts}), settings)


def _fields(settings: Settings, **parts: Any) -> list[str]:
    with pytest.raises(InvalidSpec) as caught:
        _check(settings, **parts)
    return [error.field for error in caught.value.errors]


def test_server_limits(roots: Settings) -> None:
    assert _fields(roots, search={"max_trials": 201, "epochs": 51, "batch_size": 1025}) == [
        "search.max_trials",
        "search.epochs",
        "search.batch_size",
    ]
    assert _fields(roots, data={"source": "builtin", "n_per_class": 2001}) == ["data.n_per_class"]
    _check(roots, search={"max_trials": 200, "epochs": 50})


def test_paths_must_stay_inside_the_data_roots(roots: Settings, tmp_path: Path) -> None:
    root = roots.data_roots[0]
    inside = _check(roots, data={"source": "tensors", "path": f"{root}/sets/./x.pt"})
    assert inside.data.path == (root / "sets" / "x.pt").resolve().as_uri()  # type: ignore[union-attr]
    escape = f"file://{root}/sets/../../secret.pt"
    assert _fields(roots, data={"source": "tensors", "path": escape}) == ["data.path"]
    (root / "sets" / "link.pt").symlink_to(tmp_path / "secret.pt")
    linked = {"source": "tensors", "path": f"{root}/sets/link.pt"}
    assert _fields(roots, data=linked) == ["data.path"]
    (root / "sets" / "ok.pt").symlink_to(root / "sets" / "x.pt")
    _check(roots, data={"source": "tensors", "path": f"{root}/sets/ok.pt"})


def test_every_file_reference_is_confined(roots: Settings) -> None:
    outside = "/etc/passwd"
    model = {"source": "torchvision", "arch": "resnet18", "weights": outside, "num_classes": 10}
    data = {"source": "imagefolder", "train": outside, "val": outside, "test": outside}
    assert _fields(roots, model=model, data=data) == [
        "model.weights",
        "data.train",
        "data.val",
        "data.test",
    ]


def test_remote_uris_need_their_scheme_enabled(roots: Settings) -> None:
    """Remote references are refused unless the operator enables the scheme; then they pass
    through unchanged. ``s3`` goes with the S3 artifact setting."""
    pytest.importorskip("fsspec")
    remote = {"source": "tensors", "path": "s3://bucket/x.pt"}
    assert _fields(roots, data=remote) == ["data.path"]
    for enabled in (
        roots.model_copy(update={"remote_uri_schemes": ["s3"]}),
        roots.model_copy(update={"artifact_s3_bucket": "bucket"}),
    ):
        assert _check(enabled, data=remote).data.path == "s3://bucket/x.pt"  # type: ignore[union-attr]
    for uri in ("http://host/x.pt", "memory://x.pt", "git://h/r", "zip://x.pt"):
        assert _fields(roots, data={"source": "tensors", "path": uri}) == ["data.path"], uri


@pytest.mark.parametrize(
    "uri", ["http:/etc/passwd", "s3:bucket/x.pt", "data:,hello", "file:x.pt", "x.pt", ""]
)
def test_references_that_are_neither_local_nor_remote_are_refused(uri: str) -> None:
    """``http:/etc/passwd`` is not a remote URI; a reader that took it for a relative local path
    would skip confinement, so the one parser refuses it outright."""
    assert _locs({**MINIMAL, "data": {"source": "tensors", "path": uri}}) == ["data.path"]


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("mypkg:build", True),
        ("mypkg.models.resnet:build", True),
        ("mypkgevil:build", False),
        ("os:system", False),
    ],
)
def test_factory_allowlist(roots: Settings, target: str, allowed: bool) -> None:
    model = {"source": "factory", "target": target, "kwargs": {"depth": 18}}
    if allowed:
        assert _check(roots, model=model).model.source == "factory"
    else:
        assert _fields(roots, model=model) == ["model.target"]


def test_a_builtin_case_gets_the_source_model_its_shift_needs():
    from app.schemas import JobSpec

    def model_for(shift: str) -> str | None:
        spec = JobSpec.model_validate({"model": {"source": "builtin"},
                                       "data": {"source": "builtin", "shift": shift}})
        return spec.model.name

    assert model_for("impulse_noise") == "mnist-resnet"
    assert model_for("subpopulation") == "mnist-resnet-subpop"
    assert model_for("spurious") == "mnist-resnet-spurious"


def test_a_builtin_model_that_cannot_fit_the_shift_is_refused_naming_the_field():
    import pytest
    from pydantic import ValidationError

    from app.schemas import JobSpec

    with pytest.raises(ValidationError) as caught:
        JobSpec.model_validate({"model": {"source": "builtin", "name": "mnist-resnet"},
                                "data": {"source": "builtin", "shift": "spurious"}})
    error = caught.value.errors()[0]
    assert error["ctx"]["field"] == "model.name"
    assert "mnist-resnet-spurious" in error["msg"]
