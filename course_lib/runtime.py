"""Profiles, device choice, seeding and the setup banner every notebook prints.

A *profile* fixes sizes (image and crop size, subset sizes, batch size, model width; each
notebook sets its epochs per profile in its ``CFG``); the code path is the same in all three:

- ``smoke``: CI. Seconds per notebook, tiny subsets; falls back to the synthetic ``Shapes``
  dataset when a real one is absent (and says so).
- ``cpu``: a student laptop. Meaningful results in about ten minutes per notebook.
- ``gpu``: full resolution and full schedules.

Chosen by the environment variable ``COURSE_PROFILE``; default ``gpu`` where CUDA is
available, else ``cpu``.
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

PROFILE_ENV = "COURSE_PROFILE"
DATA_ENV = "COURSE_DATA_DIR"
PRECISION_ENV = "COURSE_PRECISION"
PRECISIONS = ("fp32", "bf16")
PRETRAINED_ENV = "COURSE_PRETRAINED"
_YES, _NO = ("1", "yes", "true", "on"), ("0", "no", "false", "off", "")
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Profile:
    """Sizes and schedules for one run of the course.

    ``camvid_size`` is the (H, W) that CamVid images are resized to for training (before the
    random rescaling); ``crop_size`` the random crops that notebooks 05+ train on. Metrics are
    always computed against the full-resolution 360×480 labels. Epochs are per notebook
    (each sets its own in its ``CFG``).
    ``max_train_items`` / ``max_eval_items`` cap dataset subsets (``None`` = all).
    ``width`` scales the channel widths of the course's from-scratch models.
    ``detection_crop`` / ``detection_batch_size``: the random crops (H, W) and batch size that
    instance-segmentation models (notebook 10, nuclei at their own scale) train on.
    """

    name: str
    camvid_size: tuple[int, int]
    crop_size: tuple[int, int]
    max_train_items: int | None
    max_eval_items: int | None
    batch_size: int
    width: int
    num_workers: int
    detection_crop: tuple[int, int] = (256, 256)
    detection_batch_size: int = 4

    def subset(self, n: int, train: bool = True) -> int:
        """How many of ``n`` items this profile uses (train or eval subset)."""
        cap = self.max_train_items if train else self.max_eval_items
        return n if cap is None else min(n, cap)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke", camvid_size=(96, 128), crop_size=(64, 96), max_train_items=8,
        max_eval_items=4, batch_size=4, width=8, num_workers=0,
        detection_crop=(128, 128), detection_batch_size=2,
    ),
    "cpu": Profile(
        name="cpu", camvid_size=(176, 240), crop_size=(128, 176), max_train_items=None,
        max_eval_items=None, batch_size=8, width=32, num_workers=0,
        detection_crop=(256, 256), detection_batch_size=4,
    ),
    "gpu": Profile(
        name="gpu", camvid_size=(360, 480), crop_size=(256, 352), max_train_items=None,
        max_eval_items=None, batch_size=16, width=64, num_workers=8,
        # half the nuclei images are 256 × 256: a larger crop would be mostly padding
        detection_crop=(256, 256), detection_batch_size=16,
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The profile called ``name``, else ``$COURSE_PROFILE``, else gpu/cpu by hardware."""
    name = name or os.environ.get(PROFILE_ENV)
    if not name:
        name = "gpu" if torch.cuda.is_available() else "cpu"
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"Unknown profile {name!r} (from ${PROFILE_ENV} or the argument). "
            f"Choose one of {sorted(PROFILES)}, e.g. `export {PROFILE_ENV}=cpu`."
        )
    return PROFILES[name]


DEVICE_ENV = "COURSE_DEVICE"


def _parse_device(value: str, source: str) -> torch.device:
    """"cpu", "cuda", "cuda:N" or "mps" (any case, spaces ignored) → a device that exists here."""
    name = value.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not (kind == "cuda" and index.isdigit())):
        raise ValueError(f"{source}={value!r} is not a device: use cpu, cuda, cuda:N or mps "
                         f"(any case), or unset {DEVICE_ENV} to choose automatically.")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RuntimeError(f"{source}={value!r}, but this machine has no CUDA GPU that torch can use "
                               f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). Use cpu, or "
                               f"unset {DEVICE_ENV} to choose automatically.")
        if index and int(index) >= count:
            raise RuntimeError(f"{source}={value!r}, but only {count} CUDA GPU(s) are visible "
                               f"(cuda:0..cuda:{count - 1}); unset {DEVICE_ENV} to choose automatically.")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise RuntimeError(f"{source}={value!r}, but Apple's MPS backend is not available here. "
                               f"Use cpu, or unset {DEVICE_ENV} to choose automatically.")
    return torch.device(name)


