"""Training and evaluation loops shared by every notebook.

- ``fit`` trains with a tqdm.auto progress bar, in the precision of
  :func:`~course_lib.runtime.get_precision` (bf16 autocast on CUDA and on CPUs with native
  bf16, fp32 elsewhere; losses and metrics always in fp32), channels_last memory format on
  CUDA and CPU, an optional LR schedule stepped per batch, and evaluates on the validation
  set each epoch.
- With a ``checkpoint`` path, ``fit`` writes model + optimizer + scheduler + history + the
  run's configuration after every epoch (atomically: temporary file, then rename), resumes
  an interrupted run, and when the checkpoint says training is complete it just loads the
  weights ("skip training if already done") — but only if the checkpoint was trained with
  the same configuration; otherwise it stops with an error that lists what differs.
  Checkpoints are read with ``torch.load(weights_only=True)``.
- ``evaluate`` feeds the model images resized to ``input_size`` and upsamples the logits to
  the labels' own resolution, so metrics are always against full-resolution labels.
"""

from __future__ import annotations

import datetime
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from tqdm.auto import tqdm

from .metrics import SegmentationMeter
from .runtime import device_name, get_precision


@dataclass
class History:
    """Per-epoch records (``epoch``, ``train_loss``, ``lr``, ``time_s`` and ``val_*`` metrics)
    and ``meta`` about the run (``device``, ``precision``, ``finished``)."""

    records: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    def append(self, **record) -> None:
        self.records.append(record)

    def __getitem__(self, key: str) -> list:
        return [r.get(key, math.nan) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    @property
    def train_time_s(self) -> float:
        return float(sum(self["time_s"])) if self.records else 0.0

    def to_dict(self) -> dict:
        return {"records": [dict(r) for r in self.records], "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls([dict(r) for r in d.get("records", [])], dict(d.get("meta", {})))


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int,
                   power: float = 0.9, pct_start: float = 0.25) -> LRScheduler | None:
    """Per-step LR schedule: "poly" (lr·(1 − t/T)^power, DeepLab), "onecycle" (peak at the
    optimizer's lr), or "constant" (None)."""
    total_steps = max(1, int(total_steps))
    if kind == "poly":
        return LambdaLR(optimizer, _Poly(total_steps, power))
    if kind == "onecycle":
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                          total_steps=total_steps, pct_start=pct_start)
    if kind == "constant":
        return None
    raise ValueError(f"Unknown schedule {kind!r}: use 'poly', 'onecycle' or 'constant'.")


class _Poly:
    """Picklable poly factor (a lambda would not survive the scheduler's state_dict)."""

    def __init__(self, total: int, power: float):
        self.total, self.power = total, power

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - min(step, self.total) / self.total) ** self.power


def logits_of(output) -> torch.Tensor:
    """Model output → logits [B, C, H, W] (torchvision models return {"out": ...})."""
    return output["out"] if isinstance(output, dict) else output


def autocast(device: torch.device, precision: str | None = None):
    """The autocast context for ``precision`` ("bf16" | "fp32"; default: what
    :func:`~course_lib.runtime.get_precision` picks for ``device``)."""
    precision = precision or get_precision(device)
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def prefers_channels_last(device: torch.device) -> bool:
    """NHWC is the faster layout for convolutions on CUDA (tensor cores) and on x86 CPUs
    (oneDNN); on other backends keep the default NCHW."""
    return device.type in ("cuda", "cpu")


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    device: torch.device, scheduler: LRScheduler | None = None, progress: bool = True,
                    desc: str = "train", deadline: float | None = None, precision: str | None = None) -> float:
    """One pass over ``loader`` of (image float [B, C, H, W], mask int64 [B, H, W]).
    Returns the mean training loss. Stops early (between batches) past ``deadline``.
    The forward pass runs under :func:`autocast` (``precision``); the loss in fp32."""
    model.train()
    channels_last = prefers_channels_last(device)
    total, count = 0.0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for images, masks in bar:
        images = _to_device(images, device, channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = logits_of(model(images))
        logits = logits.float()
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss = loss_fn(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * images.shape[0]
        count += images.shape[0]
        bar.set_postfix(loss=f"{total / count:.3f}")
        if deadline is not None and time.perf_counter() > deadline:
            break
    return total / max(count, 1)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, input_size: tuple[int, int] | None = None,
            out_size: tuple[int, int] | None = None, scales: Sequence[float] = (1.0,),
            flip: bool = False, precision: str | None = None) -> torch.Tensor:
    """Logits float [B, C, H_out, W_out] for images [B, C, H, W] already on the model's device.

    The images are resized (bilinear) to ``input_size`` first if given; the logits are
    resized to ``out_size`` (default: the images' own H×W). Test-time augmentation (DeepLab
    v3): with several ``scales`` (multiples of the input size) and/or ``flip``, the softmax
    probabilities of every pass are averaged at ``out_size`` and their log is returned.
    The model runs under :func:`autocast` (``precision``); logits are returned in fp32.
    """
    out_size = out_size or tuple(images.shape[-2:])
    base = tuple(input_size) if input_size is not None else tuple(images.shape[-2:])

    def one_pass(size: tuple[int, int], mirrored: bool) -> torch.Tensor:
        x = images.flip(-1) if mirrored else images
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        with autocast(images.device, precision):
            logits = logits_of(model(x)).float()
        if tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        return logits.flip(-1) if mirrored else logits

    passes = [(tuple(max(1, round(s * b)) for b in base), m) for s in scales for m in ((False, True) if flip else (False,))]
    if len(passes) == 1:
        return one_pass(*passes[0])
    probs = sum(one_pass(size, m).softmax(1) for size, m in passes) / len(passes)
    return probs.clamp_min(1e-12).log()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, num_classes: int, device: torch.device,
             input_size: tuple[int, int] | None = None, ignore_index: int = 255,
             boundary: bool = False, progress: bool = True, scales: Sequence[float] = (1.0,),
             flip: bool = False, trimap_widths: tuple[int, ...] = (), precision: str | None = None) -> dict:
    """Metrics over ``loader`` of (image float [B, C, H, W], mask int64 [B, H, W]) at the
    masks' resolution: dict with ``miou``, ``pixel_acc``, ``iou`` [C], ``dice`` [C], ``cm``
    (and ``bf1``, ``mbf1`` with ``boundary=True``; ``trimap`` with ``trimap_widths``, see
    :class:`~course_lib.metrics.SegmentationMeter`). ``scales``/``flip``: see :func:`predict`."""
    model.eval()
    channels_last = prefers_channels_last(device)
    meter = SegmentationMeter(num_classes, ignore_index, boundary=boundary, trimap_widths=trimap_widths)
    for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress):
        images = _to_device(images, device, channels_last)
        logits = predict(model, images, input_size, tuple(masks.shape[-2:]), scales, flip, precision)
        meter.update(logits.argmax(1), masks.to(device))
    return meter.compute()


