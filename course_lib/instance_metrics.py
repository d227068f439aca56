"""Scoring instance segmentations: the DSB2018 score, COCO mask AP, Boundary IoU.

- :func:`dsb_score` compares two instance-id maps int [H, W] (0 = background): the Data
  Science Bowl 2018 metric (StarDist calls it "accuracy"), TP / (TP + FP + FN) averaged
  over IoU thresholds 0.50:0.05:0.95.
- :func:`coco_mask_ap` runs pycocotools' ``COCOeval(iouType="segm")`` on model outputs and
  the datasets' targets (``masks`` [N, H, W], ``labels`` [N]), with room for the hundreds of
  nuclei in one image (pycocotools' default keeps only the 100 best detections per image).
- :class:`CocoMaskAP` does the same one image at a time, keeping only RLEs (a whole split of
  large, crowded images does not fit in memory as masks).
- :func:`boundary_iou` (Cheng et al. 2021) compares two binary masks [H, W] by their
  boundary bands only, so it is sensitive to contour errors that mask IoU hides in large
  objects.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import torch

# 0.50, 0.55, ..., 0.95, rounded so that an IoU of exactly 0.6 (= 3/5) meets the threshold
# 0.6 as the same double, not 0.6000000000000001 from np.arange
DSB_THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


def _to_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


# ------------------------------------------------------------------------------ DSB score

def _check_id_map(name: str, ids: np.ndarray) -> None:
    if ids.dtype == bool or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{name} must be an integer instance-id map [H, W] (0 = background, one id per "
                         f"object), got {ids.dtype}: threshold probabilities and label the objects first, "
                         f"e.g. scipy.ndimage.label(prob > 0.5)[0].")
    if ids.size and ids.min() < 0:
        raise ValueError(f"{name} has negative ids (min {ids.min()}); ids must be ≥ 0 (0 = background).")


def _joint_counts(gt_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """Pixel counts of every (GT index, predicted index) pair → int [N_gt + 1, N_pred + 1], index
    0 = background, then the instances in increasing id order: one joint histogram gives all
    intersections (row/column 1:) and, summed, all areas."""
    def index(ids):  # ids → 0 (background), 1..N in increasing id order
        uniq, inv = np.unique(ids.ravel(), return_inverse=True)
        if uniq.size == 0 or uniq[0] != 0:  # no background pixel: keep index 0 for it anyway
            return uniq.size + 1, inv.ravel() + 1
        return uniq.size, inv.ravel()

    n_g, g = index(gt_ids)
    n_p, p = index(pred_ids)
    return np.bincount(g.astype(np.int64) * n_p + p, minlength=n_g * n_p).reshape(n_g, n_p)


def _pairwise_iou(gt_ids: np.ndarray, pred_ids: np.ndarray) -> np.ndarray:
    """IoU of every (GT instance, predicted instance) pair → float [N_gt, N_pred], rows and
    columns in increasing id order."""
    joint = _joint_counts(gt_ids, pred_ids)
    inter = joint[1:, 1:]
    union = joint[1:].sum(1)[:, None] + joint[:, 1:].sum(0)[None, :] - inter  # every area > 0
    return inter / union


def merges_and_splits(pred_ids, gt_ids) -> tuple[int, int]:
    """How an instance map goes wrong on touching objects: pred_ids, gt_ids int [H, W] (0 =
    background) → (merges, splits). A **merge** is a predicted instance that covers more than
    half of each of two or more true objects; a **split** is a true object of which two or
    more predicted instances each cover at least a quarter."""
    pred_ids, gt_ids = _to_numpy(pred_ids), _to_numpy(gt_ids)
    _check_id_map("pred_ids", pred_ids)
    _check_id_map("gt_ids", gt_ids)
    if pred_ids.shape != gt_ids.shape:
        raise ValueError(f"pred_ids {pred_ids.shape} and gt_ids {gt_ids.shape} must have the same [H, W]")
    joint = _joint_counts(gt_ids, pred_ids)
    gt_area = joint[1:].sum(1)
    if gt_area.size == 0 or joint.shape[1] == 1:
        return 0, 0
    cover = joint[1:, 1:] / gt_area[:, None]  # [N_gt, N_pred]: the fraction of each true object
    return int(((cover > 0.5).sum(0) >= 2).sum()), int(((cover >= 0.25).sum(1) >= 2).sum())


def dsb_score(pred_ids, gt_ids, thresholds=DSB_THRESHOLDS) -> dict:
    """The DSB2018 score of a predicted instance-id map against the ground truth.

    ``pred_ids``, ``gt_ids``: int [H, W] (NumPy or torch), 0 = background, any other value
    is one instance (ids need not be contiguous or match between the two maps).
    ``thresholds``: IoU thresholds in [0.5, 1), default 0.50, 0.55, ..., 0.95.

    At threshold t a prediction and a GT instance match when their IoU > t; TP = matches,
    FP = unmatched predictions, FN = unmatched GT; the score at t is TP / (TP + FP + FN) in
    [0, 1]. Both maps empty → 1.0 at every threshold (nothing to find, nothing found); one
    empty and the other not → 0.0.

    Returns {"score": float, the mean over thresholds; "per_threshold": float [T];
    "thresholds": [T]; "tp", "fp", "fn": int [T] (sum these over a dataset for a pooled
    score)}.
    """
    pred, gt = _to_numpy(pred_ids), _to_numpy(gt_ids)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred_ids {pred.shape} and gt_ids {gt.shape} must be instance-id maps [H, W] of the "
                         f"same shape; for a batch, call dsb_score once per image.")
    _check_id_map("pred_ids", pred)
    _check_id_map("gt_ids", gt)
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0 or not ((t >= 0.5) & (t < 1)).all():
        raise ValueError(f"thresholds must lie in [0.5, 1) (got {t.tolist()}): below 0.5 one object can "
                         f"overlap several others by more than t, and matching them needs an optimal "
                         f"one-to-one assignment, which dsb_score does not do.")
    iou = _pairwise_iou(gt, pred)  # [N_gt, N_pred]
    n_gt, n_pred = iou.shape
    # Matches are unique for t ≥ 0.5: the instances of one map are disjoint, so if a GT
    # object g had IoU > 0.5 with two predictions p1 and p2, then |g ∩ p_i| > |g ∪ p_i| / 2
    # ≥ |g| / 2 for both, and |g ∩ p1| + |g ∩ p2| > |g|, impossible for disjoint p1, p2 (and
    # likewise with the roles swapped). So TP = the number of GT objects whose best IoU > t.
    best = iou.max(1) if n_pred else np.zeros(n_gt)
    tp = (best[:, None] > t[None, :]).sum(0)
    fp, fn = n_pred - tp, n_gt - tp
    denom = tp + fp + fn
    per_t = np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)
    return {"score": float(per_t.mean()), "per_threshold": per_t, "thresholds": t,
            "tp": tp, "fp": fp, "fn": fn}


# ------------------------------------------------------------------------------ COCO mask AP

def _binary_masks(masks, where: str) -> np.ndarray:
    """Masks bool/uint8 [N, H, W], or float probabilities [N, 1, H, W] / [N, H, W] (kept
    where > 0.5, as torchvision's Mask R-CNN evaluation does) → uint8 [N, H, W] of 0/1."""
    m = _to_numpy(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3:
        raise ValueError(f"{where}: masks must be [N, H, W] (or Mask R-CNN's [N, 1, H, W]), got shape {m.shape}.")
    if np.issubdtype(m.dtype, np.floating):
        return (m > 0.5).astype(np.uint8)
    if m.size and m.dtype != bool and (m.min() < 0 or m.max() > 1):
        raise ValueError(f"{where}: integer masks must hold 0/1 (got values {m.min()}..{m.max()}); pass bool "
                         f"masks, or float probabilities in [0, 1] (thresholded at 0.5).")
    return m.astype(np.uint8)


def _annotations(masks: np.ndarray, labels, image_id: int, first_id: int, scores=None) -> list[dict]:
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0)))  # Fortran-ordered uint8 [H, W, N]
    # areas from the masks: pycocotools 2.0.11's mask.area fails on lists of more than 255 RLEs
    areas, boxes = masks.sum((1, 2), dtype=np.int64), mask_utils.toBbox(rles)
    anns = []
    for k, rle in enumerate(rles):
        # annotation ids must be ≥ 1: COCOeval marks "unmatched" with id 0
        ann = {"id": first_id + k, "image_id": image_id, "category_id": int(labels[k]), "segmentation": rle,
               "area": float(areas[k]), "bbox": boxes[k].tolist(), "iscrowd": 0}
        if scores is not None:
            ann["score"] = float(scores[k])
        anns.append(ann)
    return anns


