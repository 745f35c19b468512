"""CIFAR-style ResNets (stem + three stages of BasicBlocks + linear head).

The paper fine-tunes a WideResNet-28-10 on CIFAR-10-C; its tuned parts are ``conv1+block1``,
``block2``, ``block3`` and ``fc``. This module keeps torchvision's ResNet attribute names
(``conv1``, ``bn1``, ``layer1`` .. ``layer3``, ``fc``) so that layer-group discovery treats it
exactly like a torchvision ResNet: block 1 = stem + ``layer1``, then ``layer2``, ``layer3``, head.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (He et al. 2016)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: ``depth=14`` gives two blocks per stage.

    ``in_channels=1`` suits MNIST; ``widths`` sets the three stages' channels.
    """

    def __init__(
        self,
        depth: int = 14,
        num_classes: int = 10,
        in_channels: int = 1,
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 26, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        self.depth = depth
        self.widths = tuple(widths)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for stage_index, width in enumerate(widths):
            stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, width, stride if block_index == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth: int = 14, num_classes: int = 10, in_channels: int = 1,
                 widths: tuple[int, int, int] = (16, 32, 64)) -> CifarResNet:
    """Factory usable as ``"selector.cifar_resnet:cifar_resnet"``."""
    return CifarResNet(depth=depth, num_classes=num_classes, in_channels=in_channels,
                       widths=widths)
