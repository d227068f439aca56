"""DeepLab v1 → v3+ (Chen et al. 2015, 2017, 2017, 2018) on a dilated ResNet, built from parts
the notebooks take apart one at a time.

- :class:`LargeFOV` (v1): fc6 as a 3×3 convolution with rate 12, fc7 1×1, fc8 to class scores.
- :class:`ASPPv2`: parallel 3×3 atrous convolutions (rates 6/12/18/24) straight to class
  scores, summed.
- :class:`ASPP` (v3): a 1×1 branch, 3×3 atrous branches and an image-pooling branch, each
  with BN + ReLU, concatenated and projected by a 1×1 convolution.
- :class:`KSAC`: the same module with **one** 3×3 kernel shared by all atrous branches
  (Huang et al. 2019).
- :class:`DeepLab`: backbone at output stride 8/16/32 + one of those heads, optionally the
  v3+ decoder (stride-4 low-level features → 48 channels, concatenated with the ×4-upsampled
  head output, two 3×3 convs), then bilinear upsampling to the input size.

Atrous rates are in *feature-map* pixels. Each head has the paper's rates at the paper's output
stride (v1/v2 at 8, v3 at 16); at another output stride they are rescaled so that they cover the
same part of the image (v3: 6/12/18 at 16 → 12/24/36 at 8). Pass ``rates`` to choose others.
BN follows every convolution except those that produce class scores (the v1/v2 heads had none;
we add it to fc6/fc7 because here everything trains from scratch).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .backbones import ResNetFeatures
from .common import conv_bn_relu

# head → (rates, the output stride they are defined at)
PAPER_RATES: dict[str, tuple[tuple[int, ...], int]] = {
    "largefov": ((12,), 8),
    "aspp_v2": ((6, 12, 18, 24), 8),
    "aspp_v3": ((6, 12, 18), 16),
    "aspp_v3_nopool": ((6, 12, 18), 16),
    "ksac": ((6, 12, 18), 16),
    "none": ((), 16),
}
HEADS = tuple(PAPER_RATES)


def atrous_conv_bn_relu(c_in: int, c_out: int, rate: int) -> nn.Sequential:
    """3×3 convolution with dilation ``rate`` (padding = rate keeps H×W) + BN + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=rate, dilation=rate, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def scaled_rates(head: str, output_stride: int, resolution_scale: float = 1.0) -> tuple[int, ...]:
    """The paper's rates of ``head`` rescaled from the paper's output stride to ``output_stride``
    and by ``resolution_scale`` (input size / the size the rates were chosen for), so that each
    branch covers the same part of the scene."""
    rates, paper_os = PAPER_RATES[head]
    return tuple(max(1, round(r * paper_os / output_stride * resolution_scale)) for r in rates)


class LargeFOV(nn.Module):
    """DeepLab-v1 LargeFOV head: features [B, c_in, h, w] → class scores [B, C, h, w]."""

    def __init__(self, c_in: int, num_classes: int, channels: int = 1024, rate: int = 12, dropout: float = 0.5):
        super().__init__()
        self.fc6 = nn.Sequential(atrous_conv_bn_relu(c_in, channels, rate), nn.Dropout2d(dropout))
        self.fc7 = nn.Sequential(conv_bn_relu(channels, channels, 1), nn.Dropout2d(dropout))
        self.fc8 = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.fc7(self.fc6(x)))


