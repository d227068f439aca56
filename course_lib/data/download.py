"""Dataset downloads: progress bar, SHA-256 check, atomic writes, safe extraction.

The list of URLs and checksums is ``data/manifest.json`` in the repository. Each dataset
entry names its ``folder`` under the data root, a ``check`` file whose presence means "the
dataset is there", its ``files`` (``url``, ``filename``, ``sha256``) and a ``prepare`` step
(a function registered with :func:`register_prepare`) that turns the extracted upstream
layout into the layout the loaders read.

Nothing half-written is left behind: a file is downloaded to ``<name>.<pid>.part`` and renamed
only once its length matches ``Content-Length``, its checksum matched and (for an archive) it
opens as one; its SHA-256 is then recorded in ``<name>.sha256``, and a cached archive is
reused only if it still has that checksum. An archive that fails to extract is deleted from
the cache. It is extracted and prepared in a temporary folder (``.<dataset>-tmp<pid>-*``,
removed on the next run if its process was killed) that is renamed into place as the last
step. A folder the course did not install is never deleted or overwritten.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import os
import re
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
MAX_DOWNLOAD_BYTES = 8 << 30  # no course archive is near 8 GiB
MAX_ARCHIVE_BYTES = 16 << 30  # total uncompressed size of one archive
MAX_ARCHIVE_MEMBERS = 200_000  # DSB2018 stage1_train alone has about 30,000 files
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
PrepareFn = Callable[[Path, Path], None]
_PREPARE: dict[str, PrepareFn] = {}


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is neither on disk nor downloadable right now; the message says how to fix it."""


class DownloadError(OSError):
    """A download failed or delivered something unusable; the message names dataset and URL."""


class ChecksumError(ValueError):
    """A downloaded file's SHA-256 does not match the expected one (manifest or file name)."""


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


def _archive_kind(name: str) -> str | None:
    """".zip", ".tar", ".tar.gz", ... for an archive file name, else None."""
    return next((suf for suf in ARCHIVE_SUFFIXES if name.lower().endswith(suf)), None)


def verify_archive(path: Path, name: str | None = None) -> None:
    """Raise DownloadError unless ``path`` opens as the archive its name (or ``name``) says
    and its member list reads to the end (a truncated zip has no central directory; a
    truncated tar stream ends early)."""
    path = Path(path)
    kind = _archive_kind(name or path.name)
    try:
        if kind == ".zip":
            with zipfile.ZipFile(path) as zf:
                zf.infolist()
        else:
            with tarfile.open(path) as tf:
                tf.getmembers()
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, ValueError) as e:
        with open(path, "rb") as f:
            head = f.read(24)
        hint = ("It looks like a web page (an error page, a login or a proxy), not the file."
                if head.lstrip()[:1] == b"<" else "The file is truncated or corrupt.")
        raise DownloadError(f"{name or path.name} is not a valid {kind} archive ({type(e).__name__}: "
                            f"{e}; it begins with {head!r}). {hint}") from None


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def recorded_sha256(path: Path) -> str | None:
    """The SHA-256 recorded when ``path`` was downloaded completely, else None."""
    try:
        return _record_path(path).read_text(encoding="utf-8").split()[0].lower()
    except (OSError, IndexError):
        return None


