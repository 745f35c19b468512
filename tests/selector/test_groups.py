"""Layer groups: a partition of the parameters for every torchvision classifier and beyond."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from torch import nn

from selector import ConfigError, discover_groups, format_groups_table
from selector.cifar_resnet import CifarResNet
from selector.io.models_io import build_torchvision
from selector.layers.groups import model_family

ARCHS = torchvision.models.list_models(module=torchvision.models)
AUX = {"googlenet": {"aux_logits": True}, "inception_v3": {"aux_logits": True}}


def assert_partition(model: nn.Module, groups) -> None:
    names = [n for n, _ in model.named_parameters()]
    grouped = [p for g in groups for p in g.parameters]
    assert sorted(grouped) == sorted(names), "every parameter in exactly one group"
    assert len(grouped) == len(set(grouped))
    assert all(g.parameters and g.num_params > 0 for g in groups), "no empty group"
    assert len({g.name for g in groups}) == len(groups)
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    for g in groups:
        assert g.num_params == sum(sizes[p] for p in g.parameters)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_torchvision_classifier_is_partitioned(arch: str) -> None:
    model = build_torchvision(arch, meta=True, **AUX.get(arch, {}))
    stage = discover_groups(model)
    assert_partition(model, stage)
    assert stage[0].name == "block1" and stage[-1].name == "head"
    assert all(g.name.startswith("block") for g in stage[:-1])
    assert len(stage) >= 4, "stem+stage, at least two more groups, head"
    block = discover_groups(model, "block")
    assert_partition(model, block)
    assert len(block) > len(stage)
    assert block[-1].name == "head" and block[-1].parameters == stage[-1].parameters


def test_resnet_stage_groups_follow_the_paper() -> None:
    model = build_torchvision("resnet50", meta=True)
    groups = discover_groups(model)
    assert [g.name for g in groups] == ["block1", "block2", "block3", "block4", "head"]
    assert groups[0].modules == ("conv1", "bn1", "layer1")
    assert groups[1].modules == ("layer2",)
    assert groups[-1].modules == ("fc",)
    # downsample.1 is a BatchNorm inside layer2: it belongs to block2 whatever its name
    assert "layer2.0.downsample.1.weight" in groups[1].parameters


def test_aux_heads_join_head() -> None:
    googlenet = build_torchvision("googlenet", meta=True, aux_logits=True)
    head = discover_groups(googlenet)[-1]
    assert {"aux1", "aux2", "fc"} <= set(head.modules)
    inception = build_torchvision("inception_v3", meta=True, aux_logits=True)
    head = discover_groups(inception)[-1]
    assert {"AuxLogits", "fc"} <= set(head.modules)
    assert discover_groups(inception)[0].modules[0] == "Conv2d_1a_3x3"


def test_vit_embedding_is_block1_and_layers_are_bucketed() -> None:
    model = build_torchvision("vit_b_16", meta=True)
    groups = discover_groups(model)
    assert [g.name for g in groups] == ["block1", "block2", "block3", "block4", "block5", "head"]
    assert set(groups[0].parameters) == {"class_token", "conv_proj.weight", "conv_proj.bias",
                                         "encoder.pos_embedding"}
    assert groups[1].modules == tuple(f"encoder.layers.encoder_layer_{i}" for i in range(3))
    assert "encoder.ln.weight" in groups[4].parameters


def test_classifier_mlp_is_its_own_group_and_final_norms_join_the_last_stage() -> None:
    vgg = discover_groups(build_torchvision("vgg16", meta=True))
    assert [g.name for g in vgg][-2:] == ["block6", "head"]
    assert vgg[-2].modules == ("classifier.0", "classifier.3")
    assert vgg[-1].modules == ("classifier.6",)
    assert len(vgg) == 7  # five conv stages cut at the max-pools
    convnext = discover_groups(build_torchvision("convnext_tiny", meta=True))
    assert "classifier.0.weight" in convnext[-2].parameters
    swin = discover_groups(build_torchvision("swin_t", meta=True))
    assert swin[-2].modules[-1] == "norm" and swin[-1].modules == ("head",)


def test_mobilenet_stages_are_cut_where_resolution_drops() -> None:
    model = build_torchvision("mobilenet_v2", meta=True)
    groups = discover_groups(model)
    firsts = [g.modules[0] for g in groups]
    assert firsts == ["features.0", "features.2", "features.4", "features.7", "features.14",
                      "classifier"]


def test_block_granularity_names() -> None:
    model = CifarResNet(depth=14)
    names = [g.name for g in discover_groups(model, "block")]
    assert names == ["stem", "block1.1", "block1.2", "block2.1", "block2.2", "block3.1",
                     "block3.2", "head"]


def test_cifar_resnet_matches_the_reference_parts() -> None:
    model = CifarResNet(depth=14)
    groups = discover_groups(model)
    assert model_family(model) == "resnet"
    assert [(g.name, g.modules) for g in groups] == [
        ("block1", ("conv1", "bn1", "layer1")), ("block2", ("layer2",)),
        ("block3", ("layer3",)), ("head", ("fc",))]
    assert_partition(model, groups)


class _RobustBenchBlock(nn.Module):
    """RobustBench's WideResNet BasicBlock, with its module names (pre-activation)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.relu1 = nn.BatchNorm2d(cin), nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.relu2 = nn.BatchNorm2d(cout), nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.convShortcut = (nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
                             if cin != cout or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = self.convShortcut(out) if self.convShortcut is not None else x
        return shortcut + self.conv2(self.relu2(self.bn2(self.conv1(out))))


