"""Learnable upsampling: transposed convolutions initialised as bilinear interpolation."""

from __future__ import annotations

import torch
import torch.nn as nn


def bilinear_kernel(factor: int) -> torch.Tensor:
    """2-D bilinear interpolation filter for upsampling by ``factor`` → float [2f − f%2, …].

    Used as the weight of ``ConvTranspose2d(kernel_size=2f − f%2, stride=f, padding=…)``
    (FCN's "deconvolution" initialisation). With kernel 2f, stride f and padding f/2 it
    reproduces ``F.interpolate(mode="bilinear", align_corners=False)`` away from the borders.
    """
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - centre).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


def bilinear_upsampler(channels: int, factor: int, learnable: bool = True) -> nn.ConvTranspose2d:
    """Channel-wise ConvTranspose2d that upsamples [B, C, H, W] → [B, C, f·H, f·W],
    initialised to bilinear interpolation (each channel upsampled independently)."""
    k = 2 * factor - factor % 2
    pad = (k - factor + 1) // 2
    up = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=pad, groups=channels, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(factor)[None, None].expand(channels, 1, k, k))
    up.weight.requires_grad_(learnable)
    return up
