"""Layer groups: ordered, named, a partition of a model's parameters.

Stage granularity follows the paper (Lee et al. 2023, tuned parts of the reference code):
``block1`` = stem + first stage (ResNet: ``conv1+bn1+layer1``; RobustBench's WideResNet-28-10:
``conv1+block1``, its final ``bn1`` joining ``block3``), one group per later stage, then
``head`` (the final classifier layer). Exceptions, all documented in :mod:`selector.layers.arch_rules`:

- ViT: ``block1`` is the patch + position embedding alone (the paper's "embedding layer" choice
  for CLIP ViT-B/16), the encoder layers form four contiguous groups ``block2`` .. ``block5``;
- classifier layers before the final one (VGG's fc6/fc7, MobileNetV3's and MaxViT's pre-logits)
  form one extra group ``block{N+1}`` between the last stage and ``head``;
- auxiliary classifiers (GoogLeNet ``aux1``/``aux2``, Inception v3 ``AuxLogits``) are in
  ``head``. torchvision runs them only in train mode, so with ``bn_mode="eval"`` they get no
  gradient and do not change even when ``head`` is tuned.

Block granularity splits each stage into its residual / transformer / MBConv blocks, named
``block{s}.{b}`` where ``s`` is the stage group's number (``block2.3`` lies inside stage group
``block2``); the stem is a group of its own, ``stem``; ``head`` is unchanged.

Custom groups (:func:`match_groups`) use PEFT's vocabulary: a regex (full match) or a list of
module-name suffixes per group name.
"""

from __future__ import annotations

import difflib
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import nn

from selector.errors import ConfigError, GroupSpecError
from selector.layers.arch_rules import HEAD, PRELOGITS, STAGE, STEM, TAIL, Layout, Slot, layout

__all__ = [
    "GroupMatch",
    "LayerGroup",
    "describe_groups",
    "discover_groups",
    "format_groups_table",
    "match_groups",
    "model_family",
]

GRANULARITIES = ("stage", "block")
CustomSpec = Mapping[str, "str | Sequence[str]"]


@dataclass(frozen=True)
class LayerGroup:
    """A named set of parameters tuned together.

    ``modules`` lists the largest modules lying wholly inside the group, in registration
    (forward) order; a parameter held directly by a module that spans groups (ViT's
    ``class_token``) appears only in ``parameters``.
    """

    name: str
    modules: tuple[str, ...]
    parameters: tuple[str, ...]
    num_params: int


@dataclass(frozen=True)
class GroupMatch:
    """The dry run behind custom groups: the groups and the parameters no group claimed."""

    groups: list[LayerGroup]
    unassigned: tuple[str, ...]


def model_family(model: nn.Module) -> str:
    """The architecture rule that describes ``model`` ("resnet", "vit", ..., "fallback")."""
    return layout(model).family


def discover_groups(
    model: nn.Module,
    granularity: str = "stage",
    *,
    custom: CustomSpec | None = None,
) -> list[LayerGroup]:
    """Ordered (input -> output) layer groups forming a partition of ``model.named_parameters()``.

    With ``custom``, the groups are the user's (see :func:`match_groups`); parameters no custom
    group claims are left out (they stay frozen) and a warning names them.
    """
    if custom is not None:
        match = match_groups(model, custom)
        if match.unassigned:
            shown = ", ".join(match.unassigned[:8])
            more = f" (+{len(match.unassigned) - 8} more)" if len(match.unassigned) > 8 else ""
            warnings.warn(
                f"{len(match.unassigned)} parameters are in no custom group and will stay "
                f"frozen: {shown}{more}", UserWarning, stacklevel=2)
        return match.groups
    if granularity not in GRANULARITIES:
        raise ConfigError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    plan = layout(model)
    named = _name_slots(plan, granularity)
    buckets: dict[str, list[str]] = {}
    for param in plan.names:
        buckets.setdefault(named[param][1], []).append(param)
    order = sorted(buckets, key=lambda g: min(named[p][0] for p in buckets[g]))
    return _build(model, [(name, buckets[name]) for name in order])


