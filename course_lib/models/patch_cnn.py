"""A patch classifier for sliding-window segmentation, and its convolutionalised twin.

``PatchClassifier`` labels a 32×32 patch by its centre pixel: two blocks of (3×3 valid conv,
BN, ReLU, 2×2 max-pool), a 3×3 conv, then two fully connected layers. With no padding and
eval-mode BN (a per-channel affine map), every layer is translation-equivariant, so
:func:`convolutionalize` can turn the FC layers into convolutions with the *same weights*
(FC1 → conv with a 4×4 kernel, FC2 → 1×1 conv) and run the network over a whole image at
once: output (i, j) equals the classifier on the patch whose top-left corner is at
(4i, 4j), i.e. an output stride of 4.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

PATCH = 32
STRIDE = 4


def _block(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return layers


class PatchClassifier(nn.Module):
    """[B, 3, 32, 32] patches → class logits [B, num_classes] for their centre pixels."""

    patch = PATCH
    stride = STRIDE

    def __init__(self, num_classes: int, width: int = 32, hidden: int = 128):
        super().__init__()
        w = width
        # 32 →conv 30 →pool 15 →conv 13 →pool 6 →conv 4: a 4×4 map feeds the FC layers
        self.features = nn.Sequential(*_block(3, w, True), *_block(w, 2 * w, True), *_block(2 * w, 2 * w, False))
        self.fc1 = nn.Linear(2 * w * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (PATCH, PATCH):
            raise ValueError(f"PatchClassifier takes {PATCH}×{PATCH} patches, got {tuple(x.shape[-2:])}; "
                             f"use convolutionalize() to run it on whole images.")
        f = self.features(x).flatten(1)
        return self.fc2(F.relu(self.fc1(f)))


class ConvolutionalizedClassifier(nn.Module):
    """The same weights as a fully convolutional network: image [B, 3, H, W] → logits
    [B, C, (H − 30) // 4 + 1, (W − 30) // 4 + 1]; output (i, j) = classifier on the patch at
    rows 4i..4i+31, columns 4j..4j+31, whose last two rows and columns the classifier never
    sees (the second pooling floors 13 to 6), so an output exists wherever a 30×30 window fits.
    Use :func:`dense_logits` for per-pixel predictions."""

    def __init__(self, clf: PatchClassifier):
        super().__init__()
        self.features = clf.features
        c = clf.fc1.in_features // 16
        self.fc1 = nn.Conv2d(c, clf.fc1.out_features, kernel_size=4)
        self.fc2 = nn.Conv2d(clf.fc2.in_features, clf.fc2.out_features, kernel_size=1)
        with torch.no_grad():
            # Linear weight [out, c·4·4] (flattened C, H, W) → conv weight [out, c, 4, 4]
            self.fc1.weight.copy_(clf.fc1.weight.view(-1, c, 4, 4))
            self.fc1.bias.copy_(clf.fc1.bias)
            self.fc2.weight.copy_(clf.fc2.weight[:, :, None, None])
            self.fc2.bias.copy_(clf.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.features(x))))


def convolutionalize(clf: PatchClassifier) -> ConvolutionalizedClassifier:
    """FC layers → equivalent convolutions, sharing the feature extractor and the weights."""
    return ConvolutionalizedClassifier(clf)


def pad_for_centres(images: torch.Tensor) -> torch.Tensor:
    """Replicate-pad [B, C, H, W] so that the patch centred on pixel (y, x) starts at (y, x)."""
    half = PATCH // 2
    return F.pad(images, (half, half - 1, half, half - 1), mode="replicate")


def extract_patches(images: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
    """32×32 patches centred on pixels (ys, xs) of images[batch_index] → [N, C, 32, 32].
    ``images`` must already be padded with :func:`pad_for_centres`."""
    r = torch.arange(PATCH, device=images.device)
    rows = (ys[:, None] + r)[:, :, None]               # [N, 32, 1]
    cols = (xs[:, None] + r)[:, None, :]               # [N, 1, 32]
    return images[batch_index[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


@torch.no_grad()
def dense_logits(fcn: ConvolutionalizedClassifier, images: torch.Tensor) -> torch.Tensor:
    """Logits at every 4th pixel: [B, C, ceil(H/4), ceil(W/4)], entry (i, j) for pixel (4i, 4j)."""
    h, w = images.shape[-2:]
    out = fcn(pad_for_centres(images))
    return out[..., : (h + STRIDE - 1) // STRIDE, : (w + STRIDE - 1) // STRIDE]
