"""ResNet feature extractors (torchvision; from scratch, or ImageNet-pretrained with
``pretrained=True``, see :mod:`course_lib.models.pretrained`) returning the stride-4, 8, 16 and
32 feature maps that FCN-style heads tap, optionally *dilated* (DeepLab): the strides of the
last stages are replaced by atrous convolution so that the output stride is 16 or 8 while
every later 3×3 kernel keeps the field of view it had."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchvision.models import resnet18, resnet34
from torchvision.models.resnet import BasicBlock, ResNet

from .pretrained import load_imagenet_weights, weights_url

_BUILDERS = {  # name → builder(**ResNet keyword arguments, e.g. norm_layer) of a randomly initialised ResNet
    "resnet10": lambda **kw: ResNet(BasicBlock, [1, 1, 1, 1], **kw),  # one block per stage: the cpu profile's backbone
    "resnet18": lambda **kw: resnet18(weights=None, **kw),
    "resnet34": lambda **kw: resnet34(weights=None, **kw),
}
OUTPUT_STRIDES = (8, 16, 32)


def _dilate_stage(stage: nn.Sequential, previous_dilation: int, dilation: int) -> None:
    """Remove the stride-2 of a ResNet stage of BasicBlocks and dilate its 3×3 convolutions by
    ``dilation`` instead. As in DeepLab (and torchvision's ``replace_stride_with_dilation``,
    which only Bottleneck ResNets support), the stage's first conv keeps the previous dilation."""
    for i, block in enumerate(stage):
        for j, conv in enumerate((block.conv1, block.conv2)):
            d = previous_dilation if (i == 0 and j == 0) else dilation
            conv.stride, conv.dilation, conv.padding = (1, 1), (d, d), (d, d)
        if block.downsample is not None:
            block.downsample[0].stride = (1, 1)


class ResNetFeatures(nn.Module):
    """image [B, 3, H, W] → dict of the four stages' features (64/128/256/512 channels).

    The dict is keyed by each stage's stride in the *undilated* network (4, 8, 16, 32);
    ``feature_strides`` gives the actual strides: with ``output_stride=8`` the stages keyed
    16 and 32 are at stride 8 too. ``pretrained=True`` starts from torchvision's ImageNet
    weights (resnet18 / resnet34; downloaded once, needs internet; the classifier is dropped).
    """

    channels = {4: 64, 8: 128, 16: 256, 32: 512}

    def __init__(self, name: str = "resnet18", output_stride: int = 32, pretrained: bool = False):
        super().__init__()
        if name not in _BUILDERS:
            raise ValueError(f"Unknown backbone {name!r}; choose from {sorted(_BUILDERS)}.")
        if output_stride not in OUTPUT_STRIDES:
            raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}.")
        if pretrained:
            weights_url(name)  # a backbone without ImageNet weights fails here, before any download
        net = _BUILDERS[name]()
        if pretrained:  # the weights fit the undilated net too: dilation changes no shapes
            load_imagenet_weights(net, name)
        self.name, self.output_stride = name, output_stride
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if output_stride == 8:
            _dilate_stage(self.layer3, 1, 2)
            _dilate_stage(self.layer4, 2, 4)
        elif output_stride == 16:
            _dilate_stage(self.layer4, 1, 2)
        self.feature_strides = {k: min(k, output_stride) for k in self.channels}

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        f4 = self.layer1(self.stem(x))
        f8 = self.layer2(f4)
        f16 = self.layer3(f8)
        f32 = self.layer4(f16)
        return {4: f4, 8: f8, 16: f16, 32: f32}
