"""Datasets, downloads and joint augmentation for the course.

Data root: ``$COURSE_DATA_DIR``, else ``<repo>/data``. See ``data/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from ..runtime import Profile
from .camvid import CamVid
from .download import (ChecksumError, DatasetNotFoundError, dataset_dir, download_file, fetch,
                       load_manifest, safe_extract, sha256sum)
from .instances import Nuclei, PennFudan, TinyCOCO, instance_target, seeded_split, voc_segmentation
from .membrane import Membrane
from .shapes import Shapes
from .transforms import denormalize, eval_transforms, to_model_input, train_transforms

__all__ = [
    "CamVid", "Membrane", "Nuclei", "PennFudan", "TinyCOCO", "voc_segmentation", "Shapes",
    "DatasetNotFoundError", "ChecksumError", "dataset_dir", "download_file", "fetch",
    "load_manifest", "safe_extract", "sha256sum", "instance_target", "seeded_split",
    "train_transforms", "eval_transforms", "to_model_input", "denormalize",
    "semantic_dataset", "dataset_status",
]

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


def dataset_status(root: str | Path | None = None) -> dict[str, Path | None]:
    """For each dataset in the manifest: its folder if present under the data root, else None."""
    out = {}
    for name in load_manifest():
        try:
            out[name] = dataset_dir(name, root)
        except DatasetNotFoundError:
            out[name] = None
    return out
