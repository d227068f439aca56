"""Training and scoring instance-segmentation models with torchvision's detection interface.

A *detection model* here is anything called like torchvision's Mask R-CNN: in training
``model(images, targets)`` → dict of losses; in eval mode ``model(images)`` → one dict per
image with "masks" ([D, 1, H, W] probabilities, or [D, H, W] 0/1), "scores" [D] and
"labels" [D] (see :func:`course_lib.models.mask_rcnn`). The U-Net + watershed baseline
(:class:`course_lib.watershed.SemanticInstances`) answers the same way in eval mode, so
:func:`evaluate_instances` scores both.

- :func:`fit_detection` trains with the engine's checkpointing (atomic, records the run's
  configuration, refuses a mismatched one, resumes, skips a finished run), precision and LR
  schedules, and records each loss component and the validation DSB score per epoch.
- :func:`evaluate_instances` gives COCO mask AP / AP50 / AP75, the DSB2018 score and
  Boundary IoU over a dataset, at each image's full resolution.
- :func:`masks_to_id_map` / :func:`detections_to_id_map` turn overlapping scored masks into
  one instance-id map (the highest score wins a pixel).
- :func:`detection_ious` gives each detection's mask IoU with its best-matching ground truth
  (how good each mask really is), :func:`detection_quality` that IoU and the model's scores
  for every detection over a dataset (does the score rank masks by quality?).
- :class:`PredictingDetector` gives a model with a ``predict(images)`` method (the basis
  models of :mod:`course_lib.models.basis_instance`) that interface, so the functions above
  train and score it too.
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from . import engine
from .engine import History
from .instance_metrics import CocoMaskAP, _pairwise_iou, boundary_band, dsb_score
from .runtime import device_name, get_precision

LOSS_KEYS = ("loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg")
"""The losses torchvision's Mask R-CNN returns in training mode."""


# ------------------------------------------------------------------------------ masks → id map

def masks_to_id_map(masks: torch.Tensor, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Binary masks bool/uint8 [N, H, W] → instance-id map int64 [H, W] (0 = background).

    With ``scores`` [N], mask k gets id = its rank by score (1 = highest) and a pixel claimed by
    several masks goes to the highest-scored one; without, mask k gets id k + 1 and the later
    mask wins (as the nuclei masks were merged). A mask wholly covered by better ones leaves no
    id behind, so ids need not be contiguous."""
    if masks.dim() != 3 or masks.is_floating_point():
        raise ValueError(f"masks must be binary bool/uint8 [N, H, W], got {tuple(masks.shape)} of {masks.dtype}; "
                         f"threshold probabilities first (or use detections_to_id_map).")
    n, h, w = masks.shape
    ids = torch.zeros((h, w), dtype=torch.int64, device=masks.device)
    if scores is None:
        order = torch.arange(n, device=masks.device)
    else:
        if scores.shape != (n,):
            raise ValueError(f"scores must be [N] = [{n}], got {tuple(scores.shape)}.")
        order = torch.argsort(scores, descending=True, stable=True).flip(0)  # lowest first, painted over
    rank = torch.empty(n, dtype=torch.int64, device=masks.device)
    rank[order.flip(0)] = torch.arange(1, n + 1, device=masks.device)
    for k in order.tolist():  # one [H, W] at a time: [N, H, W] int64 would not fit for large images
        ids[masks[k] != 0] = rank[k] if scores is not None else k + 1
    return ids


def _binary_detection_masks(masks: torch.Tensor, mask_threshold: float) -> torch.Tensor:
    """Mask R-CNN's probabilities [D, 1, H, W] (or [D, H, W], float or 0/1) → bool [D, H, W]."""
    if masks.dim() == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"Detection masks must be [D, 1, H, W] or [D, H, W], got {tuple(masks.shape)}.")
    return masks > mask_threshold if masks.is_floating_point() else masks != 0


