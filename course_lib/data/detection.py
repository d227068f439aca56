"""Instance-segmentation items for torchvision's detection models (Mask R-CNN).

The instance datasets (:class:`~course_lib.data.Nuclei` ...) give (image uint8 [3, H, W],
target {"boxes", "masks" uint8 [N, H, W], "labels" int64 [N], "image_id"}). The
transforms here crop and flip image and masks together (v2 transforms and tv_tensors), drop
the instances a crop left empty, recompute each box from its mask, and turn the image into
float 0..1 (Mask R-CNN normalises it itself). :func:`collate_detection` batches items as
lists, since the images of a batch may differ in size.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes
from torchvision.transforms import v2


def pixel_boxes(masks: torch.Tensor) -> torch.Tensor:
    """Tight boxes of masks bool/uint8 [N, H, W] → float [N, 4] XYXY with pixel edges: a mask
    covering columns x0..x1 has x_min = x0, x_max = x1 + 1, so even a one-pixel-wide mask has a
    box of positive width (Mask R-CNN rejects boxes with x_max ≤ x_min). Every mask must be
    non-empty."""
    if masks.dim() != 3:
        raise ValueError(f"masks must be [N, H, W], got {tuple(masks.shape)}.")
    if len(masks) == 0:
        return torch.zeros((0, 4))
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


class KeepNonEmptyInstances(v2.Transform):
    """Drop the instances whose mask is empty (cropped away) and set every box to its mask's
    :func:`pixel_boxes` (a crop clips a box, but the clipped box of a curved object is not the
    box of its clipped mask). Works on a target dict with "masks", "boxes" and "labels"."""

    def forward(self, image, target: dict):  # type: ignore[override]
        masks = target["masks"]
        keep = (masks.flatten(1) != 0).any(1)
        masks = tv_tensors.wrap(masks[keep], like=masks)
        h, w = masks.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(pixel_boxes(masks), format="XYXY", canvas_size=(h, w))
        return image, {**target, "masks": masks, "boxes": boxes, "labels": target["labels"][keep]}


def detection_transforms(crop: Sequence[int] | None = None, train: bool = True, vflip: bool = True,
                         color: bool = True) -> v2.Compose:
    """Transforms of (image uint8 [3, H, W], instance target) for a detection model.

    ``train``: a random crop of ``crop`` (H, W) (padded with 0 where the image is smaller),
    horizontal and (``vflip``) vertical flips (microscopy has no up or down), mild brightness /
    contrast jitter (``color``). Evaluation (``train=False``): the whole image, and ``crop``
    must be None. Both end with :class:`KeepNonEmptyInstances` and float conversion: image
    float [3, h, w] in 0..1, target {"boxes" float [N, 4] XYXY, "masks" uint8 [N, h, w],
    "labels" int64 [N], ...}.
    """
    steps: list = []
    if train:
        if crop is None or len(crop) != 2 or min(crop) < 1:
            raise ValueError(f"crop must be (H, W) in pixels for training, e.g. profile.detection_crop; got {crop!r}.")
        steps += [v2.RandomCrop(tuple(crop), pad_if_needed=True, fill=0), v2.RandomHorizontalFlip()]
        if vflip:
            steps.append(v2.RandomVerticalFlip())
        if color:
            steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
    elif crop is not None:
        raise ValueError("Evaluation transforms keep the whole image (metrics at full resolution): pass crop=None.")
    steps += [KeepNonEmptyInstances(), v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(steps)


def collate_detection(batch: Sequence[tuple]) -> tuple[list, list]:
    """[(image, target), ...] → ([images], [targets]): the lists torchvision's detection models
    take (their images may have different sizes)."""
    if not batch:
        raise ValueError("collate_detection got an empty batch.")
    images, targets = zip(*batch)
    return list(images), list(targets)


def smallest_images(dataset: Dataset, n: int | None) -> Dataset:
    """The ``n`` smallest images (fewest pixels; ties by position) of an instance dataset
    that lists its files in ``.pairs`` (:class:`~course_lib.data.Nuclei`), as a ``Subset`` in
    the dataset's own order; the whole dataset for ``n=None``. Only the image headers are read.
    For quick evaluation at full resolution: large images cost the most to score."""
    if n is None:
        return dataset
    if n < 0:
        raise ValueError(f"n must be ≥ 0 or None, got {n}.")
    pairs = getattr(dataset, "pairs", None)
    if pairs is None:
        raise TypeError(f"{type(dataset).__name__} has no .pairs (image file, mask file) list; pass the dataset "
                        f"itself (e.g. Nuclei(...)), not a Subset of it.")
    pixels = [int(np.prod(Image.open(image_path).size)) for image_path, _ in pairs]
    return Subset(dataset, sorted(np.argsort(pixels, kind="stable")[:n].tolist()))
