"""Basis-based single-stage instance segmentation on an anchor-free centre detector, small
enough to train on a 2-core CPU (notebook 11, DSB2018 nuclei).

- Detector (CenterNet, Zhou et al. 2019): at stride 4 on a small FPN-like fusion of the
  course's ResNet features, a centre heatmap per class (penalty-reduced focal loss against
  Gaussian targets whose radius grows with the box), the box size (w, h) and the sub-cell
  offset of the centre. Decoding: 3×3 max-pool peaks, top-K (≥ 400 for crowded nuclei), no NMS.
- Masks, two interchangeable branches on the same detector, both reading the per-instance
  parameters from the feature vector at the instance's centre cell:
  * ``"yolact"`` (Bolya et al. 2019): k prototypes P (ReLU) at stride 4, coefficients c (tanh),
    mask = sigmoid(P·c) cropped to the box (the GT box in training, the predicted one at test).
  * ``"blendmask"`` (Chen et al. 2020): K = 4 bases at stride 4, an attention K × 14 × 14 per
    instance; bases RoIAligned to 56 × 56, attention upsampled to 56, softmax over K, weighted
    sum → mask logits in the box, pasted back into the image.
- B2Inst (Kim et al. 2021), two switches for the ablation:
  * ``boundary_basis``: one more basis, supervised (BCE + Dice, 1:1) by the image-level
    boundary map of all instances (:func:`course_lib.boundaries.instance_boundaries`); its
    probability map joins the prototypes/bases, with its own coefficient/attention.
  * ``mask_scoring``: a head that reads [predicted mask, its boundary (the Laplacian boundary
    of mask > 0.5, :func:`per_instance_boundaries`), RoI features] at 28 × 28 and predicts the
    mask IoU and the boundary score S_boundary (:func:`boundary_score`) of the mask with its
    ground truth (L2 loss); the detection score becomes centre confidence × predicted IoU ×
    predicted S_boundary: Mask Scoring R-CNN's class score × predicted IoU, with B2Inst's
    boundary quality as one more factor (the notes' inference formula is an image we could
    not read; a product keeps "any factor low → low score").

In training, masks are predicted inside the GT boxes on a fixed RoI grid (YOLACT: 28 × 28 of
P·c; BlendMask: 56 × 56), so the mean BCE over the grid is YOLACT's BCE summed in the box ÷
box area; at test YOLACT's masks are assembled at full resolution and cropped to the box.

Boxes follow the course's datasets (torchvision ``masks_to_boxes``): XYXY in pixels, where
x2, y2 are the index of the last pixel of the object, so the object covers the pixels
x1..x2, y1..y2 inclusive; in continuous coordinates (pixel p spans [p, p + 1], as
``roi_align(aligned=True)`` reads them) the box is [x1, x2 + 1] × [y1, y2 + 1].
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import masks_to_boxes, roi_align

from ..boundaries import instance_boundaries
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .backbones import ResNetFeatures
from .common import conv_bn_relu, pad_to_multiple

STRIDE = 4  # of the heatmap, the prototypes/bases and the boundary basis
DEFAULT_LOSS_WEIGHTS = {"heatmap": 1.0, "size": 0.1, "offset": 1.0,  # CenterNet's weights
                        "mask": 1.0, "boundary": 1.0, "mask_iou": 1.0, "boundary_score": 1.0}
B2INST_ARMS = {"base": {"boundary_basis": False, "mask_scoring": False},
               "boundary": {"boundary_basis": True, "mask_scoring": False},
               "scoring": {"boundary_basis": False, "mask_scoring": True},
               "both": {"boundary_basis": True, "mask_scoring": True}}
"""B2Inst's ablation (notebook 11, ``benchmarks/basis_reference.py``): arm name → the switches of
:class:`BasisInstanceNet`; "both" is B2Inst."""


# ------------------------------------------------------------------------------ detector

def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's (and CornerNet's) Gaussian radius for a box of ``height`` × ``width`` (in
    heatmap cells): the smallest of three radii such that a corner pair displaced by it still
    gives a box with IoU ≥ ``min_overlap``. Kept exactly as CenterNet computes it, including
    its known slip (the quadratic-formula roots divide by 2, not 2a, so the radius is not the
    one the stated overlap implies); the published models were trained with it."""
    if height < 0 or width < 0:
        raise ValueError(f"box size must be ≥ 0, got height {height}, width {width}.")
    b1 = height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    b2 = 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _check_boxes(boxes: torch.Tensor, name: str = "boxes") -> None:
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name} must be XYXY [N, 4], got shape {tuple(boxes.shape)}.")
    if len(boxes) and bool(((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])).any()):
        raise ValueError(f"{name} must be XYXY with x2 ≥ x1 and y2 ≥ y1; got some with x2 < x1 or y2 < y1 "
                         f"(XYWH boxes? convert with torchvision.ops.box_convert).")


