"""Reference runs on CamVid: the course's comparisons, longer than a notebook's live run,
over several paired seeds, each (arm, seed) written to ``results/<study>.json`` as it finishes.

    python benchmarks/camvid_reference.py --arms deeplabv3-r10 deeplabv3plus-r10 --seeds 0 1 2
    python benchmarks/camvid_reference.py --summary        # the table of results/camvid_reference.json

One pool, ``results/camvid_reference.json``, holds every arm at the same recipe and budget
(12 epochs by default), so an arm shared by two comparisons (v3 in notebooks 07 and 08, the
weighted-CE U-Net in 05's architectures and losses) is trained once; each notebook reads the
arms it compares (``ARMS[...].notebook`` says which). The trained weights stay in the
git-ignored ``checkpoints/reference/`` for evaluations made afterwards (CRF, test-time
augmentation).

Every arm trains with the course recipe (``engine.fit_recipe``: AdamW, one-cycle, class-weighted
cross-entropy; random 0.367–1.467× rescale (``data.transforms.recipe_scale_range``), crops, flips, colour jitter) at the profile's sizes, on
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from course_lib import data as D
from course_lib.engine import evaluate, fit_recipe
from course_lib.losses import CEDiceLoss, DiceLoss
from course_lib.models import FCN, DeepLab, SegNet, UNet, count_parameters, smp_model
from course_lib.models.sbcb import SBCB, SBCBLoss
from course_lib.models.deeplab import scaled_rates
from course_lib.results import add_reference_arguments, provenance, record_run, recorded_runs, run_pending, summarize
from course_lib.runtime import REPO_ROOT, get_device, get_precision, get_profile, seed_everything


def _smp_unet(encoder: str):
    return lambda c, size: smp_model("Unet", encoder, c)


def _deeplab(backbone: str, head: str = "aspp_v3", decoder: bool = False, output_stride: int = 16):
    def build(c: int, size: tuple[int, int], output_stride: int = output_stride) -> torch.nn.Module:
        # the paper's rates (v3: 6/12/18 at output stride 16 for ~513 px crops) rescaled to this
        # output stride and training resolution, as in notebooks 06-08; another output_stride
        # builds the same parameters (camvid_posthoc.py evaluates stride-16 weights at 8)
        rates = scaled_rates(head, output_stride, resolution_scale=size[0] / 360)
        return DeepLab(c, head=head, backbone=backbone, output_stride=output_stride, decoder=decoder, channels=128,
                       rates=rates)
    return build


@dataclass(frozen=True)
class Arm:
    """One arm: ``build(num_classes, training size (H, W))`` → a fresh model; ``loss``: None for
    the recipe's class-weighted cross-entropy, else "ce" (unweighted), "dice" or "ce_dice";
    ``sbcb``: train with SBCB's boundary head (``course_lib.models.sbcb``) and score the
    deployed model (the same architecture as the arm without it)."""
    build: Callable[[int, tuple[int, int]], torch.nn.Module]
    notebook: str
    loss: str | None = None
    sbcb: bool = False


ARMS = {
    # 03: FCN skips
    "fcn32s-r10": Arm(lambda c, size: FCN(c, "32s", "resnet10"), "03"),
    "fcn16s-r10": Arm(lambda c, size: FCN(c, "16s", "resnet10"), "03"),
    "fcn8s-r10": Arm(lambda c, size: FCN(c, "8s", "resnet10"), "03"),
    "fcn32s-r18": Arm(lambda c, size: FCN(c, "32s", "resnet18"), "03"),
    "fcn8s-r18": Arm(lambda c, size: FCN(c, "8s", "resnet18"), "03"),
    # 05: encoder-decoders, and the losses on one U-Net
    "unet-w8": Arm(lambda c, size: UNet(c, width=8), "05"),
    "unet-w16": Arm(lambda c, size: UNet(c, width=16), "05"),
    "unet-w32": Arm(lambda c, size: UNet(c, width=32), "05"),
    "segnet-w16": Arm(lambda c, size: SegNet(c, width=16), "05"),
    "smp-unet-r18": Arm(_smp_unet("resnet18"), "05"),
    "unet-w16-ce": Arm(lambda c, size: UNet(c, width=16), "05", loss="ce"),
    "unet-w16-dice": Arm(lambda c, size: UNet(c, width=16), "05", loss="dice"),
    "unet-w16-cedice": Arm(lambda c, size: UNet(c, width=16), "05", loss="ce_dice"),
    # 06: DeepLab v1 (LargeFOV at output stride 8); the CRF is applied to saved models afterwards
    "deeplabv1-r10": Arm(_deeplab("resnet10", "largefov", output_stride=8), "06"),
    # 07: the head at output stride 16 (none / v2 ASPP / v3 ASPP without and with image pooling);
    # v3 trained at output stride 8 (evaluating the stride-16 weights at 8 is camvid_posthoc.py's)
    "deeplab-nohead-r10": Arm(_deeplab("resnet10", "none"), "07"),
    "deeplabv2-r10": Arm(_deeplab("resnet10", "aspp_v2"), "07"),
    "deeplabv3nopool-r10": Arm(_deeplab("resnet10", "aspp_v3_nopool"), "07"),
    "deeplabv3-r10": Arm(_deeplab("resnet10", "aspp_v3"), "07"),
    "deeplabv3-r10-os8": Arm(_deeplab("resnet10", "aspp_v3", output_stride=8), "07"),
    "deeplabv3-r18": Arm(_deeplab("resnet18", "aspp_v3"), "07"),
    # 08: the v3+ decoder
    "deeplabv3plus-r10": Arm(_deeplab("resnet10", "aspp_v3", decoder=True), "08"),
    "deeplabv3plus-r18": Arm(_deeplab("resnet18", "aspp_v3", decoder=True), "08"),
    # 09: the same v3 / v3+ trained with SBCB's boundary head (dropped for the test): paired with
    # the arms above, seed for seed (same initial weights, data order and augmentations)
    "deeplabv3-r10-sbcb": Arm(_deeplab("resnet10", "aspp_v3"), "09", sbcb=True),
    "deeplabv3plus-r10-sbcb": Arm(_deeplab("resnet10", "aspp_v3", decoder=True), "09", sbcb=True),
}


def make_loss(name: str | None, L) -> torch.nn.Module | None:
    """The loss of an arm (None: the recipe's class-weighted cross-entropy)."""
    if name is None:
        return None
    return {"ce": lambda: torch.nn.CrossEntropyLoss(ignore_index=255), "dice": DiceLoss,
            "ce_dice": CEDiceLoss}[name]()


TRIMAP = (2, 5, 10)


CHECKPOINTS = REPO_ROOT / "checkpoints" / "reference"


def checkpoint_path(study: str, arm: str, seed: int, profile: str, epochs: int, root: Path | None = None) -> Path:
    """Where the trained weights of (arm, seed) are kept (git-ignored), for evaluations made
    afterwards (``camvid_posthoc.py``: CRF, test-time augmentation, output stride 8)."""
    return (root or CHECKPOINTS) / study / f"{arm}_seed{seed}_{profile}_{epochs}ep.pt"


def run_one(arm: str, seed: int, args, prof, device, precision, L) -> dict:
    size = prof.camvid_size
    seed_everything(seed)  # the initial weights of this architecture
    model = ARMS[arm].build(L.num_classes, size)
    loss_fn = make_loss(ARMS[arm].loss, L)
    trained = model
    if ARMS[arm].sbcb:  # the head is built after the model, so the model's initial weights match its pair's
        trained = SBCB(model, L.num_classes)
        seg_loss = loss_fn or torch.nn.CrossEntropyLoss(weight=L.class_weights.to(device), ignore_index=255)
        loss_fn = SBCBLoss(trained, seg_loss, L.num_classes)
    val_every = max(1, args.epochs // args.val_points)
    # a checkpoint is reused only for the same configuration
    ckpt = checkpoint_path(args.study, arm, seed, prof.name, args.epochs, args.checkpoint_dir)
    t0 = time.perf_counter()
    hist = fit_recipe(trained, L, device=device, epochs=args.epochs, lr=args.lr, input_size=size, loss_fn=loss_fn,
                      generator=L.train.generator, seed=seed, val_every=val_every, precision=precision,
                      checkpoint=ckpt, config={"arm": arm, "loss": ARMS[arm].loss or "weighted_ce",
                                                           "sbcb": ARMS[arm].sbcb})
    wall = time.perf_counter() - t0
    if ARMS[arm].sbcb:
        model = trained.deploy()  # the plain model: the boundary head is not scored, nor counted
    test = evaluate(model, L.test, L.num_classes, device, input_size=size, boundary=True,
                    trimap_widths=TRIMAP, progress=False, precision=precision)
    metrics = {"test_miou": test["miou"], "test_mbf1": test["mbf1"], "test_iou": test["iou"],
               "test_trimap": {str(w): test["trimap"][w] for w in TRIMAP},
               "test_cm": test["cm"].tolist(),  # rows: true class, columns: predicted (recall per class)
               "test_recall": (test["cm"].diag() / test["cm"].sum(1).clamp(min=1)).tolist(),
               "final_val_miou": hist["val_miou"][-1], "final_train_loss": hist["train_loss"][-1]}
    prov = provenance(device, prof.name, precision, lr=args.lr, epochs=args.epochs, loss=ARMS[arm].loss or "weighted_ce",
                      train_size=list(size), crop=list(prof.crop_size), batch_size=prof.batch_size)
    if ARMS[arm].sbcb:
        prov["train_params_m"] = count_parameters(trained) / 1e6  # with the head, while training
    record_run(args.study, arm, seed, metrics, provenance=prov, history=hist.records, wall_s=wall,
               params_m=count_parameters(model) / 1e6, train_s=hist.train_time_s,
               description=args.description or None, root=args.results_dir)
    return metrics


def print_summary(study: str, root: Path | None = None) -> None:
    runs = recorded_runs(study, root)
    if not runs:
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
    add_reference_arguments(ap, "camvid_reference", epochs=12)  # the pool every notebook reads
    ap.add_argument("--arms", nargs="+", default=[], choices=list(ARMS))
    ap.add_argument("--val-points", type=int, default=6, help="how many validation points on each curve")
    args = ap.parse_args(argv)
    if args.summary:
        print_summary(args.study, args.results_dir)
        return
    prof, device = get_profile(args.profile), get_device()
    precision = get_precision(device)
    L = D.semantic_loaders("camvid", prof, prof.camvid_size, torch.Generator(), crop=prof.crop_size)
    print(f"study {args.study}: profile {prof.name}, {device} ({precision}), {args.epochs} epochs, "
          f"{len(L.train)} steps per epoch, arms {args.arms}, seeds {args.seeds}")
    run_pending(args, lambda arm, seed: run_one(arm, seed, args, prof, device, precision, L),
                lambda m: f"test mIoU {100 * m['test_miou']:.1f}, boundary F {100 * m['test_mbf1']:.1f}, "
                          f"final val {100 * m['final_val_miou']:.1f}")
    print_summary(args.study, args.results_dir)


if __name__ == "__main__":
    main()
