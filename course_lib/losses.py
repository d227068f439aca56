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
    freq = counts.double() / counts.sum().clamp(min=1)
    w = torch.where(freq > 0, freq.clamp(min=1e-12) ** -power, torch.zeros_like(freq))
    return (w / w[w > 0].mean()).float()
