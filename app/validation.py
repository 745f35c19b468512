"""The job-spec rules that depend on the operator's settings.

:class:`app.schemas.JobSpec` checks what is true everywhere; :func:`check_spec` adds what this
deployment allows: hard limits, the data roots that file references must stay inside, and the
factory allowlist. The route calls it with the settings; workers may call it again right before
opening files, which closes the window in which a symlink could be swapped after submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.errors import FieldError, InvalidSpec
from app.schemas import (
    FactoryModel,
    ImageFolderData,
    JobSpec,
    TensorsData,
    TorchscriptModel,
    TorchvisionModel,
)
from app.schemas.spec import WEIGHTS_ENUM
from app.settings import Settings
from app.uris import check_scheme, confine


def _limits(spec: JobSpec, settings: Settings) -> list[FieldError]:
    checks: list[tuple[str, int, int]] = [
        ("search.max_trials", spec.search.max_trials, settings.max_trials),
        ("search.epochs", spec.search.epochs, settings.max_epochs),
        ("search.batch_size", spec.search.batch_size, settings.max_batch_size),
    ]
    if spec.data.source == "builtin":
        for name in ("n_per_class", "n_val", "n_test"):
            checks.append((f"data.{name}", getattr(spec.data, name), settings.max_n_per_class))
    else:
        if spec.data.n_per_class is not None:
            checks.append(("data.n_per_class", spec.data.n_per_class, settings.max_n_per_class))
        split = spec.data.split
        for name in ("train", "val", "test"):
            value = getattr(split, name) if split is not None else None
            if isinstance(value, int):
                checks.append((f"data.split.{name}", value, settings.max_n_per_class))
    return [
        FieldError(field, f"{value} exceeds this server's limit of {limit}")
        for field, value, limit in checks
        if value > limit
    ]


def _file_fields(spec: JobSpec) -> list[tuple[str, str | None]]:
    """(dotted field, its reference or None) of every file reference in the spec."""
    fields: list[tuple[str, str | None]] = []
    model, data = spec.model, spec.data
    if isinstance(model, TorchvisionModel) and model.weights is not None and not (
            WEIGHTS_ENUM.match(model.weights)):  # an enum name is read from the hub cache
        fields.append(("model.weights", model.weights))
    if isinstance(model, TorchscriptModel):
        fields.append(("model.path", model.path))
    if isinstance(data, ImageFolderData):
        fields += [(f"data.{name}", getattr(data, name)) for name in ("train", "val", "test",
                                                                      "root")]
    if isinstance(data, TensorsData):
        fields += [("data.path", data.path), ("data.labels", data.labels)]
    reference = getattr(data, "source_reference", None)
    if reference is not None:
        fields += [(f"data.source_reference.{name}", getattr(reference, name))
                   for name in ("root", "path", "labels")]
    return fields


def _with_references(spec: JobSpec, resolved: dict[str, str]) -> JobSpec:
    """``spec`` with each dotted field of ``resolved`` replaced by its canonical reference."""

    def updated(section: Any, prefix: str) -> Any:
        changes = {field.removeprefix(prefix): uri for field, uri in resolved.items()
                   if field.startswith(prefix) and "." not in field.removeprefix(prefix)}
        return section.model_copy(update=changes) if changes else section

    data = updated(spec.data, "data.")
    reference = getattr(data, "source_reference", None)
    if reference is not None:
        data = data.model_copy(update={"source_reference": updated(
            reference, "data.source_reference.")})
    return spec.model_copy(update={"model": updated(spec.model, "model."), "data": data})


def factory_allowed(module: str, prefixes: list[str]) -> bool:
    """True when ``module`` is one of the dotted ``prefixes`` or inside one; a trailing dot
    (``"mypkg."``) means the same as none. The workers' copy of this rule is
    ``selector.io.models_io.factory_allowed`` (selector cannot import app);
    ``tests/test_contracts.py`` pins both to one table."""
    for prefix in prefixes:
        prefix = prefix.rstrip(".")
        if prefix and (module == prefix or module.startswith(prefix + ".")):
            return True
    return False


def check_spec(spec: JobSpec, settings: Settings) -> JobSpec:
    """Return ``spec`` with local file references canonicalised, or raise InvalidSpec.

    Every violation is reported (422 lists them all); local paths are rewritten to the
    ``file://`` URI of their resolved location, so the stored spec names what was checked.
    """
    errors = _limits(spec, settings)
    model = spec.model
    if isinstance(model, FactoryModel) and not factory_allowed(
        model.module, settings.factory_allowlist
    ):
        errors.append(
            FieldError("model.target", f"module {model.module!r} is not in the factory allowlist")
        )
    roots: list[Path] = settings.data_roots
    resolved: dict[str, str] = {}
    for field, uri in _file_fields(spec):
        if uri is None:
            continue
        try:
            check_scheme(uri, settings.enabled_uri_schemes)
            resolved[field] = confine(uri, roots)
        except ValueError as exc:
            errors.append(FieldError(field, str(exc)))
    if errors:
        raise InvalidSpec(errors)
    return _with_references(spec, resolved)
