"""Small questions about modules, answered by module type rather than by name.

The reference code recognises normalisation parameters by the letters ``"bn"`` in their names,
which misses ResNet-50's ``downsample.1`` and every LayerNorm of a transformer. Everything in
the selector that must know "is this a normalisation layer?" asks :func:`is_normalisation`.
"""

from __future__ import annotations

import re

from torch import nn

__all__ = [
    "is_normalisation",
    "normalisation_parameter_names",
    "parameter_owners",
    "type_name",
]

_NORM_TYPES: tuple[type, ...] = tuple(
    t
    for t in (
        nn.modules.batchnorm._NormBase,  # BatchNorm*, SyncBatchNorm, InstanceNorm*, lazy ones
        nn.LayerNorm,  # includes torchvision's LayerNorm2d (ConvNeXt)
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    )
    if t is not None
)
# TorchScript modules keep only the class name (``original_name``); match that too.
_NORM_NAME = re.compile(r"(?:Batch|SyncBatch|Instance|Layer|Group|RMS|LocalResponse)Norm(?:\d[dD])?$")


def type_name(module: nn.Module) -> str:
    """The module's class name; for a TorchScript module, the scripted class's name."""
    return str(getattr(module, "original_name", type(module).__name__))


def is_normalisation(module: nn.Module) -> bool:
    """True for BatchNorm, InstanceNorm, LayerNorm, GroupNorm, RMSNorm, LocalResponseNorm
    modules (and subclasses, and their TorchScript versions)."""
    return isinstance(module, _NORM_TYPES) or bool(_NORM_NAME.search(type_name(module)))


def parameter_owners(model: nn.Module) -> dict[str, tuple[str, nn.Module]]:
    """Canonical parameter name (as ``model.named_parameters()`` yields it) -> the name and the
    module that holds the parameter directly. Shared parameters map to their first holder."""
    holder: dict[int, tuple[str, nn.Module]] = {}
    for module_name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            holder.setdefault(id(param), (module_name, module))
    return {name: holder[id(param)] for name, param in model.named_parameters()}


def normalisation_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters held directly by normalisation modules (decided by type)."""
    return {
        name
        for name, (_, module) in parameter_owners(model).items()
        if is_normalisation(module)
    }
