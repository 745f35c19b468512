"""Pure steps between layer groups and an optimizer: which groups, which parameter names,
which ``requires_grad`` flags, which optimizer parameter groups.

Freezing is its own explicit step (:func:`set_trainable`), never a side effect of building an
optimizer (the habit STYLE.md asks us to leave behind in timm's param-group builder).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from selector.errors import ConfigError, GroupSpecError
from selector.layers.groups import LayerGroup

__all__ = [
    "OPTIMIZERS",
    "make_optimizer",
    "resolve_tune",
    "set_trainable",
    "tuned_parameter_names",
]

OPTIMIZERS = ("adam", "adamw", "sgd")


def resolve_tune(groups: list[LayerGroup], tune: str | Iterable[LayerGroup | str]
                 ) -> list[LayerGroup]:
    """The groups named by ``tune``, in model order, without duplicates.

    ``tune`` holds group names or :class:`LayerGroup` objects; the name ``"all"`` (alone or as
    a bare string) means every group; an empty iterable means none (evaluation only).
    """
    items = [tune] if isinstance(tune, (str, LayerGroup)) else list(tune)
    by_name = {g.name: g for g in groups}
    chosen: dict[str, LayerGroup] = {}
    for item in items:
        if isinstance(item, LayerGroup):
            chosen.setdefault(item.name, item)
        elif item == "all":
            chosen.update((g.name, g) for g in groups)
        elif isinstance(item, str) and item in by_name:
            chosen.setdefault(item, by_name[item])
        else:
            raise GroupSpecError(
                f"unknown layer group {item!r}; available: {', '.join(by_name)} (or 'all')")
    position = {g.name: i for i, g in enumerate(groups)}
    return sorted(chosen.values(), key=lambda g: position.get(g.name, len(position)))


def tuned_parameter_names(model: nn.Module, groups: Iterable[LayerGroup]) -> list[str]:
    """Parameter names of ``groups``, in ``model.named_parameters()`` order. Raises
    :class:`GroupSpecError` when a group names a parameter the model does not have (a group
    discovered on another model)."""
    wanted = {p for g in groups for p in g.parameters}
    names = [n for n, _ in model.named_parameters() if n in wanted]
    missing = wanted.difference(names)
    if missing:
        raise GroupSpecError(
            f"layer groups name parameters this model lacks: {', '.join(sorted(missing)[:5])}")
    return names


def set_trainable(model: nn.Module, names: Collection[str]) -> None:
    """``requires_grad = True`` for exactly the parameters in ``names``, False for the rest."""
    wanted = set(names)
    for name, param in model.named_parameters():
        param.requires_grad_(name in wanted)


def make_optimizer(
    name: str,
    param_groups: list[dict[str, Any]] | list[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
) -> torch.optim.Optimizer:
    """The paper's Adam (coupled L2 weight decay, as ``torch.optim.Adam``), AdamW (decoupled),
    or SGD with momentum 0.9. A group's own ``"lr"`` key overrides ``lr`` (Auto-RGN)."""
    if name == "adam":
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def per_tensor_groups(model: nn.Module, scales: Mapping[str, float], lr: float
                      ) -> list[dict[str, Any]]:
    """One optimizer group per named tensor, ``lr = scale * lr`` (Auto-RGN). Groups carry a
    readable ``"name"`` key and follow the model's parameter order."""
    return [{"params": [param], "lr": scales[name] * lr, "name": name}
            for name, param in model.named_parameters() if name in scales]
