"""What each notebook trains in a profile (by default ``gpu``), built from the notebook's own ``CFG``.

No GPU is lent to the course, so the ``gpu`` profile is planned on a CPU: :func:`plan` reads the
``CFG = {"smoke": ..., "cpu": ..., "gpu": ...}[S.profile.name]`` literal from each notebook's
setup cell (the notebook stays the single source of truth) and returns one :class:`PlannedModel`
per model the notebook trains: how to build it, the size and batch of its training inputs and
the size it is evaluated at. ``tests/test_gpu_profile.py`` runs one training step of each on
CPU; ``benchmarks/gpu_memory.py`` estimates each one's GPU memory (:func:`training_memory`).
A notebook could import :func:`plan` to print its own plan, but none needs to.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from .cost import saved_activation_bytes
from .data.camvid import CamVid
from .data.membrane import Membrane
from .engine import autocast, logits_of
from .runtime import PROFILES, REPO_ROOT, Profile
from .models import FCN, DeepLab, PatchClassifier, SegNet, UNet, convolutionalize, dense_logits, smp_model
from .models.deeplab import scaled_rates
from .watershed import CLASSES as WATERSHED_CLASSES

NOTEBOOKS = REPO_ROOT / "notebooks"
CAMVID_CLASSES = CamVid.num_classes
MEMBRANE_CLASSES = Membrane.num_classes
MEMBRANE_SIZE = 512      # ISBI 2012 slices are 512×512 gray
PATCH_BATCH = 256        # notebook 02 trains its patch classifier on batches of 256 patches
MEMBRANE_BATCH = 4       # notebook 05 trains its membrane U-Net on batches of 4 crops
NUCLEI_EVAL_SIZE = (520, 696)  # one of the larger DSB2018 test images (notebook 10 scores each at its own size)


@dataclass(frozen=True)
class PlannedModel:
    """One model a notebook trains: ``build()`` → a fresh model whose training inputs are
    [batch_size, in_channels, *train_size] and whose output is logits [B, num_classes, H, W]
    at the input's H×W (``dense``) or [B, num_classes] (the patch classifier). ``eval_size`` is
    the H×W it is evaluated at (None: not a CamVid/ISBI full-image model). ``engine``: trained
    with :func:`course_lib.engine.train_one_epoch` (autocast precision path) rather than a
    notebook's own fp32 loop. ``min_train_batch``: 2 for heads with image pooling, whose BN
    sees one value per image and cannot train on a batch of 1."""

    notebook: str
    name: str
    build: Callable[[], nn.Module]
    train_size: tuple[int, int]
    batch_size: int
    num_classes: int
    in_channels: int = 3
    eval_size: tuple[int, int] | None = None
    dense: bool = True
    engine: bool = True
    min_train_batch: int = 1
    eval_stride: int = 1
    eval_forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None
    train_loss: Callable[[nn.Module], Callable] | None = None  # model → its training loss (default: CE)

    def eval_logits(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, C, ceil(H / eval_stride), ceil(W / eval_stride)] for whole images
        [B, in_channels, H, W], as the notebook evaluates (no gradients)."""
        with torch.no_grad():
            return logits_of(model(x)) if self.eval_forward is None else self.eval_forward(model, x)


def notebook_path(notebook: str) -> Path:
    """``notebooks/<notebook>_*.ipynb`` for a two-digit ``notebook`` such as "05"."""
    (path,) = sorted(NOTEBOOKS.glob(f"{notebook}_*.ipynb"))
    return path


