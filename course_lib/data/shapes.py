"""``Shapes``: a deterministic synthetic dataset (no download).

Textured backgrounds with circles, squares and triangles drawn on them. Each item is a
function of (seed, index) alone, so it is identical on every machine and run. It is the
offline default and the fast test fixture; the course's main material is real data.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors

from .instances import instance_target


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random oriented stripes + smooth blobs + noise, float [H, W, 3] in 0..1."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((h, w, 3), np.float32)
    for _ in range(3):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.03, 0.25)
        wave = np.sin(freq * (np.cos(theta) * xx + np.sin(theta) * yy) + rng.uniform(0, 6.3))
        out += wave[..., None] * rng.uniform(0.02, 0.12, size=3)
    out += rng.uniform(0.25, 0.65, size=3)
    out += rng.normal(0, 0.04, size=(h, w, 3))
    return out


class Shapes(Dataset):
    """Synthetic shapes on textured backgrounds.

    Classes: 0 background, 1 circle, 2 square, 3 triangle. Each class has its own hue
    (jittered per instance), so colour helps but shape decides.
    Item (``mode="semantic"``): (``tv_tensors.Image`` uint8 [3, H, W], ``tv_tensors.Mask``
    int64 [H, W]). With ``mode="instance"``: (image, detection target dict as in
    :mod:`course_lib.data.instances`, labels = class ids 1..3).
    """

    classes = ("background", "circle", "square", "triangle")
    palette = ((0, 0, 0), (230, 25, 75), (60, 180, 75), (0, 130, 200))
    num_classes = 4
    ignore_index = 255
    _hues = np.array([[0.0, 0.0, 0.0], [0.85, 0.25, 0.3], [0.3, 0.75, 0.35], [0.2, 0.45, 0.85]])

    def __init__(self, n: int = 64, size: tuple[int, int] = (128, 128), seed: int = 0,
                 mode: str = "semantic", max_shapes: int = 5, transforms: Callable | None = None):
        if mode not in ("semantic", "instance"):
            raise ValueError(f"mode must be 'semantic' or 'instance', got {mode!r}.")
        self.n, self.size, self.seed, self.mode = n, tuple(size), seed, mode
        self.max_shapes, self.transforms = max_shapes, transforms

    def __len__(self) -> int:
        return self.n

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image uint8 [H, W, 3], class map int64 [H, W], instance-id map int64 [H, W])."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for Shapes of length {self.n}")
        rng = np.random.default_rng([self.seed, index])
        h, w = self.size
        img = _texture(rng, h, w)
        cls_map = np.zeros((h, w), np.int64)
        inst_map = np.zeros((h, w), np.int64)
        yy, xx = np.mgrid[0:h, 0:w]
        for k in range(1, rng.integers(1, self.max_shapes + 1) + 1):
            c = int(rng.integers(1, 4))
            r = rng.uniform(0.08, 0.2) * min(h, w)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            if c == 1:
                region = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
            elif c == 2:
                region = (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)
            else:  # upward triangle
                top, bottom = cy - r, cy + r * 0.8
                half = (yy - top) / (bottom - top) * r
                region = (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)
            colour = np.clip(self._hues[c] + rng.normal(0, 0.08, 3), 0, 1)
            shade = 1 + 0.15 * np.sin((xx - cx) * rng.uniform(0.1, 0.4))[..., None]
            img[region] = (colour * shade + rng.normal(0, 0.03, (h, w, 3)))[region]
            cls_map[region] = c
            inst_map[region] = k
        img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
        return img, cls_map, inst_map

    def __getitem__(self, index: int):
        img, cls_map, inst_map = self.render(index)
        image = tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        if self.mode == "semantic":
            target = tv_tensors.Mask(torch.from_numpy(cls_map))
        else:
            inst = torch.from_numpy(inst_map)
            target = instance_target(inst, image_id=index)
            # class of each instance = class map value at any of its pixels
            ids = torch.unique(inst)
            ids = ids[ids != 0]
            target["labels"] = torch.tensor(
                [int(cls_map[inst_map == int(i)][0]) for i in ids], dtype=torch.int64)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
