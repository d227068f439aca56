"""ResNet feature extractors (torchvision, no pretrained weights) returning the stride-4, 8,
16 and 32 feature maps that FCN-style heads tap."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet18, resnet34
from torchvision.models.resnet import BasicBlock, ResNet

_BUILDERS = {
    "resnet10": lambda: ResNet(BasicBlock, [1, 1, 1, 1]),  # smoke-sized
    "resnet18": lambda: resnet18(weights=None),
    "resnet34": lambda: resnet34(weights=None),
}


class ResNetFeatures(nn.Module):
    """image [B, 3, H, W] → dict of features at strides 4, 8, 16, 32 (64/128/256/512 ch)."""

    channels = {4: 64, 8: 128, 16: 256, 32: 512}

    def __init__(self, name: str = "resnet18"):
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(f"Unknown backbone {name!r}; choose from {sorted(_BUILDERS)}.")
        net = _BUILDERS[name]()
        self.name = name
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return {4: f4, 8: f8, 16: f16, 32: f32}
