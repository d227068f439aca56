"""Segmentation metrics: confusion matrix, IoU, Dice, pixel accuracy, boundary F-measure.

Conventions: the confusion matrix ``cm`` is int64 [C, C] with rows = ground truth and
columns = prediction. Pixels whose target equals ``ignore_index`` are skipped. Everything
is vectorised (``bincount`` / convolutions), runs on any device, and has no Python loop
over pixels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """Confusion matrix of integer label maps of any (equal) shape → int64 [C, C].

    ``cm[t, p]`` counts pixels with ground truth ``t`` predicted as ``p``. Pixels whose
    target is ``ignore_index`` are skipped; any other value outside 0..C-1 in ``pred`` or
    ``target`` raises ValueError.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have "
                         f"the same shape (did you forget argmax over the class dim?)")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("pred and target must be integer label maps, not float tensors.")
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    if ignore_index is not None:
        keep = target != ignore_index
        pred, target = pred[keep], target[keep]
    for name, t in (("target", target), ("pred", pred)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
            bad = t[(t < 0) | (t >= num_classes)]
            raise ValueError(
                f"{name} has values {torch.unique(bad)[:10].tolist()} outside 0..{num_classes - 1}"
                + (f" that are not ignore_index={ignore_index}" if name == "target" else "")
                + "; check num_classes and the label mapping.")
    idx = target * num_classes + pred
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def check_confusion_matrix(cm: torch.Tensor) -> torch.Tensor:
    """Return ``cm`` as float64 if it is a confusion matrix: a square [C, C] tensor of finite,
    whole, non-negative counts; else raise ValueError saying what it is instead."""
    if not isinstance(cm, torch.Tensor):
        cm = torch.as_tensor(cm)
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1] or cm.numel() == 0:
        raise ValueError(f"Expected a square [C, C] confusion matrix, got shape {tuple(cm.shape)}. "
                         f"Build it with confusion_matrix(pred, target, num_classes) from label maps.")
    x = cm.double()
    if not bool(torch.isfinite(x).all()):
        raise ValueError("The confusion matrix has NaN or infinite entries; it must hold finite pixel counts.")
    if bool((x < 0).any()):
        raise ValueError(f"The confusion matrix has negative counts (min {x.min().item():g}); it must hold "
                         f"pixel counts ≥ 0 (was it built by subtracting matrices?).")
    if bool((x != x.round()).any()):
        raise ValueError("The confusion matrix has fractional entries; it must hold whole-number pixel "
                         "counts (a row-normalised matrix changes IoU: pass the raw counts).")
    return x


def _tp_fp_fn(cm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    cm = check_confusion_matrix(cm)
    tp = cm.diagonal()
    return tp, cm.sum(0) - tp, cm.sum(1) - tp


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """IoU_c = TP / (TP + FP + FN) → float [C]; NaN for a class in neither GT nor prediction."""
    tp, fp, fn = _tp_fp_fn(cm)
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.nan).float()


def dice_per_class(cm: torch.Tensor) -> torch.Tensor:
    """Dice_c = 2TP / (2TP + FP + FN) (= F1) → float [C]; NaN where the class is absent."""
    tp, fp, fn = _tp_fp_fn(cm)
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.nan).float()


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes present in GT or prediction (nan-mean)."""
    return float(torch.nanmean(iou_per_class(cm)))


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Fraction of (non-ignored) pixels labelled correctly."""
    cm = check_confusion_matrix(cm)
    total = cm.sum()
    return float(cm.diagonal().sum().double() / total) if total > 0 else math.nan


# ---------------------------------------------------------------- boundary F-measure (DAVIS)