def _discard(path: Path) -> None:
    """Remove a course-downloaded file and its checksum record."""
    path.unlink(missing_ok=True)
    _record_path(path).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def _remove_stale(folder: Path, prefix: str, suffix: str = "") -> None:
    """Delete ``<prefix><pid>-*<suffix>`` / ``<prefix><pid><suffix>`` entries of ``folder`` whose
    process is gone (a download or extraction that was killed): course temporaries only."""
    pattern = re.compile(rf"{re.escape(prefix)}(\d+)(-[^/]*)?{re.escape(suffix)}")
    for p in folder.glob(f"{glob.escape(prefix)}*{suffix}"):
        m = pattern.fullmatch(p.name)
        if m and not p.is_symlink() and not _pid_alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def download_file(url: str, dest: Path, sha256: str | None = None, timeout: float = 60.0,
                  progress: bool = True, max_bytes: int = MAX_DOWNLOAD_BYTES) -> Path:
    """Download ``url`` to ``dest`` atomically, check it, and record its SHA-256.

    The data goes to ``dest.<pid>.part`` first and is renamed only when complete: as many bytes as
    the server's ``Content-Length`` announced, the SHA-256 equal to ``sha256`` (if given), and
    for a .zip/.tar.* name an archive that opens. On any failure the partial file is removed
    and DownloadError (or ChecksumError) names the URL. With ``sha256=None`` the checksum is
    printed as a warning. ``sha256`` may also be a prefix of the digest of at least 8 hex
    digits (what torch.hub's weight file names end in). The digest is written to
    ``dest.sha256`` (see :func:`recorded_sha256`). ``max_bytes`` caps the size of the download.
    """
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{8,64}", sha256):
        raise ValueError(f"sha256 must be a hex SHA-256 digest or a prefix of it (8 to 64 hex digits), "
                         f"got {sha256!r}.")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest.parent, f"{dest.name}.", ".part")
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")  # one per process: no interleaving
    h = hashlib.sha256()
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(part, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                if total is not None and total > max_bytes:
                    raise DownloadError(f"{url}: the server announces {total} bytes, larger than "
                                        f"the cap of {max_bytes} bytes; refusing to download it.")
                received = 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                          disable=not progress) as bar:
                    while block := resp.read(1 << 16):
                        received += len(block)
                        if received > max_bytes:
                            raise DownloadError(f"{url}: more than {max_bytes} bytes received, "
                                                f"larger than the cap; stopped.")
                        out.write(block)
                        h.update(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}. The file "
                                f"may have moved (check data/manifest.json) or the server is down; "
                                f"try again later.") from None
        except urllib.error.URLError as e:
            raise DownloadError(f"{url}: cannot connect ({e.reason}). No network, a proxy, "
                                f"or the server is down?") from None
        except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
            raise DownloadError(f"{url}: the connection dropped during the transfer "
                                f"({type(e).__name__}: {e}); nothing was kept. Try again.") from None
        if total is not None and received != total:
            raise DownloadError(f"{url}: the transfer stopped after {received} of {total} bytes "
                                f"(connection dropped); nothing was kept. Try again.")
        digest = h.hexdigest()
        if sha256 is not None and not digest.startswith(sha256.lower()):
            wanted = sha256 if len(sha256) == 64 else f"one starting with {sha256}"
            raise ChecksumError(
                f"{url}: SHA-256 is {digest}, expected {wanted}. The download is corrupt or "
                f"the upstream file changed; nothing was kept. Try again, or report it."
            )
        if _archive_kind(dest.name):
            try:
                verify_archive(part, dest.name)
            except DownloadError as e:
                raise DownloadError(f"{url}: {e} Nothing was kept.") from None
        if sha256 is None:
            warnings.warn(f"{url}: no checksum in the manifest to verify against; "
                          f"downloaded file has SHA-256 {digest}.", stacklevel=2)
        os.replace(part, dest)
        _atomic_write_text(_record_path(dest), f"{digest}  {dest.name}\n")
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _safe_target(base: Path, member: str) -> Path:
    target = (base / member).resolve()
    if not target.is_relative_to(base.resolve()):
        raise ValueError(f"Refusing to extract {member!r}: it would land outside {base}.")
    return target


def _check_totals(archive: Path, members: int, size: int, max_members: int, max_bytes: int) -> None:
    if members > max_members:
        raise ValueError(f"Refusing to extract {archive.name}: it has {members} members, more than "
                         f"the cap of {max_members} (max_members).")
    if size > max_bytes:
        raise ValueError(f"Refusing to extract {archive.name}: its members add up to {size} bytes, "
                         f"more than the cap of {max_bytes} (max_bytes).")


