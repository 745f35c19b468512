"""Model references -> ``nn.Module`` (returned in eval mode).

Accepted references (string forms are what the CLI takes; mappings are the job spec's
``model`` object)::

    "resnet18"                                  torchvision architecture, random weights
    {"source": "torchvision", "arch": "resnet18", "weights": "file:///w.pt", "num_classes": 10}
    {"source": "torchvision", "arch": "resnet18", "weights": "IMAGENET1K_V1"}
                                                a torchvision weights enum, through the hub cache
    "path/model.ts" / {"source": "torchscript", "path": ...}      a TorchScript archive
    "pkg.module:function" / {"source": "factory", "target": ..., "kwargs": {...}}
    "cifar_resnet"                              alias of "selector.cifar_resnet:cifar_resnet"
    {"source": "builtin", "name": "mnist-resnet"}   delegated to selector.builtin

Weights enums (``"IMAGENET1K_V1"``, ``"DEFAULT"``) are read from torch's hub cache
(``$TORCH_HOME/hub/checkpoints/<file name of the enum's URL>``), downloaded there only when
missing and the network allows it; offline deployments pre-seed that directory.
Weights files are state dicts read with ``torch.load(weights_only=True)`` (never unpickling
code) or ``.safetensors``. ``num_classes`` different from the checkpoint's replaces the final
classifier layer (and auxiliary classifiers of the same width) with a fresh, seeded one.
Factories import and run code: the workers pass the operator's ``allowed_factory_prefixes``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse, urlsplit

import torch
from torch import Tensor, nn

from selector.errors import (
    CheckpointMismatchError,
    ConfigError,
    FactoryNotAllowedError,
    MissingFileError,
    ModelLoadError,
)

__all__ = [
    "build_torchvision",
    "classifier_width",
    "factory_allowed",
    "inspection_model",
    "load_hub_weights",
    "load_model",
    "load_state_dict_file",
    "local_path",
    "replace_head",
    "torchvision_architectures",
]

ALIASES = {"cifar_resnet": "selector.cifar_resnet:cifar_resnet"}
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_HEAD_INIT_SEED = 0
# Say explicitly what torchvision does by default, which silences its FutureWarning.
_BUILDER_DEFAULTS: dict[str, dict[str, Any]] = {
    "googlenet": {"init_weights": True},
    "inception_v3": {"init_weights": True},
}


def load_model(
    ref: str | Path | Mapping[str, Any],
    *,
    weights: str | Path | None = None,
    num_classes: int | None = None,
    kwargs: Mapping[str, Any] | None = None,
    allowed_factory_prefixes: Sequence[str] | None = None,
    **factory_kwargs: Any,
) -> nn.Module:
    """Load a model from a reference (see the module docstring). ``allowed_factory_prefixes``
    None allows any factory (library use); a sequence restricts factories to modules under
    those dotted prefixes. ``kwargs`` (and extra keyword arguments) go to the factory or the
    torchvision builder."""
    if isinstance(ref, Mapping):
        return _from_mapping(ref, allowed_factory_prefixes)
    kwargs = {**(kwargs or {}), **factory_kwargs}
    text = ALIASES.get(str(ref), str(ref))
    if _FACTORY.match(text) and not Path(text).exists():
        return load_factory(text, kwargs, allowed_factory_prefixes)
    if text in torchvision_architectures():
        return load_torchvision(text, weights=weights, num_classes=num_classes, kwargs=kwargs)
    if "/" in text or "\\" in text or text.startswith("file:") or Path(text).suffix:
        return load_torchscript(text)
    close = difflib.get_close_matches(text, torchvision_architectures(), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ModelLoadError(f"unknown model reference {text!r}: expected a torchvision architecture "
                         f"(e.g. resnet18), a TorchScript path or pkg.module:function{hint}")


def torchvision_architectures() -> list[str]:
    """Classification builders of ``torchvision.models`` (imported on first use: importing
    torchvision takes seconds and most users of :mod:`selector` never need it)."""
    import torchvision

    return list(torchvision.models.list_models(module=torchvision.models))


def inspection_model(ref: str) -> nn.Module:
    """A model to look at, not to run: a torchvision architecture name is built on the meta
    device (no weights, no memory, instant even for ViT-H), any other reference is loaded with
    :func:`load_model`. Enough for layer groups and parameter counts."""
    if ref in torchvision_architectures():
        return build_torchvision(ref, meta=True)
    return load_model(ref)


def build_torchvision(arch: str, *, meta: bool = False, **kwargs: Any) -> nn.Module:
    """``torchvision.models.get_model(arch, weights=None, **kwargs)``; ``meta=True`` builds on
    the meta device (no memory, no init: enough for layer groups and parameter counts)."""
    if arch not in torchvision_architectures():
        close = difflib.get_close_matches(arch, torchvision_architectures(), n=3)
        raise ModelLoadError(f"unknown torchvision architecture {arch!r}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
    import torchvision

    options = {**_BUILDER_DEFAULTS.get(arch, {}), **kwargs}
    with _on_meta() if meta else contextlib.nullcontext():
        return torchvision.models.get_model(arch, weights=None, **options)


def load_torchvision(arch: str, *, weights: str | Path | None = None,
                     num_classes: int | None = None,
                     kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """A torchvision architecture with weights from a local state-dict file."""
    options = dict(kwargs or {})
    if weights is None:
        if num_classes is not None:
            options["num_classes"] = num_classes
        return build_torchvision(arch, **options).eval()
    state = (load_hub_weights(arch, str(weights)) if _is_weights_name(weights)
             else load_state_dict_file(weights))
    if arch in ("googlenet", "inception_v3") and "aux_logits" not in options:
        options["aux_logits"] = any(k.startswith(("aux1.", "AuxLogits.")) for k in state)
    if "num_classes" not in options:
        classes = _checkpoint_classes(build_torchvision(arch, meta=True, **options), state)
        if classes is not None:
            options["num_classes"] = classes
    model = build_torchvision(arch, **options)
    _load_strict(model, state, f"{weights} does not match {arch}")
    current = _final_layer(model)[2]
    if num_classes is not None and num_classes != current:
        replace_head(model, num_classes)
    return model.eval()


def load_hub_weights(arch: str, name: str) -> dict[str, Tensor]:
    """The state dict of torchvision weights enum member ``name`` of ``arch`` from the hub
    cache (``weights_only=True``)."""
    from selector.io.transforms import weights_enum

    try:
        member = weights_enum(arch, name)
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from exc
    file = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(member.url).path).name
    try:
        state = torch.hub.load_state_dict_from_url(member.url, progress=False, check_hash=False,
                                                   weights_only=True, map_location="cpu")
    except (OSError, ValueError) as exc:  # offline (URLError is an OSError) or unreadable
        raise ModelLoadError(
            f"cannot load {arch} weights {name!r}: {file} is missing and could not be "
            f"downloaded ({type(exc).__name__}); pre-seed the hub cache (TORCH_HOME) with "
            f"{member.url}") from exc
    except Exception as exc:
        raise ModelLoadError(f"cannot read {file} as a state dict with weights_only=True "
                             f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                             ) from exc
    return dict(state)


def _is_weights_name(weights: str | Path | None) -> bool:
    from selector.io.transforms import is_weights_name

    return isinstance(weights, str) and is_weights_name(weights)


def load_torchscript(path: str | Path) -> nn.Module:
    file = local_path(path)
    if not file.is_file():
        raise MissingFileError(file, "TorchScript file")
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; we still read it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(file), map_location="cpu").eval()
    except RuntimeError as exc:
        raise ModelLoadError(
            f"{file} is not a TorchScript archive; for a state dict, pass a torchvision arch "
            "with weights=... (or a factory)") from exc


def load_factory(target: str, kwargs: Mapping[str, Any] | None = None,
                 allowed_prefixes: Sequence[str] | None = None) -> nn.Module:
    """Import ``pkg.module`` and call ``function(**kwargs)``."""
    target = ALIASES.get(target, target)
    module_name, _, attr = target.partition(":")
    if allowed_prefixes is not None and not factory_allowed(module_name, allowed_prefixes):
        raise FactoryNotAllowedError(
            f"factory {target!r} is outside the allowed module prefixes {list(allowed_prefixes)}")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"cannot import factory {target!r}: {exc}") from exc
    model = obj(**dict(kwargs or {}))
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"factory {target!r} returned {type(model).__name__}, not a module")
    return model.eval()


def factory_allowed(module: str, prefixes: Sequence[str]) -> bool:
    """True when ``module`` is one of the dotted ``prefixes`` or inside one; a trailing dot
    (``"mypkg."``) means the same as none. The API checks jobs with the same rule
    (``app.validation.factory_allowed``; app cannot import selector); ``tests/test_contracts.py``
    pins both to one table."""
    for prefix in prefixes:
        prefix = prefix.rstrip(".")
        if prefix and (module == prefix or module.startswith(prefix + ".")):
            return True
    return False


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``); unwraps
    ``{"state_dict": ...}`` / ``{"model": ...}`` and DataParallel's ``module.`` prefix."""
    file = local_path(path)
    if not file.is_file():
        raise MissingFileError(file, "weights file")
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(file))
    else:
        try:
            state = torch.load(str(file), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"cannot read {file} as a state dict with weights_only=True "
                f"({str(exc).splitlines()[0]}); save model.state_dict(), not the model") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{file} holds a {type(state).__name__}, not a state dict "
                                      "of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap the final classifier layer (and same-width auxiliary classifiers in the head group)
    for fresh ones with ``num_classes`` outputs, initialised with a fixed seed. In place."""
    from selector.layers.groups import discover_groups

    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    _, _, width = _final_layer(model)
    head = discover_groups(model)[-1]
    owners = {p.rsplit(".", 1)[0] for p in head.parameters}
    modules = dict(model.named_modules())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_HEAD_INIT_SEED)
        for name in sorted(owners, key=list(modules).index):
            layer = modules[name]
            if _out_width(layer) != width:
                continue
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child,
                    _resized(layer, num_classes))
    return model


#: URI schemes that name a local file; the API reads references by the same table
#: (``app.uris.LOCAL_SCHEMES``), pinned by ``tests/test_contracts.py``.
LOCAL_SCHEMES = ("file", "local")


def local_path(uri: str | Path) -> Path:
    """The local file a path or a ``file://`` (``local://``) URI names.

    The same reading as the API's ``app.uris.local_path`` (which returns None where this raises:
    the engine opens local files only; remote URIs raise :class:`ModelLoadError`).
    """
    text = str(uri)
    parsed = urlsplit(text)
    if parsed.scheme in LOCAL_SCHEMES:
        return Path(unquote(parsed.path))
    if parsed.scheme:  # with or without "//": "http:/etc/passwd" is a URI, not a relative path
        raise ModelLoadError(f"only local files are supported, got {text!r}")
    return Path(text).expanduser()


def _from_mapping(ref: Mapping[str, Any], allowed: Sequence[str] | None) -> nn.Module:
    source = ref.get("source")
    if source == "torchvision":
        return load_torchvision(ref["arch"], weights=ref.get("weights"),
                                num_classes=ref.get("num_classes"), kwargs=ref.get("kwargs"))
    if source == "torchscript":
        return load_torchscript(ref["path"])
    if source == "factory":
        return load_factory(ref["target"], ref.get("kwargs"), allowed)
    if source == "builtin":
        builtin = importlib.import_module("selector.builtin")
        return builtin.load_source_model(ref["name"], data_dir=ref.get("data_dir")).eval()
    raise ModelLoadError(f"unknown model source {source!r}: expected torchvision, torchscript, "
                         "factory or builtin")


def classifier_width(model: nn.Module) -> int | None:
    """The class count a model predicts: the output width of the last module holding
    parameters (the rule :func:`replace_head` and checkpoint reading use); None when that
    module is neither linear nor convolutional."""
    return _final_layer(model)[2]


def _final_layer(model: nn.Module) -> tuple[str, nn.Module, int | None]:
    """The last module holding parameters directly (the classifier) and its output width."""
    holders = [(n, m) for n, m in model.named_modules()
               if next(m.parameters(recurse=False), None) is not None]
    if not holders:
        raise ModelLoadError("the model has no parameters")
    name, module = holders[-1]
    return name, module, _out_width(module)


def _out_width(module: nn.Module) -> int | None:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    return None


def _resized(layer: nn.Module, num_classes: int) -> nn.Module:
    weight = next(layer.parameters())
    if isinstance(layer, nn.Linear):
        return nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None,
                         device=weight.device, dtype=weight.dtype)
    assert isinstance(layer, nn.Conv2d)
    return nn.Conv2d(layer.in_channels, num_classes, layer.kernel_size,  # type: ignore[arg-type]
                     stride=layer.stride, padding=layer.padding,  # type: ignore[arg-type]
                     bias=layer.bias is not None, device=weight.device, dtype=weight.dtype)


def _checkpoint_classes(skeleton: nn.Module, state: Mapping[str, Tensor]) -> int | None:
    name, _, _ = _final_layer(skeleton)
    weight = state.get(f"{name}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() >= 1 else None


def _load_strict(model: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)} expected"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)"
                                                       if len(keys) > 5 else "")
                 for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches", shapes)) if keys]
        raise CheckpointMismatchError(f"{what}: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


@contextlib.contextmanager
def _on_meta() -> Iterator[None]:
    """Build on the meta device. RegNet computes its block widths with tensor ops and
    ``.tolist()`` inside the builder, which the meta device cannot do; run just that on CPU."""
    from torchvision.models import regnet

    original = regnet.BlockParams.__dict__["from_init_params"]

    def on_cpu(cls: type, *args: Any, **kwargs: Any) -> Any:
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(on_cpu)  # type: ignore[assignment,arg-type]
    try:
        with torch.device("meta"):
            yield
    finally:
        regnet.BlockParams.from_init_params = original

