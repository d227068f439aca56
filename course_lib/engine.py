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
- Under ``torchrun`` (several processes, see :mod:`course_lib.distributed`) ``fit`` trains a
  DistributedDataParallel copy on each rank's share of the data, sums loss and confusion
  matrices over the ranks, and only rank 0 prints and writes the checkpoint. In one process
  nothing of this happens.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import secrets
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR
from tqdm.auto import tqdm

from . import distributed
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


LOADED: list[tuple[str, float]] = []
"""(checkpoint, seconds it trained) of every complete checkpoint :func:`fit` loaded instead of
training, in this Python process: :func:`ran_for` reports them in a notebook's closing line."""
SAVED: list[str] = []
"""Every checkpoint path :func:`fit` wrote in this process, once per write (under torchrun:
on rank 0 only)."""


def ran_for(start: float, profile: str, device) -> str:
    """A notebook's closing line: wall time since ``start`` (``time.perf_counter()``) and how
    much of the training was loaded from checkpoints rather than done in this run."""
    line = f"notebook ran in {time.perf_counter() - start:.1f} s (profile {profile}, device {device})"
    if not LOADED:
        return line + "; every model was trained in this run (no checkpoint loaded)"
    return (line + f"; {len(LOADED)} model(s) loaded from checkpoints instead of training "
            f"({sum(t for _, t in LOADED) / 60:.1f} min of training when they were made)")


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, total_steps: int,
                   power: float = 0.9, pct_start: float = 0.25,
                   time_budget_s: float | None = None) -> "LRScheduler | TimedOneCycle | None":
    """Per-step LR schedule: "poly" (lr·(1 − t/T)^power, DeepLab), "onecycle" (peak at the
    optimizer's lr), "onecycle-time" (the same curve over ``time_budget_s`` seconds of wall
    time instead of ``total_steps`` steps: :class:`TimedOneCycle`), or "constant" (None)."""
    if kind == "onecycle-time":
        if not time_budget_s or not math.isfinite(time_budget_s) or time_budget_s <= 0:
            raise ValueError(f"The 'onecycle-time' schedule spreads its cycle over a time budget, and "
                             f"time_budget_s is {time_budget_s!r}: pass a budget in seconds (> 0), or "
                             f"use schedule='onecycle' to spread it over the epochs.")
        return TimedOneCycle(optimizer, time_budget_s, pct_start=pct_start)
    total_steps = max(1, int(total_steps))
    if kind == "poly":
        return LambdaLR(optimizer, _Poly(total_steps, power))
    if kind == "onecycle":
        if total_steps < 3:
            warnings.warn(f"A one-cycle schedule over {total_steps} step(s) cannot warm up and anneal; "
                          f"training at the constant peak lr instead (more epochs or smaller batches "
                          f"give it room).", stacklevel=2)
            return None
        # torch divides by zero when the warm-up is exactly one step and starts at lr 0 when it
        # is shorter: give it at least two steps
        pct_start = max(pct_start, 2 / total_steps)
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                          total_steps=total_steps, pct_start=pct_start)
    if kind == "constant":
        return None
    raise ValueError(f"Unknown schedule {kind!r}: use 'poly', 'onecycle', 'onecycle-time' or 'constant'.")


def _cos_between(start: float, end: float, fraction: float) -> float:
    """Cosine from ``start`` (fraction 0) to ``end`` (fraction 1), as OneCycleLR anneals."""
    return end + (start - end) / 2 * (math.cos(math.pi * fraction) + 1)