def _literal(node: ast.expr):
    """``ast.literal_eval`` that also accepts ``dict(key=literal, ...)`` calls."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}  # type: ignore[arg-type]
    return ast.literal_eval(node)


def notebook_cfg(notebook: str, profile: str = "gpu") -> dict:
    """The ``profile`` entry of the ``CFG = {...}[S.profile.name]`` dict in the notebook's
    setup cell, read from the .ipynb source (not executed)."""
    cells = json.loads(notebook_path(notebook).read_text())["cells"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        for stmt in ast.parse("".join(cell["source"])).body:
            if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "CFG" for t in stmt.targets)
                    and isinstance(stmt.value, ast.Subscript)):
                return _literal(stmt.value.value)[profile]
    raise ValueError(f"{notebook_path(notebook).name} has no `CFG = {{...}}[S.profile.name]` cell.")


def _smp(kind: str, encoder: str, **kwargs) -> nn.Module:
    return smp_model(kind, encoder, CAMVID_CLASSES, **kwargs)


def _convolutionalized_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return dense_logits(convolutionalize(model), x)  # type: ignore[arg-type]


def _plan_02(cfg: dict, p: Profile) -> list[PlannedModel]:
    # trained on 32×32 patches in the notebook's own fp32 loop (no autocast on any device);
    # evaluated convolutionalised on camvid_size images, one logit per 4 pixels
    return [PlannedModel("02", f"PatchClassifier (width {p.width})",
                         partial(PatchClassifier, CAMVID_CLASSES, width=p.width, hidden=128),
                         (PatchClassifier.patch, PatchClassifier.patch), PATCH_BATCH, CAMVID_CLASSES,
                         eval_size=p.camvid_size, dense=False, engine=False, eval_stride=PatchClassifier.stride,
                         eval_forward=_convolutionalized_logits)]


def _plan_03(cfg: dict, p: Profile) -> list[PlannedModel]:
    # trained on whole images at camvid_size (no crops); the FCN-32s base run has the FCN-32s architecture
    return [PlannedModel("03", f"FCN-{v} ({cfg['backbone']})", partial(FCN, CAMVID_CLASSES, v, cfg["backbone"]),
                         p.camvid_size, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size)
            for v in ("32s", "16s", "8s")]


def _plan_05(cfg: dict, p: Profile) -> list[PlannedModel]:
    crop = p.crop_size
    membrane = min(cfg["membrane_crop"], MEMBRANE_SIZE)
    return [
        PlannedModel("05", f"U-Net (width {cfg['unet_width']}), ISBI membranes",
                     partial(UNet, MEMBRANE_CLASSES, in_channels=1, width=cfg["unet_width"]),
                     (membrane, membrane), MEMBRANE_BATCH, MEMBRANE_CLASSES, in_channels=1,
                     eval_size=(MEMBRANE_SIZE, MEMBRANE_SIZE)),
        PlannedModel("05", f"U-Net (width {cfg['unet_width']})", partial(UNet, CAMVID_CLASSES, width=cfg["unet_width"]),
                     crop, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size),
        PlannedModel("05", f"SegNet (width {cfg['segnet_width']})", partial(SegNet, CAMVID_CLASSES, width=cfg["segnet_width"]),
                     crop, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size),
        PlannedModel("05", f"smp.Unet ({cfg['smp_encoder']})", partial(_smp, "Unet", cfg["smp_encoder"]),
                     crop, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size),
    ]


def _plan_06(cfg: dict, p: Profile) -> list[PlannedModel]:
    return [PlannedModel("06", f"DeepLab-v1 LargeFOV ({cfg['backbone']}, OS 8, {cfg['head_channels']} ch)",
                         partial(DeepLab, CAMVID_CLASSES, "largefov", cfg["backbone"], output_stride=8,
                                 channels=cfg["head_channels"]),
                         p.crop_size, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size)]


def _deeplab(cfg: dict, p: Profile, head: str, decoder: bool = False) -> Callable[[], nn.Module]:
    """Notebooks 07/08: output stride 16, the paper's rates scaled to the profile's resolution."""
    rates = scaled_rates(head, 16, resolution_scale=p.camvid_size[0] / 360)
    return partial(DeepLab, CAMVID_CLASSES, head, cfg["backbone"], 16, decoder=decoder, channels=cfg["channels"], rates=rates)


def _min_batch(head: str) -> int:
    """2 for heads with an image-pooling branch (its BN sees one value per channel per image)."""
    return 2 if head in ("aspp_v3", "ksac") else 1


def _plan_07(cfg: dict, p: Profile) -> list[PlannedModel]:
    return [PlannedModel("07", f"DeepLab {head} ({cfg['backbone']}, OS 16)", _deeplab(cfg, p, head), p.crop_size,
                         p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=_min_batch(head))
            for head in ("none", "aspp_v2", "aspp_v3_nopool", "aspp_v3")]


def _plan_08(cfg: dict, p: Profile) -> list[PlannedModel]:
    rates = scaled_rates("aspp_v3", 16, resolution_scale=p.camvid_size[0] / 360)
    smp_v3plus = partial(_smp, "DeepLabV3Plus", cfg["smp_encoder"], encoder_output_stride=16,
                         decoder_channels=cfg["channels"], decoder_atrous_rates=rates)
    return [
        # "v3" is 07's aspp_v3 (08 loads 07's checkpoint when there is one), built from 08's own CFG
        PlannedModel("08", f"DeepLab v3 ({cfg['backbone']})", _deeplab(cfg, p, "aspp_v3"), p.crop_size,
                     p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=2),
        PlannedModel("08", f"DeepLab v3+ ({cfg['backbone']})", _deeplab(cfg, p, "aspp_v3", decoder=True), p.crop_size,
                     p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=2),
        PlannedModel("08", f"DeepLab v3+ with KSAC ({cfg['backbone']})", _deeplab(cfg, p, "ksac", decoder=True),
                     p.crop_size, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=2),
        PlannedModel("08", f"smp.DeepLabV3Plus ({cfg['smp_encoder']})", smp_v3plus, p.crop_size, p.batch_size,
                     CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=2),
    ]


def sbcb_model(build: Callable[[], nn.Module], num_classes: int) -> nn.Module:
    """``build()`` wrapped in :class:`~course_lib.models.sbcb.SBCB` (its boundary head, for training)."""
    from .models.sbcb import SBCB

    return SBCB(build(), num_classes)


def _plan_09(cfg: dict, p: Profile) -> list[PlannedModel]:
    from .models.sbcb import SBCBLoss

    v3plus = _deeplab(cfg, p, "aspp_v3", decoder=True)
    return [
        PlannedModel("09", f"DeepLab v3+ ({cfg['backbone']})", v3plus, p.crop_size, p.batch_size, CAMVID_CLASSES,
                     eval_size=p.camvid_size, min_train_batch=2),
        PlannedModel("09", f"DeepLab v3+ ({cfg['backbone']}) with SBCB's boundary head", partial(sbcb_model, v3plus, CAMVID_CLASSES),
                     p.crop_size, p.batch_size, CAMVID_CLASSES, eval_size=p.camvid_size, min_train_batch=2,
                     train_loss=lambda model: SBCBLoss(model, nn.CrossEntropyLoss(ignore_index=255), CAMVID_CLASSES,
                                                       weight=cfg["loss_weight"], radius=cfg["radius"])),
    ]


def _plan_10(cfg: dict, p: Profile) -> list[PlannedModel]:
    # the U-Net of the U-Net + watershed baseline, on the profile's detection crops; Mask R-CNN
    # trains on lists of images and targets, not a batch tensor, so tests/test_instance_seg.py
    # checks it at the profile's detection sizes instead
    return [PlannedModel("10", f"U-Net (width {cfg['unet_width']}), 3 classes for the watershed",
                         partial(UNet, len(WATERSHED_CLASSES), width=cfg["unet_width"]), p.detection_crop,
                         p.detection_batch_size, len(WATERSHED_CLASSES), eval_size=NUCLEI_EVAL_SIZE)]


CHECKED_ELSEWHERE = {
    "11": "tests/test_basis_instance.py::test_basis_model_trains_at_the_notebooks_crop",
}
"""Training notebooks whose models take images and targets (lists, boxes, masks), which the plan's
tensor interface does not model: the test named here trains each at the profile's sizes instead
(notebook 10's Mask R-CNN: tests/test_instance_seg.py, beside its planned U-Net)."""

PLANNERS: dict[str, Callable[[dict, Profile], list[PlannedModel]]] = {
    "02": _plan_02, "03": _plan_03, "05": _plan_05, "06": _plan_06, "07": _plan_07, "08": _plan_08, "09": _plan_09,
    "10": _plan_10,
}
"""Notebook → the models it trains (00, 01 and 04 train nothing)."""


def plan(profile: str = "gpu", notebooks: tuple[str, ...] | None = None) -> list[PlannedModel]:
    """Every model the notebooks train in ``profile``, in notebook order (``notebooks``: a subset,
    e.g. ("05",))."""
    p = PROFILES[profile]
    return [m for nb in (notebooks or tuple(PLANNERS)) for m in PLANNERS[nb](notebook_cfg(nb, profile), p)]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step at ``batch``: ``state`` = fp32 weights, gradients and the two
    AdamW moments (16 B per parameter); ``activations`` = what autograd saves for backward."""

    params: int
    batch: int
    state: int
    activations: int

    @property
    def total(self) -> int:
        return self.state + self.activations


def training_memory(m: PlannedModel, batch: int | None = None, precision: str = "fp32",
                    measure_batch: int | None = None) -> MemoryEstimate:
    """Training memory of ``m`` at ``batch`` (default: its planned batch): parameters,
    gradients and AdamW state (4 × 4 B per parameter) plus the activations saved for backward
    (:func:`course_lib.cost.saved_activation_bytes`, one forward + backward on CPU under the
    engine's autocast for ``precision`` at ``measure_batch`` images of ``train_size``, scaled
    linearly to ``batch``). In fp32 this errs on the high side for a bf16 run (most saved
    tensors halve; in bf16 the weights' bf16 copies would count as saved tensors), and a tensor
    saved by two operations is counted twice."""
    batch = batch or m.batch_size
    measure_batch = measure_batch or m.min_train_batch
    torch.manual_seed(0)
    model = m.build().train()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(measure_batch, m.in_channels, *m.train_size)
    with autocast(torch.device("cpu"), precision):
        saved = saved_activation_bytes(model, x, output=lambda y: logits_of(y).float())
    return MemoryEstimate(params, batch, 16 * params, saved * batch // measure_batch)