class CocoMaskAP:
    """COCO mask AP accumulated one image at a time: :meth:`add` RLE-encodes an image's
    predicted and true masks at once (pycocotools), so only the compact RLEs are kept and a
    split of large, crowded images (hundreds of full-resolution masks each) fits in memory;
    :meth:`compute` runs ``COCOeval(iouType="segm")``. :func:`coco_mask_ap` describes the
    inputs and the result."""

    def __init__(self, max_dets: int = 1000):
        if not (isinstance(max_dets, int) and max_dets >= 1):
            raise ValueError(f"max_dets must be a whole number ≥ 1, got {max_dets!r}.")
        self.max_dets = max_dets
        self.images: list[dict] = []
        self.gt_anns: list[dict] = []
        self.dt_anns: list[dict] = []
        self.categories: set[int] = set()

    def add(self, pred: dict, target: dict) -> None:
        """One image: ``pred`` {"masks", "scores", "labels"} and its ``target`` {"masks", "labels"}."""
        i = len(self.images)
        gt_masks = _binary_masks(target["masks"], f"targets[{i}]")
        h, w = gt_masks.shape[1:]
        gt_labels = _to_numpy(target["labels"]).reshape(-1)
        n = len(_to_numpy(pred["scores"]).reshape(-1))
        dt_masks = _binary_masks(pred["masks"], f"preds[{i}]") if n else np.zeros((0, h, w), np.uint8)
        dt_labels, scores = _to_numpy(pred["labels"]).reshape(-1), _to_numpy(pred["scores"]).reshape(-1)
        if dt_masks.shape[1:] != (h, w) or len(dt_masks) != n or len(dt_labels) != n:
            raise ValueError(f"preds[{i}]: masks {dt_masks.shape}, scores [{n}] and labels [{len(dt_labels)}] must "
                             f"describe the same N detections at the target's size ({h}, {w}); resize the "
                             f"masks to the image the target describes.")
        if len(gt_labels) != len(gt_masks):
            raise ValueError(f"targets[{i}]: {len(gt_masks)} masks but {len(gt_labels)} labels.")
        self.images.append({"id": i, "height": h, "width": w})
        self.gt_anns += _annotations(gt_masks, gt_labels, i, len(self.gt_anns) + 1)
        self.dt_anns += _annotations(dt_masks, dt_labels, i, len(self.dt_anns) + 1, scores)
        self.categories |= {int(c) for c in gt_labels} | {int(c) for c in dt_labels}

    def compute(self) -> dict:
        """The scores of every image added so far (see :func:`coco_mask_ap`)."""
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        keys = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR")
        if not self.gt_anns:
            return dict.fromkeys(keys, math.nan)

        cats = [{"id": c, "name": str(c)} for c in sorted(self.categories)]
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco_gt, coco_dt = COCO(), COCO()
            coco_gt.dataset = {"images": self.images, "categories": cats, "annotations": self.gt_anns}
            coco_dt.dataset = {"images": self.images, "categories": cats, "annotations": self.dt_anns}
            coco_gt.createIndex()
            coco_dt.createIndex()
            E = COCOeval(coco_gt, coco_dt, iouType="segm")
            # evaluation keeps the maxDets[-1] best detections per image; the default [1, 10, 100]
            # would drop true positives in images with more than 100 nuclei
            E.params.maxDets = [m for m in (1, 10) if m < self.max_dets] + [self.max_dets]
            E.evaluate()
            E.accumulate()
        precision = E.eval["precision"]  # [T IoU thresholds, R recall points, K categories, A areas, M maxDets]
        recall = E.eval["recall"]        # [T, K, A, M]; -1 where a category has no GT in the area range
        iou_thrs = E.params.iouThrs

        def mean_valid(x: np.ndarray) -> float:
            x = x[x > -1]
            return float(x.mean()) if x.size else math.nan

        t50, t75 = (int(np.argmin(np.abs(iou_thrs - v))) for v in (0.5, 0.75))
        area = {name: j for j, name in enumerate(E.params.areaRngLbl)}  # all, small, medium, large
        return {"AP": mean_valid(precision[:, :, :, area["all"], -1]),
                "AP50": mean_valid(precision[t50, :, :, area["all"], -1]),
                "AP75": mean_valid(precision[t75, :, :, area["all"], -1]),
                "AP_small": mean_valid(precision[:, :, :, area["small"], -1]),
                "AP_medium": mean_valid(precision[:, :, :, area["medium"], -1]),
                "AP_large": mean_valid(precision[:, :, :, area["large"], -1]),
                "AR": mean_valid(recall[:, :, area["all"], -1])}