def detections_to_id_map(output: dict, score_threshold: float = 0.5, mask_threshold: float = 0.5) -> torch.Tensor:
    """One image's detection output {"masks": [D, 1, H, W] probabilities in 0..1 (or [D, H, W]),
    "scores": [D]} → instance-id map int64 [H, W]: detections scored ≥ ``score_threshold``,
    their masks cut at ``mask_threshold``, the highest score winning overlaps
    (:func:`masks_to_id_map`)."""
    if not 0 <= score_threshold <= 1 or not 0 <= mask_threshold < 1:
        raise ValueError(f"score_threshold must be in [0, 1] and mask_threshold in [0, 1), got "
                         f"{score_threshold} and {mask_threshold}.")
    keep = output["scores"] >= score_threshold
    masks = _binary_detection_masks(output["masks"], mask_threshold)
    return masks_to_id_map(masks[keep], output["scores"][keep])


# ------------------------------------------------------------------------------ evaluation

def _matched_boundary_ious(pred_ids: np.ndarray, gt_ids: np.ndarray, dilation_ratio: float = 0.02) -> list[float]:
    """Boundary IoU (d from the whole image's diagonal, as :func:`boundary_iou`) of every GT
    instance and the prediction it matches at mask IoU > 0.5 (matches are unique there)."""
    iou = _pairwise_iou(gt_ids, pred_ids)
    if iou.size == 0:
        return []
    gt_list, pred_list = np.unique(gt_ids[gt_ids > 0]), np.unique(pred_ids[pred_ids > 0])
    h, w = gt_ids.shape
    d = max(1, int(round(dilation_ratio * math.hypot(h, w))))
    out = []
    for g, p in zip(*np.nonzero(iou > 0.5)):
        gm, pm = gt_ids == gt_list[g], pred_ids == pred_list[p]
        rows, cols = np.nonzero(gm | pm)
        # a window d + 1 pixels beyond both masks (clipped to the image): the bands are the same
        # as on the whole image, at a fraction of the cost
        r0, r1 = max(rows.min() - d - 1, 0), min(rows.max() + d + 2, h)
        c0, c1 = max(cols.min() - d - 1, 0), min(cols.max() + d + 2, w)
        window = (slice(r0, r1), slice(c0, c1))
        bp, bg = boundary_band(pm[window], d), boundary_band(gm[window], d)
        out.append(float((bp & bg).sum() / max(1, (bp | bg).sum())))
    return out


@torch.no_grad()
def evaluate_instances(model: nn.Module, dataset: Dataset, device: torch.device, *, score_threshold: float = 0.5,
                       mask_threshold: float = 0.5, max_dets: int = 1000, progress: bool = True,
                       precision: str | None = None, keep_key: str = "scores") -> dict:
    """Scores of a detection model on every item of ``dataset`` (image float [3, H, W] in 0..1,
    target with "masks" uint8 [N, H, W] and "labels"), one image at a time at full resolution.

    Returns {"AP", "AP50", "AP75": COCO mask AP from all detections (pycocotools, up to
    ``max_dets`` per image); "dsb": the mean over images of the DSB2018 score of the id map
    (:func:`detections_to_id_map` with ``score_threshold``, ``mask_threshold``);
    "boundary_iou": the mean Boundary IoU over GT instances matched at mask IoU > 0.5 in those
    maps (contour quality of the objects found; nan if none); "matched": how many;
    "images": how many}. All scores in [0, 1].

    ``keep_key``: the output whose value must reach ``score_threshold`` for a detection to
    enter the id map (default "scores"). A model that rescores its detections by predicted mask
    quality (B2Inst's product of confidence, predicted IoU and boundary score) pass
    "centre_scores": the detector decides which objects exist, the rescored "scores" still rank
    them for AP and resolve overlaps.
    """
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("evaluate_instances got an empty dataset.")
    model.eval()
    coco, dsb, biou = CocoMaskAP(max_dets), [], []  # one image's masks in memory at a time
    for i in tqdm(range(len(dataset)), desc="evaluate", leave=False, disable=not progress):  # type: ignore[arg-type]
        image, target = dataset[i]
        with engine.autocast(device, precision):
            out = model([torch.as_tensor(image).to(device)])[0]
        if keep_key not in out:
            raise KeyError(f"keep_key {keep_key!r} is not among the model's outputs {sorted(out)}.")
        out = {k: v.detach().float().cpu() if k in ("masks", "scores", keep_key) else v.detach().cpu()
               for k, v in out.items()}
        # bool masks at once: Mask R-CNN's float [D, 1, H, W] takes 4 bytes per pixel and detection
        masks, scores = _binary_detection_masks(out["masks"], mask_threshold), out["scores"]
        gt_masks = torch.as_tensor(target["masks"])
        keep = out[keep_key] >= score_threshold
        pred_ids = masks_to_id_map(masks[keep], scores[keep])
        gt_ids = masks_to_id_map(gt_masks)
        dsb.append(dsb_score(pred_ids, gt_ids)["score"])
        biou += _matched_boundary_ious(pred_ids.numpy(), gt_ids.numpy())
        coco.add({"masks": masks, "scores": scores, "labels": out["labels"]},
                 {"masks": gt_masks, "labels": target["labels"]})
    ap = coco.compute()
    return {"AP": ap["AP"], "AP50": ap["AP50"], "AP75": ap["AP75"], "dsb": float(np.mean(dsb)),
            "boundary_iou": float(np.mean(biou)) if biou else math.nan, "matched": len(biou), "images": len(dsb)}