def save_checkpoint(path: str | Path, **state) -> Path:
    """``torch.save(state)`` to ``path`` atomically (write ``<path>.tmp``, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise RuntimeError(f"Cannot read checkpoint {path}: {e}. Delete it to retrain.") from e


class CheckpointMismatchError(RuntimeError):
    """A checkpoint was trained with another configuration than the one asked for."""


def _config_diff(saved: dict, wanted: dict) -> list[str]:
    keys = sorted(set(saved) | set(wanted))
    return [f"{k}: {saved.get(k, '<not recorded>')!r} in the checkpoint, {wanted.get(k, '<not set>')!r} now"
            for k in keys if saved.get(k) != wanted.get(k)]


def run_config(model: nn.Module, *, epochs: int, optimizer: torch.optim.Optimizer, schedule: str,
               precision: str, loss_fn: Callable | None = None, time_budget_s: float | None = None,
               extra: dict | None = None) -> dict:
    """What a checkpoint records about how its model was trained (compared before reuse):
    model class and parameter count, epochs, optimizer and its hyper-parameters, schedule,
    loss, precision, time budget, plus ``extra`` (e.g. seed, profile, width, data size)."""
    hyper = {k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, str, bool))}
    cfg = {"model": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
           "epochs": int(epochs), "optimizer": type(optimizer).__name__, **{f"opt_{k}": v for k, v in hyper.items()},
           "schedule": schedule, "precision": precision,
           "loss": type(loss_fn).__name__ if loss_fn is not None else "CrossEntropyLoss",
           "time_budget_s": time_budget_s}
    for k, v in (extra or {}).items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None, *, num_classes: int,
        device: torch.device, epochs: int, optimizer: torch.optim.Optimizer,
        loss_fn: Callable | None = None, schedule: str = "poly", checkpoint: str | Path | None = None,
        input_size: tuple[int, int] | None = None, ignore_index: int = 255,
        time_budget_s: float | None = None, progress: bool = True, verbose: bool = True,
        precision: str | None = None, config: dict | None = None, val_every: int = 1) -> History:
    """Train ``model`` for ``epochs`` (or until ``time_budget_s``), evaluating on
    ``val_loader`` every ``val_every`` epochs (and after the last).

    ``schedule`` ("poly" | "onecycle" | "constant") is stepped per batch. ``precision``:
    "bf16" | "fp32" (default: :func:`~course_lib.runtime.get_precision`). With
    ``checkpoint``: a complete checkpoint trained with the same configuration (see
    :func:`run_config`; ``config`` adds entries such as seed or profile) is loaded instead of
    training, an incomplete one is resumed, and one with another configuration raises
    :class:`CheckpointMismatchError` naming the differences. Returns the :class:`History`
    (``history.records``, one dict per epoch; ``history.meta``: device, precision, when).
    """
    precision = precision or get_precision(device)
    wanted = run_config(model, epochs=epochs, optimizer=optimizer, schedule=schedule, precision=precision,
                        loss_fn=loss_fn, time_budget_s=time_budget_s, extra=config)
    loss_fn = loss_fn or nn.CrossEntropyLoss(ignore_index=ignore_index)
    model.to(device)
    if prefers_channels_last(device):
        model.to(memory_format=torch.channels_last)
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    scheduler = make_scheduler(optimizer, schedule, epochs * steps_per_epoch)
    history, start_epoch = History(), 0
    if checkpoint is not None and Path(checkpoint).exists():
        state = load_checkpoint(checkpoint, device)
        diff = _config_diff(state.get("config") or {}, wanted)
        if diff:
            raise CheckpointMismatchError(
                f"Checkpoint {checkpoint} was trained with another configuration:\n  " + "\n  ".join(diff)
                + "\nIt is not reused. Delete it (or pass another checkpoint path) to train with the new settings, "
                  "or restore the old settings to load it.")
        model.load_state_dict(state["model"])
        history = History.from_dict(state["history"])
        if state.get("complete"):
            if verbose:
                meta = history.meta
                print(f"Loaded trained weights from {checkpoint}: {len(history)} epochs, "
                      f"{history.train_time_s:.0f} s of training on {meta.get('device', '?')} "
                      f"({meta.get('precision', '?')}, finished {meta.get('finished', '?')}); delete it to retrain.")
            return history
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        start_epoch = state["epoch"]
        if verbose:
            print(f"Resuming from {checkpoint} at epoch {start_epoch}/{epochs}.")
    history.meta.update(device=device_name(device), precision=precision)
    start = time.perf_counter()
    deadline = (start + time_budget_s - history.train_time_s) if time_budget_s is not None else None
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        loss = train_one_epoch(model, train_loader, loss_fn, optimizer, device, scheduler,
                               progress, desc=f"epoch {epoch + 1}/{epochs}", deadline=deadline,
                               precision=precision)
        train_s = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": loss, "lr": lr, "time_s": train_s}
        out_of_time = deadline is not None and time.perf_counter() > deadline
        done = epoch + 1 == epochs or out_of_time
        if val_loader is not None and val_every > 0 and ((epoch + 1) % val_every == 0 or done):
            m = evaluate(model, val_loader, num_classes, device, input_size, ignore_index,
                         progress=progress, precision=precision)
            record.update(val_miou=m["miou"], val_pixel_acc=m["pixel_acc"])
        history.append(**record)
        if verbose:
            extra = f", val mIoU {record['val_miou']:.3f}" if "val_miou" in record else ""
            print(f"epoch {epoch + 1:3d}/{epochs}: loss {loss:.4f}{extra} ({train_s:.1f} s)")
        if done:
            history.meta["finished"] = datetime.datetime.now().isoformat(timespec="minutes")
        if checkpoint is not None:
            save_checkpoint(checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                            scheduler=scheduler.state_dict() if scheduler is not None else {},
                            epoch=epoch + 1, history=history.to_dict(), complete=done, config=wanted)
        if out_of_time:
            if verbose:
                print(f"Time budget of {time_budget_s:.0f} s reached after epoch {epoch + 1}.")
            break
    return history


def fit_recipe(model: nn.Module, loaders, *, device: torch.device, epochs: int,
               checkpoint: str | Path | None = None, lr: float = 1e-3, loss_fn: Callable | None = None,
               input_size: tuple[int, int] | None = None, generator: torch.Generator | None = None,
               seed: int = 0, val_every: int = 0, precision: str | None = None,
               config: dict | None = None) -> History:
    """The course's CamVid training recipe, shared by notebooks 05-08: AdamW (weight decay
    1e-4) with a one-cycle schedule stepped per batch, class-weighted cross-entropy
    (``loaders.class_weights``, a :class:`~course_lib.data.SemanticLoaders`) unless ``loss_fn``
    is given, and validation on ``loaders.val`` every ``val_every`` epochs (0: never). The
    global torch RNG (augmentation, dropout) and ``generator`` (the train loader's shuffle
    generator) are reset to ``seed``, so that every model sees the same data order and the
    same augmented images. Initialise the model before. The checkpoint records the seed, lr,
    batch size and training crop besides :func:`run_config` and ``config``.
    """
    torch.manual_seed(seed)
    if generator is not None:
        generator.manual_seed(seed)
    if loss_fn is None:
        loss_fn = nn.CrossEntropyLoss(weight=loaders.class_weights.to(device), ignore_index=255)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    train = loaders.train
    recorded = {"seed": seed, "batch_size": getattr(train, "batch_size", None),
                "train_items": len(train.dataset) if hasattr(train, "dataset") else None,
                "input_size": list(input_size) if input_size is not None else None, **(config or {})}
    return fit(model, train, loaders.val if val_every else None, num_classes=loaders.num_classes,
               device=device, epochs=epochs, optimizer=opt, loss_fn=loss_fn, schedule="onecycle",
               checkpoint=checkpoint, input_size=input_size, progress=False, verbose=False,
               precision=precision, config=recorded, val_every=val_every)
