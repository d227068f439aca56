"""SegNet (Badrinarayanan, Kendall, Cipolla 2017): an encoder-decoder that upsamples with
**max-unpooling**, using the argmax indices remembered by each encoder max-pool, instead of
learned transposed convolutions or skip concatenation. Only the indices cross from encoder to
decoder, so the decoder is cheap in memory; the convolutions after each unpooling densify the
sparse maps.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .common import conv_bn_relu, pad_to_multiple


class SegNet(nn.Module):
    """image [B, in_channels, H, W] → logits [B, num_classes, H, W] (5 stages, VGG-like
    widths w, 2w, 4w, 8w, 8w with two 3×3 convs per stage)."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32, stages: int = 5):
        super().__init__()
        widths = [min(width * 2 ** i, 8 * width) for i in range(stages)]
        self.stages = stages
        ins = [in_channels] + widths[:-1]
        self.enc = nn.ModuleList(nn.Sequential(conv_bn_relu(i, o), conv_bn_relu(o, o)) for i, o in zip(ins, widths))
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        outs = [widths[0]] + widths[:-1]  # decoder stage k maps widths[k] → widths[k-1]
        self.dec = nn.ModuleList(nn.Sequential(conv_bn_relu(w, w), conv_bn_relu(w, o))
                                 for w, o in zip(reversed(widths), reversed(outs)))
        self.head = nn.Conv2d(widths[0], num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 2 ** self.stages)
        indices, sizes = [], []
        for enc in self.enc:
            x = enc(x)
            sizes.append(x.shape[-2:])
            x, idx = self.pool(x)
            indices.append(idx)
        for dec in self.dec:
            x = dec(self.unpool(x, indices.pop(), output_size=sizes.pop()))
        return self.head(x)[..., :h, :w]