class TimedOneCycle:
    """torch's one-cycle curve (lr from peak/``div_factor`` up to the optimizer's lr over the
    first ``pct_start`` of the run, then down to peak/(``div_factor``·``final_div_factor``);
    Adam's β1 or SGD's momentum the other way between ``max_momentum`` and ``base_momentum``)
    driven by elapsed wall time: at each ``step()`` the position in the cycle is
    elapsed / ``budget_s`` (clipped to 1). Under a time budget a step-count schedule must guess
    how many steps fit, and a wrong guess either cuts the cycle before its low-lr end or ends
    it early; this one ends when the budget does, however fast the machine is.

    ``fit`` calls :meth:`start` when training starts (with the time already trained when it
    resumes a checkpoint), so the cycle and ``fit``'s deadline share one clock. ``clock``
    (seconds) is replaceable for tests."""

    def __init__(self, optimizer: torch.optim.Optimizer, budget_s: float, pct_start: float = 0.25,
                 div_factor: float = 25.0, final_div_factor: float = 1e4, base_momentum: float = 0.85,
                 max_momentum: float = 0.95, clock: Callable[[], float] = time.perf_counter):
        self.optimizer, self.budget_s, self.pct_start = optimizer, float(budget_s), pct_start
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.base_momentum, self.max_momentum, self.clock = base_momentum, max_momentum, clock
        self.peak_lrs = [g["lr"] for g in optimizer.param_groups]
        self.start()

    def start(self, already_s: float = 0.0) -> None:
        """Restart the clock; ``already_s`` seconds of the budget are counted as spent."""
        self._origin, self._already = self.clock(), float(already_s)
        self._apply(self.progress())

    def progress(self) -> float:
        """Fraction of the budget spent, in [0, 1]."""
        return min(1.0, max(0.0, (self._already + self.clock() - self._origin) / self.budget_s))

    def step(self) -> None:
        self._apply(self.progress())

    def _apply(self, p: float) -> None:
        warm = p < self.pct_start
        t = p / self.pct_start if warm else (p - self.pct_start) / (1 - self.pct_start)
        for g, peak in zip(self.optimizer.param_groups, self.peak_lrs):
            low = peak / self.div_factor
            g["lr"] = _cos_between(low, peak, t) if warm else _cos_between(peak, low / self.final_div_factor, t)
            m = (_cos_between(self.max_momentum, self.base_momentum, t) if warm
                 else _cos_between(self.base_momentum, self.max_momentum, t))
            if "betas" in g:
                g["betas"] = (m, *g["betas"][1:])
            elif "momentum" in g:
                g["momentum"] = m

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        # nothing to restore: the position comes from the clock and the time already trained
        return {"budget_s": self.budget_s, "pct_start": self.pct_start}

    def load_state_dict(self, state: dict) -> None:
        pass


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


def check_targets(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int | None) -> None:
    """Raise ValueError, naming num_classes and ignore_index, if a label in ``masks`` [B, H, W]
    is neither a class of ``logits`` [B, C, H, W] (0..C-1) nor ``ignore_index`` (torch would
    raise "Target 11 is out of bounds", or a device-side assert on CUDA)."""
    num_classes = logits.shape[1]
    bad = (masks < 0) | (masks >= num_classes)
    if ignore_index is not None:
        bad &= masks != ignore_index
    if bool(bad.any()):
        values = torch.unique(masks[bad])[:10].tolist()
        raise ValueError(
            f"Training labels hold values {values}, outside 0..{num_classes - 1} (num_classes={num_classes}, "
            f"the model's output channels) and not the loss's ignore_index={ignore_index}. Check the "
            f"model's num_classes, the dataset's label mapping, and that the loss ignores void "
            f"(e.g. nn.CrossEntropyLoss(ignore_index=255)).")


def _loss_ignore_index(loss_fn: Callable) -> int | None:
    """The ignore_index a loss uses: its attribute (nn.CrossEntropyLoss defaults to −100), else
    the course's 255."""
    for obj in (loss_fn, getattr(loss_fn, "ce", None)):
        if obj is not None and hasattr(obj, "ignore_index"):
            return obj.ignore_index
    return 255


def _forward_train(model: nn.Module, images: torch.Tensor):
    try:
        return model(images)
    except ValueError as e:
        if "more than 1 value per channel" not in str(e):
            raise
        raise ValueError(
            f"A training batch of {images.shape[0]} image(s) reached a BatchNorm layer with one value per "
            f"channel ({e}). BatchNorm cannot normalise a batch of 1 at that size: build the DataLoader "
            f"with drop_last=True (so the last, incomplete batch is dropped) or a batch size ≥ 2.") from None


