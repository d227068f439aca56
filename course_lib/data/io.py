"""Reading images and label maps with errors that name the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision import tv_tensors


def read_array(path: Path | str, mode: str | None = None) -> np.ndarray:
    """Pixels of an image file as a NumPy array (``mode`` converts, e.g. "RGB", "L")."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.array(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"Missing file {path}: the dataset folder is incomplete; "
                                f"download it again.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"Cannot read image {path}: {e}. The file is corrupt or not an "
                         f"image; delete it and download the dataset again.") from None


def read_image(path: Path | str, channels: int = 3) -> tv_tensors.Image:
    """An image file as ``tv_tensors.Image`` uint8 [channels, H, W] (channels 3 = RGB, 1 = gray)."""
    arr = read_array(path, "RGB" if channels == 3 else "L")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1))


def check_label_map(mask: torch.Tensor, num_classes: int, ignore_index: int, path: Path | str) -> None:
    """Raise ValueError naming ``path`` if ``mask`` holds an id ≥ num_classes that is not ignore."""
    bad = (mask >= num_classes) & (mask != ignore_index) | (mask < 0)
    if bool(bad.any()):
        values = torch.unique(mask[bad]).tolist()[:10]
        raise ValueError(
            f"Label map {path} has class ids {values} outside 0..{num_classes - 1} that are not "
            f"the ignore value {ignore_index}. Is it the right dataset/label file, or does it "
            f"need a class mapping?"
        )


def check_same_size(image: torch.Tensor, mask: torch.Tensor, image_path: Path | str,
                    mask_path: Path | str) -> None:
    """Raise ValueError if image [C, H, W] and mask [..., H, W] differ in H×W."""
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        raise ValueError(
            f"Image {image_path} is {tuple(image.shape[-2:])} (H, W) but its label "
            f"{mask_path} is {tuple(mask.shape[-2:])}: they must be the same size. "
            f"Is the pairing in the split file right?"
        )
