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
  AdamW with a one-cycle schedule fitted to the budget, the same class weights.

The number of epochs is set from the measured speed of a few warm-up steps so that a
recipe's LR schedule ends when the budget does; ``fit``'s time budget is the hard stop.
For controlled comparisons (same number of epochs whatever the speed), pass --epochs.
Needs CamVid under $COURSE_DATA_DIR (or <repo>/data).
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from course_lib import data as D
from course_lib import leaderboard
from course_lib.engine import evaluate, fit, prefers_channels_last
from course_lib.losses import CEDiceLoss, class_weights, pixel_counts
from course_lib.models import FCN, SegNet, UNet, count_parameters
from course_lib.runtime import get_device, seed_everything


def build_model(name: str, num_classes: int) -> torch.nn.Module:
    if name.startswith("smp-unet-"):
        import segmentation_models_pytorch as smp

        encoder = {"r18": "resnet18", "r34": "resnet34"}[name.split("-")[-1]]
        return smp.Unet(encoder, encoder_weights=None, classes=num_classes)
    builders = {"fcn8s-r18": lambda: FCN(num_classes, "8s", "resnet18"),
                "unet-w16": lambda: UNet(num_classes, width=16),
                "segnet-w16": lambda: SegNet(num_classes, width=16)}
    if name not in builders:
        raise SystemExit(f"unknown --model {name!r}; choose from smp-unet-r18, smp-unet-r34, {', '.join(builders)}")
    return builders[name]()


def transforms_for(recipe: str, size: tuple[int, int], scale: tuple[float, float] | None, crop: tuple[int, int] | None,
                   color: bool = True):
    if recipe == "baseline":
        return v2.Compose([v2.Resize(size, antialias=True), v2.RandomHorizontalFlip(), D.to_model_input()])
    return D.train_transforms(size, scale=scale, crop=crop, color=color)


def seconds_per_epoch(model, loader, loss_fn, device, steps: int = 8, warmup: int = 3) -> float:
    """Time a few training steps on a throwaway copy of the model (the first ``warmup`` steps,
    which include oneDNN / cuDNN kernel selection, are not counted)."""
    probe = copy.deepcopy(model).to(device).train()
    if prefers_channels_last(device):  # as fit() will train it
        probe.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-4)
    it = iter(loader)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()  # loading + augmenting the batch counts too
        x, y = next(it)
        if prefers_channels_last(device):
            x = x.contiguous(memory_format=torch.channels_last)
        loss = loss_fn(probe(x.to(device)), y.to(device))
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    times = times[warmup:]
    per_step = sorted(times)[len(times) // 2]
    return per_step * len(loader)


def main() -> None:
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
    ap.add_argument("--record", action="store_true", help="add the result to the README leaderboard")
    args = ap.parse_args()
    seed_everything(args.seed)
    device, size, budget = get_device(), tuple(args.size), 60 * args.minutes

    # each split decoded once into memory (train at --size: the recipe's first Resize is then a no-op)
    train_set = D.InMemory(D.CamVid("train"), size, transforms_for(args.recipe, size, tuple(args.scale) if args.scale else None,
                                                                   args.crop and tuple(args.crop), color=not args.no_color))
    val_set = D.InMemory(D.CamVid("val"), transforms=D.eval_transforms())
    test_set = D.InMemory(D.CamVid("test"), transforms=D.eval_transforms())
    C = train_set.num_classes
    weights = class_weights(pixel_counts(train_set, C)).to(device)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, ignore_index=255)
    if args.loss == "wce+dice":
        loss_fn = CEDiceLoss(weight=weights)
    train_loader = DataLoader(train_set, batch_size=args.batch, shuffle=True, drop_last=True,
                              generator=torch.Generator().manual_seed(args.seed))
    model = build_model(args.model, C)
    epoch_s = seconds_per_epoch(model, train_loader, loss_fn, device)
    epochs = args.epochs or max(1, round(budget / epoch_s))
    if args.epochs:
        budget = float("inf")
    recipe = args.recipe if args.recipe == "baseline" else (f"course, scale {args.scale[0]:g}-{args.scale[1]:g}" if args.scale else "course") + (
        f", {args.crop[0]}x{args.crop[1]} crops" if args.crop else "") + (", no colour jitter" if args.no_color else "")
    recipe += f", loss {args.loss}, lr {args.lr:g}"
    print(f"{args.model} ({count_parameters(model) / 1e6:.2f} M params), recipe {recipe}, {size[0]}x{size[1]}, "
          f"budget {args.minutes:g} min on {leaderboard.device_name(device)}: about {epoch_s:.0f} s/epoch -> {epochs} epochs")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    t0 = time.perf_counter()
    history = fit(model, train_loader, None, num_classes=C, device=device, epochs=epochs, optimizer=opt,
                  loss_fn=loss_fn, schedule="constant" if args.recipe == "baseline" else "onecycle",
                  time_budget_s=None if math.isinf(budget) else budget)
    train_s = time.perf_counter() - t0
    loaders = {s: DataLoader(ds, batch_size=8) for s, ds in (("val", val_set), ("test", test_set))}
    res = {s: evaluate(model, dl, C, device, input_size=size, progress=False) for s, dl in loaders.items()}
    print(f"trained {len(history)} epochs in {train_s:.0f} s" + ("" if math.isinf(budget) else f" ({train_s / budget:.2f} of the budget)"))
    print(f"val mIoU {100 * res['val']['miou']:.1f} | test mIoU {100 * res['test']['miou']:.1f} "
          f"(full 360x480 labels, void ignored)")
    print("val per-class IoU: " + ", ".join(f"{c} {100 * v:.0f}" for c, v in zip(D.CamVid.classes, res["val"]["iou"].tolist())))
    if args.record:
        leaderboard.record(dict(model=f"{args.model} ({recipe}; {args.minutes:g} min budget)", notebook="benchmark",
                                params_m=count_parameters(model) / 1e6, profile="cpu" if device.type == "cpu" else "gpu",
                                device=leaderboard.device_name(device), train_size=f"{size[0]}x{size[1]}", train_s=train_s,
                                val_miou=res["val"]["miou"], test_miou=res["test"]["miou"]))


if __name__ == "__main__":
    main()
