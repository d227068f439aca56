"""Semantic boundaries: per-class edge maps from a label map, as SBCB (Ishikawa et al. 2023)
generates them on the fly for its training-only boundary head.

For class k, with K = (mask == k) and V = (mask == ignore_index) (void):

    inner = distance from each pixel of K ∪ V to the nearest pixel outside K ∪ V (0 elsewhere)
    outer = distance from each pixel outside K to the nearest pixel of K       (0 inside K)
    edge_k = 0 < inner + outer ≤ radius

so a class has a band of about ``radius`` pixels on each side of its border with the other
classes, and none against void (void counts as inside every class). SBCB computes the
distances with OpenCV's approximate L2 transform; here they are exact Euclidean distances.

The edges are computed with disk dilations instead of distance transforms, for a whole batch
and every class at once, on any device, so they can be drawn from the *augmented* labels inside
the training step:
- a pixel of K is an edge iff a pixel of O = not (K ∪ V) lies within ``radius``;
- a pixel of O is an edge iff a pixel of K lies within ``radius``;
- a void pixel (not in K, not in O) is an edge iff for some distance d that a pixel grid can
  realise (d = √n), K lies within d and O within radius − d: then inner + outer ≤ radius.

For instance segmentation, :func:`instance_boundaries` gives the image-level boundary map of a
target's instance masks (B2Inst, BMask R-CNN): a Laplacian per instance, OR over instances.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .metrics import dilate


def _grid_distances(upto: float) -> list[float]:
    """The distances √n (n = 1, 2, ...) between pixel centres that are ≤ ``upto``."""
    return [math.sqrt(n) for n in range(1, math.floor(upto * upto + 1e-9) + 1)
            if any(a * a + b * b == n for a in range(math.isqrt(n) + 1) for b in range(a, math.isqrt(n) + 1))]


def semantic_edges(mask: torch.Tensor, num_classes: int, radius: float = 2.0,
                   ignore_index: int = 255) -> torch.Tensor:
    """Per-class semantic edges of a label map: int [H, W] or [B, H, W] (values 0..C−1 or
    ``ignore_index``) → bool [C, H, W] or [B, C, H, W], on the mask's device. SBCB's definition
    (module docstring) with exact Euclidean distances; a class absent from an image has no edges."""
    if mask.dtype.is_floating_point or mask.dtype == torch.bool or mask.dim() not in (2, 3):
        raise ValueError(f"semantic_edges takes an integer label map [H, W] or [B, H, W], got "
                         f"{tuple(mask.shape)} of {mask.dtype}; pass labels, not probabilities or one-hot masks.")
    if radius < 1:
        raise ValueError(f"radius must be ≥ 1 pixel (got {radius}); SBCB uses 2.")
    single = mask.dim() == 2
    m = mask[None] if single else mask
    bad = (m != ignore_index) & ((m < 0) | (m >= num_classes))
    if bad.any():
        raise ValueError(f"label values must be in 0..{num_classes - 1} or ignore_index={ignore_index}; found "
                         f"{torch.unique(m[bad])[:5].tolist()}: is num_classes right?")
    classes = torch.arange(num_classes, device=m.device)[None, :, None, None]
    inside = m[:, None] == classes                             # K   [B, C, H, W]
    void = (m == ignore_index)[:, None]                        # V   [B, 1, H, W]
    other = ~(inside | void)                                   # O   [B, C, H, W]
    edges = (inside & dilate(other, radius)) | (other & dilate(inside, radius))
    if void.any():
        void_edge = torch.zeros_like(edges)
        for d in _grid_distances(radius - 1):                  # inner and outer are both ≥ 1 at a void pixel
            void_edge |= dilate(inside, d) & dilate(other, radius - d)
        edges |= void & ~inside & void_edge
    return edges[0] if single else edges


def semantic_edges_reference(mask, num_classes: int, radius: float = 2.0, ignore_index: int = 255):
    """The definition read literally, one class at a time with SciPy's exact Euclidean distance
    transform: label map int [H, W] (NumPy or torch) → bool NumPy [C, H, W]. Slow; the oracle
    that tests and benchmarks compare :func:`semantic_edges` with."""
    import numpy as np
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask)
    out = np.zeros((num_classes,) + mask.shape, bool)
    void = mask == ignore_index
    for k in range(num_classes):
        inside = mask == k
        if not inside.any():
            continue  # an absent class has no edges
        kv = inside | void
        # EDT(a) = distance from each nonzero pixel of a to the nearest zero pixel
        inner = distance_transform_edt(kv) if (~kv).any() else np.where(kv, np.inf, 0.0)
        outer = distance_transform_edt(~inside)
        total = inner + outer
        out[k] = (total > 0) & (total <= radius + 1e-9)
    return out


def edge_pr_counts(probs: torch.Tensor, edges: torch.Tensor, thresholds: torch.Tensor,
                   tolerance: float = 2.0) -> torch.Tensor:
    """Counts for precision–recall of per-class edge maps at each threshold, to be summed over a
    dataset: probs float [B, K, H, W] in [0, 1], edges bool [B, K, H, W] (ground truth),
    thresholds [T] → int64 [T, K, 4] = (predicted pixels within ``tolerance`` of a true edge,
    predicted pixels, true edge pixels within ``tolerance`` of a prediction, true edge pixels).

    Matching is by distance (a disk dilation, as the DAVIS boundary F does), not the one-to-one
    pixel assignment of the BSDS benchmark that pyEdgeEval implements, so it is more lenient
    where several predicted pixels crowd one true edge pixel."""
    if probs.shape != edges.shape or probs.dim() != 4:
        raise ValueError(f"probs and edges must both be [B, K, H, W], got {tuple(probs.shape)} and {tuple(edges.shape)}.")
    gt_near = dilate(edges, tolerance)
    out = torch.zeros(len(thresholds), probs.shape[1], 4, dtype=torch.int64)
    for i, t in enumerate(thresholds.tolist()):
        pred = probs >= t
        out[i, :, 0] = (pred & gt_near).sum((0, 2, 3)).cpu()
        out[i, :, 1] = pred.sum((0, 2, 3)).cpu()
        out[i, :, 2] = (edges & dilate(pred, tolerance)).sum((0, 2, 3)).cpu()
        out[i, :, 3] = edges.sum((0, 2, 3)).cpu()
    return out


def ods_f(counts: torch.Tensor) -> dict:
    """ODS ("optimal dataset scale") from summed :func:`edge_pr_counts` [T, K, 4]: per class,
    precision and recall at every threshold and the best F over thresholds (one threshold for
    the whole dataset, chosen per class); ``mean_f``: the mean over classes with any true edge."""
    c = counts.double()
    precision = c[..., 0] / c[..., 1].clamp(min=1)
    recall = c[..., 2] / c[..., 3].clamp(min=1)
    f = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    best_f, best_t = f.max(0)
    present = c[0, :, 3] > 0
    return {"precision": precision, "recall": recall, "f": f, "best_f": best_f, "best_threshold_index": best_t,
            "mean_f": float(best_f[present].mean()) if present.any() else float("nan")}


_BLOCK_VALUES = 1 << 26  # instance_boundaries: at most ~64 M float values (256 MB) per conv2d


def instance_boundaries(masks: torch.Tensor) -> torch.Tensor:
    """The image-level boundary map of all instances, as B2Inst supervises its boundary
    basis and BMask R-CNN builds its boundary targets: masks bool/uint8 [N, H, W] (0/1) →
    uint8 [H, W] of 0/1.

    Per instance, the 0/1 mask is convolved with the Laplacian [[-1,-1,-1], [-1,8,-1],
    [-1,-1,-1]] (zero padding), clamped ≥ 0 and thresholded > 0.1: the mask pixels with a
    non-mask 8-neighbour (pixels on the image border included). The OR over instances keeps
    both sides of the line between touching objects, which a boundary of the merged
    foreground would lose. N = 0 (an empty [0, H, W] tensor) → zeros [H, W].
    """
    masks = torch.as_tensor(masks)
    if masks.dim() != 3 or masks.is_floating_point():
        raise ValueError(f"instance_boundaries takes instance masks bool/uint8 [N, H, W] (a target's 'masks'), got "
                         f"{tuple(masks.shape)} of {masks.dtype}; threshold probabilities first (p > 0.5), and "
                         f"pass an empty [0, H, W] tensor for an image without instances.")
    n, h, w = masks.shape
    out = torch.zeros(h, w, dtype=torch.bool, device=masks.device)
    if n == 0:
        return out.to(torch.uint8)
    laplacian = torch.full((3, 3), -1.0, device=masks.device)
    laplacian[1, 1] = 8.0
    # One grouped conv2d per block of instances: each instance is a channel with its own copy
    # of the kernel (on a CPU about 2× faster than the same conv with the instances as a
    # batch). Blocks bound the float copy to _BLOCK_VALUES: a 1000 × 1000 image with 300
    # nuclei would otherwise need 1.2 GB, twice.
    block = max(1, _BLOCK_VALUES // max(1, h * w))
    for chunk in (masks != 0).split(block):
        n_k = len(chunk)
        lap = torch.nn.functional.conv2d(chunk[None].float(), laplacian.expand(n_k, 1, 3, 3).contiguous(),
                                         padding=1, groups=n_k)  # [1, n_k, H, W]
        out |= (lap[0] > 0.1).any(0)  # BMask R-CNN clamps at 0 first: a no-op before a threshold > 0
    return out.to(torch.uint8)


def touching_pixels(ids) -> np.ndarray:
    """Where instances touch: ids int [H, W] (0 = background, k > 0 = instance k) → bool [H, W],
    True at each instance pixel with a 4-neighbour in another instance (both sides of a contact
    line). Used to find crowded regions for figures."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"touching_pixels takes an instance-id map [H, W], got shape {ids.shape}; "
                         f"turn instance masks [N, H, W] into one with masks_to_id_map first.")
    touching = np.zeros(ids.shape, bool)
    for here, there in ((np.s_[1:, :], np.s_[:-1, :]), (np.s_[:, 1:], np.s_[:, :-1])):  # vertical, horizontal pairs
        contact = (ids[here] != ids[there]) & (ids[here] > 0) & (ids[there] > 0)
        touching[here] |= contact
        touching[there] |= contact
    return touching