def _check_finite_loss(loss: torch.Tensor, optimizer: torch.optim.Optimizer, where: str) -> None:
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(
            f"The training loss is {float(loss)} at {where}: training diverged. The learning rate "
            f"({optimizer.param_groups[0]['lr']:g}) is probably too high (try 10× lower), or the inputs "
            f"hold NaN/inf. Training stopped; no checkpoint was marked complete.")


def _check_finite_weights(model: nn.Module, optimizer: torch.optim.Optimizer, where: str) -> None:
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise FloatingPointError(
            f"The model's weights became NaN/inf by {where} (the loss was finite): the learning rate "
            f"({optimizer.param_groups[0]['lr']:g}) is probably too high. Training stopped; no "
            f"checkpoint was marked complete.")


def train_one_epoch(model: nn.Module, loader: Iterable, loss_fn: Callable, optimizer: torch.optim.Optimizer,
                    device: torch.device, scheduler: LRScheduler | None = None, progress: bool = True,
                    desc: str = "train", deadline: float | None = None, precision: str | None = None) -> float:
    """One pass over ``loader`` of (image float [B, C, H, W], mask int64 [B, H, W]).
    Returns the mean training loss (over all ranks under torchrun). Stops early (between
    batches) past ``deadline`` (all ranks at the same batch). The forward pass runs under
    :func:`autocast` (``precision``); the loss in fp32.

    Raises FloatingPointError when the loss (or, after the last step, a weight) is NaN/inf,
    ValueError for labels outside 0..C-1 that the loss does not ignore, for a batch of 1 that
    BatchNorm cannot handle, and for a loader without batches."""
    model.train()
    channels_last = prefers_channels_last(device)
    ignore_index = _loss_ignore_index(loss_fn)
    total, count, batch = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress or not distributed.is_main())
    for batch, (images, masks) in enumerate(bar, 1):
        images = _to_device(images, device, channels_last)
        masks = masks.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = logits_of(_forward_train(model, images))
        logits = logits.float()
        if logits.shape[-2:] != masks.shape[-2:]:
            logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        check_targets(logits, masks, ignore_index)
        loss = loss_fn(logits, masks)
        _check_finite_loss(loss.detach(), optimizer, f"{desc}, batch {batch}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total += float(loss.detach()) * images.shape[0]
        count += images.shape[0]
        bar.set_postfix(loss=f"{total / count:.3f}")
        if deadline is not None and distributed.any_rank(time.perf_counter() > deadline):
            break
    if distributed.active():
        total, count = distributed.all_reduce_sum(torch.tensor([total, count], dtype=torch.float64)).tolist()
    if count == 0:
        raise ValueError("The training loader yielded no batches: an empty split file or subset, or "
                         "drop_last=True with fewer items than batch_size.")
    _check_finite_weights(model, optimizer, f"the end of {desc} (batch {batch})")
    return total / count


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
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
        raise ValueError(f"scales must be one or more finite numbers > 0 (multiples of the input size), "
                         f"got {tuple(scales)}.")
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
    :class:`~course_lib.metrics.SegmentationMeter`). ``scales``/``flip``: see :func:`predict`.
    Under torchrun every rank must call it: each scores its share of ``loader`` (a DataLoader)
    and the counts are summed, so all ranks return the metrics of the whole set."""
    model.eval()
    channels_last = prefers_channels_last(device)
    meter = SegmentationMeter(num_classes, ignore_index, boundary=boundary, trimap_widths=trimap_widths)
    loader = distributed.eval_loader(loader)  # type: ignore[arg-type]
    for images, masks in tqdm(loader, desc="eval", leave=False, disable=not progress or not distributed.is_main()):
        images = _to_device(images, device, channels_last)
        logits = predict(model, images, input_size, tuple(masks.shape[-2:]), scales, flip, precision)
        meter.update(logits.argmax(1), masks.to(device))
    if distributed.active():
        meter.cm = distributed.all_reduce_sum(meter.cm)
        meter.bf_sum, meter.bf_count = distributed.all_reduce_sum(meter.bf_sum), distributed.all_reduce_sum(meter.bf_count)
        meter.trimap_cms = {w: distributed.all_reduce_sum(cm) for w, cm in meter.trimap_cms.items()}
    if int(meter.cm.sum()) == 0:
        raise ValueError(f"evaluate found no labelled pixels to score: the loader is empty (an empty split "
                         f"file or subset) or every pixel is ignore_index={ignore_index}.")
    return meter.compute()


def _folder_message(path: Path) -> str:
    return (f"Checkpoint path {path} is a folder, not a file: pass a file path inside it, "
            f"e.g. {path / 'model.pt'}.")


def save_checkpoint(path: str | Path, **state) -> Path:
    """``torch.save(state)`` to ``path`` atomically (write a unique temporary file next to it,
    then rename), so neither a crash nor a second writer leaves a half-written checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(_folder_message(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(_folder_message(path))
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


def run_config(model: nn.Module, *, epochs: int | None, optimizer: torch.optim.Optimizer, schedule: str,
               precision: str, loss_fn: Callable | None = None, time_budget_s: float | None = None,
               extra: dict | None = None) -> dict:
    """What a checkpoint records about how its model was trained (compared before reuse):
    model class and parameter count, epochs, optimizer and its hyper-parameters, schedule,
    loss, precision, time budget, plus ``extra`` (e.g. seed, profile, width, data size)."""
    hyper = {k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, str, bool))}
    cfg = {"model": type(model).__name__, "params": sum(p.numel() for p in model.parameters()),
           "epochs": None if epochs is None else int(epochs), "optimizer": type(optimizer).__name__, **{f"opt_{k}": v for k, v in hyper.items()},
           "schedule": schedule, "precision": precision,
           "loss": type(loss_fn).__name__ if loss_fn is not None else "CrossEntropyLoss",
           "time_budget_s": time_budget_s}
    for k, v in (extra or {}).items():
        cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