def get_device(prefer: str | torch.device | None = None) -> torch.device:
    """cuda > mps > cpu, unless ``prefer`` (or ``$COURSE_DEVICE``) names one: "cpu", "cuda",
    "cuda:N" or "mps", in any case. An unknown or unavailable device raises an error naming
    where it came from."""
    if isinstance(prefer, torch.device):
        return prefer
    if prefer:
        return _parse_device(prefer, "prefer")
    if os.environ.get(DEVICE_ENV, "").strip():
        return _parse_device(os.environ[DEVICE_ENV], DEVICE_ENV)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bf16 convolutions natively (AVX-512 BF16 or AMX, via oneDNN).

    Without it, bf16 autocast is *emulated* and much slower than fp32: on a 2-core AVX2-only
    AMD EPYC we measured a ResNet-18 U-Net step 12-18× slower in bf16 than in fp32.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True for CUDA GPUs with bf16 tensor cores (compute capability ≥ 8.0)."""
    try:
        return torch.cuda.get_device_capability(device) >= (8, 0)
    except (AssertionError, RuntimeError):  # no CUDA build or no GPU
        return False


def get_precision(device: torch.device, prefer: str | None = None) -> str:
    """Training/inference precision: "bf16" (autocast; losses and metrics stay fp32) or "fp32".

    ``prefer`` or ``$COURSE_PRECISION`` (fp32 | bf16, any case) decide; otherwise bf16 on
    GPUs with native bf16 (compute capability ≥ 8.0: A100, RTX 30xx and later) and on CPUs
    with native bf16 (:func:`cpu_has_fast_bf16`), fp32 elsewhere (T4, V100, MPS, CPUs
    without bf16 units), where bf16 would be emulated.
    """
    choice = prefer or os.environ.get(PRECISION_ENV)
    if choice:
        name = choice.strip().lower()
        if name not in PRECISIONS:
            raise ValueError(f"Unknown precision {choice!r} (from ${PRECISION_ENV} or the argument). "
                             f"Choose one of {PRECISIONS}, e.g. `export {PRECISION_ENV}=fp32`.")
        if name == "bf16" and device.type == "mps":
            raise ValueError(f"bf16 autocast is not supported on MPS; unset ${PRECISION_ENV} or set it to fp32.")
        return name
    if device.type == "cuda":
        return "bf16" if cuda_has_native_bf16(device) else "fp32"
    if device.type == "cpu" and cpu_has_fast_bf16():
        return "bf16"
    return "fp32"


def get_pretrained(prefer: bool | None = None) -> bool:
    """Whether the course's models start from ImageNet-pretrained encoders (needs internet the
    first time; the weights are cached by torch.hub): ``prefer`` if given, else
    ``$COURSE_PRETRAINED`` (1/yes/true/on or 0/no/false/off, any case), else no (from scratch)."""
    if prefer is not None:
        return bool(prefer)
    value = os.environ.get(PRETRAINED_ENV, "")
    name = value.strip().lower()
    if name not in _YES + _NO:
        raise ValueError(f"{PRETRAINED_ENV}={value!r} is not a yes/no value: use 1 (ImageNet-pretrained "
                         f"encoders, needs internet once) or 0 (train from scratch), or unset it.")
    return name in _YES


def device_name(device: torch.device) -> str:
    """A short human description of ``device`` for result tables, e.g. "CPU (2 cores, x86_64)"."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type.upper()} ({os.cpu_count()} cores, {platform.machine()})"


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a seeded CPU generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def data_root() -> Path:
    """Where datasets live: ``$COURSE_DATA_DIR``, else ``<repo>/data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser().resolve() if env else REPO_ROOT / "data"


@dataclass(frozen=True)
class Setup:
    """What a notebook's setup cell returns: profile, device, data root, seed, generator,
    precision ("bf16" or "fp32", see :func:`get_precision`) and ``pretrained`` (start the
    encoders from ImageNet weights, see :func:`get_pretrained`; pass it to the models)."""

    profile: Profile
    device: torch.device
    data_root: Path
    seed: int
    generator: torch.Generator
    precision: str = "fp32"
    pretrained: bool = False

    def __repr__(self) -> str:  # the one-line summary printed in every notebook
        return (f"Setup(profile={self.profile.name!r}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, pretrained={self.pretrained}, "
                f"data_root={str(self.data_root)!r}, seed={self.seed})")


def setup(seed: int = 0, profile: str | None = None, verbose: bool = True) -> Setup:
    """Pick profile and device, seed everything, and print the banner.

    On CPU the thread count is left to torch (all cores); on CUDA, TF32 matmuls are allowed.
    """
    prof = get_profile(profile)
    device = get_device()
    precision = get_precision(device)
    pretrained = get_pretrained()
    gen = seed_everything(seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    root = data_root()
    if verbose:
        dev_name = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
        print(f"profile : {prof.name}  (set ${PROFILE_ENV}=smoke|cpu|gpu to change)")
        print(f"device  : {device} ({dev_name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
        why = f"${PRECISION_ENV}" if os.environ.get(PRECISION_ENV) else (
            "auto: native bf16" if precision == "bf16" else "auto: no native bf16 on this device")
        print(f"precision: {precision} autocast for training and inference ({why}); losses and metrics in fp32"
              if precision == "bf16" else f"precision: fp32 ({why}; set ${PRECISION_ENV}=bf16|fp32 to choose)")
        print("pretrained: yes (ImageNet encoders, downloaded once into the torch.hub cache; "
              f"${PRETRAINED_ENV}=0 trains from scratch)" if pretrained else
              f"pretrained: no (from scratch; set ${PRETRAINED_ENV}=1 for ImageNet encoders, needs internet once)")
        src = f"${DATA_ENV}" if os.environ.get(DATA_ENV) else "default <repo>/data"
        print(f"data    : {root}  ({src})")
        print(f"seed    : {seed}")
    return Setup(prof, device, root, seed, gen, precision, pretrained)
