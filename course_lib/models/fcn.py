"""FCN-32s / 16s / 8s (Long, Shelhamer, Darrell 2015) on a ResNet backbone.

A 3×3 conv + BN + ReLU + dropout *head* on the stride-32 features plays the part of VGG's
convolutionalised fc6/fc7 (as torchvision's ``FCNHead`` does for ResNets); 1×1 *score* layers
turn it (and the stride-16, stride-8 features) into class scores;
coarser scores are upsampled ×2 by a transposed convolution initialised as bilinear
interpolation and summed with the next finer score map; a final fixed bilinear transposed
convolution upsamples by 32 / 16 / 8 back to the input size. As in the paper, the skip score
layers start at zero, so an FCN-16s initialised from a trained FCN-32s starts out computing
exactly what the 32s did ("staged training", :meth:`FCN.init_from`).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .backbones import ResNetFeatures
from .common import conv_bn_relu, pad_to_multiple
from .upsampling import bilinear_upsampler

STRIDES = {"32s": 32, "16s": 16, "8s": 8}


class FCN(nn.Module):
    """image [B, 3, H, W] (any H, W) → logits [B, num_classes, H, W]. ``pretrained``: ImageNet
    backbone (see :class:`ResNetFeatures`)."""

    def __init__(self, num_classes: int, variant: str = "8s", backbone: str = "resnet18", pretrained: bool = False):
        super().__init__()
        if variant not in STRIDES:
            raise ValueError(f"variant must be one of {sorted(STRIDES)}, got {variant!r}.")
        self.variant, self.num_classes = variant, num_classes
        self.backbone = ResNetFeatures(backbone, pretrained=pretrained)
        ch = ResNetFeatures.channels
        self.head = nn.Sequential(conv_bn_relu(ch[32], ch[32] // 4), nn.Dropout2d(0.1))
        self.score32 = nn.Conv2d(ch[32] // 4, num_classes, 1)
        if variant in ("16s", "8s"):
            self.score16 = nn.Conv2d(ch[16], num_classes, 1)
            self.up32to16 = bilinear_upsampler(num_classes, 2)
            nn.init.zeros_(self.score16.weight), nn.init.zeros_(self.score16.bias)
        if variant == "8s":
            self.score8 = nn.Conv2d(ch[8], num_classes, 1)
            self.up16to8 = bilinear_upsampler(num_classes, 2)
            nn.init.zeros_(self.score8.weight), nn.init.zeros_(self.score8.bias)
        self.up_final = bilinear_upsampler(num_classes, STRIDES[variant], learnable=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 32)
        f = self.backbone(x)
        s = self.score32(self.head(f[32]))
        if self.variant in ("16s", "8s"):
            s = self.up32to16(s) + self.score16(f[16])
        if self.variant == "8s":
            s = self.up16to8(s) + self.score8(f[8])
        return self.up_final(s)[..., :h, :w]

    def init_from(self, coarser: "FCN") -> "FCN":
        """Copy every weight that ``coarser`` (e.g. a trained FCN-32s) shares with this one."""
        own = self.state_dict()
        shared = {k: v for k, v in coarser.state_dict().items() if k in own and own[k].shape == v.shape
                  and not k.startswith("up_final")}
        self.load_state_dict(shared, strict=False)
        return self