def coco_mask_ap(preds: list[dict], targets: list[dict], max_dets: int = 1000) -> dict:
    """COCO mask AP of instance predictions, with pycocotools' ``COCOeval(iouType="segm")``.

    ``preds``: one dict per image, {"masks": bool/uint8 0/1 [N, H, W], or float probabilities
    [N, 1, H, W] / [N, H, W] (Mask R-CNN's output), foreground where > 0.5; "scores": float [N];
    "labels": int [N]}. ``targets``: the datasets' target dicts ({"masks": uint8 [M, H, W],
    "labels": int [M], ...}), in the same order. ``max_dets``: the detections kept per image
    (the highest-scored); pycocotools' default 100 would cut crowded nuclei images short.

    Returns floats in [0, 1]: "AP" (mean over IoU 0.50:0.05:0.95 and categories), "AP50",
    "AP75", "AP_small" / "AP_medium" / "AP_large" (COCO's area ranges: < 32², 32²–96², > 96²
    pixels; most nuclei are small), "AR" (recall at ``max_dets``, mean over IoU thresholds).
    A value is nan when no ground truth falls in its range (e.g. no GT at all).
    """
    if len(preds) != len(targets):
        raise ValueError(f"preds ({len(preds)} images) and targets ({len(targets)}) must list the same images "
                         f"in the same order.")
    acc = CocoMaskAP(max_dets)
    for pred, target in zip(preds, targets):
        acc.add(pred, target)
    return acc.compute()


