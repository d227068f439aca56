"""Reference runs on CamVid: the course's comparisons, longer than a notebook's live run,
over several paired seeds, each (arm, seed) written to ``results/<study>.json`` as it finishes.

    python benchmarks/camvid_reference.py --study camvid_model_size --arms unet-w8 unet-w16 deeplabv3plus-r10 \
        --seeds 0 1 2 --epochs 20
    python benchmarks/camvid_reference.py --study camvid_model_size --summary   # table only

Every arm trains with the course recipe (``engine.fit_recipe``: AdamW, one-cycle, class-weighted
cross-entropy; random 0.5–2× rescale, crops, flips, colour jitter) at the profile's sizes, on
CamVid train decoded once into memory. A seed fixes the data order and the augmentations of
every arm (paired), and the initial weights of each architecture. Validation mIoU is recorded
during training (for the curves; val is one short clip next to training frames, so it is only
used for choices); the headline is **test** mIoU, with boundary F and trimap mIoU at 2/5/10 px,
all at the full 360×480 labels, void ignored.

An (arm, seed) already in the results file is skipped (``--force`` reruns it), so a set can be
completed over several sittings; start long sets in the background (``nohup … &``).
Needs CamVid under $COURSE_DATA_DIR (or <repo>/data).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from course_lib import data as D
from course_lib.engine import evaluate, fit_recipe
from course_lib.models import FCN, DeepLab, SegNet, UNet, count_parameters
from course_lib.models.deeplab import scaled_rates
from course_lib.results import load_results, provenance, record_run, summarize
from course_lib.runtime import get_device, get_precision, get_profile, seed_everything


def _smp_unet(encoder: str):
    def build(c: int, size: tuple[int, int]) -> torch.nn.Module:
        import segmentation_models_pytorch as smp

        return smp.Unet(encoder, encoder_weights=None, classes=c)
    return build


def _deeplab(backbone: str, decoder: bool):
    def build(c: int, size: tuple[int, int]) -> torch.nn.Module:
        # the paper's v3 rates (6/12/18 at output stride 16 for ~513 px crops) scaled to the
        # training resolution, as in notebooks 07-08
        rates = scaled_rates("aspp_v3", 16, resolution_scale=size[0] / 360)
        return DeepLab(c, head="aspp_v3", backbone=backbone, output_stride=16, decoder=decoder, channels=128,
                       rates=rates)
    return build


# arm name -> builder(num_classes, training size (H, W))
ARMS = {
    "unet-w8": lambda c, size: UNet(c, width=8),
    "unet-w16": lambda c, size: UNet(c, width=16),
    "unet-w32": lambda c, size: UNet(c, width=32),
    "segnet-w16": lambda c, size: SegNet(c, width=16),
    "fcn32s-r18": lambda c, size: FCN(c, "32s", "resnet18"),
    "fcn8s-r10": lambda c, size: FCN(c, "8s", "resnet10"),
    "fcn8s-r18": lambda c, size: FCN(c, "8s", "resnet18"),
    "deeplabv3-r18": _deeplab("resnet18", decoder=False),
    "deeplabv3plus-r10": _deeplab("resnet10", decoder=True),
    "deeplabv3plus-r18": _deeplab("resnet18", decoder=True),
    "smp-unet-r18": _smp_unet("resnet18"),
}
TRIMAP = (2, 5, 10)


def run_one(arm: str, seed: int, args, prof, device, precision, L) -> dict:
    size = prof.camvid_size
    seed_everything(seed)  # the initial weights of this architecture
    model = ARMS[arm](L.num_classes, size)
    val_every = max(1, args.epochs // args.val_points)
    t0 = time.perf_counter()
    hist = fit_recipe(model, L, device=device, epochs=args.epochs, lr=args.lr, input_size=size,
                      generator=L.train.generator, seed=seed, val_every=val_every, precision=precision)
    wall = time.perf_counter() - t0
    test = evaluate(model, L.test, L.num_classes, device, input_size=size, boundary=True,
                    trimap_widths=TRIMAP, progress=False, precision=precision)
    metrics = {"test_miou": test["miou"], "test_mbf1": test["mbf1"], "test_iou": test["iou"],
               "test_trimap": {str(w): test["trimap"][w] for w in TRIMAP},
               "final_val_miou": hist["val_miou"][-1], "final_train_loss": hist["train_loss"][-1]}
    prov = provenance(device, prof.name, precision, lr=args.lr, epochs=args.epochs,
                      train_size=list(size), crop=list(prof.crop_size), batch_size=prof.batch_size)
    record_run(args.study, arm, seed, metrics, provenance=prov, history=hist.records, wall_s=wall,
               params_m=count_parameters(model) / 1e6, train_s=hist.train_time_s,
               description=args.description or None, root=args.results_dir)
    return metrics


def print_summary(study: str, root: Path | None = None) -> None:
    runs = load_results(study, root)["runs"]
    if not runs:
        print(f"results/{study}.json has no runs yet.")
        return
    s = summarize(runs, "test_miou")
    b = summarize(runs, "test_mbf1")
    print(f"{'arm':20s} {'n':>2s}  test mIoU mean [min, max] (seeds)            test boundary F mean")
    for arm, d in sorted(s.items(), key=lambda kv: -kv[1]["mean"]):
        seeds = ", ".join(f"{k}: {100 * v:.1f}" for k, v in sorted(d["values"].items()))
        print(f"{arm:20s} {d['n']:2d}  {100 * d['mean']:5.1f} [{100 * d['min']:.1f}, {100 * d['max']:.1f}] ({seeds})"
              f"   {100 * b[arm]['mean']:5.1f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True, help="results/<study>.json")
    ap.add_argument("--arms", nargs="+", default=[], choices=list(ARMS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--val-points", type=int, default=10, help="how many validation points on each curve")
    ap.add_argument("--description", default="")
    ap.add_argument("--force", action="store_true", help="rerun (arm, seed) pairs already recorded")
    ap.add_argument("--summary", action="store_true", help="only print the table of results/<study>.json")
    ap.add_argument("--results-dir", type=Path, default=None, help="where <study>.json lives (default: results/)")
    args = ap.parse_args(argv)
    if args.summary:
        print_summary(args.study, args.results_dir)
        return
    prof, device = get_profile(args.profile), get_device()
    precision = get_precision(device)
    done = {(r["arm"], r["seed"]) for r in load_results(args.study, args.results_dir)["runs"]}
    L = D.semantic_loaders("camvid", prof, prof.camvid_size, torch.Generator(), crop=prof.crop_size)
    print(f"study {args.study}: profile {prof.name}, {device} ({precision}), {args.epochs} epochs, "
          f"{len(L.train)} steps per epoch, arms {args.arms}, seeds {args.seeds}")
    for seed in args.seeds:  # seed-major: a sitting that stops early still leaves whole pairs
        for arm in args.arms:
            if (arm, seed) in done and not args.force:
                print(f"{arm} seed {seed}: already recorded, skipped")
                continue
            t0 = time.perf_counter()
            m = run_one(arm, seed, args, prof, device, precision, L)
            print(f"{arm} seed {seed}: test mIoU {100 * m['test_miou']:.1f}, boundary F {100 * m['test_mbf1']:.1f}, "
                  f"final val {100 * m['final_val_miou']:.1f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_summary(args.study, args.results_dir)


if __name__ == "__main__":
    main()