def _restore_model(model: nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state["model"])`` with errors that name the checkpoint and the fix."""
    if not (isinstance(state, dict) and "model" in state and "history" in state):
        if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(
                f"{path} holds a plain state_dict (torch.save(model.state_dict())), not a checkpoint "
                f"written by fit (model, optimizer, history, ...). To use these weights call "
                f"model.load_state_dict(load_checkpoint({str(path)!r})) instead of fit; to train, "
                f"pass another checkpoint path. The file was left as it is.")
        keys = sorted(state)[:8] if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path} is not a checkpoint written by fit (it holds {keys}); pass another "
                         f"checkpoint path. The file was left as it is.")
    if not all(bool(torch.isfinite(v).all()) for v in state["model"].values()
               if isinstance(v, torch.Tensor) and v.is_floating_point()):
        raise FloatingPointError(f"Checkpoint {path} holds NaN/inf weights (a run that diverged): delete it "
                                 f"and train again with a lower learning rate.")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        lines = str(e).splitlines()
        detail = "\n".join(lines[:3]) + (f"\n\t... ({len(lines) - 3} more lines)" if len(lines) > 3 else "")
        raise RuntimeError(
            f"Checkpoint {path} was saved from a different model (another architecture, width or "
            f"number of classes), so its weights do not fit this one. Delete or move it, or pass "
            f"another checkpoint path, to train this model. torch says: {detail}") from None


def _check_checkpoint_writable(checkpoint: str | Path | None) -> None:
    """Fail before training, not after the first epoch, if ``checkpoint`` cannot be written
    (a read-only folder, a file in the way, a folder given as the path). An existing
    checkpoint in a read-only folder is allowed: it may only need to be read."""
    if checkpoint is None:
        return
    path = Path(checkpoint)
    if path.is_dir():
        raise IsADirectoryError(_folder_message(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".probe"):
            pass
    except OSError as e:
        if path.is_file():
            return
        raise OSError(f"Cannot write the checkpoint {path} ({e}); checked before training so that no "
                      f"time is lost. Pass a writable location as checkpoint (e.g. a folder in your home "
                      f"directory).") from e


def resume_checkpoint(checkpoint: str | Path | None, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: LRScheduler | None, wanted: dict, device: torch.device, epochs: int | None,
                      verbose: bool = True) -> tuple[History, int, bool]:
    """What a training loop starts from, given its ``checkpoint`` path (or None) and the
    configuration ``wanted`` (:func:`run_config`): (history, first epoch, complete).

    No checkpoint file: (empty History, 0, False). A checkpoint with another configuration
    raises :class:`CheckpointMismatchError` listing the differences. A complete one: its weights
    are loaded into ``model``, a line says so (and :data:`LOADED` records it), and complete is
    True: the caller returns without training. An incomplete one: model, optimizer and
    scheduler are restored and training resumes after its last epoch."""
    if checkpoint is None or not Path(checkpoint).exists():
        return History(), 0, False
    main = distributed.is_main()
    state = load_checkpoint(checkpoint, device)
    if isinstance(state, dict) and "model" in state and "history" in state:
        diff = _config_diff(state.get("config") or {}, wanted)
        if diff:
            raise CheckpointMismatchError(
                f"Checkpoint {checkpoint} was trained with another configuration:\n  " + "\n  ".join(diff)
                + "\nIt is not reused. Delete it (or pass another checkpoint path) to train with the new "
                  "settings, or restore the old settings to load it.")
    _restore_model(model, state, checkpoint)
    history = History.from_dict(state["history"])
    if state.get("complete"):
        # said even when not verbose: a loaded model must not pass for one trained just now
        meta = history.meta
        if main:
            print(f"Loaded trained weights from {Path(checkpoint).name}: {len(history)} epochs, "
                  f"{history.train_time_s:.0f} s of training on {meta.get('device', '?')} "
                  f"({meta.get('precision', '?')}, finished {meta.get('finished', '?')}); delete it to retrain.")
        LOADED.append((str(checkpoint), history.train_time_s))
        return history, len(history), True
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler"):
        scheduler.load_state_dict(state["scheduler"])
    start_epoch = state["epoch"]
    if verbose and main:
        print(f"Resuming from {checkpoint} at epoch {start_epoch}" + (f"/{epochs}." if epochs else "."))
    return history, start_epoch, False


def save_epoch(checkpoint: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: LRScheduler | None, epoch: int, history: History, complete: bool, wanted: dict) -> None:
    """Write the state after ``epoch`` (1-based) with :func:`save_checkpoint` (atomic), marked
    ``complete`` or not, with the run's configuration ``wanted``; :data:`SAVED` records it."""
    save_checkpoint(checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(),
                    scheduler=scheduler.state_dict() if scheduler is not None else {},
                    epoch=epoch, history=history.to_dict(), complete=complete, config=wanted)
    SAVED.append(str(checkpoint))


