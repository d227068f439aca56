"""U-Net (Ronneberger, Fischer, Brox 2015) for any H×W.

Four down steps (2×2 max-pool) and four up steps (2×2 transposed convolution), each followed
by two 3×3 conv + BN + ReLU; the decoder concatenates the encoder's feature map of the same
scale (the skip connection). The original used unpadded convolutions and cropped the skips;
we use padded ("same") convolutions and instead pad the input to a multiple of 16, then
crop the output back, so output size = input size.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .common import conv_bn_relu, pad_to_multiple


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(conv_bn_relu(c_in, c_out), conv_bn_relu(c_out, c_out))


class UNet(nn.Module):
    """image [B, in_channels, H, W] → logits [B, num_classes, H, W]; widths w, 2w, 4w, 8w, 16w."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, depth: int = 4):
        super().__init__()
        widths = [width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.inc = double_conv(in_channels, widths[0])
        self.downs = nn.ModuleList(double_conv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in reversed(range(depth)))
        self.decs = nn.ModuleList(double_conv(2 * widths[i], widths[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2 ** self.depth)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(self.pool(skips[-1])))
        y = skips.pop()
        for up, dec in zip(self.ups, self.decs):
            y = dec(torch.cat([skips.pop(), up(y)], dim=1))
        return self.head(y)[..., :h, :w]
