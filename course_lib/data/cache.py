"""Decode a dataset once into memory, so that an epoch costs augmentation, not JPEG decoding.

On a 2-core CPU, reading a 360×480 CamVid JPEG + PNG pair and resizing it takes about as long
as the rest of its augmentation; a training run re-did that work every epoch. ``InMemory``
reads every item once (optionally resizing it to the training size with the same
``v2.Resize`` the training pipeline starts with, which then leaves it alone), keeps uint8
tensors, and applies the random transforms per access. Same items, same random
augmentations, less work: a test checks the batches are identical to the uncached ones.

Memory: CamVid train at 176×240 is 46 MB of images + 15 MB of masks; val + test at the full
360×480, 173 + 58 MB.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch.utils.data import Dataset, Subset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm


class InMemory(Dataset):
    """Items of ``dataset`` (image uint8 [C, H, W], mask int [H, W], no transforms of its own)
    decoded once, resized to ``size`` (H, W) if given, and kept as uint8 tensors.

    ``__getitem__`` returns (``tv_tensors.Image`` uint8, ``tv_tensors.Mask`` int64) passed
    through ``transforms`` if given. ``read_mask(i)`` is forwarded to the wrapped dataset
    (full-resolution labels, e.g. for class frequencies).
    """

    def __init__(self, dataset: Dataset, size: tuple[int, int] | None = None,
                 transforms: Callable | None = None, progress: bool = True, desc: str = "decode"):
        self.dataset, self.transforms = dataset, transforms
        self.size = tuple(size) if size is not None else None
        resize = v2.Resize(self.size, antialias=True) if self.size is not None else None
        self.images: list[torch.Tensor] = []
        self.masks: list[torch.Tensor] = []
        n = len(dataset)  # type: ignore[arg-type]
        for i in tqdm(range(n), desc=desc, leave=False, disable=not progress):
            image, mask = dataset[i]
            if image.dtype != torch.uint8:
                raise TypeError(f"InMemory caches uint8 images; item {i} is {image.dtype}. Wrap the "
                                f"dataset before any transform that converts to float.")
            image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
            if resize is not None:
                image, mask = resize(image, mask)
            # ids up to 255 (void) fit in uint8: 8× less memory than int64
            small = mask.min() >= 0 and mask.max() <= 255
            self.images.append(image.as_subclass(torch.Tensor).contiguous())
            self.masks.append(mask.as_subclass(torch.Tensor).to(torch.uint8 if small else torch.int64))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = tv_tensors.Image(self.images[index])
        mask = tv_tensors.Mask(self.masks[index].long())
        if self.transforms is not None:
            image, mask = self.transforms(image, mask)
        return image, mask

    def read_mask(self, index: int) -> torch.Tensor:
        """The wrapped dataset's label map of item ``index`` (full resolution, int64 [H, W])."""
        ds = self.dataset
        if isinstance(ds, Subset):  # map through the subset to the dataset that can read labels alone
            ds, index = ds.dataset, ds.indices[index]
        reader = getattr(ds, "read_mask", None)
        return reader(index) if reader is not None else ds[index][1]

    @property
    def nbytes(self) -> int:
        """Bytes held by the cached images and masks."""
        return sum(t.numel() * t.element_size() for t in (*self.images, *self.masks))
