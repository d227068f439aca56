"""Reference runs on DSB2018 nuclei for notebook 10: Mask R-CNN from scratch against the
classical U-Net + watershed baseline, over paired seeds, each (arm, seed) written to
``results/nuclei_reference.json`` as it finishes.

    python benchmarks/nuclei_reference.py --arms maskrcnn-r18-slim unet-watershed --seeds 0 1 2
    python benchmarks/nuclei_reference.py --summary         # the table of results/nuclei_reference.json
    python benchmarks/nuclei_reference.py --smoke            # a few steps of each arm, into a temporary folder

Both arms train from scratch on random crops (``profile.detection_crop``, batch
``profile.detection_batch_size``) of the fixed nuclei train split (465 images, at their own
scale) with flips and mild brightness/contrast jitter, AdamW and a one-cycle schedule, for
``--epochs`` or at most ``--minutes`` of training per arm. A seed fixes the initial weights,
the data order and the augmentations.

- ``maskrcnn-r18-slim``: :func:`course_lib.models.mask_rcnn` (ResNet-18 + FPN, GroupNorm,
  anchors 8–64, slim heads, 400 detections), :func:`course_lib.detection.fit_detection`
  with the validation DSB score recorded every few epochs on a val subset.
- ``unet-watershed``: :class:`course_lib.models.UNet` on 3 classes (background / interior /
  contour, :func:`course_lib.watershed.three_class_target`) with √-inverse-frequency
  weighted cross-entropy (:func:`course_lib.engine.fit`), then
  :func:`course_lib.watershed.watershed_instances`.

Headline: COCO mask AP / AP50 / AP75, DSB score and Boundary IoU on the **test** split (99
images, full resolution), all from :func:`course_lib.detection.evaluate_instances`; the val
split (100 images) is for choices. Trained weights stay in the git-ignored
``checkpoints/reference/nuclei_reference/``; an (arm, seed) already recorded is skipped
(``--force`` reruns it). Needs nuclei under $COURSE_DATA_DIR (or <repo>/data).

On a shared 2-core machine, ``--threads 1`` can be much faster than 2 threads competing with
another process (OpenMP threads wait for each other): measure before a long set.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from course_lib import data as D
from course_lib.data.detection import collate_detection, detection_transforms
from course_lib.detection import evaluate_instances, fit_detection
from course_lib.engine import fit
from course_lib.models import UNet, count_parameters, mask_rcnn
from course_lib.results import (add_budget_arguments, add_reference_arguments, provenance, record_run, recorded_runs,
                                run_budget_study, summarize)
from course_lib.runtime import REPO_ROOT, seed_everything
from course_lib.watershed import CLASSES, SemanticInstances, collate_three_class, three_class_weights


@dataclass(frozen=True)
class Arm:
    """One arm: ``build()`` → a fresh model; ``kind``: "detection" (trained with
    fit_detection) or "semantic" (a 3-class model trained with fit, scored through the
    watershed); ``epochs``: its default schedule."""
    build: Callable[[], torch.nn.Module]
    kind: str
    epochs: int


ARMS = {
    # epochs sized for ≤ 30 min of training per arm on the 2-core AVX2 machine (fp32, 256×256 crops, batch 4):
    # Mask R-CNN 1.6 s per step, the width-16 U-Net 1.0 s (the width-32 U-Net took 3.3 s, too slow for 12 epochs)
    "maskrcnn-r18-slim": Arm(lambda: mask_rcnn(backbone="resnet18", norm="group", slim=True), "detection", 8),
    "unet-watershed": Arm(lambda: UNet(len(CLASSES), width=16), "semantic", 12),
}
METRICS = ("AP", "AP50", "AP75", "dsb", "boundary_iou")
CHECKPOINTS = REPO_ROOT / "checkpoints" / "reference"


def checkpoint_path(study: str, arm: str, seed: int, profile: str, epochs: int, root: Path | None = None) -> Path:
    return (root or CHECKPOINTS) / study / f"{arm}_seed{seed}_{profile}_{epochs}ep.pt"


def splits(args, prof) -> dict[str, Dataset]:
    """train (random crops), val (a subset, for curves), val_full and test (full images)."""
    train = D.Nuclei("train", transforms=detection_transforms(prof.detection_crop))
    val = D.Nuclei("val", transforms=detection_transforms(train=False))
    test = D.Nuclei("test", transforms=detection_transforms(train=False))
    if args.smoke:
        return {"train": Subset(train, range(4)), "val": Subset(val, range(2)), "val_full": Subset(val, range(2)),
                "test": Subset(test, range(2))}
    return {"train": train, "val": Subset(val, range(min(args.val_items, len(val)))), "val_full": val, "test": test}


def run_one(arm: str, seed: int, args, prof, device, precision, data: dict[str, Dataset]) -> dict:
    spec = ARMS[arm]
    epochs = args.epochs or spec.epochs
    seed_everything(seed)  # the initial weights
    model = spec.build()
    generator = torch.Generator().manual_seed(seed)  # the data order; the global RNG (seeded above) the augmentations
    collate = collate_detection if spec.kind == "detection" else collate_three_class
    loader = DataLoader(data["train"], batch_size=prof.detection_batch_size, shuffle=True, drop_last=True,
                        generator=generator, collate_fn=collate, num_workers=0)
    ckpt = checkpoint_path(args.study, arm, seed, prof.name, epochs, args.checkpoint_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    budget = args.minutes * 60
    config = {"arm": arm, "seed": seed, "crop": list(prof.detection_crop), "batch_size": prof.detection_batch_size,
              "train_items": len(data["train"])}  # type: ignore[arg-type]
    val_every = max(1, epochs // args.val_points)
    t0 = time.perf_counter()
    if spec.kind == "detection":
        hist = fit_detection(model, loader, data["val"], device=device, epochs=epochs, optimizer=opt,
                             schedule="onecycle", checkpoint=ckpt, time_budget_s=budget, progress=False,
                             precision=precision, config=config, val_every=val_every)
        scored = model
    else:
        weights = three_class_weights(D.Nuclei("train", transforms=detection_transforms(train=False)),
                                items=4 if args.smoke else 64)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device))
        hist = fit(model, loader, None, num_classes=len(CLASSES), device=device, epochs=epochs, optimizer=opt,
                   loss_fn=loss_fn, schedule="onecycle", checkpoint=ckpt, time_budget_s=budget, progress=False,
                   verbose=True, precision=precision, config={**config, "class_weights": weights.tolist()})
        scored = SemanticInstances(model)
    wall = time.perf_counter() - t0
    metrics = {}
    for split in ("test", "val_full"):
        m = evaluate_instances(scored, data[split], device, progress=False, precision=precision)
        prefix = "test" if split == "test" else "val"
        metrics.update({f"{prefix}_{k}": m[k] for k in METRICS})
    metrics["final_train_loss"] = hist["train_loss"][-1]
    prov = provenance(device, prof.name, precision, lr=args.lr, epochs=epochs, time_budget_min=args.minutes,
                      crop=list(prof.detection_crop), batch_size=prof.detection_batch_size,
                      threads=torch.get_num_threads(), smoke=args.smoke)
    record_run(args.study, arm, seed, metrics, provenance=prov, history=hist.records, wall_s=wall,
               params_m=count_parameters(model) / 1e6, train_s=hist.train_time_s,
               description=args.description or None, root=args.results_dir)
    return metrics


def print_summary(study: str, root: Path | None = None) -> None:
    runs = recorded_runs(study, root)
    if not runs:
        return
    table = {m: summarize(runs, f"test_{m}") for m in METRICS}
    print(f"{'arm':20s} {'n':>2s}  " + "  ".join(f"{m:>12s}" for m in METRICS) + "   (test, mean over seeds)")
    for arm in sorted(table["dsb"]):
        cells = (f"{table[m][arm]['mean']:12.3f}" if arm in table[m] else f"{'-':>12s}" for m in METRICS)  # nan: none
        print(f"{arm:20s} {table['dsb'][arm]['n']:2d}  " + "  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reference_arguments(ap, "nuclei_reference", epochs=0, epochs_help="default: the arm's own (ARMS)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    add_budget_arguments(ap, "4 training images, 1 epoch, 2 val / 2 test images")
    args = ap.parse_args(argv)
    run_budget_study(args, splits, run_one, print_summary=print_summary,
                     describe=lambda m: f"test AP {m['test_AP']:.3f}, AP50 {m['test_AP50']:.3f}, AP75 {m['test_AP75']:.3f}, "
                                     f"DSB {m['test_dsb']:.3f}")


if __name__ == "__main__":
    main()
