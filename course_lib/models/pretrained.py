"""ImageNet weights for the course's ResNet backbones (with internet; off by default).

The URLs are torchvision's (``ResNet18_Weights.IMAGENET1K_V1`` ...). Their file names end in
the first hex digits of the file's SHA-256 (torch.hub's convention, ``resnet18-f37072fd.pth``),
and that prefix is checked against the downloaded bytes. Files are cached where torch.hub
caches them (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``), so a
file torchvision already downloaded is reused, and they are downloaded with the course's
:func:`~course_lib.data.download_file` (timeout, atomic rename, nothing partial kept).
``$COURSE_WEIGHTS_URL`` (or ``base_url``) replaces the server part of the URL, everything up
to the file name: a mirror, or a test server.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn
from torchvision.models import ResNet18_Weights, ResNet34_Weights

WEIGHTS_URL_ENV = "COURSE_WEIGHTS_URL"
TIMEOUT_S = 30.0
IMAGENET_URLS: dict[str, str] = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1.url,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1.url,
}
"""Backbone name → URL of its ImageNet weights (torchvision's). ResNet-10 has none."""
FROM_SCRATCH = ("To train from scratch instead, unset $COURSE_PRETRAINED (or set it to 0), or pass "
                "pretrained=False.")
_HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.")


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights could not be downloaded, verified or loaded; the message says why
    (URL, reason) and how to continue from scratch."""


def weights_url(name: str, base_url: str | None = None) -> str:
    """URL of backbone ``name``'s ImageNet weights; ``base_url`` (default
    ``$COURSE_WEIGHTS_URL``) replaces everything before the file name."""
    if name not in IMAGENET_URLS:
        raise ValueError(f"Backbone {name!r} has no ImageNet weights (the course's ResNet-10 was never "
                         f"trained on ImageNet); pretrained=True works for {sorted(IMAGENET_URLS)}. "
                         f"Choose one of those, or pass pretrained=False.")
    url = IMAGENET_URLS[name]
    base = base_url if base_url is not None else os.environ.get(WEIGHTS_URL_ENV, "").strip()
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[1]}" if base else url


def fetch_weights(url: str, timeout: float = TIMEOUT_S, progress: bool = True) -> Path:
    """The file at ``url`` in torch.hub's cache, downloaded first if absent, its SHA-256
    checked against the hex prefix in its name. Raises :class:`PretrainedWeightsError`."""
    from ..data.download import ChecksumError, download_file, sha256sum  # no import cycle

    filename = url.rsplit("/", 1)[-1].split("?")[0]
    match = _HASH_IN_NAME.search(filename)
    if match is None:
        raise PretrainedWeightsError(f"{url}: the file name carries no SHA-256 prefix (name-<hex>.pth, as "
                                     f"torch.hub names them), so a download could not be verified. "
                                     f"{FROM_SCRATCH}")
    prefix = match.group(1)
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if path.is_file():
        digest = sha256sum(path)
        if digest.startswith(prefix):
            return path
        raise PretrainedWeightsError(f"The cached weights {path} have SHA-256 {digest}, but their name says "
                                     f"it starts with {prefix}: the file is corrupt. Delete it to download "
                                     f"it again. {FROM_SCRATCH}")
    try:
        return download_file(url, path, sha256=prefix, timeout=timeout, progress=progress)
    except ChecksumError as e:
        raise PretrainedWeightsError(f"Pretrained weights failed their hash check: {e} {FROM_SCRATCH}") from None
    except OSError as e:  # DownloadError (offline, HTTP error, timeout) or an unwritable cache
        raise PretrainedWeightsError(f"Cannot get pretrained weights (timeout {timeout:g} s): {e} "
                                     f"No partial file was kept in {path.parent}. {FROM_SCRATCH}") from None


def load_imagenet_weights(net: nn.Module, name: str, url: str | None = None,
                          timeout: float = TIMEOUT_S, progress: bool = True) -> nn.Module:
    """Load backbone ``name``'s ImageNet weights into the torchvision ResNet ``net`` (in place;
    returns it). The 1000-class ``fc`` classifier of the file is ignored: segmentation models
    use the convolutional stages only, so ``net.fc`` keeps its random init."""
    url = url or weights_url(name)
    path = fetch_weights(url, timeout, progress)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
    except Exception as e:  # not a state_dict, or tensors of other shapes
        raise PretrainedWeightsError(f"{path} (from {url}) passed its hash check but does not load into a "
                                     f"{name}: {(str(e).splitlines() or [type(e).__name__])[0]}. {FROM_SCRATCH}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise PretrainedWeightsError(f"{path} (from {url}) does not hold {name} weights: missing {missing[:4]}, "
                                     f"unexpected {unexpected[:4]}. {FROM_SCRATCH}")
    return net