def safe_extract(archive: Path, dest: Path, max_members: int = MAX_ARCHIVE_MEMBERS,
                 max_bytes: int = MAX_ARCHIVE_BYTES) -> Path:
    """Extract a .zip / .tar(.gz|.bz2|.xz) into ``dest``; no member may escape ``dest``.

    Absolute paths, ``..`` components, (for tar) links pointing outside ``dest`` and special
    files, more than ``max_members`` members or more than ``max_bytes`` uncompressed are
    refused with ValueError before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    kind = _archive_kind(archive.name)
    if kind is None:
        raise ValueError(f"Don't know how to extract {archive.name}: expected .zip or .tar.*")
    dest.mkdir(parents=True, exist_ok=True)
    if kind == ".zip":
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            _check_totals(archive, len(infos), sum(i.file_size for i in infos), max_members, max_bytes)
            for info in infos:
                _safe_target(dest, info.filename)
            zf.extractall(dest)
    else:
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            _check_totals(archive, len(members), sum(m.size for m in members), max_members, max_bytes)
            for m in members:
                _safe_target(dest, m.name)
                if m.issym() or m.islnk():
                    link_base = dest / Path(m.name).parent if m.issym() else dest
                    _safe_target(dest, str((link_base / m.linkname).relative_to(dest))
                                 if not os.path.isabs(m.linkname) else m.linkname)
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise ValueError(f"Refusing to extract {m.name!r}: special file in archive.")
            tf.extractall(dest, filter="data")
    return dest


def missing_message(name: str, entry: dict, folder: Path) -> str:
    urls = ", ".join(f["url"] for f in entry.get("files", [])) or "(no download; see data/README.md)"
    present = (f"  - {folder} exists but has no {entry['check']}: move or rename it first (the "
               f"course never deletes it).\n" if folder.exists() else "")
    return (
        f"Dataset {name!r} not found: expected {folder / entry['check']}.\n" + present +
        f"  - Download it with `python -m course_lib.data {name}` (or download=True); "
        f"source: {urls}\n"
        f"  - or point ${DATA_ENV} at a folder that already holds '{entry['folder']}/' "
        f"(e.g. `export {DATA_ENV}=../shared/data`)."
    )


def incomplete_hint(name: str, folder: Path) -> str:
    """How to repair an incomplete dataset folder (for the end of an error message)."""
    return (f"The dataset folder {folder} is incomplete: move it away and download it again with "
            f"`python -m course_lib.data {name}`, or point ${DATA_ENV} at a complete copy.")


def _refuse_foreign_folder(name: str, entry: dict, folder: Path) -> None:
    """Raise FileExistsError if ``folder`` exists without its check file: the course did not
    install it (installs are atomic), so it may hold the user's files."""
    if folder.exists() or folder.is_symlink():
        raise FileExistsError(
            f"Dataset {name!r}: {folder} exists but has no {entry['check']}, so it is not a copy "
            f"the course installed. The course never deletes or overwrites a folder it did not "
            f"create: move or rename it (e.g. `mv {folder} {folder}.old`) and run the download again.")


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
    except DatasetNotFoundError:
        raise
    except OSError as e:  # DownloadError, FileExistsError, a full disk, ...
        raise DatasetNotFoundError(f"{e}\n" + missing_message(name, entry, folder)) from e
    return folder


def fetch(name: str, root: Path, manifest: dict | None = None, progress: bool = True) -> Path:
    """Download, verify, extract and prepare dataset ``name`` into ``root/<folder>``.

    Raises DownloadError / ChecksumError naming the dataset and URL when a download fails,
    FileExistsError when ``root/<folder>`` exists but is not a complete copy (it is left alone).
    """
    manifest = manifest or load_manifest()
    if name not in manifest:
        raise KeyError(f"No dataset {name!r} in the manifest; known: {sorted(manifest)}")
    entry = manifest[name]
    root = Path(root)
    folder = root / entry["folder"]
    if (folder / entry["check"]).exists():
        return folder
    _refuse_foreign_folder(name, entry, folder)
    if entry.get("prepare") and entry["prepare"] not in _PREPARE:
        raise KeyError(f"No prepare step {entry['prepare']!r} registered for {name!r}.")
    downloads = root / ".downloads"
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, f".{name}-tmp")
    work = Path(tempfile.mkdtemp(prefix=f".{name}-tmp{os.getpid()}-", dir=root))
    try:
        extracted = work / "extracted"
        extracted.mkdir()
        for f in entry["files"]:
            archive = downloads / f["filename"]
            expected = f.get("sha256") or recorded_sha256(archive)
            try:
                if not (archive.exists() and expected and sha256sum(archive) == expected.lower()):
                    download_file(f["url"], archive, f.get("sha256"), progress=progress)
            except (DownloadError, ChecksumError) as e:
                raise type(e)(f"Dataset {name!r}: {e}") from None
            try:
                if f.get("extract", True):
                    safe_extract(archive, extracted)
                else:
                    shutil.copy2(archive, extracted / f["filename"])
            except (ValueError, zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
                _discard(archive)  # never keep an archive that failed
                if isinstance(e, ValueError):
                    raise ValueError(f"Dataset {name!r} ({f['url']}): {e} The archive was deleted.") from None
                raise DownloadError(f"Dataset {name!r}: {archive.name} from {f['url']} is corrupt "
                                    f"({type(e).__name__}: {e}); it was deleted. Run the download "
                                    f"again.") from None
        staged = work / "staged"
        staged.mkdir()
        _PREPARE[entry["prepare"]](extracted, staged)
        if not (staged / entry["check"]).exists():
            raise RuntimeError(f"Prepared {name!r} but {entry['check']} is missing: upstream "
                               f"layout changed? Nothing was installed.")
        _refuse_foreign_folder(name, entry, folder)  # appeared meanwhile
        os.replace(staged, folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder
