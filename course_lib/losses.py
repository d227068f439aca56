"""Losses for imbalanced segmentation and the class weights they use."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset


def pixel_counts(dataset: Dataset, num_classes: int, max_items: int | None = None,
                 ignore_index: int = 255) -> torch.Tensor:
    """Labelled pixels per class over a dataset's masks → int64 [C] (void skipped).
    Uses ``dataset.read_mask(i)`` when available (no image decoding)."""
    counts = torch.zeros(num_classes, dtype=torch.int64)
    n = len(dataset) if max_items is None else min(max_items, len(dataset))  # type: ignore[arg-type]
    for i in range(n):
        m = dataset.read_mask(i) if hasattr(dataset, "read_mask") else dataset[i][1]
        m = m[m != ignore_index]
        counts += torch.bincount(m.flatten(), minlength=num_classes)[:num_classes]
    return counts


def class_weights(counts: torch.Tensor, power: float = 0.5) -> torch.Tensor:
    """Weights ∝ frequency^(−power), normalised to mean 1 → float [C] (power 0.5: the
    "sqrt-inverse-frequency" weighting; absent classes get weight 0)."""
    if bool((counts < 0).any()):
        raise ValueError(f"Pixel counts must be ≥ 0, got negative ones: {counts.tolist()}.")
    if int(counts.sum()) == 0:
        raise ValueError("The training masks have no labelled pixels (all void, or an empty subset), so "
                         "there are no class frequencies to weight by; check the dataset and its split.")
    freq = counts.double() / counts.sum()
    w = torch.where(freq > 0, freq.clamp(min=1e-12) ** -power, torch.zeros_like(freq))
    return (w / w[w > 0].mean()).float()


class DiceLoss(nn.Module):
    """Soft multi-class Dice loss: 1 − mean over classes of 2·Σ p·g / (Σ p + Σ g).

    ``logits`` [B, C, H, W], ``target`` int64 [B, H, W]; sums run over the whole batch;
    pixels equal to ``ignore_index`` are left out; the mean is over the classes present in
    the batch's targets (an absent class has no Dice to learn). Every class counts equally,
    however few pixels it has, which is why Dice helps small classes (Milletari et al. 2016).
    """

    def __init__(self, ignore_index: int = 255, eps: float = 1e-6):
        super().__init__()
        self.ignore_index, self.eps = ignore_index, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        valid = (target != self.ignore_index)[:, None]
        probs = logits.float().softmax(1) * valid
        onehot = F.one_hot(torch.where(valid[:, 0], target, 0), num_classes).permute(0, 3, 1, 2) * valid
        inter = (probs * onehot).sum((0, 2, 3))
        card = probs.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        dice = 2 * inter / card.clamp(min=self.eps)
        present = onehot.sum((0, 2, 3)) > 0
        return 1 - dice[present].mean() if present.any() else logits.sum() * 0


class CEDiceLoss(nn.Module):
    """Cross-entropy (optionally class-weighted) + ``dice_weight`` × Dice loss."""

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = 255, dice_weight: float = 1.0):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index)
        self.dice_weight = dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.ce(logits, target) + self.dice_weight * self.dice(logits, target)
