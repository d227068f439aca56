"""Datasets, downloads and joint augmentation for the course.

Data root: ``$COURSE_DATA_DIR``, else ``<repo>/data``. See ``data/README.md``.
"""

from __future__ import annotations

from pathlib import Path

from .cache import InMemory
from .camvid import CamVid
from .detection import collate_detection, detection_transforms
from .download import (ChecksumError, DatasetNotFoundError, DownloadError, dataset_dir, download_file, fetch,
                       load_manifest, safe_extract, sha256sum)
from .instances import Nuclei, PennFudan, TinyCOCO, instance_target, seeded_split, voc_segmentation
from .loaders import SemanticLoaders, semantic_dataset, semantic_loaders
from .membrane import Membrane
from .shapes import Shapes
from .transforms import denormalize, eval_transforms, to_model_input, train_transforms

__all__ = [
    "InMemory", "CamVid", "Membrane", "Nuclei", "PennFudan", "TinyCOCO", "voc_segmentation", "Shapes",
    "DatasetNotFoundError", "ChecksumError", "DownloadError", "dataset_dir", "download_file", "fetch",
    "load_manifest", "safe_extract", "sha256sum", "instance_target", "seeded_split",
    "train_transforms", "eval_transforms", "to_model_input", "denormalize",
    "semantic_dataset", "dataset_status", "semantic_loaders", "SemanticLoaders",
    "detection_transforms", "collate_detection",
]


def dataset_status(root: str | Path | None = None) -> dict[str, Path | None]:
    """For each dataset in the manifest: its folder if present under the data root, else None."""
    out = {}
    for name in load_manifest():
        try:
            out[name] = dataset_dir(name, root)
        except DatasetNotFoundError:
            out[name] = None
    return out
