"""CamVid under a fixed training-time budget: how good a model gets in N minutes.

    python benchmarks/camvid_budget.py --model smp-unet-r18 --recipe baseline --minutes 8
    python benchmarks/camvid_budget.py --model fcn8s-r18 --recipe course --minutes 8 --record

Trains at --size (default 176×240) on CamVid train for at most --minutes of wall time
(validation is not counted: it runs once, at the end), then prints val and test mIoU
measured against the full-resolution 360×480 labels (void ignored) and the ratio to the
budget. Recipes:

- ``baseline``: the reference of course issue 3: AdamW (lr 1e-3, constant), resize +
  horizontal flips only, cross-entropy with √-inverse-frequency class weights.
- ``course``: the course's pipeline: random rescale (--scale, default the course's 0.367–1.467× at 176×240) + crop (--crop,
  default the whole --size) + flip + colour jitter,
  AdamW with a one-cycle schedule over the budget, the same class weights.

Both recipes train until the budget's deadline (``fit``'s time budget stops between two
batches). The course recipe's one-cycle schedule is driven by the elapsed time
(``engine.TimedOneCycle``), so it reaches its low-lr end exactly at the deadline on any
machine. (Until 2026-11-23 the script planned a step-count schedule from a probe of 12 timed
steps; the probe's noise moved the planned epochs by ±15 % between seeds, and runs whose
estimate was too low were cut before the cycle's end: runs of that protocol are kept in the
results file under labels without "to the deadline".) For controlled comparisons (same
number of epochs whatever the speed), pass --epochs: the one-cycle is then spread over them.

Each run is written to ``results/<--study>.json`` (default ``camvid_budget``) with its
provenance (command, commit, device, precision, seed, wall time, per-epoch training loss), keyed
by its label (model, recipe, size, budget, precision) and seed. --record also adds it to the leaderboard.
Needs CamVid under $COURSE_DATA_DIR (or <repo>/data).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from course_lib import data as D
from course_lib import leaderboard
from course_lib.engine import evaluate, fit
from course_lib.losses import CEDiceLoss, class_weights, pixel_counts
from course_lib.models import FCN, SegNet, UNet, count_parameters
from course_lib.results import provenance, record_run
from course_lib.runtime import get_device, get_precision, seed_everything

from camvid_reference import ARMS  # same folder: the reference runs' architectures, built the same way

# models built exactly as the reference runs build them (DeepLab's rates rescaled to the training size)
REFERENCE_MODELS = ("fcn8s-r10", "deeplabv3plus-r10")


def build_model(name: str, num_classes: int, size: tuple[int, int] = (176, 240)) -> torch.nn.Module:
    if name.startswith("smp-unet-"):
        import segmentation_models_pytorch as smp

        encoder = {"r18": "resnet18", "r34": "resnet34"}[name.split("-")[-1]]
        return smp.Unet(encoder, encoder_weights=None, classes=num_classes)
    builders = {"fcn8s-r18": lambda: FCN(num_classes, "8s", "resnet18"),
                "unet-w16": lambda: UNet(num_classes, width=16),
                "segnet-w16": lambda: SegNet(num_classes, width=16)}
    if name in REFERENCE_MODELS:
        return ARMS[name].build(num_classes, size)
    if name not in builders:
        raise SystemExit(f"unknown --model {name!r}; choose from smp-unet-r18, smp-unet-r34, "
                         f"{', '.join([*builders, *REFERENCE_MODELS])}")
    return builders[name]()


def transforms_for(recipe: str, size: tuple[int, int], scale: tuple[float, float] | None, crop: tuple[int, int] | None,
                   color: bool = True):
    if recipe == "baseline":
        return v2.Compose([v2.Resize(size, antialias=True), v2.RandomHorizontalFlip(), D.to_model_input()])
    return D.train_transforms(size, scale=scale, crop=crop, color=color)


def camvid(split: str, max_items: int | None) -> D.CamVid:
    """A CamVid split, cut to its first ``max_items`` images if given (for quick checks)."""
    ds = D.CamVid(split)
    if max_items:
        ds.items = ds.items[:max_items]
    return ds


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smp-unet-r18")
    ap.add_argument("--recipe", choices=["baseline", "course"], default="baseline")
    ap.add_argument("--minutes", type=float, default=8.0)
    ap.add_argument("--size", type=int, nargs=2, default=(176, 240))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, nargs=2, default=None, help="rescale range (default: the course recipe's, data.transforms.recipe_scale_range)")
    ap.add_argument("--crop", type=int, nargs=2, default=None,
                    help="course recipe: train on random crops of this H W (default: the whole --size)")
    ap.add_argument("--no-color", action="store_true", help="course recipe without colour jitter")
    ap.add_argument("--loss", choices=["wce", "wce+dice"], default="wce",
                    help="class-weighted cross-entropy, or that plus the Dice loss (course_lib.losses.CEDiceLoss)")
    ap.add_argument("--epochs", type=int, default=None,
                    help="train exactly this many epochs (for controlled comparisons) instead of fitting the budget")
    ap.add_argument("--study", default="camvid_budget", help="results/<study>.json that the run is written to")
    ap.add_argument("--results-dir", type=Path, default=None, help="where <study>.json lives (default: results/)")
    ap.add_argument("--max-items", type=int, default=None, help="use only the first N images of each split (quick checks)")
    ap.add_argument("--record", action="store_true", help="also add the result to the README leaderboard")
    args = ap.parse_args(argv)
    if args.record and args.max_items:
        ap.error("--record scores the whole val and test splits: drop --max-items")
    seed_everything(args.seed)
    device, size, budget = get_device(), tuple(args.size), 60 * args.minutes
    precision = get_precision(device)
    start = time.perf_counter()

    # each split decoded once into memory (train at --size: the recipe's first Resize is then a no-op)
    train_set = D.InMemory(camvid("train", args.max_items), size, transforms_for(args.recipe, size, tuple(args.scale) if args.scale else None,
                                                                   args.crop and tuple(args.crop), color=not args.no_color))
    val_set = D.InMemory(camvid("val", args.max_items), transforms=D.eval_transforms())
    test_set = D.InMemory(camvid("test", args.max_items), transforms=D.eval_transforms())
    C = D.CamVid.num_classes
    weights = class_weights(pixel_counts(train_set, C)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=255)
    if args.loss == "wce+dice":
        loss_fn = CEDiceLoss(weight=weights)
    train_loader = DataLoader(train_set, batch_size=args.batch, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed))
    model = build_model(args.model, C, size)
    if args.epochs:
        epochs, time_budget_s, length = args.epochs, None, f"{args.epochs} epochs"
    else:  # the deadline ends training
        epochs, time_budget_s, length = None, budget, f"{args.minutes:g} min budget, to the deadline"
    # the course recipe's one-cycle spans the epochs, or the budget's time
    schedule = "constant" if args.recipe == "baseline" else ("onecycle" if args.epochs else "onecycle-time")
    recipe = args.recipe if args.recipe == "baseline" else (f"course, scale {args.scale[0]:g}-{args.scale[1]:g}" if args.scale else "course") + (
        f", {args.crop[0]}x{args.crop[1]} crops" if args.crop else "") + (", no colour jitter" if args.no_color else "")
    recipe += f", loss {args.loss}, lr {args.lr:g}"
    print(f"{args.model} ({count_parameters(model) / 1e6:.2f} M params), recipe {recipe}, {size[0]}x{size[1]}, "
          f"on {leaderboard.device_name(device)} ({precision}), {length}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t0 = time.perf_counter()
    history = fit(model, train_loader, None, num_classes=C, device=device, epochs=epochs, optimizer=opt,
                  loss_fn=loss_fn, schedule=schedule, time_budget_s=time_budget_s, precision=precision,
                  progress=False)
    train_s = time.perf_counter() - t0
    loaders = {s: DataLoader(ds, batch_size=8) for s, ds in (("val", val_set), ("test", test_set))}
    res = {s: evaluate(model, dl, C, device, input_size=size, progress=False, precision=precision)
           for s, dl in loaders.items()}
    print(f"trained {len(history)} epochs in {train_s:.0f} s ({history.train_time_s / max(1, len(history)):.1f} s/epoch)"
          + ("" if time_budget_s is None else f", {train_s / budget:.2f} of the budget"))
    print(f"val mIoU {100 * res['val']['miou']:.1f} | test mIoU {100 * res['test']['miou']:.1f} "
          f"(full 360x480 labels, void ignored)")
    print("val per-class IoU: " + ", ".join(f"{c} {100 * v:.0f}" for c, v in zip(D.CamVid.classes, res["val"]["iou"].tolist())))
    # the label keeps the precision: runs on machines with and without native bf16 are kept apart
    label = f"{args.model} ({recipe}; {size[0]}x{size[1]}; {length}, {precision})"
    metrics = {"val_miou": res["val"]["miou"], "test_miou": res["test"]["miou"], "val_iou": res["val"]["iou"],
               "test_iou": res["test"]["iou"], "epochs": len(history), "schedule": schedule,
               "final_train_loss": history.records[-1]["train_loss"] if history.records else None}
    profile, params_m = ("cpu" if device.type == "cpu" else "gpu"), count_parameters(model) / 1e6
    prov = provenance(device, profile, precision, recipe=recipe, lr=args.lr,
                      train_size=list(size), crop=list(args.crop or size), batch_size=args.batch,
                      budget_min=None if args.epochs else args.minutes, model=args.model,
                      max_items=args.max_items)
    path = record_run(args.study, label, args.seed, metrics, provenance=prov, history=history.records,
                      wall_s=time.perf_counter() - start, train_s=train_s, params_m=params_m,
                      root=args.results_dir)
    print(f"written to {path}")
    if args.record:
        leaderboard.record(dict(model=label, notebook="benchmark",
                                params_m=params_m, profile=profile,
                                device=leaderboard.device_name(device), train_size=f"{size[0]}x{size[1]}", train_s=train_s,
                                val_miou=res["val"]["miou"], test_miou=res["test"]["miou"]))


if __name__ == "__main__":
    main()