def match_groups(model: nn.Module, custom: CustomSpec) -> GroupMatch:
    """Resolve custom groups: an ordered mapping ``name -> regex | [suffix, ...]``.

    A regex must match a whole module name (``re.fullmatch``) or a whole parameter name; a
    suffix matches a module or parameter name equal to it or ending in ``"." + suffix`` (PEFT's
    ``target_modules``). A matched module brings all its parameters. A parameter matched by two
    groups goes to the first group in the mapping's order. Raises :class:`GroupSpecError` for a
    pattern matching nothing (with the nearest names), an invalid regex, or a group left empty.
    Groups keep the mapping's order.
    """
    if not isinstance(custom, Mapping) or not custom:
        raise GroupSpecError("custom groups must be a non-empty mapping: name -> regex | suffixes")
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    module_params = _module_parameters(model)
    taken: set[str] = set()
    result: list[tuple[str, list[str]]] = []
    for group_name, spec in custom.items():
        if not isinstance(group_name, str) or not group_name or group_name == "all":
            raise GroupSpecError(f"invalid custom group name {group_name!r} ('all' is reserved)")
        claimed: list[str] = []
        for pattern, hits in _pattern_hits(group_name, spec, modules, params):
            if not hits:
                raise GroupSpecError(
                    f"custom group {group_name!r}: {pattern!r} matches no module or parameter "
                    f"name{_suggest(pattern, modules, params)}")
            for hit in hits:
                claimed.extend(module_params.get(hit, [hit] if hit in params else []))
        members = [p for p in params if p in set(claimed) and p not in taken]
        if not members:
            why = ("all its parameters are already in earlier groups" if claimed
                   else "the matched modules hold no parameters")
            raise GroupSpecError(f"custom group {group_name!r} ({spec!r}) is empty: {why}")
        taken.update(members)
        result.append((group_name, members))
    unassigned = tuple(p for p in params if p not in taken)
    return GroupMatch(_build(model, result), unassigned)


def format_groups_table(model: nn.Module, groups: Sequence[LayerGroup]) -> str:
    """A plain-text table: group, parameters, share of the model, first and last module."""
    total = sum(p.numel() for p in model.parameters()) or 1
    rows = [("group", "params", "% of model", "first module", "last module")]
    for group in groups:
        first = group.modules[0] if group.modules else group.parameters[0]
        last = group.modules[-1] if group.modules else group.parameters[-1]
        rows.append((group.name, f"{group.num_params:,}",
                     f"{100.0 * group.num_params / total:.1f}%", first, last))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    right = {1, 2}
    lines = ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
             for row in rows]
    return "\n".join(lines)


def describe_groups(model: nn.Module, granularity: str = "stage", *, name: str = "model") -> str:
    """What ``surgical groups`` / ``python -m selector groups`` print: one line naming the rule,
    the parameter count and the number of groups, then :func:`format_groups_table`."""
    groups = discover_groups(model, granularity)
    total = sum(p.numel() for p in model.parameters())
    return (f"{name}: {model_family(model)} rule, {total:,} parameters, "
            f"{len(groups)} {granularity} groups\n{format_groups_table(model, groups)}")


# --- helpers ------------------------------------------------------------------------------


def _name_slots(plan: Layout, granularity: str) -> dict[str, tuple[tuple[float, int], str]]:
    """Parameter -> (sort key, group name) for the built-in granularities."""
    slots = plan.slots
    stages = sorted({s.stage for s in slots.values() if s.kind == STAGE})
    offset = 1 if plan.stem_alone else 0
    number = {stage: i + 1 + offset for i, stage in enumerate(stages)}
    has_stem = any(s.kind == STEM for s in slots.values())
    last = max(number.values()) if number else (1 if has_stem else 0)
    block_rank: dict[tuple[int, str], int] = {}
    for param in plan.names:
        slot = slots[param]
        if slot.kind == STAGE and (slot.stage, slot.block) not in block_rank:
            block_rank[(slot.stage, slot.block)] = 1 + sum(1 for s, _ in block_rank
                                                           if s == slot.stage)
    last_block = max((k for k in block_rank if number[k[0]] == last),
                     key=lambda k: block_rank[k], default=None)
    out: dict[str, tuple[tuple[float, int], str]] = {}
    for param in plan.names:
        slot = slots[param]
        if slot.kind == TAIL and last_block is not None:
            slot = Slot(STAGE, last_block[0], last_block[1])
        if slot.kind == HEAD:
            out[param] = ((math.inf, 0), "head")
        elif slot.kind == PRELOGITS:
            out[param] = ((last + 1, 0), f"block{last + 1}")
        elif granularity == "stage":
            n = number[slot.stage] if slot.kind == STAGE else (1 if slot.kind == STEM else last)
            out[param] = ((n, 0), f"block{n}")
        elif slot.kind == STAGE:
            rank = block_rank[(slot.stage, slot.block)]
            out[param] = ((number[slot.stage], rank), f"block{number[slot.stage]}.{rank}")
        elif slot.kind == STEM:
            out[param] = ((0, 0), "stem")
        else:  # a tail with no stage at all
            out[param] = ((last, 0), f"block{last}")
    return out


def _module_parameters(model: nn.Module) -> dict[str, list[str]]:
    """Module name -> canonical names of all its parameters (recursively), in model order."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    return {
        name: [canonical[id(p)] for p in module.parameters() if id(p) in canonical]
        for name, module in model.named_modules()
    }


def _build(model: nn.Module, groups: list[tuple[str, list[str]]]) -> list[LayerGroup]:
    params = dict(model.named_parameters())
    owner_of = {p: name for name, members in groups for p in members}
    covering: dict[str, list[str]] = {name: [] for name, _ in groups}
    listed: set[str] = set()
    for module_name, members in _module_parameters(model).items():  # parents come first
        homes = {owner_of.get(p) for p in members}
        if not module_name or len(homes) != 1 or None in homes:
            continue
        parts = module_name.split(".")
        if any(".".join(parts[:i]) in listed for i in range(1, len(parts))):
            continue  # inside a module already listed
        home = homes.pop()
        assert home is not None
        listed.add(module_name)
        covering[home].append(module_name)
    return [LayerGroup(name=name, modules=tuple(covering[name]), parameters=tuple(members),
                       num_params=sum(params[p].numel() for p in members))
            for name, members in groups]


def _pattern_hits(group: str, spec: object, modules: Mapping[str, nn.Module],
                  params: Mapping[str, object]) -> list[tuple[str, list[str]]]:
    """(pattern, matching module and parameter names) for each pattern of one group."""
    names = [n for n in modules if n] + list(params)
    if isinstance(spec, str):
        try:
            regex = re.compile(spec)
        except re.error as exc:
            raise GroupSpecError(f"custom group {group!r}: invalid regex {spec!r}: {exc}") from exc
        return [(spec, [n for n in names if regex.fullmatch(n)])]
    if isinstance(spec, Sequence) and spec and all(isinstance(s, str) and s for s in spec):
        return [(s, [n for n in names if n == s or n.endswith("." + s)]) for s in spec]
    raise GroupSpecError(
        f"custom group {group!r}: expected a regex string or a non-empty list of module-name "
        f"suffixes, got {spec!r}")


def _suggest(pattern: str, modules: Mapping[str, nn.Module], params: Mapping[str, object]
             ) -> str:
    candidates = [n for n in modules if n] + list(params)
    close = difflib.get_close_matches(pattern, candidates, n=3, cutoff=0.4)
    if not close:  # compare with the last components too: "layer9" vs "model.layer1"
        tails = {n.rsplit(".", 1)[-1]: n for n in candidates}
        close = [tails[t] for t in difflib.get_close_matches(pattern, list(tails), n=3,
                                                             cutoff=0.4)]
    return f"; did you mean: {', '.join(close)}?" if close else ""