def fit(model: nn.Module, train_loader: Iterable, val_loader: Iterable | None, *, num_classes: int,
        device: torch.device, epochs: int | None, optimizer: torch.optim.Optimizer,
        loss_fn: Callable | None = None, schedule: str = "poly", checkpoint: str | Path | None = None,
        input_size: tuple[int, int] | None = None, ignore_index: int = 255,
        time_budget_s: float | None = None, progress: bool = True, verbose: bool = True,
        precision: str | None = None, config: dict | None = None, val_every: int = 1) -> History:
    """Train ``model`` for ``epochs`` (or until ``time_budget_s``; ``epochs=None``: until
    ``time_budget_s`` only), evaluating on
    ``val_loader`` every ``val_every`` epochs (and after the last).

    ``schedule`` ("poly" | "onecycle" | "onecycle-time" | "constant") is stepped per batch;
    "onecycle-time" needs ``time_budget_s`` and ends its cycle when the budget ends. ``precision``:
    "bf16" | "fp32" (default: :func:`~course_lib.runtime.get_precision`). With
    ``checkpoint``: a complete checkpoint trained with the same configuration (see
    :func:`run_config`; ``config`` adds entries such as seed or profile) is loaded instead of
    training, an incomplete one is resumed, and one with another configuration raises
    :class:`CheckpointMismatchError` naming the differences. Returns the :class:`History`
    (``history.records``, one dict per epoch; ``history.meta``: device, precision, when).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) it joins the process group, trains a
    DistributedDataParallel wrapper of ``model`` with each rank on its share of
    ``train_loader`` (a DataLoader; CUDA: ``cuda:$LOCAL_RANK``), reports loss and metrics
    summed over the ranks, and prints and writes the checkpoint on rank 0 only; the
    checkpoint records ``world_size``. See :mod:`course_lib.distributed`.
    """
    device = distributed.init(device)  # joins torchrun's process group; a no-op in one process
    _check_checkpoint_writable(checkpoint)
    precision = precision or get_precision(device)
    if epochs is None and not time_budget_s:
        raise ValueError("fit(epochs=None) trains until time_budget_s, and none was given: pass a number of "
                         "epochs or a time budget in seconds.")
    if distributed.active():
        config = {**(config or {}), "world_size": distributed.world_size()}
    wanted = run_config(model, epochs=epochs, optimizer=optimizer, schedule=schedule, precision=precision,
                        loss_fn=loss_fn, time_budget_s=time_budget_s, extra=config)
    loss_fn = loss_fn or nn.CrossEntropyLoss(ignore_index=ignore_index)
    main = distributed.is_main()
    model.to(device)
    if prefers_channels_last(device):
        model.to(memory_format=torch.channels_last)
    train_loader = distributed.train_loader(train_loader)  # type: ignore[arg-type]
    steps_per_epoch = len(train_loader)  # type: ignore[arg-type]
    if epochs is None and schedule in ("poly", "onecycle"):
        raise ValueError(f"The {schedule!r} schedule is spread over a number of steps, and epochs=None "
                         f"gives none: pass epochs, or use schedule='onecycle-time' to spread the cycle "
                         f"over time_budget_s.")
    scheduler = make_scheduler(optimizer, schedule, (epochs or 1) * steps_per_epoch, time_budget_s=time_budget_s)
    history, start_epoch, complete = resume_checkpoint(checkpoint, model, optimizer, scheduler, wanted, device,
                                                       epochs, verbose)
    if complete:
        return history
    history.meta.update(device=device_name(device), precision=precision)
    net = model
    if distributed.active() and not isinstance(model, DistributedDataParallel):
        # after any checkpoint was loaded: DDP starts every rank from rank 0's weights
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        history.meta["world_size"] = distributed.world_size()
    start = time.perf_counter()
    deadline = (start + time_budget_s - history.train_time_s) if time_budget_s is not None else None
    if isinstance(scheduler, TimedOneCycle):
        scheduler.start(already_s=history.train_time_s)  # the cycle ends at the deadline
    of_total = f"/{epochs}" if epochs else ""
    for epoch in (range(start_epoch, epochs) if epochs else itertools.count(start_epoch)):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]  # DistributedSampler
        loss = train_one_epoch(net, train_loader, loss_fn, optimizer, device, scheduler,
                               progress, desc=f"epoch {epoch + 1}{of_total}", deadline=deadline,
                               precision=precision)
        distributed.broadcast_buffers(model)
        train_s = time.perf_counter() - t0
        record = {"epoch": epoch + 1, "train_loss": loss, "lr": lr, "time_s": train_s}
        out_of_time = deadline is not None and distributed.any_rank(time.perf_counter() > deadline)
        done = epoch + 1 == epochs or out_of_time
        if val_loader is not None and val_every > 0 and ((epoch + 1) % val_every == 0 or done):
            m = evaluate(model, val_loader, num_classes, device, input_size, ignore_index,
                         progress=progress, precision=precision)
            record.update(val_miou=m["miou"], val_pixel_acc=m["pixel_acc"])
        history.append(**record)
        if verbose and main:
            extra = f", val mIoU {record['val_miou']:.3f}" if "val_miou" in record else ""
            print(f"epoch {epoch + 1:3d}{of_total}: loss {loss:.4f}{extra} ({train_s:.1f} s)")
        if done:
            history.meta["finished"] = datetime.datetime.now().isoformat(timespec="minutes")
        if checkpoint is not None and main:
            save_epoch(checkpoint, model, optimizer, scheduler, epoch + 1, history, done, wanted)
        if out_of_time:
            if verbose and main:
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
