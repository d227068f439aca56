"""The classical instance-segmentation baseline: a semantic network + marker-based watershed.

A 3-class semantic model (e.g. :class:`course_lib.models.UNet`) learns background (0),
nucleus interior (1) and nucleus contour (2) from :func:`three_class_target`. The contour
class is what separates touching nuclei: their foreground is one connected blob, but their
interiors are not. :func:`watershed_instances` then seeds one marker per confident interior
blob and floods the foreground from the markers over the contour probability
(``scipy.ndimage.watershed_ift``, an image-foresting transform: each pixel goes to the marker
whose path to it has the lowest highest contour probability), so the split between two
nuclei falls on the ridge of the contour class. :class:`SemanticInstances` wraps the model
and the post-processing in the detection models' eval interface for
:func:`course_lib.detection.evaluate_instances`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from scipy import ndimage
from torchvision.transforms import v2

from .boundaries import instance_boundaries
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD

BACKGROUND, INTERIOR, CONTOUR = 0, 1, 2
CLASSES = ("background", "interior", "contour")


def three_class_target(masks: torch.Tensor) -> torch.Tensor:
    """Instance masks bool/uint8 [N, H, W] (a target's "masks") → class map int64 [H, W]:
    0 background, 1 interior, 2 contour = the pixels of an instance with an 8-neighbour
    outside it (:func:`~course_lib.boundaries.instance_boundaries`), so both sides of the line
    where two nuclei touch are contour."""
    masks = torch.as_tensor(masks)
    if masks.dim() != 3 or masks.is_floating_point():
        raise ValueError(f"three_class_target takes instance masks bool/uint8 [N, H, W], got "
                         f"{tuple(masks.shape)} of {masks.dtype}.")
    out = torch.zeros(masks.shape[-2:], dtype=torch.int64)
    if len(masks):
        out[(masks != 0).any(0)] = INTERIOR
        out[instance_boundaries(masks) != 0] = CONTOUR
    return out


def three_class_weights(dataset, items: int = 64) -> torch.Tensor:
    """√-inverse-frequency weights [3] of background, interior and contour (normalised to mean
    1), counted on the first ``items`` items (image, target with "masks" [N, H, W]) of
    ``dataset``. Give it whole images (``detection_transforms(train=False)``): random crops
    would make the weights, and so a checkpoint's configuration, change from run to run."""
    counts = torch.zeros(len(CLASSES), dtype=torch.float64)
    for i in range(min(items, len(dataset))):
        counts += torch.bincount(three_class_target(dataset[i][1]["masks"]).flatten(), minlength=len(CLASSES))
    if counts.sum() == 0:
        raise ValueError("three_class_weights got no pixels: an empty dataset or items=0.")
    w = (counts.sum() / counts.clamp_min(1)).sqrt()
    return (w / w.mean()).float()


def collate_three_class(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image float [3, H, W] in 0..1, instance target), ...] from
    :func:`~course_lib.data.detection.detection_transforms` (equal crop sizes) → (images
    normalised with ImageNet statistics [B, 3, H, W], class maps int64 [B, H, W] from
    :func:`three_class_target`): the batches :func:`course_lib.engine.fit` trains on."""
    normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    images = torch.stack([normalize(torch.as_tensor(im)) for im, _ in batch])
    labels = torch.stack([three_class_target(t["masks"]) for _, t in batch])
    return images, labels


def watershed_instances(prob_interior, prob_contour, fg_threshold: float = 0.5, marker_threshold: float = 0.5,
                        min_marker_area: int = 4) -> np.ndarray:
    """Instance-id map int64 [H, W] (0 = background) from class probabilities float [H, W] in
    0..1 (NumPy or torch) of the interior and contour classes.

    Foreground: interior + contour > ``fg_threshold``. Markers: 4-connected blobs of
    interior > ``marker_threshold`` (that is, more likely interior than contour or background
    for 0.5) of at least ``min_marker_area`` pixels. The foreground is flooded from the markers
    with ``scipy.ndimage.watershed_ift`` over the contour probability (background costs the
    most, so no marker reaches another blob through it). A foreground blob without a marker
    (a nucleus too small or faint for one) becomes one instance of its own.
    """
    interior = np.asarray(prob_interior.detach().cpu() if isinstance(prob_interior, torch.Tensor) else prob_interior,
                          dtype=np.float32)
    contour = np.asarray(prob_contour.detach().cpu() if isinstance(prob_contour, torch.Tensor) else prob_contour,
                         dtype=np.float32)
    if interior.shape != contour.shape or interior.ndim != 2:
        raise ValueError(f"prob_interior {interior.shape} and prob_contour {contour.shape} must be [H, W] maps of the "
                         f"same shape (one image; take them from the softmax of a 3-class model).")
    if not (0 < fg_threshold < 1 and 0 < marker_threshold < 1) or min_marker_area < 1:
        raise ValueError(f"fg_threshold and marker_threshold must lie in (0, 1) and min_marker_area be ≥ 1, got "
                         f"{fg_threshold}, {marker_threshold}, {min_marker_area}.")
    foreground = interior + contour > fg_threshold
    markers, n = ndimage.label((interior > marker_threshold) & foreground)
    if n:
        areas = np.bincount(markers.ravel(), minlength=n + 1)
        small = areas < min_marker_area
        small[0] = False
        markers[small[markers]] = 0
    # a foreground blob that holds no marker is one instance: it becomes its own marker
    blobs, n_blobs = ndimage.label(foreground)
    if n_blobs:
        marked = np.zeros(n_blobs + 1, bool)
        marked[blobs[markers > 0]] = True
        unmarked = ~marked
        unmarked[0] = False
        new_ids = np.cumsum(unmarked) * unmarked + markers.max()
        markers = np.where(unmarked[blobs], new_ids[blobs], markers)
    elevation = np.where(foreground, np.round(contour * 254), 255).astype(np.uint8)
    ids = ndimage.watershed_ift(elevation, markers.astype(np.int32))
    ids[~foreground] = 0
    return ids.astype(np.int64)


class SemanticInstances(nn.Module):
    """A 3-class semantic model (logits [B, 3, H, W] for images normalised with ImageNet
    statistics) + :func:`watershed_instances`, answering like a detection model in eval mode:
    a list of images float [3, H, W] in 0..1 → one dict per image {"masks": uint8 [N, H, W]
    (disjoint), "scores": float [N] (the mean foreground probability of the instance),
    "labels": int64 [N] (all 1)}. Train ``.model`` itself (e.g. with
    :func:`course_lib.engine.fit` on :func:`collate_three_class` batches)."""

    def __init__(self, model: nn.Module, **watershed_kwargs):
        super().__init__()
        self.model, self.watershed_kwargs = model, watershed_kwargs
        self.normalize = v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)

    @torch.no_grad()
    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        if self.training:
            raise RuntimeError("SemanticInstances only predicts (call .eval()); train its .model, a semantic "
                               "model, on three_class_target labels.")
        outputs = []
        for image in images:
            logits = self.model(self.normalize(torch.as_tensor(image))[None].float())
            probs = logits.float().softmax(1)[0].cpu()  # [3, H, W]
            ids = torch.from_numpy(watershed_instances(probs[INTERIOR], probs[CONTOUR], **self.watershed_kwargs))
            labels = torch.unique(ids)
            labels = labels[labels != 0]
            masks = (ids[None] == labels[:, None, None]).to(torch.uint8)
            fg = (probs[INTERIOR] + probs[CONTOUR]).flatten()
            # mean foreground probability per instance, from one histogram over the id map
            sums = torch.bincount(ids.flatten(), weights=fg, minlength=int(ids.max()) + 1)
            counts = torch.bincount(ids.flatten(), minlength=int(ids.max()) + 1).clamp_min(1)
            scores = (sums / counts)[labels].float()
            outputs.append({"masks": masks, "scores": scores, "labels": torch.ones(len(labels), dtype=torch.int64)})
        return outputs
