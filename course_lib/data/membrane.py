"""ISBI 2012 EM membrane segmentation (the data U-Net was made for), 512×512 gray."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .download import dataset_dir, incomplete_hint, register_prepare
from .io import check_same_size, read_array, read_image


def _numeric_key(p: Path):
    return (0, int(p.stem)) if p.stem.isdigit() else (1, p.stem)


class Membrane(Dataset):
    """ISBI 2012 membranes. "train": 30 labelled images; "test": 30 images without labels.

    Item: (image ``tv_tensors.Image`` uint8 [1, 512, 512], mask ``tv_tensors.Mask`` int64
    [512, 512] with 0 = cell, 1 = membrane). Test items have ``None`` as mask.
    Upstream labels are 0 = membrane, 255 = cell; they are thresholded at 128 and flipped.
    """

    classes = ("cell", "membrane")
    palette = ((40, 40, 40), (255, 200, 0))
    num_classes = 2
    ignore_index = 255
    splits = ("train", "test")

    def __init__(self, split: str = "train", root: str | Path | None = None,
                 transforms: Callable | None = None, download: bool = False):
        if split not in self.splits:
            raise ValueError(f"Membrane split must be one of {self.splits}, got {split!r}.")
        self.split = split
        self.root = dataset_dir("membrane", root, download)
        self.transforms = transforms
        self.images = sorted((self.root / split / "image").glob("*.png"), key=_numeric_key)
        if not self.images:
            raise ValueError(f"Found no images (*.png) in {self.root / split / 'image'}. "
                             + incomplete_hint("membrane", self.root))
        self.has_labels = split == "train"

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        img_path = self.images[index]
        image = read_image(img_path, channels=1)
        if not self.has_labels:
            return (self.transforms(image) if self.transforms else image), None
        mask_path = self.root / self.split / "label" / img_path.name
        label = torch.from_numpy(read_array(mask_path, "L"))
        mask = tv_tensors.Mask((label < 128).long())  # dark = membrane
        check_same_size(image, mask, img_path, mask_path)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask


@register_prepare("membrane")
def _prepare_membrane(extracted: Path, target: Path) -> None:
    """zhixuhao/unet archive → membrane/{train/{image,label}, test/image}."""
    src = next(extracted.glob("*/data/membrane"), None)
    if src is None:
        raise RuntimeError("data/membrane not found in the downloaded archive.")
    shutil.move(str(src / "train"), target / "train")
    (target / "test" / "image").mkdir(parents=True)
    for p in (src / "test").glob("*.png"):
        if p.stem.isdigit():  # upstream also keeps predictions (N_predict.png) there
            shutil.move(str(p), target / "test" / "image" / p.name)
