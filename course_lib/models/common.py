"""Small helpers shared by the models."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pretrained import FROM_SCRATCH, PretrainedWeightsError


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad [B, C, H, W] at the bottom/right to multiples of ``multiple``; returns the
    padded tensor and the original (H, W) to crop back to."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return (F.pad(x, (0, pw, 0, ph)) if ph or pw else x), (h, w)


def conv_bn_relu(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


class PadToMultiple(nn.Module):
    """Wraps a model that needs H and W divisible by ``multiple`` (e.g. smp's models): zero-pads
    the input [B, C, H, W] at the bottom/right, runs the model and crops its output back to H×W,
    so any image size works (CamVid's 360 rows are not a multiple of 16 or 32)."""

    def __init__(self, model: nn.Module, multiple: int):
        super().__init__()
        if multiple < 1:
            raise ValueError(f"multiple must be a positive whole number, got {multiple}.")
        self.model, self.multiple = model, int(multiple)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, self.multiple)
        return self.model(x)[..., :h, :w]


def smp_model(kind: str, encoder: str, num_classes: int, pretrained: bool = False, **kwargs) -> nn.Module:
    """``segmentation_models_pytorch.<kind>(encoder, encoder_weights=None, classes=num_classes,
    **kwargs)`` (from scratch, like every course model; ``pretrained=True``: smp's "imagenet"
    encoder weights, which smp downloads through the Hugging Face Hub) wrapped in
    :class:`PadToMultiple` by its total stride (16 for DeepLabV3Plus at
    ``encoder_output_stride=16``, else 32), so it takes any H×W. Logits [B, num_classes, H, W]."""
    import segmentation_models_pytorch as smp  # imported when built: slow to import

    weights = "imagenet" if pretrained else None
    try:
        model = getattr(smp, kind)(encoder, encoder_weights=weights, classes=num_classes, **kwargs)
    except Exception as e:
        if not pretrained:
            raise
        raise PretrainedWeightsError(f"smp could not get the ImageNet weights of encoder {encoder!r} (it "
                                     f"downloads them from the Hugging Face Hub): {type(e).__name__}: "
                                     f"{(str(e).splitlines() or [''])[0]} {FROM_SCRATCH}") from e
    stride = kwargs.get("encoder_output_stride", 32) if kind.startswith("DeepLab") else 32
    return PadToMultiple(model, stride)
