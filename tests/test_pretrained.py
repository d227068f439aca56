"""Pretrained backbones, for real: a local HTTP server on 127.0.0.1 serves weight files made
here (valid, corrupted, missing); no internet is used. The torch.hub cache is a tmp folder."""

import functools
import hashlib
import http.server
import socket
import threading
import time

import pytest
import torch
from torchvision.models import resnet18

from course_lib import runtime as R
from course_lib.models import FCN, DeepLab, PretrainedWeightsError, ResNetFeatures, smp_model
from course_lib.models import pretrained as P


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh torch.hub cache (TORCH_HOME); yields its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("COURSE_WEIGHTS_URL", raising=False)
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1 (random port); yields (base URL, folder, requested paths)."""
    www = tmp_path / "www"
    www.mkdir()
    requested = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, requested
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def weights(tmp_path):
    """A resnet18 state_dict file (random weights, seed 0); returns (state, bytes, hash prefix)."""
    torch.manual_seed(0)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "made.pth"
    torch.save(state, path)
    data = path.read_bytes()
    return state, data, hashlib.sha256(data).hexdigest()[:8]


def serve_as_resnet18(monkeypatch, base: str, filename: str) -> None:
    """Point the course at the test server (as a user would with COURSE_WEIGHTS_URL), and make
    resnet18's expected file name ``filename`` (torchvision's carries the real file's hash)."""
    monkeypatch.setenv("COURSE_WEIGHTS_URL", base)
    monkeypatch.setitem(P.IMAGENET_URLS, "resnet18", f"https://download.pytorch.org/models/{filename}")


