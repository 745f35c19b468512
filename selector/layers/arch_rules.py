"""Layer maps as data: which parameters form the stem, each stage and block, and the head.

Each family is one :class:`ArchRule`: regexes over parameter names in the spirit of timm's
``group_matcher``, detected by the module names the family requires (never by a model-name
string, so a user's own ResNet-shaped module, a TorchScript file or :mod:`selector.cifar_resnet`
are recognised too). Families that are one ``nn.Sequential`` trunk (VGG, AlexNet, MobileNet V2/V3,
EfficientNet V1/V2, MNASNet, SqueezeNet, ConvNeXt, Swin V1/V2) share one rule that cuts the trunk
where the spatial resolution drops (a strided convolution or pooling, a patch merging). A model
that matches no rule falls back to its top-level children, or to contiguous depth buckets when it
has a single child.

The output is one :class:`Slot` per parameter; :mod:`selector.layers.groups` names the groups.
Positional rules apply to every family:

- the head is the last module (in registration order) that holds parameters directly, plus the
  rule's ``head`` regex (auxiliary classifiers: GoogLeNet ``aux1``/``aux2``, Inception
  ``AuxLogits``);
- a parameter no regex claims joins the stem when it comes before the first stage, the block
  before it when it sits between stages, and the "pre-logits" slot after the last stage
  (VGG's fc6/fc7, MobileNetV3's and MaxViT's pre-logits layers). Pre-logits that hold only
  normalisation parameters (ConvNeXt's and Swin's final norm) join the last stage instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from selector.layers.module_types import is_normalisation, parameter_owners, type_name

__all__ = ["RULES", "ArchRule", "Layout", "Slot", "layout"]

STEM, STAGE, TAIL, PRELOGITS, HEAD = "stem", "stage", "tail", "prelogits", "head"


@dataclass(frozen=True)
class Slot:
    """Where one parameter sits: ``kind`` in stem/stage/tail/prelogits/head; for a stage
    parameter, the stage's sort key and the block's key inside that stage."""

    kind: str
    stage: int = 0
    block: str = ""


@dataclass(frozen=True)
class ArchRule:
    """One family's layer map. Regexes are matched at the start of parameter names.

    ``blocks``: regexes whose group 1 is the stage number and group 2 (optional) the block key
    inside the stage; without a group 2 the matched text is a block of its own.
    ``flat_blocks``: one capture, the block index, for models without stages (ViT); the blocks
    are cut into ``buckets`` contiguous stages. ``trunk``: name of an ``nn.Sequential`` that is
    split where the resolution drops. ``stem_alone``: the stem is a stage group by itself
    (ViT's patch and position embedding) instead of joining the first stage.
    """

    family: str
    requires: tuple[str, ...]
    stem: str | None = None
    blocks: tuple[str, ...] = ()
    tail: str | None = None
    head: str | None = None
    flat_blocks: str | None = None
    buckets: int = 4
    trunk: str | None = None
    stem_alone: bool = False


RULES: tuple[ArchRule, ...] = (
    # ResNet, torchvision WideResNet, ResNeXt, selector.cifar_resnet: block1 = conv1+bn1+layer1.
    ArchRule("resnet", ("conv1", "layer1"), stem=r"(?:conv1|bn1)\.",
             blocks=(r"layer(\d+)\.(\d+)\.",)),
    # RobustBench's WideResNet-28-10 (the paper's CIFAR-10-C model): conv1, block1..block3
    # (NetworkBlock -> .layer.N BasicBlocks), then the final bn1 before fc. The paper's tuned
    # parts are conv1+block1, block2, block3 and fc, so conv1 is the stem and the final bn1 a
    # tail (it joins block3). ``sub_block1`` (a few RobustBench variants) joins block1 by position.
    ArchRule("wideresnet", ("conv1", "block1.layer"), stem=r"conv1\.",
             blocks=(r"block(\d+)\.layer\.(\d+)\.",), tail=r"bn1\."),
    ArchRule("regnet", ("stem", "trunk_output"), stem=r"stem\.",
             blocks=(r"trunk_output\.block(\d+)\.block\d+-(\d+)\.",)),
    # A transition layer (pool + 1x1 conv) closes the dense block with the same number.
    ArchRule("densenet", ("features.denseblock1",), stem=r"features\.(?:conv|norm|pool)0\.",
             blocks=(r"features\.denseblock(\d+)\.denselayer(\d+)\.",
                     r"features\.transition(\d+)\."),
             tail=r"features\.norm5\."),
    ArchRule("shufflenet", ("conv1", "stage2"), stem=r"conv1\.",
             blocks=(r"stage(\d+)\.(\d+)\.",), tail=r"conv5\."),
    ArchRule("googlenet", ("conv1", "inception3a"), stem=r"conv[123]\.",
             blocks=(r"inception(\d)([a-z])\.",), head=r"aux\d+\."),
    ArchRule("inception3", ("Mixed_5b",), stem=r"Conv2d_\w+?\.",
             blocks=(r"Mixed_(\d)([a-z])\.",), head=r"AuxLogits\."),
    ArchRule("vit", ("conv_proj", "encoder.layers"),
             stem=r"(?:class_token|conv_proj\.\w+|encoder\.pos_embedding)$",
             flat_blocks=r"encoder\.layers\.encoder_layer_(\d+)\.", tail=r"encoder\.ln\.",
             stem_alone=True),
    ArchRule("maxvit", ("stem", "blocks"), stem=r"stem\.",
             blocks=(r"blocks\.(\d+)\.layers\.(\d+)\.",)),
    ArchRule("sequential-trunk", ("features",), trunk="features"),
    ArchRule("sequential-trunk", ("layers",), trunk="layers"),
)


@dataclass(frozen=True)
class Layout:
    """The result of applying the rules to a model: a slot for every parameter, in order."""

    family: str
    names: tuple[str, ...]
    slots: dict[str, Slot]
    stem_alone: bool = False


def layout(model: nn.Module, rules: Sequence[ArchRule] = RULES) -> Layout:
    """Slot every parameter of ``model``: the first rule whose required modules exist and that
    finds at least one stage wins; otherwise the fallback."""
    names = [name for name, _ in model.named_parameters()]
    owners = parameter_owners(model)
    modules = dict(model.named_modules())
    head = _head_parameters(model, owners)
    for rule in rules:
        if not all(required in modules for required in rule.requires):
            continue
        found = _apply_rule(rule, names, modules)
        if found is not None:
            family, slots, head_regex, stem_alone = rule.family, found, rule.head, rule.stem_alone
            break
    else:
        family, slots, head_regex, stem_alone = "fallback", _fallback(model, owners, head), None, False
    final: dict[str, Slot] = {}
    for name in names:
        if name in head or (head_regex and re.match(head_regex, name)):
            final[name] = Slot(HEAD)
        elif name in slots:
            final[name] = slots[name]
    _fill_by_position(names, final, owners)
    return Layout(family, tuple(names), final, stem_alone)


def _head_parameters(model: nn.Module, owners: dict[str, tuple[str, nn.Module]]) -> set[str]:
    """Parameters of the last module, in registration order, that holds parameters directly."""
    holders = [name for name, module in model.named_modules()
               if next(module.parameters(recurse=False), None) is not None]
    if not holders:
        return set()
    return {param for param, (holder, _) in owners.items() if holder == holders[-1]}


def _apply_rule(rule: ArchRule, names: list[str], modules: dict[str, nn.Module]
                ) -> dict[str, Slot] | None:
    by_prefix = _trunk_slots(modules[rule.trunk], rule.trunk) if rule.trunk else {}
    flat: dict[str, int] = {}
    if rule.flat_blocks:
        indices = sorted({int(m.group(1)) for n in names if (m := re.match(rule.flat_blocks, n))})
        k = min(rule.buckets, len(indices))
        flat = {str(i): 1 + pos * k // len(indices) for pos, i in enumerate(indices)}
    slots: dict[str, Slot] = {}
    for name in names:
        slot = _match(rule, name, by_prefix, flat)
        if slot is not None:
            slots[name] = slot
    return slots if any(s.kind == STAGE for s in slots.values()) else None


def _match(rule: ArchRule, name: str, by_prefix: dict[str, Slot], flat: dict[str, int]
           ) -> Slot | None:
    if rule.stem and re.match(rule.stem, name):
        return Slot(STEM)
    for pattern in rule.blocks:
        m = re.match(pattern, name)
        if m:
            block = m.group(2) if m.re.groups >= 2 and m.group(2) else m.group(0)
            return Slot(STAGE, int(m.group(1)), block)
    if rule.flat_blocks and (m := re.match(rule.flat_blocks, name)):
        return Slot(STAGE, flat[str(int(m.group(1)))], m.group(1))
    if rule.tail and re.match(rule.tail, name):
        return Slot(TAIL)
    return _longest_prefix(name, by_prefix)


def _longest_prefix(name: str, by_prefix: dict[str, Slot]) -> Slot | None:
    parts = name.split(".")
    for end in range(len(parts) - 1, 0, -1):
        slot = by_prefix.get(".".join(parts[:end]))
        if slot is not None:
            return slot
    return None


# --- the Sequential-trunk rule ------------------------------------------------------------

_POOLS = {f"{kind}Pool{d}d" for kind in ("Max", "Avg") for d in (1, 2, 3)}
_CONVS = {f"Conv{d}d" for d in (1, 2, 3)}
_MERGES = {"PatchMerging", "PatchMergingV2"}  # Swin V1/V2 halve the resolution by slicing


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def _strided(value: object) -> bool:
    values = value if isinstance(value, (tuple, list)) else (value,)
    return any(isinstance(v, int) and v > 1 for v in values)


def _downsamples(module: nn.Module) -> bool:
    """True when the module (or a submodule) lowers the spatial resolution."""
    for sub in module.modules():
        name = type_name(sub)
        if name in _MERGES or ((name in _CONVS or name in _POOLS)
                               and _strided(getattr(sub, "stride", 1))):
            return True
    return False


def _is_stage_container(module: nn.Module) -> bool:
    """A Sequential of same-typed blocks (an EfficientNet/ConvNeXt/Swin stage)."""
    if type_name(module) != "Sequential":
        return False
    kinds = {type_name(child) for child in module.children()}
    return len(kinds) == 1


def _trunk_slots(trunk: nn.Module, prefix: str) -> dict[str, Slot]:
    """Module prefix -> slot for the children of a Sequential trunk.

    A child that downsamples starts a new stage; stages without parameters join a neighbour;
    a first stage made of a single strided layer (a stem: SqueezeNet, AlexNet, MobileNetV3-small)
    joins the next one, as the paper's block1 = stem + first stage. Inside a stage, each
    parameterised child is a block (the children of a stage container are), and a child holding
    only normalisation parameters (VGG-BN's BatchNorm) joins the block before it.
    """
    stages: list[list[tuple[str, nn.Module]]] = []
    for child_name, child in trunk.named_children():
        if not stages or _downsamples(child):
            stages.append([])
        stages[-1].append((f"{prefix}.{child_name}", child))
    merged: list[list[tuple[str, nn.Module]]] = []
    pending: list[tuple[str, nn.Module]] = []
    for stage in stages:
        if any(_has_params(m) for _, m in stage):
            merged.append(pending + stage)
            pending = []
        elif merged:
            merged[-1].extend(stage)
        else:
            pending.extend(stage)
    if len(merged) > 1:
        with_params = [m for _, m in merged[0] if _has_params(m)]
        if len(with_params) == 1 and _downsamples(with_params[0]):
            merged[1] = merged[0] + merged[1]
            del merged[0]
    slots: dict[str, Slot] = {}
    for number, stage in enumerate(merged, start=1):
        previous: str | None = None
        for name, unit in stage:
            if not _has_params(unit):
                continue
            if _is_stage_container(unit):
                for child_name, child in unit.named_children():
                    if _has_params(child):
                        previous = f"{name}.{child_name}"
                        slots[previous] = Slot(STAGE, number, previous)
            elif previous is not None and all(is_normalisation(m) for m in unit.modules()
                                              if next(m.parameters(False), None) is not None):
                slots[name] = Slot(STAGE, number, previous)
            else:
                previous = name
                slots[name] = Slot(STAGE, number, name)
    return slots


# --- fallback and positional filling ------------------------------------------------------

_FALLBACK_BUCKETS = 4


def _fallback(model: nn.Module, owners: dict[str, tuple[str, nn.Module]], head: set[str]
              ) -> dict[str, Slot]:
    """Unknown models: one stage per top-level child holding non-head parameters; a model with
    a single such child is cut into contiguous depth buckets of its parameter-holding modules."""
    units = [(name, child) for name, child in model.named_children()
             if any(p not in head for p in owners if p.startswith(name + "."))]
    by_prefix: dict[str, Slot] = {}
    if len(units) >= 2:
        for number, (name, unit) in enumerate(units, start=1):
            blocks = [c for c, m in unit.named_children() if _has_params(m)]
            if len(blocks) >= 2:
                for child in blocks:
                    by_prefix[f"{name}.{child}"] = Slot(STAGE, number, f"{name}.{child}")
            by_prefix[name] = Slot(STAGE, number, name)
    elif len(units) == 1:
        holders: list[str] = []
        for param, (holder, _) in owners.items():
            if param not in head and holder not in holders and holder.startswith(units[0][0]):
                holders.append(holder)
        k = min(_FALLBACK_BUCKETS, len(holders))
        previous = ""
        for pos, holder in enumerate(holders):
            module = dict(model.named_modules())[holder]
            block = previous if is_normalisation(module) and previous else holder
            by_prefix[holder] = Slot(STAGE, 1 + pos * k // len(holders), block)
            previous = block
    slots: dict[str, Slot] = {}
    for param, (holder, _) in owners.items():
        slot = by_prefix.get(holder) or _longest_prefix(param, by_prefix)
        if slot is not None:
            slots[param] = slot
    return slots


def _fill_by_position(names: list[str], slots: dict[str, Slot],
                      owners: dict[str, tuple[str, nn.Module]]) -> None:
    """Give unclaimed parameters a slot by position (see the module docstring)."""
    staged = [i for i, n in enumerate(names) if n in slots and slots[n].kind in (STAGE, TAIL)]
    previous: Slot | None = None
    for i, name in enumerate(names):
        if name not in slots:
            if not staged or i < staged[0]:
                slots[name] = Slot(STEM)
            elif i > staged[-1]:
                slots[name] = Slot(PRELOGITS)
            else:
                slots[name] = previous or Slot(STEM)
        if slots[name].kind != HEAD:
            previous = slots[name]
    prelogits = [n for n in names if slots[n].kind == PRELOGITS]
    if prelogits and all(is_normalisation(owners[n][1]) for n in prelogits):
        for name in prelogits:
            slots[name] = Slot(TAIL)
