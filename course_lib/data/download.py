"""Dataset downloads: progress bar, SHA-256 check, atomic writes, safe extraction.

The list of URLs and checksums is ``data/manifest.json`` in the repository. Each dataset
entry names its ``folder`` under the data root, a ``check`` file whose presence means "the
dataset is there", its ``files`` (``url``, ``filename``, ``sha256``) and a ``prepare`` step
(a function registered with :func:`register_prepare`) that turns the extracted upstream
layout into the layout the loaders read.

Nothing half-written is left behind: a file is downloaded to ``<name>.part`` and renamed
only once its checksum matched; an archive is extracted and prepared in a temporary folder
that is renamed into place as the last step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ..runtime import DATA_ENV, REPO_ROOT, data_root

MANIFEST_PATH = REPO_ROOT / "data" / "manifest.json"
PrepareFn = Callable[[Path, Path], None]
_PREPARE: dict[str, PrepareFn] = {}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable right now; the message says how to fix it."""


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 does not match the manifest."""


def register_prepare(name: str) -> Callable[[PrepareFn], PrepareFn]:
    """Register ``fn(extracted_dir, target_dir)`` as the prepare step called ``name``."""

    def deco(fn: PrepareFn) -> PrepareFn:
        _PREPARE[name] = fn
        return fn

    return deco


def load_manifest(path: Path | None = None) -> dict:
    """The download manifest (dataset name → entry)."""
    with open(path or MANIFEST_PATH, encoding="utf-8") as f:
        return json.load(f)


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0,
                  progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` atomically and check its SHA-256.

    The data goes to ``dest.part`` first and is renamed only when complete and verified; on
    any failure the partial file is removed. With ``sha256=None`` the file is accepted and
    its checksum is printed as a warning (the manifest has none to compare with).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress) as bar:
                while block := resp.read(1 << 16):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        digest = h.hexdigest()
        if sha256 is not None and digest != sha256.lower():
            raise ChecksumError(
                f"{url}: SHA-256 is {digest}, expected {sha256}. The download is corrupt or "
                f"the upstream file changed; nothing was kept. Try again, or report it."
            )
        if sha256 is None:
            warnings.warn(f"{url}: no checksum in the manifest to verify against; "
                          f"downloaded file has SHA-256 {digest}.", stacklevel=2)
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _safe_target(base: Path, member: str) -> Path:
    target = (base / member).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ValueError(f"Refusing to extract {member!r}: it would land outside {base}.")
    return target


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a .zip / .tar(.gz|.bz2|.xz) into ``dest``; no member may escape ``dest``.

    Absolute paths, ``..`` components, and (for tar) links pointing outside ``dest`` are
    refused with ValueError before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                _safe_target(dest, info.filename)
            zf.extractall(dest)
    elif any(name.endswith(s) for s in (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                _safe_target(dest, m.name)
                if m.issym() or m.islnk():
                    link_base = dest / Path(m.name).parent if m.issym() else dest
                    _safe_target(dest, str((link_base / m.linkname).relative_to(dest))
                                 if not os.path.isabs(m.linkname) else m.linkname)
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise ValueError(f"Refusing to extract {m.name!r}: special file in archive.")
            tf.extractall(dest, filter="data")
    else:
        raise ValueError(f"Don't know how to extract {archive.name}: expected .zip or .tar.*")
    return dest


def missing_message(name: str, entry: dict, folder: Path) -> str:
    urls = ", ".join(f["url"] for f in entry.get("files", [])) or "(no download; see data/README.md)"
    return (
        f"Dataset {name!r} not found: expected {folder / entry['check']}.\n"
        f"  - Download it with `python -m course_lib.data {name}` (or download=True); "
        f"source: {urls}\n"
        f"  - or point ${DATA_ENV} at a folder that already holds '{entry['folder']}/' "
        f"(e.g. `export {DATA_ENV}=../shared/data`)."
    )


def dataset_dir(name: str, root: Path | str | None = None, download: bool = False,
                manifest: dict | None = None) -> Path:
    """The folder of dataset ``name`` under ``root``; download it first if asked.

    Raises DatasetNotFoundError (naming dataset, URL, expected folder and ``$COURSE_DATA_DIR``)
    when it is absent and ``download`` is False or the download fails.
    """
    manifest = manifest or load_manifest()
    if name not in manifest:
        raise KeyError(f"No dataset {name!r} in the manifest; known: {sorted(manifest)}")
    entry = manifest[name]
    root = Path(root) if root is not None else data_root()
    folder = root / entry["folder"]
    if (folder / entry["check"]).exists():
        return folder
    if not download:
        raise DatasetNotFoundError(missing_message(name, entry, folder))
    try:
        fetch(name, root, manifest)
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        if isinstance(e, DatasetNotFoundError):
            raise
        raise DatasetNotFoundError(
            f"Downloading {name!r} failed ({e}). No network? " + missing_message(name, entry, folder)
        ) from e
    return folder


def fetch(name: str, root: Path, manifest: dict | None = None, progress: bool = True) -> Path:
    """Download, verify, extract and prepare dataset ``name`` into ``root/<folder>``."""
    manifest = manifest or load_manifest()
    entry = manifest[name]
    root = Path(root)
    folder = root / entry["folder"]
    if (folder / entry["check"]).exists():
        return folder
    if entry.get("prepare") and entry["prepare"] not in _PREPARE:
        raise KeyError(f"No prepare step {entry['prepare']!r} registered for {name!r}.")
    downloads = root / ".downloads"
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        extracted = work / "extracted"
        extracted.mkdir()
        for f in entry["files"]:
            archive = downloads / f["filename"]
            if not archive.exists() or (f.get("sha256") and sha256sum(archive) != f["sha256"]):
                download_file(f["url"], archive, f.get("sha256"), progress=progress)
            if f.get("extract", True):
                safe_extract(archive, extracted)
            else:
                shutil.copy2(archive, extracted / f["filename"])
        staged = work / "staged"
        staged.mkdir()
        _PREPARE[entry["prepare"]](extracted, staged)
        if not (staged / entry["check"]).exists():
            raise RuntimeError(f"Prepared {name!r} but {entry['check']} is missing: upstream "
                               f"layout changed? Nothing was installed.")
        if folder.exists():  # a previous, incomplete copy without its check file
            shutil.rmtree(folder)
        os.replace(staged, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
