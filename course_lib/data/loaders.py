"""Datasets and DataLoaders for the semantic-segmentation notebooks, sized by the profile."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..losses import class_weights, pixel_counts
from ..runtime import Profile
from .cache import InMemory
from .camvid import CamVid
from .download import DatasetNotFoundError
from .membrane import Membrane
from .shapes import Shapes
from .transforms import eval_transforms, train_transforms

_SEMANTIC = {"camvid": CamVid, "membrane": Membrane}


def semantic_dataset(name: str, split: str, profile: Profile, transforms: Callable | None = None,
                     root: str | Path | None = None) -> Dataset:
    """A semantic-segmentation dataset for a notebook, falling back to ``Shapes`` in ``smoke``.

    Only in the ``smoke`` profile, a missing real dataset is replaced by a small ``Shapes``
    set (and a line saying so is printed); in ``cpu``/``gpu`` the DatasetNotFoundError,
    which says how to get the data, is raised.
    """
    try:
        return _SEMANTIC[name](split, root=root, transforms=transforms)
    except DatasetNotFoundError as e:
        if profile.name != "smoke":
            raise
        first = str(e).splitlines()[0]
        print(f"[smoke] {first} -> using the synthetic Shapes dataset instead.")
        n = 16 if split == "train" else 8
        return Shapes(n=n, size=profile.camvid_size, seed={"train": 0, "val": 1, "test": 2}.get(split, 3), transforms=transforms)


@dataclass
class SemanticLoaders:
    """Train / val / test loaders with the dataset's class names, palette and class weights.

    ``train`` yields augmented (image float [B, C, h, w], mask int64 [B, h, w]) at the training
    size; ``val`` and ``test`` yield full-resolution pairs (metrics use the original labels).
    ``class_weights`` [num_classes] are √-inverse-frequency weights of the training subset.
    """

    train: DataLoader
    val: DataLoader
    test: DataLoader | None
    classes: tuple[str, ...]
    palette: tuple
    num_classes: int
    class_weights: torch.Tensor


def semantic_loaders(name: str, profile: Profile, size: tuple[int, int], generator: torch.Generator | None = None,
                     channels: int = 3, root: str | Path | None = None, batch_size: int | None = None,
                     crop: tuple[int, int] | None = None, cache: bool = True) -> SemanticLoaders:
    """Loaders for "camvid" (val / test splits) at training size ``size`` (H, W), with the
    profile's subsets, batch size and workers; training images are random ``crop``s
    (default: the whole ``size``). Falls back to Shapes only in ``smoke``.

    With ``cache`` (default), each split is decoded once into memory (:class:`InMemory`):
    train at ``size``, val/test at full resolution; the batches are the same as without it.
    """
    def subset(ds: Dataset, train: bool) -> Dataset:
        return Subset(ds, range(profile.subset(len(ds), train=train)))  # type: ignore[arg-type]

    def split(which: str, train: bool, transforms: Callable) -> Dataset:
        if not cache:
            return subset(semantic_dataset(name, which, profile, transforms, root), train)
        base = subset(semantic_dataset(name, which, profile, None, root), train)
        return InMemory(base, size if train else None, transforms, desc=f"decode {name} {which}")

    train_set = split("train", True, train_transforms(size, channels=channels, crop=crop))
    val_set = split("val", False, eval_transforms(channels))
    test_set = split("test", False, eval_transforms(channels))
    meta = _root_dataset(train_set)
    bs = batch_size or profile.batch_size
    common = dict(batch_size=bs, num_workers=profile.num_workers, persistent_workers=profile.num_workers > 0)
    # full-resolution labels of the training subset (the first n items), no augmentation
    counts = pixel_counts(meta, len(meta.classes), len(train_set))  # type: ignore[attr-defined, arg-type]
    return SemanticLoaders(
        train=DataLoader(train_set, shuffle=True, drop_last=len(train_set) > bs, generator=generator, **common),  # type: ignore[arg-type]
        val=DataLoader(val_set, **common),
        test=DataLoader(test_set, **common),
        classes=tuple(meta.classes), palette=tuple(meta.palette),  # type: ignore[attr-defined]
        num_classes=len(meta.classes), class_weights=class_weights(counts),  # type: ignore[attr-defined]
    )


def _root_dataset(ds: Dataset) -> Dataset:
    """The dataset under any ``InMemory`` / ``Subset`` wrappers (it has ``classes``, ``palette``)."""
    while isinstance(ds, (InMemory, Subset)):
        ds = ds.dataset
    return ds