def test_valid_file_downloads_verifies_and_loads_then_comes_from_the_cache(hub, server, weights, monkeypatch):
    base, www, requested = server
    state, data, prefix = weights
    name = f"resnet18-{prefix}.pth"
    (www / name).write_bytes(data)
    serve_as_resnet18(monkeypatch, base, name)
    assert P.weights_url("resnet18") == f"{base}/{name}"
    feats = ResNetFeatures("resnet18", output_stride=16, pretrained=True)
    assert (hub / name).read_bytes() == data and requested == [f"/{name}"]
    loaded = feats.state_dict()
    rename = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    for key, value in loaded.items():
        src = next((key.replace(a, b, 1) for a, b in rename.items() if key.startswith(a)), key)
        assert torch.equal(value, state[src]), key
    assert not any(k.startswith("fc.") for k in loaded)  # the ImageNet classifier is not used
    assert len(loaded) == len([k for k in state if not k.startswith("fc.")])
    # the model constructors pass it through, and a cached file is not downloaded again
    (www / name).unlink()
    model = FCN(4, "8s", "resnet18", pretrained=True)
    assert torch.equal(model.backbone.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    model = DeepLab(4, backbone="resnet18", pretrained=True)
    assert torch.equal(model.backbone.stem[0].weight, state["conv1.weight"])
    assert requested == [f"/{name}"]
    scratch = DeepLab(4, backbone="resnet18")  # the default stays from scratch, no download
    assert not torch.equal(scratch.backbone.stem[0].weight, state["conv1.weight"])


def test_corrupted_file_is_refused_by_its_hash_and_not_kept(hub, server, weights, monkeypatch):
    base, www, _ = server
    _, data, prefix = weights
    bad = bytearray(data)
    for i in range(1000, 1010):
        bad[i] ^= 0xFF
    name = f"resnet18-{prefix}.pth"
    (www / name).write_bytes(bytes(bad))
    serve_as_resnet18(monkeypatch, base, name)
    with pytest.raises(PretrainedWeightsError, match=rf"(?s)hash check.*{base}/{name}.*SHA-256.*starting "
                                                     rf"with {prefix}.*nothing was kept.*from scratch"):
        ResNetFeatures("resnet18", pretrained=True)
    assert not hub.exists() or list(hub.iterdir()) == []


def test_corrupted_cached_file_is_named_not_used(hub, weights):
    _, data, prefix = weights
    hub.mkdir(parents=True)
    (hub / f"resnet18-{prefix}.pth").write_bytes(data[:-10])
    with pytest.raises(PretrainedWeightsError, match=rf"cached weights .*resnet18-{prefix}.pth.*corrupt.*Delete it"):
        P.fetch_weights(f"http://127.0.0.1:9/resnet18-{prefix}.pth")


def test_missing_file_says_what_failed_and_how_to_train_from_scratch(hub, server, monkeypatch):
    base, _, _ = server
    monkeypatch.setenv("COURSE_WEIGHTS_URL", base + "/")  # torchvision's own file name: not served
    url = f"{base}/{P.IMAGENET_URLS['resnet18'].rsplit('/', 1)[1]}"
    with pytest.raises(PretrainedWeightsError, match=rf"(?s){url}.*HTTP 404.*No partial file was kept.*"
                                                     rf"COURSE_PRETRAINED.*pretrained=False"):
        DeepLab(4, backbone="resnet18", pretrained=True)
    assert not hub.exists() or list(hub.iterdir()) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_host_fails_fast(hub, monkeypatch):
    monkeypatch.setenv("COURSE_WEIGHTS_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    t0 = time.perf_counter()
    with pytest.raises(PretrainedWeightsError, match=r"(?s)cannot connect.*from scratch"):
        ResNetFeatures("resnet34", pretrained=True)
    assert time.perf_counter() - t0 < 5


def test_a_server_that_never_answers_times_out(hub):
    with socket.socket() as s:  # listens (the kernel completes the connection) but never replies
        s.bind(("127.0.0.1", 0))
        s.listen()
        url = f"http://127.0.0.1:{s.getsockname()[1]}/resnet18-0123abcd.pth"
        t0 = time.perf_counter()
        with pytest.raises(PretrainedWeightsError, match=r"(?s)timeout 0.5 s.*timed out.*from scratch"):
            P.fetch_weights(url, timeout=0.5, progress=False)
        assert time.perf_counter() - t0 < 5
    assert not hub.exists() or list(hub.iterdir()) == []


def test_resnet10_has_no_imagenet_weights(hub, monkeypatch):
    monkeypatch.setenv("COURSE_WEIGHTS_URL", "http://127.0.0.1:9")  # would fail if it were tried
    with pytest.raises(ValueError, match=r"'resnet10' has no ImageNet weights.*\['resnet18', 'resnet34'\]"):
        FCN(4, backbone="resnet10", pretrained=True)
    assert not hub.exists()


def test_file_name_without_hash_is_refused(hub):
    with pytest.raises(PretrainedWeightsError, match="no SHA-256 prefix"):
        P.fetch_weights("http://127.0.0.1:9/resnet18.pth")


def test_torchvision_urls_carry_a_hash_prefix():
    for url in P.IMAGENET_URLS.values():
        assert url.startswith("https://download.pytorch.org/models/") and P._HASH_IN_NAME.search(url)


@pytest.mark.parametrize("value, expected", [("1", True), ("yes", True), (" TRUE ", True), ("on", True),
                                             ("0", False), ("no", False), ("", False), ("Off", False)])
def test_course_pretrained_parsing(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_PRETRAINED", value)
    assert R.get_pretrained() is expected
    assert R.get_pretrained(prefer=not expected) is (not expected)  # the argument wins


def test_course_pretrained_default_invalid_and_banner(monkeypatch, capsys):
    monkeypatch.delenv("COURSE_PRETRAINED", raising=False)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert R.get_pretrained() is False
    assert R.setup(profile="smoke").pretrained is False
    assert "pretrained: no" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_PRETRAINED", "1")
    assert R.setup(profile="smoke").pretrained is True
    assert "pretrained: yes" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_PRETRAINED", "maybe")
    with pytest.raises(ValueError, match=r"COURSE_PRETRAINED='maybe' is not a yes/no value.*1.*0"):
        R.setup(profile="smoke")


def test_smp_model_asks_smp_for_imagenet_weights_only_when_pretrained(monkeypatch):
    smp = pytest.importorskip("segmentation_models_pytorch")
    seen = []

    def fake_unet(encoder, encoder_weights=None, classes=1, **kwargs):
        seen.append(encoder_weights)
        if encoder_weights is not None:
            raise OSError("no network")  # what an offline Hugging Face download ends in
        return torch.nn.Conv2d(3, classes, 1)

    monkeypatch.setattr(smp, "Unet", fake_unet)
    smp_model("Unet", "resnet18", 4)
    with pytest.raises(PretrainedWeightsError, match=r"(?s)'resnet18'.*OSError: no network.*from scratch"):
        smp_model("Unet", "resnet18", 4, pretrained=True)
    assert seen == [None, "imagenet"]