class ASPPv2(nn.Module):
    """DeepLab-v2 ASPP: Σ_r conv3×3_rate=r(x), each branch straight to class scores [B, C, h, w]."""

    def __init__(self, c_in: int, num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(nn.Conv2d(c_in, num_classes, 3, padding=r, dilation=r) for r in rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([b(x) for b in self.branches]).sum(0)


class ParallelAtrous(nn.Module):
    """One 3×3 atrous conv + BN + ReLU per rate, each with its own kernel → list of [B, c_out, h, w]."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(atrous_conv_bn_relu(c_in, c_out, r) for r in rates)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [b(x) for b in self.branches]


class SharedAtrous(nn.Module):
    """KSAC: **one** 3×3 kernel applied at every rate (own BN per rate) → list of [B, c_out, h, w].
    The kernel sees small objects at low rates and large context at high rates, so it is
    trained by both, with 1/len(rates) of the parameters."""

    def __init__(self, c_in: int, c_out: int, rates: tuple[int, ...]):
        super().__init__()
        self.rates = tuple(rates)
        self.weight = nn.Parameter(torch.empty(c_out, c_in, 3, 3))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.norms = nn.ModuleList(nn.BatchNorm2d(c_out) for _ in rates)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [F.relu(bn(F.conv2d(x, self.weight, padding=r, dilation=r)))
                for r, bn in zip(self.rates, self.norms)]


class ImagePooling(nn.Module):
    """Global average pool → 1×1 conv + BN + ReLU → broadcast back to h×w (image-level context)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = conv_bn_relu(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.adaptive_avg_pool2d(x, 1)).expand(-1, -1, *x.shape[-2:])


class ASPP(nn.Module):
    """DeepLab-v3 ASPP: [1×1, atrous 3×3 per rate, image pooling] → concat → 1×1 projection.
    features [B, c_in, h, w] → [B, channels, h, w]. Training needs batches of ≥ 2 images
    (the image-pooling BN sees one value per image)."""

    atrous_type = ParallelAtrous

    def __init__(self, c_in: int, channels: int = 256, rates: tuple[int, ...] = (6, 12, 18),
                 image_pooling: bool = True, dropout: float = 0.1):
        super().__init__()
        self.rates = tuple(rates)
        self.conv1x1 = conv_bn_relu(c_in, channels, 1)
        self.atrous = self.atrous_type(c_in, channels, self.rates)
        self.pooling = ImagePooling(c_in, channels) if image_pooling else None
        n = 1 + len(self.rates) + int(image_pooling)
        self.project = nn.Sequential(conv_bn_relu(n * channels, channels, 1), nn.Dropout2d(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [self.conv1x1(x), *self.atrous(x)]
        if self.pooling is not None:
            parts.append(self.pooling(x))
        return self.project(torch.cat(parts, 1))


class KSAC(ASPP):
    """ASPP whose atrous branches share one kernel (Huang et al. 2019)."""

    atrous_type = SharedAtrous


class V3PlusDecoder(nn.Module):
    """DeepLab-v3+ decoder: low-level [B, c_low, H/4, W/4] → 1×1 to 48 ch; concat with the head's
    output upsampled to H/4×W/4; two 3×3 convs → [B, channels, H/4, W/4]."""

    def __init__(self, c_low: int, c_head: int, channels: int = 256, low_channels: int = 48):
        super().__init__()
        self.reduce = conv_bn_relu(c_low, low_channels, 1)
        self.fuse = nn.Sequential(conv_bn_relu(c_head + low_channels, channels), conv_bn_relu(channels, channels))

    def forward(self, head: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        head = F.interpolate(head, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([head, self.reduce(low)], 1))


class DeepLab(nn.Module):
    """image [B, 3, H, W] (any H, W) → logits [B, num_classes, H, W].

    ``head``: "largefov" (v1), "aspp_v2", "aspp_v3", "aspp_v3_nopool", "ksac", or "none" (a
    plain 3×3 conv head at the same output stride, the ablation baseline). ``decoder=True``
    adds the v3+ decoder (v3-style heads only). ``channels`` is the width of the head (256 in
    v3; v1's fc6/fc7 had 1024). ``pretrained``: ImageNet backbone (see :class:`ResNetFeatures`).
    """

    def __init__(self, num_classes: int, head: str = "aspp_v3", backbone: str = "resnet18",
                 output_stride: int = 16, decoder: bool = False, channels: int = 256,
                 rates: tuple[int, ...] | None = None, pretrained: bool = False):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}.")
        if decoder and head in ("largefov", "aspp_v2"):
            raise ValueError(f"The v3+ decoder takes features, but the {head!r} head outputs class scores; "
                             "use aspp_v3, aspp_v3_nopool, ksac or none.")
        self.head_name, self.output_stride = head, output_stride
        self.rates = tuple(rates) if rates is not None else scaled_rates(head, output_stride)
        self.backbone = ResNetFeatures(backbone, output_stride, pretrained=pretrained)
        c_in = ResNetFeatures.channels[32]
        if head == "largefov":
            self.head, self.classifier = LargeFOV(c_in, num_classes, channels, *self.rates), nn.Identity()
        elif head == "aspp_v2":
            self.head, self.classifier = ASPPv2(c_in, num_classes, self.rates), nn.Identity()
        else:
            if head == "none":
                self.head = nn.Sequential(conv_bn_relu(c_in, channels), nn.Dropout2d(0.1))
            else:
                module = KSAC if head == "ksac" else ASPP
                self.head = module(c_in, channels, self.rates, image_pooling=head != "aspp_v3_nopool")
            self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.decoder = V3PlusDecoder(ResNetFeatures.channels[4], channels, channels) if decoder else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        f = self.backbone(x)
        y = self.head(f[32])
        if self.decoder is not None:
            y = self.decoder(y, f[4])
        return F.interpolate(self.classifier(y), size=size, mode="bilinear", align_corners=False)
