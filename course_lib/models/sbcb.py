"""SBCB (Ishikawa et al. 2023): a semantic-boundary detection (SBD) head that conditions a
segmentation backbone while training and is dropped at inference.

- :class:`CASENetHead`: side outputs from early stages (one channel each) and from the last
  stage (one channel per class), each 1×1 conv + BN + ReLU, resized to the input and refined
  by a 3×3 conv; per class k, a grouped 1×1 conv fuses [last_k, side_1, side_2, side_3].
- :class:`SBCB`: wraps *any* segmentation model, taps its backbone's stages with forward hooks
  (so the model itself is not changed), runs the head while training and exposes the plain
  model as ``.model`` for deployment: same parameters, same speed as the baseline.
- :class:`SBCBLoss`: segmentation loss + ``weight`` × (boundary BCE of the fused and of the
  last-stage edge logits), the edges drawn on the fly from the (augmented) labels
  (:func:`course_lib.boundaries.semantic_edges`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..boundaries import semantic_edges


class _Side(nn.Sequential):
    """features [B, c_in, h, w] → logits [B, c_out, H, W]: 1×1 conv + BN + ReLU, bilinear
    resize to the input size, 3×3 conv (no bias)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))
        self.refine = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)

    def forward(self, f: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = super().forward(f)
        return self.refine(F.interpolate(y, size=size, mode="bilinear", align_corners=False))


class CASENetHead(nn.Module):
    """CASENet-style SBD head. ``side_channels``: channels of the three early taps (e.g. stem
    before max-pooling, stage 1, stage 2); ``last_channels``: of the last stage. Forward:
    (list of the three early features, last-stage features, output size) → (fused edge logits,
    last-stage edge logits), both [B, K, H, W]."""

    def __init__(self, side_channels: tuple[int, int, int], last_channels: int, num_classes: int):
        super().__init__()
        self.num_classes = num_classes
        self.sides = nn.ModuleList(_Side(c, 1) for c in side_channels)
        self.last = _Side(last_channels, num_classes)
        # class k's fusion sees [last_k, side_1, side_2, side_3]: a grouped 1×1 conv, K groups of 4
        self.fuse = nn.Conv2d(4 * num_classes, num_classes, 1, groups=num_classes)

    def forward(self, early: list[torch.Tensor], last: torch.Tensor,
                size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        sides = [s(f, size) for s, f in zip(self.sides, early)]             # 3 × [B, 1, H, W]
        last_logits = self.last(last, size)                                # [B, K, H, W]
        b, k, h, w = last_logits.shape
        stacked = torch.stack([last_logits] + [s.expand(b, k, h, w) for s in sides], 2)  # [B, K, 4, H, W]
        return self.fuse(stacked.reshape(b, 4 * k, h, w)), last_logits


RESNET_TAPS = ("backbone.stem.2", "backbone.layer1", "backbone.layer2", "backbone.layer4")
"""Where :class:`SBCB` taps a course ResNet backbone (``course_lib.models.ResNetFeatures``): the
stem's ReLU (stride 2, before max-pooling), stages 1 and 2, and the last stage."""


class SBCB(nn.Module):
    """``model`` (image [B, 3, H, W] → segmentation logits [B, C, H, W]) trained with an SBD head
    on the modules named by ``taps`` (three early ones, then the last stage). ``forward`` returns
    the model's logits; while training it also runs the head and keeps its (fused, last) edge
    logits in ``self.edge_logits`` for :class:`SBCBLoss`. ``deploy()`` returns a copy of the plain
    model (no hooks): the head is not part of it."""

    def __init__(self, model: nn.Module, num_classes: int, taps: tuple[str, ...] = RESNET_TAPS,
                 channels: tuple[int, ...] | None = None):
        super().__init__()
        if len(taps) != 4:
            raise ValueError(f"SBCB taps three early modules and the last stage: 4 names, got {len(taps)}.")
        modules = dict(model.named_modules())
        missing = [t for t in taps if t not in modules]
        if missing:
            raise ValueError(f"{type(model).__name__} has no module(s) {missing}; name the stages to tap "
                             f"(see model.named_modules()).")
        self.model, self.taps = model, taps
        self._features: dict[str, torch.Tensor] = {}
        self._hooks = [modules[name].register_forward_hook(self._keep(name)) for name in taps]
        if channels is None:  # one dry run at a small size tells each tap's channels
            was_training = model.training
            model.eval()
            with torch.no_grad():
                model(torch.zeros(1, 3, 64, 64, device=next(model.parameters()).device))
            model.train(was_training)
            channels = tuple(self._features[t].shape[1] for t in taps)
        self._features.clear()
        self.head = CASENetHead(tuple(channels[:3]), channels[3], num_classes)
        self.edge_logits: tuple[torch.Tensor, torch.Tensor] | None = None

    def _keep(self, name: str) -> Callable:
        def hook(module, inputs, output):
            self._features[name] = output
        return hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._features.clear()
        out = self.model(x)
        if self.training:
            f = [self._features[t] for t in self.taps]
            self.edge_logits = self.head(f[:3], f[3], x.shape[-2:])
        else:
            self.edge_logits = None
        self._features.clear()  # the hooks keep no activations between calls
        return out

    def forward_with_edges(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(segmentation logits [B, C, H, W], fused edge logits [B, K, H, W], last-stage edge
        logits [B, K, H, W]) in the current mode: to look at, or score, the boundary head itself."""
        self._features.clear()
        out = self.model(x)
        f = [self._features[t] for t in self.taps]
        self._features.clear()
        fused, last = self.head(f[:3], f[3], x.shape[-2:])
        return out, fused, last

    def deploy(self) -> nn.Module:
        """A copy of the plain segmentation model with the trained weights and without the taps'
        hooks: what inference uses (the head is left behind). The SBCB wrapper keeps working."""
        import copy

        plain = copy.deepcopy(self.model)
        modules = dict(plain.named_modules())
        for name, handle in zip(self.taps, self._hooks):
            modules[name]._forward_hooks.pop(handle.id, None)
        return plain


def boundary_bce(logits: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """SBCB's multi-label boundary loss: BCE with logits over [B, K, H, W], each image weighted by
    pos_weight = clamp(#negatives / #positives, 1, H·W) (counted over all its classes: edges are
    a few percent of the pixels), averaged over pixels and classes, then over the batch."""
    if logits.shape != edges.shape:
        raise ValueError(f"edge logits {tuple(logits.shape)} and edge targets {tuple(edges.shape)} differ in shape.")
    b, h, w = logits.shape[0], *logits.shape[-2:]
    target = edges.to(logits.dtype)
    pos = target.flatten(1).sum(1)
    pos_weight = ((target[0].numel() - pos) / pos.clamp(min=1)).clamp(1, h * w)      # [B]
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none",
                                              pos_weight=pos_weight.view(b, 1, 1, 1))
    return loss.flatten(1).mean(1).mean()


class SBCBLoss(nn.Module):
    """``seg_loss(logits, labels)`` + ``weight`` × (boundary_bce(fused) + boundary_bce(last)),
    with the edges of ``labels`` at ``radius`` (SBCB: radius 2, weight 5). Reads the edge logits
    that ``sbcb`` kept in its last training forward; in eval mode, only the segmentation loss."""

    def __init__(self, sbcb: SBCB, seg_loss: Callable, num_classes: int, weight: float = 5.0,
                 radius: float = 2.0, ignore_index: int = 255):
        super().__init__()
        self.seg_loss, self.num_classes, self.weight, self.radius = seg_loss, num_classes, weight, radius
        self.ignore_index = ignore_index
        self._sbcb = [sbcb]  # a list: not registered as a submodule (its parameters belong to the model)
        self.last_terms: dict[str, float] = {}

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seg = self.seg_loss(logits, labels)
        edge_logits = self._sbcb[0].edge_logits
        if edge_logits is None:
            return seg
        fused, last = (e.float() for e in edge_logits)
        if fused.shape[-2:] != labels.shape[-2:]:
            raise ValueError(f"edge logits {tuple(fused.shape[-2:])} and labels {tuple(labels.shape[-2:])} differ "
                             f"in size: train SBCB on images and labels of one size.")
        edges = semantic_edges(labels, self.num_classes, self.radius, self.ignore_index)
        bce = boundary_bce(fused, edges) + boundary_bce(last, edges)
        self.last_terms = {"seg": float(seg.detach()), "boundary": float(bce.detach())}
        return seg + self.weight * bce