def centernet_targets(boxes: torch.Tensor, labels: torch.Tensor | None = None,
                      image_size: tuple[int, int] | None = None, num_classes: int = 1, stride: int = STRIDE,
                      min_overlap: float = 0.7) -> dict:
    """CenterNet's training targets of one image.

    ``boxes`` float [N, 4] XYXY in pixels (x2, y2 = last pixel, module doc), or instance masks
    bool/uint8 [N, H, W] (their ``masks_to_boxes`` boxes are used, and H, W are the default
    ``image_size``); ``labels`` int64 [N] in 1..num_classes (torchvision's convention: 0 would
    be background; default all 1); ``image_size`` (H, W). The output grid is
    h × w = ceil(H / stride) × ceil(W / stride).

    Returns ``heatmap`` float [num_classes, h, w] in [0, 1] (a Gaussian of CenterNet's
    size-dependent radius at each box's centre cell, 1 exactly there, max over overlapping
    Gaussians), ``centres`` int64 [N, 2] (x, y cell of each centre), ``indices`` int64 [N]
    (flat cell index y·w + x), ``offset`` float [N, 2] in [0, 1) (centre / stride − cell) and
    ``size`` float [N, 2] (w, h) / stride, in heatmap cells."""
    boxes = torch.as_tensor(boxes)
    if boxes.dim() == 3:  # instance masks
        image_size = image_size or tuple(boxes.shape[-2:])
        boxes = masks_to_boxes(boxes) if len(boxes) else torch.zeros(0, 4, device=boxes.device)
    if image_size is None:
        raise ValueError("image_size (H, W) is needed with boxes (it is only implied by masks).")
    boxes = boxes.float()
    _check_boxes(boxes)
    labels = torch.ones(len(boxes), dtype=torch.int64) if labels is None else labels
    labels = torch.as_tensor(labels, dtype=torch.int64, device=boxes.device)
    if labels.shape != boxes.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} must be [N] for boxes {tuple(boxes.shape)}.")
    if len(labels) and (int(labels.min()) < 1 or int(labels.max()) > num_classes):
        raise ValueError(f"labels must be in 1..{num_classes} (0 is background in torchvision's detection "
                         f"format), got {sorted(set(labels.tolist()))[:5]}.")
    H, W = image_size
    h, w = math.ceil(H / stride), math.ceil(W / stride)
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / stride
    cell = centre.floor()
    cell[:, 0].clamp_(0, w - 1)
    cell[:, 1].clamp_(0, h - 1)
    size = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1) / stride
    heatmap = torch.zeros(num_classes, h, w, device=boxes.device)
    # CenterNet: radius = max(0, int(r)) of the ceil'ed size, sigma = diameter / 6, the Gaussian
    # cut to the (2r + 1)² square and below float eps
    radius = torch.tensor([max(0, int(gaussian_radius(math.ceil(bh), math.ceil(bw), min_overlap)))
                           for bw, bh in size.tolist()], device=boxes.device, dtype=torch.float32)
    sigma = (2 * radius + 1) / 6
    ys = torch.arange(h, device=boxes.device, dtype=torch.float32)
    xs = torch.arange(w, device=boxes.device, dtype=torch.float32)
    for s in range(0, len(boxes), 64):  # 64 instances at a time: [64, h, w] floats at most
        r, sg, c = radius[s:s + 64, None, None], sigma[s:s + 64, None, None], cell[s:s + 64]
        dx2 = (xs[None, None, :] - c[:, 0, None, None]) ** 2  # [n, 1, w]
        dy2 = (ys[None, :, None] - c[:, 1, None, None]) ** 2  # [n, h, 1]
        g = torch.exp(-(dx2 + dy2) / (2 * sg * sg))
        g = g * ((dx2 <= r * r) & (dy2 <= r * r)) * (g >= torch.finfo(torch.float32).eps)
        for k in labels[s:s + 64].unique().tolist():
            heatmap[k - 1] = torch.maximum(heatmap[k - 1], g[labels[s:s + 64] == k].amax(0))
    cell = cell.long()
    return {"heatmap": heatmap, "centres": cell, "indices": cell[:, 1] * w + cell[:, 0],
            "offset": centre - cell.float(), "size": size}