def boundary_map(mask: torch.Tensor) -> torch.Tensor:
    """Boundary pixels of binary masks [..., H, W] → bool [..., H, W] (DAVIS ``seg2bmap``).

    A pixel is on the boundary when it differs from its right, bottom or bottom-right
    neighbour; the last row compares only with the right neighbour, the last column only
    with the bottom one, and the bottom-right corner is never a boundary.
    """
    seg = mask.bool()
    right = torch.zeros_like(seg)
    below = torch.zeros_like(seg)
    diag = torch.zeros_like(seg)
    right[..., :, :-1] = seg[..., :, 1:]
    below[..., :-1, :] = seg[..., 1:, :]
    diag[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ right) | (seg ^ below) | (seg ^ diag)
    b[..., -1, :] = seg[..., -1, :] ^ right[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ below[..., :, -1]
    b[..., -1, -1] = False
    return b


def label_boundaries(labels: torch.Tensor) -> torch.Tensor:
    """Pixels of a label map [H, W] whose label differs from a 4-neighbour's → bool [H, W]
    (both sides of every edge between two regions, void included as a region)."""
    b = torch.zeros_like(labels, dtype=torch.bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    b[1:, :] |= dy
    b[:-1, :] |= dy
    return b


def trimap_band(labels: torch.Tensor, width: int) -> torch.Tensor:
    """The "trimap" of DeepLab v2 (Fig. 10): bool [H, W], True within ``width`` pixels of a
    boundary of the label map [H, W]. Score a prediction only there with
    ``confusion_matrix(pred, torch.where(band, target, ignore_index), ...)``."""
    if isinstance(width, bool) or not (isinstance(width, int) or float(width).is_integer()) or width < 1:
        raise ValueError(f"width must be a whole number of pixels ≥ 1, got {width!r}.")
    width = int(width)
    return dilate(label_boundaries(labels), width - 1)


def tolerance_pixels(tolerance: float, height: int, width: int) -> int:
    """Tolerance < 1 is a fraction of the image diagonal (rounded up); ≥ 1 is pixels."""
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number ≥ 0 (< 1: fraction of the image "
                         f"diagonal, ≥ 1: pixels), got {tolerance!r}.")
    if tolerance >= 1:
        return int(round(tolerance))
    return int(math.ceil(tolerance * math.hypot(height, width)))


def disk(radius: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Disk structuring element float [2r+1, 2r+1]: points with x² + y² ≤ r²."""
    r = torch.arange(-radius, radius + 1, device=device)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2).float()


def dilate(mask: torch.Tensor, radius: float) -> torch.Tensor:
    """Binary dilation of bool [..., H, W] by a disk of ``radius`` pixels (x² + y² ≤ r²; the
    radius may be fractional, e.g. √2: the offsets are whole pixels either way).

    A disk is a stack of horizontal segments: row dy spans |dx| ≤ ⌊√(r² − dy²)⌋. So the
    dilation is the OR over dy of a horizontal "any pixel set within ±half" (built up one
    shift at a time, kept for each half-width the disk needs) shifted by dy rows: exact, about
    4r in-place ORs of the whole tensor, and on a CPU far faster than conv2d with the disk,
    a max-pool per half-width or prefix sums (whose cumsum alone costs more).
    """
    if radius < 1:
        return mask.bool()
    r2 = math.floor(radius * radius + 1e-9)  # offsets are integers: dy² + dx² ≤ ⌊r²⌋
    reach = math.isqrt(r2)
    x = mask.bool()
    h, w = x.shape[-2:]
    halves = {math.isqrt(r2 - dy * dy) for dy in range(0, min(reach, h - 1) + 1)}
    rows: dict[int, torch.Tensor] = {}
    seg = x.clone()
    for half in range(0, max(halves) + 1):
        if 0 < half < w:  # seg = any pixel set within ±half along the row
            seg[..., half:] |= x[..., :-half]
            seg[..., :-half] |= x[..., half:]
        if half in halves:
            rows[half] = seg.clone() if half < max(halves) else seg
    out = rows[math.isqrt(r2)].clone()  # dy = 0
    for dy in range(1, min(reach, h - 1) + 1):
        s = rows[math.isqrt(r2 - dy * dy)]
        out[..., dy:, :] |= s[..., :-dy, :]
        out[..., :-dy, :] |= s[..., dy:, :]
    return out


def boundary_f1(pred: torch.Tensor, target: torch.Tensor, tolerance: float = 0.008) -> float:
    """DAVIS boundary F-measure of binary masks [H, W] (bool, or any dtype holding only 0
    and 1; anything else, e.g. probabilities or a label map, raises ValueError).

    ``tolerance`` < 1: fraction of the image diagonal (ceil to pixels); ≥ 1: pixels.
    P = |B_pred ∩ dil(B_gt)| / |B_pred|, R = |B_gt ∩ dil(B_pred)| / |B_gt|, F = 2PR/(P+R).
    Both boundary maps empty → 1.0; exactly one empty → 0.0.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"boundary_f1 takes two binary masks [H, W] of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}.")
    for name, m in (("pred", pred), ("target", target)):
        if m.dtype != torch.bool and not bool(((m == 0) | (m == 1)).all()):
            raise ValueError(f"boundary_f1 needs binary masks (bool or {{0, 1}}), but {name} holds other "
                             f"values, e.g. {torch.unique(m[(m != 0) & (m != 1)])[:3].tolist()}: threshold "
                             f"probabilities (p > 0.5), or compare a label map with a class (labels == c).")
    r = tolerance_pixels(tolerance, *pred.shape)
    return float(_boundary_f1_stack(pred[None].bool(), target[None].bool(), r)[0])


def _boundary_f1_stack(pred: torch.Tensor, target: torch.Tensor, radius: int) -> torch.Tensor:
    """Boundary F of K mask pairs at once: bool [K, H, W] each → float64 [K] (the rules of
    :func:`boundary_f1`, one dilation call for all K)."""
    bp, bg = boundary_map(pred), boundary_map(target)
    n_p, n_g = bp.sum((-2, -1)).double(), bg.sum((-2, -1)).double()
    dil = dilate(torch.cat([bg, bp]), radius)
    k = pred.shape[0]
    precision = (bp & dil[:k]).sum((-2, -1)).double() / n_p.clamp(min=1)
    recall = (bg & dil[k:]).sum((-2, -1)).double() / n_g.clamp(min=1)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-300),
                    torch.zeros_like(precision))
    f = torch.where((n_p == 0) | (n_g == 0), torch.zeros_like(f), f)
    return torch.where((n_p == 0) & (n_g == 0), torch.ones_like(f), f)


