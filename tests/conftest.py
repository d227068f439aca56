"""Shared fixtures. Real-data tests skip, saying how to get the data, when it is absent."""

from __future__ import annotations

import os

import matplotlib
import pytest

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _no_profile_leak(monkeypatch):
    """Tests choose their own profile; the caller's COURSE_PROFILE must not leak in."""
    monkeypatch.delenv("COURSE_PROFILE", raising=False)


def require_dataset(name: str):
    """Return the dataset folder, or skip with instructions when it is absent."""
    from course_lib.data import DatasetNotFoundError, dataset_dir

    try:
        return dataset_dir(name)
    except DatasetNotFoundError as e:
        where = os.environ.get("COURSE_DATA_DIR", "<repo>/data")
        pytest.skip(f"{name} not found under {where}: `python -m course_lib.data {name}` or set "
                    f"COURSE_DATA_DIR to a folder holding it ({str(e).splitlines()[0]})")


@pytest.fixture
def camvid_dir():
    return require_dataset("camvid")