# ------------------------------------------------------------------------------ Boundary IoU

def _binary_mask(name: str, mask) -> np.ndarray:
    m = _to_numpy(mask)
    if m.dtype != bool and (not np.issubdtype(m.dtype, np.integer) or (m.size and (m.min() < 0 or m.max() > 1))):
        raise ValueError(f"{name} must be a binary mask [H, W] (bool, or integers 0/1), got {m.dtype} with values "
                         f"{m.min() if m.size else '-'}..{m.max() if m.size else '-'}: threshold probabilities "
                         f"(p > 0.5) or select one instance of an id map (ids == k).")
    return m.astype(bool)


def boundary_band(mask: np.ndarray, d: int, metric: str = "chessboard") -> np.ndarray:
    """The boundary band of a binary mask bool [H, W] → bool [H, W]: the mask pixels within
    distance ``d`` of a pixel outside the mask. Outside the image counts as outside the
    mask (the official code pads the image with a ring of zeros), so a mask cut by the image
    border has a band along it. ``metric``: "chessboard" (what the official code's ``d``
    erosions with a 3×3 square give) or "euclidean"."""
    from scipy import ndimage

    padded = np.pad(mask, 1)  # the ring of zeros: the outside of the image
    if metric == "chessboard":
        dist = ndimage.distance_transform_cdt(padded, metric="chessboard")
    elif metric == "euclidean":
        dist = ndimage.distance_transform_edt(padded)
    else:
        raise ValueError(f"metric must be 'chessboard' (the official Boundary IoU code) or 'euclidean', "
                         f"got {metric!r}.")
    return mask & (dist[1:-1, 1:-1] <= d)


def boundary_iou(pred_mask, gt_mask, dilation_ratio: float = 0.02, metric: str = "chessboard") -> float:
    """Boundary IoU (Cheng et al., CVPR 2021) of two binary masks bool [H, W] → float in [0, 1].

    d = max(1, round(dilation_ratio × image diagonal)) pixels; each mask's band is its pixels
    within d of its outside (:func:`boundary_band`, image border included); the result is
    |band_pred ∩ band_gt| / |band_pred ∪ band_gt|. Both bands empty (both masks empty) → 1.0
    by convention; one empty → 0.0.

    ``metric="chessboard"`` (default) reproduces the official code (boundary-iou-api, which
    erodes d times with a 3×3 square, so a band reaches d pixels diagonally too);
    ``"euclidean"`` uses a disk of radius d instead, as the paper's wording "within distance
    d" reads literally. The bands differ only where the nearest outside pixel lies diagonally
    (concave corners, curved contours). d rounds half to even, as Python's round in the
    official code does.
    """
    pred, gt = _binary_mask("pred_mask", pred_mask), _binary_mask("gt_mask", gt_mask)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise ValueError(f"pred_mask {pred.shape} and gt_mask {gt.shape} must be binary masks [H, W] of the same "
                         f"shape (one instance each; for [N, H, W] stacks call boundary_iou per instance).")
    if not (math.isfinite(dilation_ratio) and dilation_ratio > 0):
        raise ValueError(f"dilation_ratio must be > 0 (a fraction of the image diagonal, 0.02 in the paper), "
                         f"got {dilation_ratio!r}.")
    h, w = gt.shape
    d = max(1, int(round(dilation_ratio * math.hypot(h, w))))
    bp, bg = boundary_band(pred, d, metric), boundary_band(gt, d, metric)
    union = int((bp | bg).sum())
    return float((bp & bg).sum() / union) if union else 1.0
