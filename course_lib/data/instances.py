"""Instance-segmentation datasets in torchvision's detection format.

Target dict: ``boxes`` ``tv_tensors.BoundingBoxes`` float [N, 4] XYXY, ``masks``
``tv_tensors.Mask`` uint8 [N, H, W], ``labels`` int64 [N], ``image_id`` int.
Covers DSB2018 nuclei, Penn-Fudan pedestrians, and tiny COCO (through torchvision's COCO
dataset and its transforms-v2 wrapper).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets as tvd
from torchvision import tv_tensors
from torchvision.ops import masks_to_boxes

from .download import dataset_dir, incomplete_hint, register_prepare
from .io import check_same_size, read_array, read_image


def instance_target(id_map: torch.Tensor, label: int = 1, image_id: int = 0) -> dict:
    """Instance-id map int [H, W] (0 = background, 1..N = instances) → detection target."""
    if id_map.is_floating_point():
        raise ValueError("instance_target needs an integer instance-id map (0 = background, 1..N), not "
                         "a float tensor: every distinct float would become an instance.")
    ids = torch.unique(id_map)
    ids = ids[ids != 0]
    masks = (id_map[None] == ids[:, None, None]).to(torch.uint8)  # [N, H, W]
    h, w = id_map.shape
    boxes = masks_to_boxes(masks) if len(ids) else torch.zeros((0, 4))
    return {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "masks": tv_tensors.Mask(masks),
        "labels": torch.full((len(ids),), label, dtype=torch.int64),
        "image_id": image_id,
    }


def read_id_map(path: Path | str) -> torch.Tensor:
    """An instance-id map file (single-channel PNG: 0 = background, 1..N = instances) →
    int64 [H, W]. Raises ValueError naming the file for an RGB mask or a *binary* mask
    (bilevel, or every foreground pixel 255 / 65535), which would otherwise be read as one
    instance covering all the objects."""
    arr = read_array(path)
    if arr.ndim != 2:
        raise ValueError(f"Instance mask {path} has shape {tuple(arr.shape)}: an instance-id map must be a "
                         f"single-channel image [H, W] (uint8/uint16 grayscale PNG, 0 = background, "
                         f"1..N = instances), not RGB.")
    top = np.iinfo(arr.dtype).max if np.issubdtype(arr.dtype, np.integer) else None
    fg = arr[arr > 0]
    if arr.dtype == bool or (top is not None and fg.size and fg.min() == top):
        value = 1 if arr.dtype == bool else top
        raise ValueError(f"Instance mask {path} is binary (every foreground pixel is {value}), not an "
                         f"instance-id map (0 = background, 1..N = one id per object): it would be read as "
                         f"a single instance. Give each object its own id, e.g. "
                         f"scipy.ndimage.label(mask > 0)[0] (touching objects then merge).")
    return torch.from_numpy(arr.astype(np.int64))


def seeded_split(names: list[str], split: str, fractions=(0.7, 0.15, 0.15), seed: int = 0) -> list[str]:
    """A fixed train/val/test split of ``names`` (sorted first, then a seeded permutation);
    ``fractions``: three numbers ≥ 0 summing to 1."""
    if len(fractions) != 3 or not all(math.isfinite(f) and f >= 0 for f in fractions) \
            or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three numbers ≥ 0 (train, val, test) summing to 1, e.g. "
                         f"(0.7, 0.15, 0.15); got {tuple(fractions)}.")
    names = sorted(names)
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(seed)).tolist()
    n_train = round(fractions[0] * len(names))
    n_val = round(fractions[1] * len(names))
    parts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
             "test": order[n_train + n_val:]}
    if split not in parts:
        raise ValueError(f"split must be one of {sorted(parts)}, got {split!r}.")
    return [names[i] for i in sorted(parts[split])]


class _IdMapDataset(Dataset):
    """Items from (image file, instance-id map file) pairs in ``self.pairs``."""

    pairs: list[tuple[Path, Path]]
    transforms: Callable | None

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        img_path, mask_path = self.pairs[index]
        image = read_image(img_path)
        id_map = read_id_map(mask_path)
        check_same_size(image, id_map, img_path, mask_path)
        target = instance_target(id_map, image_id=index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class Nuclei(_IdMapDataset):
    """DSB2018 stage-1 nuclei (BBBC038), 664 images of various sizes, one class (nucleus).

    A fixed, seeded 70/15/15 split (``seed=0``): train 465 / val 100 / test 99.
    Item: (image ``tv_tensors.Image`` uint8 [3, H, W], target dict as in the module doc).
    """

    classes = ("background", "nucleus")
    num_classes = 2

    def __init__(self, split: str = "train", root: str | Path | None = None,
                 transforms: Callable | None = None, download: bool = False, seed: int = 0):
        self.root = dataset_dir("nuclei", root, download)
        names = [p.stem for p in (self.root / "images").glob("*.png")]
        if not names:
            raise ValueError(f"Found no images (*.png) in {self.root / 'images'}. "
                             + incomplete_hint("nuclei", self.root))
        self.names = seeded_split(names, split, seed=seed)
        self.pairs = [(self.root / "images" / f"{n}.png", self.root / "masks" / f"{n}.png") for n in self.names]
        self.split = split
        self.transforms = transforms


@register_prepare("nuclei")
def _prepare_nuclei(extracted: Path, target: Path) -> None:
    """stage1_train/<id>/{images/<id>.png, masks/*.png} → images/<id>.png + masks/<id>.png
    (uint16 instance ids; where masks overlap, the later mask in sorted order wins)."""
    from PIL import Image

    src = next(extracted.glob("*/stage1_train"), None) or next(extracted.glob("stage1_train"), None)
    if src is None:
        raise RuntimeError("stage1_train/ not found in the downloaded archive.")
    (target / "images").mkdir()
    (target / "masks").mkdir()
    for case in sorted(p for p in src.iterdir() if p.is_dir()):
        img = case / "images" / f"{case.name}.png"
        if not img.exists():
            continue
        rgb = read_array(img, "RGB")
        ids = np.zeros(rgb.shape[:2], dtype=np.uint16)
        for k, m in enumerate(sorted((case / "masks").glob("*.png")), 1):
            ids[read_array(m, "L") > 0] = k
        Image.fromarray(rgb).save(target / "images" / f"{case.name}.png")
        Image.fromarray(ids).save(target / "masks" / f"{case.name}.png")


class PennFudan(_IdMapDataset):
    """Penn-Fudan pedestrians (Wang et al. 2007): 170 images, instance masks, one class.

    Needs a download (``download=True``); item as in the module doc, label 1 = person.
    """

    classes = ("background", "person")
    num_classes = 2

    def __init__(self, root: str | Path | None = None, transforms: Callable | None = None,
                 download: bool = False):
        self.root = dataset_dir("penn_fudan", root, download)
        self.pairs = [(p, self.root / "PedMasks" / f"{p.stem}_mask.png")
                      for p in sorted((self.root / "PNGImages").glob("*.png"))]
        if not self.pairs:
            raise ValueError(f"Found no images (*.png) in {self.root / 'PNGImages'}. "
                             + incomplete_hint("penn_fudan", self.root))
        self.transforms = transforms


@register_prepare("penn_fudan")
def _prepare_penn_fudan(extracted: Path, target: Path) -> None:
    src = next(extracted.glob("PennFudanPed"), None)
    if src is None:
        raise RuntimeError("PennFudanPed/ not found in the downloaded archive.")
    for item in src.iterdir():
        shutil.move(str(item), target / item.name)


def TinyCOCO(root: str | Path | None = None, transforms: Callable | None = None,
             download: bool = False) -> Dataset:
    """16 COCO train2017 images (80 categories) via ``torchvision.datasets.CocoDetection``,
    wrapped for transforms v2: item = (PIL image, target with ``boxes``, ``masks``
    [N, H, W], ``labels`` = COCO category ids, ``image_id``). Polygons and crowd RLEs are
    turned into masks by pycocotools inside torchvision's wrapper."""
    folder = dataset_dir("tiny_coco", root, download)
    ann = folder / "instances_train2017_small.json"
    try:
        ds = tvd.CocoDetection(folder / "train_2017_small", ann, transforms=transforms)
    except (ValueError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"Cannot read the COCO annotation file {ann} ({type(e).__name__}: {e}): it is "
                         f"damaged or not in COCO format. " + incomplete_hint("tiny_coco", folder)) from None
    if len(ds) == 0:
        raise ValueError(f"The COCO annotation file {ann} lists no images. " + incomplete_hint("tiny_coco", folder))
    return tvd.wrap_dataset_for_transforms_v2(
        ds, target_keys=("boxes", "labels", "masks", "image_id"))


@register_prepare("tiny_coco")
def _prepare_tiny_coco(extracted: Path, target: Path) -> None:
    ann = next(extracted.rglob("instances_train2017_small.json"), None)
    imgs = next(extracted.rglob("train_2017_small"), None)
    if ann is None or imgs is None:
        raise RuntimeError("instances_train2017_small.json / train_2017_small not found in the archive.")
    shutil.move(str(ann), target / ann.name)
    shutil.move(str(imgs), target / "train_2017_small")


def voc_segmentation(split: str = "train", root: str | Path | None = None,
                     transforms: Callable | None = None, download: bool = False) -> Dataset:
    """Pascal VOC 2012 semantic segmentation (21 classes, 255 = boundary/void) through
    ``torchvision.datasets.VOCSegmentation`` (its own md5-checked download), wrapped for
    transforms v2: item = (PIL image, ``tv_tensors.Mask``)."""
    from ..runtime import data_root

    base = Path(root) if root is not None else data_root()
    folder = base / "voc"
    try:
        ds = tvd.VOCSegmentation(folder, year="2012", image_set=split, download=download,
                                 transforms=transforms)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"Pascal VOC 2012 not found under {folder} ({e}). Download it with "
            f"voc_segmentation(download=True) (about 2 GB, from the VOC server), or point "
            f"$COURSE_DATA_DIR at a folder holding voc/VOCdevkit/VOC2012."
        ) from None
    return tvd.wrap_dataset_for_transforms_v2(ds)