def semantic_boundary_f1(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                         ignore_index: int | None = 255, tolerance: float = 0.008) -> torch.Tensor:
    """Per-class boundary F of one label map [H, W] → float [C], NaN for classes not in GT.

    For each class c present in the ground truth, ``boundary_f1(pred == c, target == c)``
    with void pixels set to background in both masks (so no boundary is scored against
    void). Average the per-image values over images where the class occurs (see
    :class:`SegmentationMeter`).
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(f"semantic_boundary_f1 takes label maps [H, W], got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}.")
    if pred.is_floating_point() or target.is_floating_point():
        raise ValueError("semantic_boundary_f1 takes integer label maps, not float tensors "
                         "(take logits.argmax(0) first).")
    valid = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    out = torch.full((num_classes,), torch.nan)
    present = [c for c in torch.unique(target[valid]).tolist() if 0 <= c < num_classes]
    if present:
        cls = torch.tensor(present, device=target.device)[:, None, None]
        r = tolerance_pixels(tolerance, *target.shape)
        # every class present at once: one dilation of a [K, H, W] stack, same rules as boundary_f1
        out[present] = _boundary_f1_stack((pred[None] == cls) & valid, (target[None] == cls) & valid, r).float().cpu()
    return out


class SegmentationMeter:
    """Accumulates a confusion matrix (and optionally per-class boundary F) over batches.

    ``update(pred, target)`` takes label maps [B, H, W] (or [H, W]).
    ``compute()`` → dict with ``miou``, ``pixel_acc``, ``iou`` [C], ``dice`` [C], ``cm``
    and, when ``boundary=True``, ``bf1`` [C] (mean over images where the class occurs) and
    ``mbf1`` (nan-mean over classes); with ``trimap_widths``, ``trimap`` {width: mIoU counted
    only within that many pixels of a ground-truth boundary} (see :func:`trimap_band`).
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255, boundary: bool = False,
                 tolerance: float = 0.008, trimap_widths: tuple[int, ...] = ()):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.boundary, self.tolerance = boundary, tolerance
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.trimap_cms = {w: torch.zeros(num_classes, num_classes, dtype=torch.int64) for w in trimap_widths}
        self.bf_sum = torch.zeros(num_classes, dtype=torch.float64)
        self.bf_count = torch.zeros(num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index).cpu()
        if self.trimap_cms:
            void = 255 if self.ignore_index is None else self.ignore_index
            for pi, ti in zip(pred.reshape(-1, *pred.shape[-2:]), target.reshape(-1, *target.shape[-2:])):
                for w, cm in self.trimap_cms.items():
                    cm += confusion_matrix(pi, torch.where(trimap_band(ti, w), ti, void), self.num_classes, void).cpu()
        if self.boundary:
            p, t = pred.reshape(-1, *pred.shape[-2:]).cpu(), target.reshape(-1, *target.shape[-2:]).cpu()
            for pi, ti in zip(p, t):
                f = semantic_boundary_f1(pi, ti, self.num_classes, self.ignore_index, self.tolerance)
                seen = ~torch.isnan(f)
                self.bf_sum[seen] += f[seen].double()
                self.bf_count[seen] += 1

    def compute(self) -> dict:
        out = {"miou": mean_iou(self.cm), "pixel_acc": pixel_accuracy(self.cm),
               "iou": iou_per_class(self.cm), "dice": dice_per_class(self.cm), "cm": self.cm.clone()}
        if self.boundary:
            bf1 = torch.where(self.bf_count > 0, self.bf_sum / self.bf_count.clamp(min=1), torch.nan).float()
            out["bf1"] = bf1
            out["mbf1"] = float(torch.nanmean(bf1))
        if self.trimap_cms:
            out["trimap"] = {w: mean_iou(cm) for w, cm in self.trimap_cms.items()}
        return out
