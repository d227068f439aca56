"""Mask R-CNN (He et al. 2017) for small, crowded objects such as nuclei, trainable from scratch.

torchvision's ``maskrcnn_resnet50_fpn`` is sized for COCO: images rescaled to a short side of
800, anchors 32–512, 100 detections per image, and ``resnet_fpn_backbone`` freezes its
BatchNorm (FrozenBatchNorm2d) and the stem and first stage, which from scratch leaves random
weights frozen. :func:`mask_rcnn` builds the same detector from torchvision's parts with

- a ResNet whose normalisation is real and trainable (GroupNorm by default, as "Rethinking
  ImageNet Pre-training" trains from scratch; or BatchNorm) and every layer trainable;
- anchors 4× smaller than COCO's (8, 16, 32, 64 px on the stride-4…32 levels; 128 too when
  ``slim=False``), and RoI pooling levels chosen for those sizes;
- images kept at their own scale by default (nucleus sizes are in microscope pixels; a
  1024² image rescaled to 256 would shrink its nuclei 4×);
- up to ``detections_per_img`` (400) detections per image (DSB2018 has up to 375 nuclei);
- optional slim heads: FPN on layer1–3 with 64 channels, a 256-d box head, 128 sampled RoIs
  and 128 RPN anchors per image, two 64-channel mask convolutions (3.9 M parameters with
  ResNet-18; about 10× faster per step on a CPU than the default heads).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch
import torch.nn as nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from .backbones import _BUILDERS, ResNetFeatures
from .pretrained import load_imagenet_weights, weights_url

NORMS = ("group", "batch")
_STAGE_CHANNELS = ResNetFeatures.channels  # stride → channels of layer1..layer4 (BasicBlock ResNets)


def _norm_factory(norm: str) -> Callable[[int], nn.Module]:
    if norm == "group":
        # 32 groups (Wu & He 2018), fewer where a layer has fewer than 32 × 2 channels
        return lambda c: nn.GroupNorm(min(32, c // 2), c)
    if norm == "batch":
        return nn.BatchNorm2d
    raise ValueError(f"norm must be one of {NORMS} (a trainable normalisation; torchvision's frozen "
                     f"BatchNorm would keep random statistics from scratch), got {norm!r}.")


class _NativeScaleTransform(GeneralizedRCNNTransform):
    """torchvision's detection pre-processing (normalise, batch with padding to a multiple of
    32) without its rescaling: each image is used at its own size, in training and evaluation."""

    def resize(self, image: torch.Tensor, target: dict | None = None):
        return image, target


def mask_rcnn(num_classes: int = 2, backbone: str = "resnet18", norm: str = "group", slim: bool = True,
              min_size: int | None = None, max_size: int | None = None, detections_per_img: int = 400,
              anchor_sizes: tuple[int, ...] | None = None, pretrained: bool = False) -> MaskRCNN:
    """A torchvision :class:`~torchvision.models.detection.MaskRCNN` on a ResNet-FPN, every
    parameter trainable (see the module docstring).

    ``num_classes`` counts the background (2 for nuclei). ``backbone``: "resnet10",
    "resnet18" or "resnet34". ``norm``: "group" (GroupNorm, also in the FPN) or "batch"
    (trainable BatchNorm). ``slim``: the small heads and FPN on layer1–3 (4 levels, strides
    4–32 with the max-pooled level); ``False``: torchvision's default heads, FPN 256 channels on
    layer1–4 (5 levels). ``min_size``/``max_size``: torchvision's rescaling (short side to
    ``min_size``, long side at most ``max_size``); ``None`` (default) keeps every image at its
    own size. ``anchor_sizes``: one size in pixels per FPN level (default 8, 16, 32, 64 (,128)).
    ``pretrained=True`` loads the course's ImageNet ResNet weights (only with
    ``norm="batch"``; needs internet, see :mod:`course_lib.models.pretrained`).

    Input (training): a list of B images float [3, H, W] in 0..1 (the model normalises them
    itself) and a list of B targets {"boxes": float [N, 4] XYXY pixels, "labels": int64 [N],
    "masks": uint8 [N, H, W]}; output: a dict of the five losses (``loss_classifier``,
    ``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``).
    Input (``model.eval()``): the list of images; output: a list of B dicts {"boxes" float
    [D, 4], "labels" int64 [D], "scores" float [D] in 0..1 (sorted, highest first), "masks"
    float [D, 1, H, W] in 0..1 (probabilities, at the image's size)}, D ≤ ``detections_per_img``.
    """
    if backbone not in _BUILDERS:
        raise ValueError(f"Unknown backbone {backbone!r}; choose from {sorted(_BUILDERS)}.")
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background too: ≥ 2 (2 for nuclei), got {num_classes}.")
    if (min_size is None) != (max_size is None):
        raise ValueError(f"Give both min_size and max_size (torchvision's rescaling), or neither (keep each "
                         f"image at its own size); got min_size={min_size}, max_size={max_size}.")
    if detections_per_img < 1:
        raise ValueError(f"detections_per_img must be ≥ 1, got {detections_per_img}.")
    if pretrained:
        weights_url(backbone)  # a backbone without ImageNet weights fails here, before any download
        if norm != "batch":
            raise ValueError(f"pretrained=True needs norm='batch': the ImageNet ResNets were trained with "
                             f"BatchNorm, whose statistics do not fit {norm!r} normalisation layers.")
    norm_layer = _norm_factory(norm)
    net = _BUILDERS[backbone](norm_layer=norm_layer)
    if pretrained:
        load_imagenet_weights(net, backbone)

    stages = (1, 2, 3) if slim else (1, 2, 3, 4)
    fpn_channels = 64 if slim else 256
    in_channels = [list(_STAGE_CHANNELS.values())[s - 1] for s in stages]
    body = BackboneWithFPN(net, return_layers={f"layer{s}": str(i) for i, s in enumerate(stages)},
                           in_channels_list=in_channels, out_channels=fpn_channels,
                           extra_blocks=LastLevelMaxPool(),
                           norm_layer=norm_layer if norm == "group" else None)
    n_levels = len(stages) + 1  # + the max-pooled level
    sizes = tuple(anchor_sizes) if anchor_sizes is not None else tuple(8 * 2 ** i for i in range(n_levels))
    if len(sizes) != n_levels:
        raise ValueError(f"anchor_sizes needs one size per FPN level ({n_levels} with slim={slim}), got {sizes}.")
    anchors = AnchorGenerator(sizes=tuple((s,) for s in sizes), aspect_ratios=((0.5, 1.0, 2.0),) * n_levels)
    # RoIs go to the level k = 4 + log2(√area / canonical_scale): COCO's 224 for anchors 32–512,
    # so 56 for anchors 4× smaller (a 17 px nucleus → stride 4, a 45 px one → stride 8)
    levels = [str(i) for i in range(len(stages))]
    box_pool = MultiScaleRoIAlign(levels, output_size=7, sampling_ratio=2, canonical_scale=56)
    mask_pool = MultiScaleRoIAlign(levels, output_size=14, sampling_ratio=2, canonical_scale=56)

    kwargs: dict = {}
    if slim:
        kwargs = dict(box_head=TwoMLPHead(fpn_channels * 7 * 7, 256),
                      box_predictor=FastRCNNPredictor(256, num_classes),
                      mask_head=MaskRCNNHeads(fpn_channels, [64, 64], dilation=1),
                      mask_predictor=MaskRCNNPredictor(64, 64, num_classes),
                      rpn_batch_size_per_image=128, box_batch_size_per_image=128)
    # torchvision takes num_classes only when it builds the predictors itself
    model = MaskRCNN(body, num_classes=None if slim else num_classes, min_size=min_size or 800, max_size=max_size or 1333,
                     rpn_anchor_generator=anchors, box_roi_pool=box_pool, mask_roi_pool=mask_pool,
                     box_detections_per_img=detections_per_img, **kwargs)
    if min_size is None:
        t = model.transform
        model.transform = _NativeScaleTransform(t.min_size, t.max_size, t.image_mean, t.image_std,
                                                size_divisible=t.size_divisible)
    return model