class _NetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(_RobustBenchBlock(cin if i == 0 else cout, cout,
                                                       stride if i == 0 else 1)
                                     for i in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class RobustBenchWideResNet(nn.Module):
    """``robustbench.model_zoo.architectures.wide_resnet.WideResNet`` in miniature: the same
    module names (conv1, block1..block3, bn1, relu, fc), depth 10 and widen 1 (no download)."""

    def __init__(self, depth: int = 10, widen: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        n, widths = (depth - 4) // 6, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = _NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = _NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = _NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1, self.relu = nn.BatchNorm2d(widths[3]), nn.ReLU()
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def test_robustbench_wideresnet_gets_the_papers_parts() -> None:
    """The paper's CIFAR-10-C model: conv1+block1, block2, block3 (with the final bn1), fc."""
    model = RobustBenchWideResNet(depth=16)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    groups = discover_groups(model)
    assert model_family(model) == "wideresnet"
    assert [(g.name, g.modules) for g in groups] == [
        ("block1", ("conv1", "block1")), ("block2", ("block2",)),
        ("block3", ("block3", "bn1")), ("head", ("fc",))]
    assert "bn1.weight" in groups[2].parameters and "conv1.weight" in groups[0].parameters
    assert_partition(model, groups)
    blocks = discover_groups(model, "block")
    assert [g.name for g in blocks] == ["stem", "block1.1", "block1.2", "block2.1", "block2.2",
                                        "block3.1", "block3.2", "head"]
    assert blocks[-2].modules == ("block3.layer.1", "bn1")
    assert_partition(model, blocks)


def test_torchscript_model_gets_the_same_groups() -> None:
    model = CifarResNet(depth=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    assert [g.parameters for g in discover_groups(scripted)] == [
        g.parameters for g in discover_groups(model)]


def test_unknown_sequential_falls_back_to_top_level_children() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    groups = discover_groups(model)
    assert model_family(model) == "fallback"
    assert [(g.name, g.modules) for g in groups] == [
        ("block1", ("0",)), ("block2", ("1",)), ("block3", ("4",)), ("head", ("6",))]
    assert_partition(model, groups)
    assert_partition(model, discover_groups(model, "block"))


class Wrapped(nn.Module):
    """A custom module: a root parameter and one child holding everything else."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.body = nn.Sequential(*[nn.Linear(4, 4) for _ in range(8)], nn.Linear(4, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * self.scale)


def test_single_child_model_is_cut_into_depth_buckets() -> None:
    model = Wrapped()
    groups = discover_groups(model)
    assert [g.name for g in groups] == ["block1", "block2", "block3", "block4", "head"]
    assert groups[0].parameters[0] == "scale", "a root parameter before the body joins block1"
    assert groups[-1].modules == ("body.8",)
    assert [len(g.modules) for g in groups[:-1]] == [2, 2, 2, 2]
    assert_partition(model, groups)
    assert_partition(model, discover_groups(model, "block"))


def test_single_layer_model_is_all_head() -> None:
    model = nn.Linear(3, 2)
    groups = discover_groups(model)
    assert [(g.name, g.parameters) for g in groups] == [("head", ("weight", "bias"))]


def test_format_groups_table() -> None:
    model = CifarResNet(depth=8)
    table = format_groups_table(model, discover_groups(model))
    lines = table.splitlines()
    assert lines[0].split() == ["group", "params", "%", "of", "model", "first", "module", "last",
                                "module"]
    assert lines[1].split()[0] == "block1" and lines[1].split()[-2:] == ["conv1", "layer1"]
    assert lines[-1].split()[0] == "head" and "%" in lines[-1]


def test_unknown_granularity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="granularity"):
        discover_groups(CifarResNet(depth=8), "layer")