def centernet_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                         beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss: ``logits`` [B, C, h, w] (before the
    sigmoid), ``target`` [B, C, h, w] in [0, 1] (1 at the centres) → scalar

        −1/N_pos Σ { (1 − p)^α log p                  where target = 1
                   { (1 − target)^β p^α log(1 − p)     elsewhere

    with p = sigmoid(logits) and N_pos the number of cells with target = 1 (the loss is not
    divided when there are none). torchvision's ``sigmoid_focal_loss`` is RetinaNet's α-balanced
    variant without the (1 − target)^β reduction near centres, hence this one."""
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must have the same shape.")
    logits, target = logits.float(), target.float()
    p = logits.sigmoid()
    log_p, log_1mp = F.logsigmoid(logits), F.logsigmoid(-logits)  # stable log p, log(1 − p)
    pos = target.eq(1).float()
    pos_loss = (pos * (1 - p) ** alpha * log_p).sum()
    neg_loss = ((1 - pos) * (1 - target) ** beta * p ** alpha * log_1mp).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1)


def decode_centernet(heatmap_logits: torch.Tensor, size: torch.Tensor, offset: torch.Tensor,
                     top_k: int = 400, stride: int = STRIDE) -> dict:
    """Detections from CenterNet's outputs, without NMS: the cells that are the maximum of their
    3 × 3 neighbourhood, the ``top_k`` best over classes and positions.

    ``heatmap_logits`` [B, C, h, w], ``size`` [B, 2, h, w] ((w, h) in cells), ``offset``
    [B, 2, h, w] → ``boxes`` float [B, K, 4] XYXY in pixels, ``scores`` [B, K] in (0, 1),
    ``labels`` int64 [B, K] in 1..C, ``indices`` int64 [B, K] (flat cell y·w + x), K =
    min(top_k, C·h·w). Inverse of :func:`centernet_targets`: centre = (cell + offset)·stride."""
    if heatmap_logits.dim() != 4 or size.shape[1] != 2 or offset.shape[1] != 2:
        raise ValueError(f"expected heatmap [B, C, h, w], size and offset [B, 2, h, w]; got "
                         f"{tuple(heatmap_logits.shape)}, {tuple(size.shape)}, {tuple(offset.shape)}.")
    if top_k < 1:
        raise ValueError(f"top_k must be ≥ 1, got {top_k}.")
    B, C, h, w = heatmap_logits.shape
    heat = heatmap_logits.sigmoid()
    peaks = heat * (F.max_pool2d(heat, 3, stride=1, padding=1) == heat)
    k = min(top_k, C * h * w)
    scores, flat = peaks.reshape(B, -1).topk(k)
    labels, indices = flat // (h * w) + 1, flat % (h * w)
    gather = lambda m: m.reshape(B, 2, h * w).gather(2, indices[:, None].expand(B, 2, k))  # [B, 2, K]
    wh, off = gather(size).clamp(min=0), gather(offset)  # an untrained size head can go negative
    cx = (indices % w).float() + off[:, 0]
    cy = (indices // w).float() + off[:, 1]
    boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], -1) * stride
    return {"boxes": boxes, "scores": scores, "labels": labels, "indices": indices}


# ------------------------------------------------------------------------------ masks

def _continuous(boxes: torch.Tensor) -> torch.Tensor:
    """Inclusive pixel boxes (x2, y2 = last pixel) → continuous [x1, y1, x2 + 1, y2 + 1]."""
    return boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])


def crop_to_boxes(masks: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Zero every pixel of ``masks`` [N, H, W] outside its box [N, 4] (XYXY in pixels, x2, y2
    inclusive): pixel (x, y) is kept when its centre (x + 0.5, y + 0.5) lies in
    [x1, x2 + 1] × [y1, y2 + 1], i.e. exactly the pixels x1..x2, y1..y2 of an integer box."""
    n, H, W = masks.shape
    b = _continuous(boxes.to(masks.dtype if masks.is_floating_point() else torch.float32))
    xs = torch.arange(W, device=masks.device) + 0.5
    ys = torch.arange(H, device=masks.device) + 0.5
    inside_x = (xs[None] >= b[:, 0:1]) & (xs[None] <= b[:, 2:3])  # [N, W]
    inside_y = (ys[None] >= b[:, 1:2]) & (ys[None] <= b[:, 3:4])  # [N, H]
    return masks * (inside_y[:, :, None] & inside_x[:, None, :])


def yolact_masks(prototypes: torch.Tensor, coefficients: torch.Tensor,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
    """YOLACT's assembly: ``prototypes`` [k, H, W] (≥ 0), ``coefficients`` [N, k] (in [−1, 1])
    → masks [N, H, W] = sigmoid(Σ_j c_nj P_j) in [0, 1], set to 0 outside each box [N, 4]
    (:func:`crop_to_boxes`) when ``boxes`` is given."""
    if prototypes.dim() != 3 or coefficients.dim() != 2 or coefficients.shape[1] != prototypes.shape[0]:
        raise ValueError(f"expected prototypes [k, H, W] and coefficients [N, k]; got {tuple(prototypes.shape)} "
                         f"and {tuple(coefficients.shape)}.")
    masks = torch.einsum("nk,khw->nhw", coefficients, prototypes).sigmoid()
    return masks if boxes is None else crop_to_boxes(masks, boxes)


def roi_basis(bases: torch.Tensor, boxes: torch.Tensor, batch_index: torch.Tensor, size: int,
              stride: int = STRIDE) -> torch.Tensor:
    """The bases inside each box, sampled on a size × size grid: ``bases`` [B, K, h, w] at
    ``stride``, ``boxes`` [N, 4] in image pixels (x2, y2 inclusive), ``batch_index`` int64 [N]
    → [N, K, size, size] (torchvision ``roi_align``, aligned). One bilinear sample per bin:
    bins of 28 or 56 per box are about a stride-4 cell or (for nuclei) much less, and
    roi_align's CPU backward, the costliest op of a training step, scales with the samples.
    Linear in the bases: roi_basis(P)·c = roi_basis(P·c), YOLACT's cropped mask on the RoI grid."""
    rois = torch.cat([batch_index[:, None].to(bases.dtype), _continuous(boxes).to(bases.dtype)], 1)
    return roi_align(bases, rois, (size, size), spatial_scale=1.0 / stride, sampling_ratio=1, aligned=True)


def roi_sample_nearest(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each mask at its box's size × size bin centres, nearest pixel: ``masks`` [N, H, W] (any
    dtype), ``boxes`` [N, 4] (x2, y2 inclusive) → [N, size, size] of the same dtype. The GT
    masks on the RoI grid, by indexing instead of a float copy of every full-size mask."""
    n, H, W = masks.shape
    b = _continuous(boxes.float())
    t = (torch.arange(size, device=masks.device, dtype=torch.float32) + 0.5) / size  # bin centres in [0, 1]
    xs = (b[:, 0:1] + t[None] * (b[:, 2:3] - b[:, 0:1])).floor().long().clamp(0, W - 1)  # [N, size]
    ys = (b[:, 1:2] + t[None] * (b[:, 3:4] - b[:, 1:2])).floor().long().clamp(0, H - 1)
    idx = torch.arange(n, device=masks.device)[:, None, None]
    return masks[idx, ys[:, :, None], xs[:, None, :]]


def blend(roi_bases: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """BlendMask's blender: ``roi_bases`` [N, K, M, M], ``attention`` [N, K, A, A] (logits) →
    mask logits [N, M, M] = Σ_k softmax_k(upsample_M(attention))_k · roi_bases_k (bilinear
    upsampling, align_corners=False)."""
    if roi_bases.dim() != 4 or attention.dim() != 4 or roi_bases.shape[:2] != attention.shape[:2]:
        raise ValueError(f"expected roi_bases [N, K, M, M] and attention [N, K, A, A] with the same N, K; got "
                         f"{tuple(roi_bases.shape)} and {tuple(attention.shape)}.")
    if attention.shape[0] == 0:
        return roi_bases.new_zeros(0, *roi_bases.shape[-2:])
    att = F.interpolate(attention, size=roi_bases.shape[-2:], mode="bilinear", align_corners=False)
    return (att.softmax(1) * roi_bases).sum(1)


def paste_masks(roi_masks: torch.Tensor, boxes: torch.Tensor, image_size: tuple[int, int],
                chunk: int = 64) -> torch.Tensor:
    """Paste per-box masks back into the image: ``roi_masks`` [N, M, M] (covering each box,
    as RoIAlign sampled it), ``boxes`` [N, 4] (x2, y2 inclusive) → [N, H, W], bilinear
    resampling, 0 outside the box (:func:`crop_to_boxes`); ``chunk`` detections at a time."""
    H, W = image_size
    out = roi_masks.new_zeros(len(roi_masks), H, W)
    xs = torch.arange(W, device=roi_masks.device, dtype=roi_masks.dtype) + 0.5
    ys = torch.arange(H, device=roi_masks.device, dtype=roi_masks.dtype) + 0.5
    for s in range(0, len(roi_masks), chunk):
        b = _continuous(boxes[s:s + chunk].to(roi_masks.dtype))
        # pixel centre → [−1, 1] across the box (align_corners=False: ±1 are the box's edges)
        gx = 2 * (xs[None] - b[:, 0:1]) / (b[:, 2:3] - b[:, 0:1]).clamp(min=1e-6) - 1  # [n, W]
        gy = 2 * (ys[None] - b[:, 1:2]) / (b[:, 3:4] - b[:, 1:2]).clamp(min=1e-6) - 1  # [n, H]
        grid = torch.stack([gx[:, None, :].expand(-1, H, W), gy[:, :, None].expand(-1, H, W)], -1)
        pasted = F.grid_sample(roi_masks[s:s + chunk, None], grid, mode="bilinear", padding_mode="border",
                               align_corners=False)[:, 0]
        out[s:s + chunk] = crop_to_boxes(pasted, boxes[s:s + chunk])
    return out


def resample_roi(roi_masks: torch.Tensor, from_boxes: torch.Tensor, to_boxes: torch.Tensor,
                 size: int) -> torch.Tensor:
    """Masks given on each ``from_boxes`` RoI grid [N, M, M], sampled (bilinear) at the bin
    centres of the size × size grid of ``to_boxes`` [N, 4] (both x2, y2 inclusive) → [N, size,
    size], 0 where a bin centre lies outside the from-box (the mask is cropped to its box)."""
    n = len(roi_masks)
    fb, tb = _continuous(from_boxes.float()), _continuous(to_boxes.float())
    t = (torch.arange(size, device=roi_masks.device, dtype=torch.float32) + 0.5) / size
    xs = tb[:, 0:1] + t[None] * (tb[:, 2:3] - tb[:, 0:1])  # bin centres, image coordinates [N, size]
    ys = tb[:, 1:2] + t[None] * (tb[:, 3:4] - tb[:, 1:2])
    gx = 2 * (xs - fb[:, 0:1]) / (fb[:, 2:3] - fb[:, 0:1]).clamp(min=1e-6) - 1  # [−1, 1] across the from-box
    gy = 2 * (ys - fb[:, 1:2]) / (fb[:, 3:4] - fb[:, 1:2]).clamp(min=1e-6) - 1
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], -1)
    out = F.grid_sample(roi_masks[:, None].float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)[:, 0]
    return out * ((gy.abs() <= 1)[:, :, None] & (gx.abs() <= 1)[:, None, :])


def _clamp_boxes(boxes: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    H, W = image_size
    return torch.stack([boxes[:, 0].clamp(0, W - 1), boxes[:, 1].clamp(0, H - 1),
                        boxes[:, 2].clamp(0, W - 1), boxes[:, 3].clamp(0, H - 1)], 1)


# ------------------------------------------------------------------------------ B2Inst

def boundary_score(pred_boundary: torch.Tensor, gt_boundary: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """B2Inst's boundary score, a Dice coefficient of boundary maps:
    S = (2 Σ B_p·B_g + ε) / (Σ B_p² + Σ B_g² + ε), sums over the last two dims.

    ``pred_boundary``, ``gt_boundary``: [..., H, W] with values in [0, 1] (soft or 0/1) →
    [...] in [0, 1]; 1 for identical binary maps (and for two empty ones)."""
    if pred_boundary.shape != gt_boundary.shape or pred_boundary.dim() < 2:
        raise ValueError(f"pred_boundary {tuple(pred_boundary.shape)} and gt_boundary {tuple(gt_boundary.shape)} "
                         f"must be [..., H, W] of the same shape.")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it keeps two empty maps at score 1), got {eps}.")
    p, g = pred_boundary.float(), gt_boundary.float()
    inter = (p * g).sum((-2, -1))
    return (2 * inter + eps) / ((p * p).sum((-2, -1)) + (g * g).sum((-2, -1)) + eps)


def per_instance_boundaries(masks: torch.Tensor) -> torch.Tensor:
    """The boundary of each mask separately: bool/uint8 [N, H, W] → uint8 [N, H, W] of 0/1,
    :func:`~course_lib.boundaries.instance_boundaries` of every mask on its own (zero padding,
    so the mask's pixels on the image/RoI border are boundary). Done in one call: the masks
    are laid side by side with a zero row/column between them, which is all the 3 × 3
    Laplacian of one mask can see of its neighbours."""
    n, H, W = masks.shape
    if n == 0:
        return torch.zeros(0, H, W, dtype=torch.uint8, device=masks.device)
    tiled = F.pad((masks != 0).to(torch.uint8), (1, 1, 1, 1))  # [N, H + 2, W + 2]
    edges = instance_boundaries(tiled.reshape(1, n * (H + 2), W + 2))
    return edges.reshape(n, H + 2, W + 2)[:, 1:-1, 1:-1].contiguous()


def _binary_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 − soft Dice of sigmoid(logits) with a 0/1 target, per image [B, 1, H, W], then the mean."""
    p, g = logits.float().sigmoid().flatten(1), target.float().flatten(1)
    return (1 - (2 * (p * g).sum(1) + eps) / (p.sum(1) + g.sum(1) + eps)).mean()


# ------------------------------------------------------------------------------ the model

@contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Build under ``torch.manual_seed(seed)`` without disturbing the caller's RNG (so the
    data order that follows is the same in every ablation arm); no-op for ``seed=None``."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _Fusion(nn.Module):
    """FPN-like top-down fusion of the four ResNet stages to one stride-4 map [B, C, H/4, W/4]:
    1×1 laterals to C channels, each coarser map upsampled (nearest) and added, then a 3×3 conv."""

    def __init__(self, in_channels: Sequence[int], channels: int):
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = conv_bn_relu(channels, channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.laterals[-1](feats[-1])
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1])):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.smooth(x)


def _head(c_in: int, c_mid: int, c_out: int, bias: float = 0.0) -> nn.Sequential:
    out = nn.Conv2d(c_mid, c_out, 1)
    nn.init.constant_(out.bias, bias)
    return nn.Sequential(nn.Conv2d(c_in, c_mid, 3, padding=1), nn.ReLU(inplace=True), out)


class MaskScoringHead(nn.Module):
    """B2Inst's boundary-aware mask scoring: [predicted mask, its boundary, RoI features]
    [N, 2 + C, S, S] → (predicted mask IoU, predicted S_boundary), each [N] in (0, 1).
    No normalisation layers: N varies from 0 to hundreds."""

    def __init__(self, in_channels: int, feature_channels: int = 16, channels: int = 32):
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, feature_channels, 1)  # on the whole map, before RoIAlign: cheap
        self.body = nn.Sequential(
            nn.Conv2d(feature_channels + 2, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 2))

    def forward(self, mask: torch.Tensor, boundary: torch.Tensor,
                roi_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(torch.cat([mask[:, None], boundary[:, None], roi_features], 1)).sigmoid()
        return out[:, 0], out[:, 1]


class BasisInstanceNet(nn.Module):
    """CenterNet detector + YOLACT or BlendMask masks (+ B2Inst's boundary basis and
    boundary-aware mask scoring), on a small ResNet at stride 4.

    ``forward(images)`` → raw outputs (dict of maps at stride 4); ``forward(images, targets)``
    or ``loss(outputs, targets)`` → dict of weighted loss terms (sum them, as with
    torchvision's Mask R-CNN); ``predict(images)`` → per image a dict of ``boxes`` [N, 4],
    ``scores`` [N], ``labels`` [N], ``masks`` float [N, H, W] in [0, 1].

    Images: float [B, 3, H, W] in [0, 1] (or a list of same-size [3, H, W]; uint8 is divided
    by 255), normalised inside with ImageNet's mean/std. Targets: torchvision's detection
    format, a list of B dicts with ``boxes`` XYXY float [N, 4], ``labels`` int64 [N] in
    1..num_classes, ``masks`` uint8 [N, H, W].

    ``seed``: the shared parts (backbone, fusion, detector, towers) are built first under
    ``seed``; each optional part (the mask branch's outputs, the boundary basis, the scoring
    head) under its own seed derived from it. So arms of the ablation built with the same seed
    start from the same shared weights, and the caller's RNG is left untouched.

    Other parameters: ``backbone`` "resnet10" | "resnet18" | "resnet34" (from scratch unless
    ``pretrained_backbone``); ``channels`` of the fused stride-4 map, the towers and the bases'
    inputs; ``head_channels``: hidden width of the heatmap/size/offset heads;
    ``num_prototypes`` k (YOLACT), ``num_bases`` K (BlendMask), ``attention_size`` (14) and
    ``blend_size`` (56, BlendMask's RoI); ``yolact_roi_size``: the RoI grid of YOLACT's mask
    loss; ``score_roi_size``: the scoring head's input size; ``top_k``: detections kept by
    :meth:`predict`; ``max_train_masks``: instances per image that get a mask loss (the first
    ones); ``score_train_boxes``: the boxes the scoring head learns on, "predicted" (the box
    decoded at each GT centre cell, as the head sees boxes at test time, so a badly placed box
    teaches a low IoU; Mask Scoring R-CNN likewise trains on proposals) or "gt" (the GT box the
    mask loss uses); ``loss_weights``: overrides of ``DEFAULT_LOSS_WEIGHTS``.
    """

    def __init__(self, num_classes: int = 1, backbone: str = "resnet10", masks: str = "yolact",
                 boundary_basis: bool = False, mask_scoring: bool = False, channels: int = 64, head_channels: int = 32,
                 num_prototypes: int = 16, num_bases: int = 4, attention_size: int = 14, blend_size: int = 56,
                 yolact_roi_size: int = 28, score_roi_size: int = 28, top_k: int = 400,
                 max_train_masks: int = 128, score_train_boxes: str = "predicted",
                 loss_weights: dict[str, float] | None = None,
                 seed: int | None = None, pretrained_backbone: bool = False):
        super().__init__()
        if masks not in ("yolact", "blendmask"):
            raise ValueError(f"masks must be 'yolact' or 'blendmask', got {masks!r}.")
        if score_train_boxes not in ("predicted", "gt"):
            raise ValueError(f"score_train_boxes must be 'predicted' or 'gt', got {score_train_boxes!r}.")
        self.score_train_boxes = score_train_boxes
        if num_classes < 1:
            raise ValueError(f"num_classes must be ≥ 1 (foreground classes; 1 for nuclei), got {num_classes}.")
        unknown = set(loss_weights or {}) - set(DEFAULT_LOSS_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_LOSS_WEIGHTS)}.")
        self.num_classes, self.masks, self.top_k = num_classes, masks, top_k
        self.boundary_basis, self.mask_scoring = boundary_basis, mask_scoring
        self.attention_size, self.blend_size = attention_size, blend_size
        self.yolact_roi_size, self.score_roi_size = yolact_roi_size, score_roi_size
        self.max_train_masks = max_train_masks
        self.loss_weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        part_seed = lambda i: None if seed is None else seed * 1000 + i  # noqa: E731

        with _seeded(seed):  # shared by every arm (and by both mask branches)
            self.backbone = ResNetFeatures(backbone, pretrained=pretrained_backbone)
            self.fusion = _Fusion([self.backbone.channels[s] for s in (4, 8, 16, 32)], channels)
            # CenterNet's heatmap bias −2.19: initial p ≈ 0.1 everywhere, so the many negatives
            # do not swamp the first steps
            self.heatmap_head = _head(channels, head_channels, num_classes, bias=-2.19)
            self.size_head = _head(channels, head_channels, 2)
            self.offset_head = _head(channels, head_channels, 2)
            # one 3×3 conv: the instance parameters are read at a handful of cells, the rest of
            # this map is computed only to be read there
            self.instance_tower = conv_bn_relu(channels, channels)
            self.basis_tower = nn.Sequential(conv_bn_relu(channels, channels), conv_bn_relu(channels, channels))
        n_basis = num_prototypes if masks == "yolact" else num_bases
        # per instance: k coefficients or K·A·A attention logits, read at its centre cell
        n_param = n_basis if masks == "yolact" else n_basis * attention_size ** 2
        with _seeded(part_seed(1)):
            self.basis_out = nn.Conv2d(channels, n_basis, 1)
            self.param_out = nn.Linear(channels, n_param)
        if boundary_basis:
            with _seeded(part_seed(2)):
                self.boundary_out = nn.Conv2d(channels, 1, 1)
                self.boundary_param_out = nn.Linear(channels, 1 if masks == "yolact" else attention_size ** 2)
        if mask_scoring:
            with _seeded(part_seed(3)):
                self.scoring_head = MaskScoringHead(channels)

    # ---------------------------------------------------------------- raw outputs

    def _as_batch(self, images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            sizes = {tuple(im.shape) for im in images}
            if len(sizes) != 1:
                raise ValueError(f"images of one batch must have the same size, got {sorted(sizes)}; crop or pad them "
                                 f"(e.g. random 256 × 256 crops).")
            images = torch.stack(list(images))
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W] (RGB; repeat a gray channel 3×), got "
                             f"{tuple(images.shape)}.")
        if not images.is_floating_point():
            images = images.float() / 255
        return images

    def forward(self, images: torch.Tensor | Sequence[torch.Tensor], targets: list[dict] | None = None) -> dict:
        """images [B, 3, H, W] → raw outputs at h × w = ceil(H/4) × ceil(W/4): ``heatmap``
        logits [B, C, h, w], ``size`` [B, 2, h, w] (cells), ``offset`` [B, 2, h, w],
        ``instance_features`` [B, ch, h, w] (read at centres for coefficients/attention),
        ``bases`` [B, k or K (+1 with the boundary basis), h, w], ``boundary`` logits
        [B, 1, h, w] (boundary basis only), ``features`` [B, ch, h, w], ``image_size`` (H, W).
        With ``targets``: the loss dict instead (:meth:`loss`)."""
        images = self._as_batch(images)
        x, (H, W) = pad_to_multiple((images - self.image_mean) / self.image_std, 32)
        feats = self.backbone(x)
        fused = self.fusion([feats[s] for s in (4, 8, 16, 32)])
        h, w = math.ceil(H / STRIDE), math.ceil(W / STRIDE)
        fused = fused[..., :h, :w]  # drop the padding's cells: no detections there
        basis_feats = self.basis_tower(fused)
        bases = self.basis_out(basis_feats)
        if self.masks == "yolact":
            bases = F.relu(bases)  # YOLACT's prototypes are ReLU'd; BlendMask's bases are not
        out = {"heatmap": self.heatmap_head(fused), "size": self.size_head(fused), "offset": self.offset_head(fused),
               "instance_features": self.instance_tower(fused), "features": fused, "image_size": (H, W)}
        if self.boundary_basis:
            boundary = self.boundary_out(basis_feats)
            out["boundary"] = boundary
            # the supervised boundary probability joins the bases as one more (B2Inst's red basis)
            bases = torch.cat([bases, boundary.sigmoid()], 1)
        out["bases"] = bases
        return self.loss(out, targets) if targets is not None else out

    def _instance_params(self, outputs: dict, batch_index: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """Coefficients [N, k(+1)] (tanh) or attention logits [N, K(+1), A, A] read at flat cells [N]."""
        f = outputs["instance_features"]
        vec = f.flatten(2)[batch_index, :, cells]  # [N, ch]
        params = self.param_out(vec)
        if self.masks == "yolact":
            if self.boundary_basis:
                params = torch.cat([params, self.boundary_param_out(vec)], 1)
            return torch.tanh(params)
        a = self.attention_size
        params = params.view(len(vec), params.shape[1] // (a * a), a, a)  # not -1: N may be 0
        if self.boundary_basis:
            params = torch.cat([params, self.boundary_param_out(vec).view(len(vec), 1, a, a)], 1)
        return params

    def _roi_mask_logits(self, outputs: dict, boxes: torch.Tensor, batch_index: torch.Tensor,
                         params: torch.Tensor) -> torch.Tensor:
        """Mask logits on each box's RoI grid [N, M, M] (M = 28 YOLACT, 56 BlendMask)."""
        if self.masks == "yolact":
            # P·c on the stride-4 grid first, then one channel through RoIAlign (linear, so the same
            # result as combining RoIAligned prototypes, with k + 1 times less RoIAlign backward)
            bases = outputs["bases"]
            combined = bases.new_zeros(len(params), *bases.shape[-2:])
            for b in batch_index.unique().tolist():
                sel = batch_index == b
                combined[sel] = torch.einsum("nk,khw->nhw", params[sel], bases[b])
            own = torch.arange(len(params), device=params.device)
            return roi_basis(combined[:, None], boxes, own, self.yolact_roi_size)[:, 0]
        rb = roi_basis(outputs["bases"], boxes, batch_index, self.blend_size)
        return blend(rb, params)

    def _boxes_at(self, outputs: dict, batch_index: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """The boxes predicted at given cells [N] (detached, clamped to the image) → [N, 4]:
        what :func:`decode_centernet` gives there."""
        w = outputs["size"].shape[-1]
        wh = outputs["size"].detach().flatten(2)[batch_index, :, cells].float().clamp(min=0)  # [N, 2]
        off = outputs["offset"].detach().flatten(2)[batch_index, :, cells].float()
        cx, cy = (cells % w).float() + off[:, 0], (cells // w).float() + off[:, 1]
        boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], 1) * STRIDE
        return _clamp_boxes(boxes, outputs["image_size"])

    def _score_inputs(self, outputs: dict, mask_probs: torch.Tensor, boxes: torch.Tensor,
                      batch_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scoring-head inputs at S × S: mask probs [N, S, S], the boundary of mask > 0.5
        [N, S, S] (0/1) and RoI features [N, c, S, S]; the mask and boundary are detached, so the
        scoring loss trains the assessment, not the masks."""
        s = self.score_roi_size
        m = mask_probs.detach()
        if m.shape[-1] != s:
            m = F.adaptive_avg_pool2d(m[:, None], s)[:, 0] if m.shape[-1] % s == 0 else \
                F.interpolate(m[:, None], size=(s, s), mode="bilinear", align_corners=False)[:, 0]
        boundary = per_instance_boundaries(m > 0.5).float()
        roi_feats = roi_basis(self.scoring_head.reduce(outputs["features"]), boxes, batch_index, s)
        return m, boundary, roi_feats

    # ---------------------------------------------------------------- training

    def build_targets(self, targets: list[dict], image_size: tuple[int, int]) -> dict:
        """Targets of a batch, flattened over its instances (P of them): ``heatmap`` [B, C, h, w];
        per instance ``batch_index``, ``indices`` (flat cell), ``size``, ``offset``, ``boxes``,
        ``masks`` (uint8 [P, H, W]); ``boundary`` uint8 [B, 1, H, W] (the image-level boundary map
        of each image's instances) when the boundary basis is on. At most ``max_train_masks``
        instances per image (the first ones) get a mask loss: ``mask_keep`` bool [P]."""
        H, W = image_size
        heatmaps, per = [], {k: [] for k in ("batch_index", "indices", "size", "offset", "boxes", "masks", "mask_keep")}
        boundaries = []
        for b, t in enumerate(targets):
            masks = torch.as_tensor(t["masks"])
            if masks.dim() != 3 or tuple(masks.shape[-2:]) != (H, W):
                raise ValueError(f"target {b}: masks must be [N, H, W] = [N, {H}, {W}] like the images, got "
                                 f"{tuple(masks.shape)}.")
            boxes = torch.as_tensor(t["boxes"], dtype=torch.float32) if "boxes" in t else \
                masks_to_boxes(masks) if len(masks) else torch.zeros(0, 4)
            labels = torch.as_tensor(t["labels"]) if "labels" in t else torch.ones(len(boxes), dtype=torch.int64)
            if len(boxes) != len(masks):
                raise ValueError(f"target {b}: {len(boxes)} boxes but {len(masks)} masks.")
            ct = centernet_targets(boxes, labels, image_size, self.num_classes)
            heatmaps.append(ct["heatmap"])
            n = len(boxes)
            per["batch_index"].append(torch.full((n,), b, dtype=torch.int64))
            per["indices"].append(ct["indices"])
            per["size"].append(ct["size"])
            per["offset"].append(ct["offset"])
            per["boxes"].append(boxes)
            per["masks"].append(masks.to(torch.uint8))
            per["mask_keep"].append(torch.arange(n) < self.max_train_masks)
            if self.boundary_basis:
                boundaries.append(instance_boundaries(masks.to(torch.uint8)))
        out = {"heatmap": torch.stack(heatmaps), **{k: torch.cat(v) for k, v in per.items()}}
        if self.boundary_basis:
            out["boundary"] = torch.stack(boundaries)[:, None]
        return out

    def loss(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """Weighted loss terms (``loss_weights``), sum them for the total: ``heatmap`` (focal),
        ``size`` (L1, cells), ``offset`` (L1), ``mask`` (per instance the mean BCE over its box,
        i.e. YOLACT's sum in the box ÷ box area, then the mean over instances), ``boundary``
        (BCE + Dice, boundary basis only), ``mask_iou`` and ``boundary_score`` (L2, scoring only:
        against the IoU and S_boundary of the binarised mask in its scored box with the GT mask,
        both on a grid over the union of that box and the GT box). Masks are predicted in the GT
        boxes from the parameters at the GT centre cells."""
        H, W = outputs["image_size"]
        if len(targets) != outputs["heatmap"].shape[0]:
            raise ValueError(f"{len(targets)} targets for a batch of {outputs['heatmap'].shape[0]} images.")
        device = outputs["heatmap"].device
        t = {k: (v.to(device) if isinstance(v, torch.Tensor) else v)
             for k, v in self.build_targets(targets, (H, W)).items()}
        wts = self.loss_weights
        losses = {"heatmap": centernet_focal_loss(outputs["heatmap"], t["heatmap"])}
        zero = outputs["heatmap"].sum() * 0  # keeps the graph for images without instances
        bi, cells = t["batch_index"], t["indices"]
        if len(bi):
            gather = lambda m: m.flatten(2)[bi, :, cells]  # noqa: E731  [P, 2]
            losses["size"] = F.l1_loss(gather(outputs["size"]), t["size"])
            losses["offset"] = F.l1_loss(gather(outputs["offset"]), t["offset"])
        else:
            losses["size"] = losses["offset"] = zero
        keep = t["mask_keep"]
        bi_m, cells_m, boxes_m = bi[keep], cells[keep], t["boxes"][keep]
        if len(bi_m):
            params = self._instance_params(outputs, bi_m, cells_m)
            logits = self._roi_mask_logits(outputs, boxes_m, bi_m, params)
            gt = self._gt_roi_masks(t["masks"][keep], boxes_m, logits.shape[-1])
            bce = F.binary_cross_entropy_with_logits(logits.float(), gt, reduction="none")
            losses["mask"] = bce.mean((1, 2)).mean()
        else:
            losses["mask"] = zero
        if self.boundary_basis:
            logits_b = F.interpolate(outputs["boundary"], size=(H, W), mode="bilinear", align_corners=False)
            target_b = t["boundary"].float()
            losses["boundary"] = F.binary_cross_entropy_with_logits(logits_b.float(), target_b) + \
                _binary_dice_loss(logits_b, target_b)
        if self.mask_scoring:
            if len(bi_m):
                if self.score_train_boxes == "gt":
                    score_boxes, probs = boxes_m, logits.sigmoid()
                else:  # as at test time: the box predicted at the centre cell, the mask cropped to it
                    score_boxes = self._boxes_at(outputs, bi_m, cells_m)
                    with torch.no_grad():
                        probs = self._roi_mask_logits(outputs, score_boxes, bi_m, params).sigmoid()
                m, pred_b, roi_feats = self._score_inputs(outputs, probs, score_boxes, bi_m)
                # the true quality on a grid over the union of the scored box and the GT box, so that
                # neither mask is cut (the predicted one is 0 outside its box, the GT one outside its own)
                s = self.score_roi_size
                union_boxes = torch.cat([torch.minimum(score_boxes[:, :2], boxes_m[:, :2]),
                                         torch.maximum(score_boxes[:, 2:], boxes_m[:, 2:])], 1)
                gt_s = self._gt_roi_masks(t["masks"][keep], union_boxes, s) > 0.5
                pred_bin = resample_roi(m, score_boxes, union_boxes, s) > 0.5
                inter = (pred_bin & gt_s).sum((1, 2)).float()
                union = (pred_bin | gt_s).sum((1, 2)).float()
                true_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
                true_sb = boundary_score(per_instance_boundaries(pred_bin).float(),
                                         per_instance_boundaries(gt_s).float())
                iou_hat, sb_hat = self.scoring_head(m, pred_b, roi_feats)
                losses["mask_iou"] = F.mse_loss(iou_hat, true_iou)
                losses["boundary_score"] = F.mse_loss(sb_hat, true_sb)
            else:
                losses["mask_iou"] = losses["boundary_score"] = zero
        return {k: v * wts[k] for k, v in losses.items()}

    @staticmethod
    def _gt_roi_masks(masks: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
        """GT masks uint8 [N, H, W] on each box's RoI grid (nearest) → float 0/1 [N, size, size]."""
        return (roi_sample_nearest(masks, boxes, size) != 0).float()

    # ---------------------------------------------------------------- inference

    @torch.no_grad()
    def predict(self, images: torch.Tensor | Sequence[torch.Tensor], score_threshold: float = 0.05,
                top_k: int | None = None) -> list[dict]:
        """Detections per image (eval mode inside, restored after): ``boxes`` float [N, 4] (x2, y2
        inclusive, clamped to the image), ``labels`` int64 [N], ``scores`` [N] (centre confidence,
        × predicted IoU × predicted S_boundary with mask scoring), ``centre_scores`` [N],
        ``masks`` float [N, H, W] in [0, 1] (0 outside the box), the instance parameters
        (``coefficients`` [N, k(+1)] in [−1, 1] for YOLACT, ``attention`` logits [N, K(+1), 14, 14]
        for BlendMask; the bases are ``self(images)["bases"]``); with mask scoring also
        ``mask_iou`` and ``boundary_score`` [N]. N ≤ ``top_k`` (default the model's, 400): the
        3 × 3 peaks of the heatmap whose centre confidence exceeds ``score_threshold``, sorted
        by ``scores``."""
        was_training = self.training
        self.eval()
        try:
            out = self(images)
            H, W = out["image_size"]
            det = decode_centernet(out["heatmap"], out["size"], out["offset"], top_k or self.top_k)
            results = []
            for b in range(out["heatmap"].shape[0]):
                keep = det["scores"][b] > score_threshold
                boxes, scores = det["boxes"][b][keep], det["scores"][b][keep]
                boxes = _clamp_boxes(boxes, (H, W))
                cells = det["indices"][b][keep]
                bi = torch.full_like(cells, b)
                params = self._instance_params(out, bi, cells)
                roi_probs = None
                if self.masks == "yolact":
                    # the prototypes at full resolution (bilinear, the same field RoIAlign samples in training)
                    protos = F.interpolate(out["bases"][b:b + 1], size=(H, W), mode="bilinear",
                                           align_corners=False)[0]
                    masks = yolact_masks(protos, params, boxes)
                else:
                    roi_probs = self._roi_mask_logits(out, boxes, bi, params).sigmoid()
                    masks = paste_masks(roi_probs, boxes, (H, W))
                r = {"boxes": boxes, "labels": det["labels"][b][keep], "scores": scores, "centre_scores": scores,
                     "masks": masks, "coefficients" if self.masks == "yolact" else "attention": params}
                if self.mask_scoring:
                    if roi_probs is None:
                        roi_probs = self._roi_mask_logits(out, boxes, bi, params).sigmoid()
                    iou_hat, sb_hat = self.scoring_head(*self._score_inputs(out, roi_probs, boxes, bi))
                    # Mask Scoring R-CNN's convention (score = class score × predicted IoU), extended by
                    # B2Inst's boundary quality
                    r.update(scores=scores * iou_hat * sb_hat, mask_iou=iou_hat, boundary_score=sb_hat)
                order = r["scores"].argsort(descending=True)
                # float32 out, also under bf16 autocast: metrics and plots expect it
                results.append({k: (v[order].float() if v.is_floating_point() else v[order]) for k, v in r.items()})
            return results
        finally:
            self.train(was_training)