def detection_ious(masks: torch.Tensor, gt_masks: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """Each detection's best mask IoU with any ground-truth instance: binary masks bool/uint8
    [D, H, W] and [G, H, W] → float [D] in [0, 1] (0 for an empty mask or without ground
    truth). ``chunk`` detections at a time, so [chunk, H·W] floats at most."""
    if masks.dim() != 3 or gt_masks.dim() != 3 or masks.shape[-2:] != gt_masks.shape[-2:]:
        raise ValueError(f"masks [D, H, W] and gt_masks [G, H, W] of the same H, W expected, got "
                         f"{tuple(masks.shape)} and {tuple(gt_masks.shape)}.")
    if masks.is_floating_point() or gt_masks.is_floating_point():
        raise ValueError("detection_ious takes binary masks (bool/uint8); threshold probabilities first (p > 0.5).")
    out = torch.zeros(len(masks))
    if len(masks) == 0 or len(gt_masks) == 0:
        return out
    g = (gt_masks != 0).flatten(1).float()
    g_area = g.sum(1)
    for s in range(0, len(masks), chunk):
        p = (masks[s:s + chunk] != 0).flatten(1).float()
        inter = p @ g.T  # [d, G]
        union = p.sum(1)[:, None] + g_area[None] - inter
        out[s:s + chunk] = (inter / union.clamp(min=1)).amax(1).cpu()
    return out


@torch.no_grad()
def detection_quality(model: nn.Module, dataset: Dataset, device: torch.device, *, keys: Iterable[str] = ("scores",),
                      mask_threshold: float = 0.5, precision: str | None = None) -> dict[str, np.ndarray]:
    """For every detection of every item of ``dataset`` (as :func:`evaluate_instances` reads
    it): its true mask IoU (``"iou"``, :func:`detection_ious` of the mask cut at
    ``mask_threshold``), the model's ``keys`` (e.g. "scores", "centre_scores", "mask_iou") and
    ``"image"``, the item's index; each a 1-D array over all detections."""
    keys = tuple(keys)
    model.eval()
    cols: dict[str, list] = {k: [] for k in ("iou", "image", *keys)}
    for i in range(len(dataset)):  # type: ignore[arg-type]
        image, target = dataset[i]
        with engine.autocast(device, precision):
            out = model([torch.as_tensor(image).to(device)])[0]
        missing = [k for k in keys if k not in out]
        if missing:
            raise KeyError(f"{missing} not among the model's outputs {sorted(out)}.")
        masks = _binary_detection_masks(out["masks"].detach().float().cpu(), mask_threshold)
        cols["iou"].append(detection_ious(masks, torch.as_tensor(target["masks"])).numpy())
        cols["image"].append(np.full(len(masks), i))
        for k in keys:
            cols[k].append(out[k].detach().float().cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}


# ------------------------------------------------------------------------------ models with predict()

class PredictingDetector(nn.Module):
    """torchvision's detection interface for a model that trains as ``model(images, targets)``
    → dict of losses and predicts with ``model.predict(images, **predict_kwargs)`` → one dict
    per image ("boxes", "scores", "labels", "masks" [N, H, W] in 0..1, ...), such as
    :class:`~course_lib.models.BasisInstanceNet` (whose plain ``forward(images)`` returns raw
    maps). Called with targets, or in training mode: the losses; otherwise: the predictions. So
    :func:`fit_detection` trains it and :func:`evaluate_instances` scores it. The wrapped model
    is ``.model`` (its weights are saved as ``model.*``).

    ``boxes_from_masks`` (default True): drop the targets' "boxes", so that the model takes its
    boxes from the masks. The course's detection transforms give pixel-edge boxes (x2 = last
    column + 1, :func:`~course_lib.data.detection.pixel_boxes`, as Mask R-CNN needs), while
    BasisInstanceNet reads x2 as the last column (``masks_to_boxes``); passing them on would
    make every training box one pixel too wide and too tall."""

    def __init__(self, model: nn.Module, boxes_from_masks: bool = True, **predict_kwargs):
        super().__init__()
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"{type(model).__name__} has no predict(images) method; torchvision's detection "
                            f"models need no wrapper.")
        self.model = model
        self.boxes_from_masks = boxes_from_masks
        self.predict_kwargs = predict_kwargs

    def forward(self, images, targets: list[dict] | None = None):
        if targets is not None or self.training:
            if targets is None:
                raise ValueError("In training mode the model needs targets (call .eval() to predict).")
            if self.boxes_from_masks:
                targets = [{k: v for k, v in t.items() if k != "boxes"} for t in targets]
            return self.model(images, targets)
        return self.model.predict(images, **self.predict_kwargs)


