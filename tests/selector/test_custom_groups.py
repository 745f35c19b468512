"""Custom groups: PEFT-style regexes and suffix lists, with a dry run and readable errors."""

from __future__ import annotations

import pytest
from torch import nn

from selector import GroupSpecError, discover_groups, match_groups
from selector.cifar_resnet import CifarResNet
from selector.io.models_io import build_torchvision


@pytest.fixture
def model() -> CifarResNet:
    return CifarResNet(depth=8)


def test_regex_groups_full_match_module_names(model) -> None:
    match = match_groups(model, {"early": r"conv1|bn1|layer1", "late": r"layer[23]|fc"})
    assert [g.name for g in match.groups] == ["early", "late"]
    assert match.groups[0].modules == ("conv1", "bn1", "layer1")
    assert match.groups[1].modules == ("layer2", "layer3", "fc")
    assert match.unassigned == ()
    # full match: "conv1" does not match "layer1.0.conv1"
    assert all(not p.startswith("layer") for p in match.groups[0].parameters[:3])


def test_suffix_lists_match_like_peft_target_modules(model) -> None:
    match = match_groups(model, {"convs": ["conv1", "conv2"], "rest": ["fc"]})
    convs = match.groups[0]
    assert "conv1" in convs.modules and "layer1.0.conv1" in convs.modules
    assert "layer3.0.conv2" in convs.modules
    assert all(".bn" not in p and not p.startswith("bn") for p in convs.parameters)
    assert match.groups[1].parameters == ("fc.weight", "fc.bias")
    assert "bn1.weight" in match.unassigned


def test_overlapping_groups_first_one_wins(model) -> None:
    match = match_groups(model, {"everything_in_layer1": r"layer1", "convs": ["conv1"]})
    first, second = match.groups
    assert "layer1.0.conv1.weight" in first.parameters
    assert "layer1.0.conv1.weight" not in second.parameters
    assert second.parameters == ("conv1.weight",) + tuple(
        p for p in second.parameters if p.startswith("layer2") or p.startswith("layer3"))


def test_pattern_matching_nothing_names_it_and_suggests(model) -> None:
    with pytest.raises(GroupSpecError) as info:
        match_groups(model, {"stage": r"layer9"})
    message = str(info.value)
    assert "'layer9'" in message and "stage" in message and "layer1" in message
    assert isinstance(info.value, ValueError)
    with pytest.raises(GroupSpecError, match="'lyer2'.*did you mean.*layer2"):
        match_groups(model, {"a": ["conv1"], "b": ["lyer2"]})


def test_unassigned_parameters_are_reported_and_warned(model) -> None:
    spec = {"first": r"conv1|bn1|layer1"}
    match = match_groups(model, spec)
    assert "fc.weight" in match.unassigned and "layer2.0.conv1.weight" in match.unassigned
    with pytest.warns(UserWarning, match=r"stay frozen: .*fc\.weight|layer2"):
        groups = discover_groups(model, custom=spec)
    assert [g.name for g in groups] == ["first"]


def test_group_emptied_by_earlier_groups_or_without_parameters_is_an_error(model) -> None:
    with pytest.raises(GroupSpecError, match="already in earlier groups"):
        match_groups(model, {"all_layers": r"layer\d", "again": r"layer1"})
    with pytest.raises(GroupSpecError, match="hold no parameters"):
        match_groups(model, {"pool": ["avgpool"]})


@pytest.mark.parametrize("spec", [{}, {"all": "fc"}, {"x": 3}, {"x": []}, {"x": "layer("}])
def test_invalid_specs(model, spec) -> None:
    with pytest.raises(GroupSpecError):
        match_groups(model, spec)


def test_parameter_names_can_be_matched_directly() -> None:
    vit = build_torchvision("vit_b_32", meta=True)
    match = match_groups(vit, {"embedding": r"class_token|conv_proj|encoder\.pos_embedding",
                               "head": ["heads"]})
    assert set(match.groups[0].parameters) == {"class_token", "conv_proj.weight",
                                               "conv_proj.bias", "encoder.pos_embedding"}
    assert match.groups[0].modules == ("conv_proj",)
    assert len(match.unassigned) == sum(1 for _ in vit.parameters()) - 6


def test_custom_groups_on_an_unknown_module() -> None:
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 2))
    match = match_groups(model, {"a": "0", "b": "1"})
    assert [g.parameters for g in match.groups] == [("0.weight", "0.bias"), ("1.weight", "1.bias")]
