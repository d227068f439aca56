"""Joint image/mask augmentation with ``torchvision.transforms.v2`` and ``tv_tensors``.

v2 transforms know that a ``tv_tensors.Mask`` is resampled with nearest neighbour and that
photometric transforms leave it alone; padding of masks uses the ignore value (255) so padded
pixels do not count in the loss or the metrics.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GRAY_MEAN, GRAY_STD = (0.5,), (0.25,)


def _stats(channels: int) -> tuple[tuple, tuple]:
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)


def to_model_input(channels: int = 3) -> v2.Compose:
    """uint8 Image (or plain uint8 tensor [.., C, H, W]) → float normalised; masks pass
    through untouched."""
    mean, std = _stats(channels)
    return v2.Compose([
        # a single dtype converts images (a plain tensor counts as one) and leaves masks alone
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def recipe_scale_range(size: tuple[int, int]) -> tuple[float, float]:
    """The course recipe's random rescale for images resized to ``size`` (H, W): factors
    0.5·s to 2·s with s = short side / long side (cpu profile, 176×240: 0.367–1.467×, so
    64×88 to 258×352 pixels; 4:3 profiles: 0.375–1.5×). Until 2026-11-22 the code asked
    ScaleJitter for 0.5–2× but gave it (H, W) where it takes (W, H), which scales by exactly
    this; every reference run and committed notebook trained with it, so the recipe keeps it."""
    s = min(size) / max(size)
    return 0.5 * s, 2.0 * s


def train_transforms(size: tuple[int, int], scale: tuple[float, float] | None = None,
                     hflip: bool = True, color: bool = True, channels: int = 3,
                     ignore_index: int = 255, crop: tuple[int, int] | None = None) -> v2.Compose:
    """Training pipeline for (image uint8 [C, H, W], mask int64 [H, W]).

    Resize to ``size`` (H, W), random rescale by a factor in ``scale`` (aspect kept; default
    :func:`recipe_scale_range`), random crop to
    ``crop`` (default ``size``; padding the image with 0 and the mask with ``ignore_index``),
    horizontal flip, colour jitter, then float normalisation. Output: image float
    [C, *crop], mask int64 [*crop]. A crop smaller than ``size`` trains a fully
    convolutional model faster on the same scale of objects.
    """
    crop = tuple(crop or size)
    scale = tuple(scale) if scale is not None else recipe_scale_range(size)
    steps: list = [
        v2.Resize(size, antialias=True),
        # ScaleJitter's target_size is (width, height): it rescales by min(tw / W, th / H) × r.
        # Passing (H, W) would shrink every non-square image by min(H/W, W/H) (0.75 for CamVid).
        v2.ScaleJitter(target_size=(size[1], size[0]), scale_range=scale, antialias=True),
        v2.RandomCrop(crop, pad_if_needed=True,
                      fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index}),
    ]
    if hflip:
        steps.append(v2.RandomHorizontalFlip())
    if color and channels == 3:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02))
    elif color:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3))
    steps.append(to_model_input(channels))
    return v2.Compose(steps)


def eval_transforms(channels: int = 3) -> v2.Compose:
    """Evaluation pipeline: no resizing, so metrics use the full-resolution labels (the
    engine resizes the *input* to the model's size and upsamples the logits back)."""
    return to_model_input(channels)


def denormalize(image: torch.Tensor, channels: int = 3) -> torch.Tensor:
    """Undo :func:`to_model_input`: float [.., C, H, W] → float in 0..1."""
    mean, std = _stats(channels)
    mean_t = torch.tensor(mean, device=image.device).view(-1, 1, 1)
    std_t = torch.tensor(std, device=image.device).view(-1, 1, 1)
    return (image * std_t + mean_t).clamp(0, 1)