# ------------------------------------------------------------------------------ training

def _plain_target(target: dict, device: torch.device) -> dict:
    return {k: torch.as_tensor(target[k]).to(device) for k in ("boxes", "labels", "masks")}


def train_detection_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, device: torch.device,
                          scheduler=None, progress: bool = True, desc: str = "train", deadline: float | None = None,
                          precision: str | None = None, max_grad_norm: float | None = 10.0) -> dict:
    """One pass over ``loader`` of ([images float [3, H, W]], [targets]) (see
    :func:`~course_lib.data.detection.collate_detection`), minimising the sum of the model's
    losses. Returns the per-image means {"train_loss", and each of :data:`LOSS_KEYS`}. Stops
    between batches past ``deadline``. ``max_grad_norm`` clips the gradient norm (from
    scratch, the first steps of Mask R-CNN can blow up); None: no clipping."""
    model.train()
    sums: dict[str, float] = {}
    count, batch = 0, 0
    bar = tqdm(loader, desc=desc, leave=False, disable=not progress)
    for batch, (images, targets) in enumerate(bar, 1):
        images = [torch.as_tensor(im).to(device) for im in images]
        targets = [_plain_target(t, device) for t in targets]
        with engine.autocast(device, precision):
            losses = model(images, targets)
        losses = {k: v.float() for k, v in losses.items()}
        loss = sum(losses.values())
        engine._check_finite_loss(loss.detach(), optimizer, f"{desc}, batch {batch}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        n = len(images)
        for k, v in {"train_loss": loss, **losses}.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        count += n
        bar.set_postfix(loss=f"{sums['train_loss'] / count:.3f}")
        if deadline is not None and time.perf_counter() > deadline:
            break
    if count == 0:
        raise ValueError("The training loader yielded no batches: an empty dataset, or drop_last=True with "
                         "fewer items than batch_size.")
    engine._check_finite_weights(model, optimizer, f"the end of {desc} (batch {batch})")
    return {k: v / count for k, v in sums.items()}


def fit_detection(model: nn.Module, train_loader: Iterable, val_dataset: Dataset | None = None, *,
                  device: torch.device, epochs: int, optimizer: torch.optim.Optimizer, schedule: str = "onecycle",
                  checkpoint: str | Path | None = None, time_budget_s: float | None = None, progress: bool = True,
                  verbose: bool = True, precision: str | None = None, config: dict | None = None,
                  val_every: int = 1, score_threshold: float = 0.5, max_grad_norm: float | None = 10.0,
                  keep_key: str = "scores") -> History:
    """Train a detection model for ``epochs`` (or until ``time_budget_s``), scoring
    ``val_dataset`` with :func:`evaluate_instances` every ``val_every`` epochs and after the
    last (0: never).

    Like :func:`course_lib.engine.fit`: ``schedule`` ("onecycle" | "poly" | "constant") is
    stepped per batch; ``precision`` "bf16" | "fp32" (default
    :func:`~course_lib.runtime.get_precision`); with ``checkpoint`` a finished run with the
    same configuration (:func:`~course_lib.engine.run_config` + ``config``) is loaded instead
    of training, an unfinished one resumed, another configuration refused
    (:class:`~course_lib.engine.CheckpointMismatchError`). One process only (no torchrun).
    Returns the :class:`~course_lib.engine.History`: per epoch ``train_loss`` (the summed
    losses), each of :data:`LOSS_KEYS`, ``lr``, ``time_s`` and, when scored, ``val_dsb``,
    ``val_AP``, ``val_AP50``, ``val_AP75``. ``score_threshold`` and ``keep_key`` go to
    :func:`evaluate_instances`.
    """
    engine._check_checkpoint_writable(checkpoint)
    precision = precision or get_precision(device)
    wanted = engine.run_config(model, epochs=epochs, optimizer=optimizer, schedule=schedule, precision=precision,
                               time_budget_s=time_budget_s,
                               extra={"loss": "detection losses (sum)", "max_grad_norm": max_grad_norm,
                                      "score_threshold": score_threshold, **(config or {})})
    model.to(device)
    scheduler = engine.make_scheduler(optimizer, schedule, epochs * len(train_loader))  # type: ignore[arg-type]
    history, start_epoch, complete = engine.resume_checkpoint(checkpoint, model, optimizer, scheduler, wanted, device,
                                                              epochs, verbose)
    if complete:
        return history
    history.meta.update(device=device_name(device), precision=precision)
    deadline = (time.perf_counter() + time_budget_s - history.train_time_s) if time_budget_s is not None else None
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]
        losses = train_detection_epoch(model, train_loader, optimizer, device, scheduler, progress,
                                       desc=f"epoch {epoch + 1}/{epochs}", deadline=deadline, precision=precision,
                                       max_grad_norm=max_grad_norm)
        record = {"epoch": epoch + 1, **losses, "lr": lr, "time_s": time.perf_counter() - t0}
        out_of_time = deadline is not None and time.perf_counter() > deadline
        done = epoch + 1 == epochs or out_of_time
        if val_dataset is not None and val_every > 0 and ((epoch + 1) % val_every == 0 or done):
            m = evaluate_instances(model, val_dataset, device, score_threshold=score_threshold, progress=progress,
                                   precision=precision, keep_key=keep_key)
            record.update(val_dsb=m["dsb"], val_AP=m["AP"], val_AP50=m["AP50"], val_AP75=m["AP75"])
        history.append(**record)
        if verbose:
            val = f", val DSB {record['val_dsb']:.3f}, AP50 {record['val_AP50']:.3f}" if "val_dsb" in record else ""
            print(f"epoch {epoch + 1:3d}/{epochs}: loss {losses['train_loss']:.4f}"
                  f"{val} ({record['time_s']:.1f} s)")
        if done:
            history.meta["finished"] = datetime.datetime.now().isoformat(timespec="minutes")
        if checkpoint is not None:
            engine.save_epoch(checkpoint, model, optimizer, scheduler, epoch + 1, history, done, wanted)
        if out_of_time:
            if verbose:
                print(f"Time budget of {time_budget_s:.0f} s reached after epoch {epoch + 1}.")
            break
    return history
