"""Reference runs on DSB2018 nuclei for notebook 11: B2Inst's ablation on a basis-based
instance segmenter (:class:`course_lib.models.BasisInstanceNet`), over paired seeds, each
(arm, seed) written to ``results/basis_reference.json`` as it finishes.

    python benchmarks/basis_reference.py --seeds 0 1 2                 # all four arms
    python benchmarks/basis_reference.py --arms base both --seeds 0 1 2
    python benchmarks/basis_reference.py --summary         # the table of results/basis_reference.json
    python benchmarks/basis_reference.py --smoke            # a few steps of each arm, into a temporary folder
    python benchmarks/basis_reference.py --rerank --arms scoring both   # where the rescoring's AP comes from

Arms (all with ``--masks`` bases, BlendMask's blender by default, as B2Inst builds on BlendMask):

- ``base``: the CenterNet detector at stride 4 with the mask branch alone;
- ``boundary``: + B2Inst's holistic boundary basis (one more basis, supervised with BCE + Dice
  by :func:`course_lib.boundaries.instance_boundaries` of all instances);
- ``scoring``: + the boundary-aware mask scoring head (predicted mask IoU and S_boundary; the
  detection score becomes centre confidence × both);
- ``both``: B2Inst.

A seed fixes the shared initial weights (``BasisInstanceNet(seed=...)`` builds the parts every
arm has identically, each optional part from its own derived seed), the data order and the
augmentations, so the arms of one seed differ only by their switches. Training: random crops
(``profile.detection_crop``, batch ``profile.detection_batch_size``) of the fixed nuclei train
split with flips and mild brightness/contrast jitter, AdamW, a one-cycle schedule, for
``--epochs`` or at most ``--minutes`` per run (:func:`course_lib.detection.fit_detection`).

Headline: COCO mask AP / AP50 / AP75, DSB score and Boundary IoU on the **test** split (99
images, full resolution) from :func:`course_lib.detection.evaluate_instances`, the id maps
made of the detections whose *centre confidence* reaches 0.5 (``keep_key="centre_scores"``:
the detector decides what exists, the rescored score ranks, so the DSB score of the scoring
arms is not lowered just because a product of three factors is smaller than one of them);
and ``score_iou_corr`` / ``centre_iou_corr``: the Pearson correlation, over all test
detections with centre confidence > 0.05, of the final score / the centre confidence with
each detection's true mask IoU (:func:`course_lib.detection.detection_ious`), i.e. how well
the score ranks masks by quality. The val split (100 images) is for choices. Trained weights
stay in the git-ignored ``checkpoints/reference/basis_reference/``; an (arm, seed) already
recorded is skipped (``--force`` reruns it). Needs nuclei under $COURSE_DATA_DIR (or <repo>/data).

``--rerank`` trains nothing: for each rescoring arm whose trained weights are in the checkpoint
folder, it scores the test split twice with the same masks, ranked by the final score (centre ×
predicted IoU × S_boundary) and by the centre confidence alone, and writes both to
``results/basis_rerank.json`` (arm "<arm>, ranked by <score>"). A paired difference splits the
AP gain of mask scoring into what the ranking gives and what training the head gave the masks.

On a shared 2-core machine, ``--threads 1`` can be much faster than 2 threads competing with
another process (OpenMP threads wait for each other): measure before a long set.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from course_lib import data as D
from course_lib.data.detection import collate_detection, detection_transforms
from course_lib.detection import PredictingDetector, detection_quality, evaluate_instances, fit_detection
from course_lib.models import B2INST_ARMS, BasisInstanceNet, count_parameters
from course_lib.results import (add_budget_arguments, add_reference_arguments, provenance, record_run, recorded_runs,
                                run_budget_study, summarize)
from course_lib.runtime import REPO_ROOT, seed_everything

ARMS = B2INST_ARMS
METRICS = ("AP", "AP50", "AP75", "dsb", "boundary_iou")
CHECKPOINTS = REPO_ROOT / "checkpoints" / "reference"
CANDIDATE_THRESHOLD = 0.05  # centre confidence of the detections predict() returns (its default)


def checkpoint_path(study: str, arm: str, seed: int, masks: str, profile: str, epochs: int,
                    root: Path | None = None) -> Path:
    return (root or CHECKPOINTS) / study / f"{masks}-{arm}_seed{seed}_{profile}_{epochs}ep.pt"


def build(arm: str, seed: int, masks: str = "blendmask", backbone: str = "resnet10") -> PredictingDetector:
    """The arm's model, its shared weights from ``seed``, wrapped for fit_detection / evaluate_instances."""
    return PredictingDetector(BasisInstanceNet(masks=masks, backbone=backbone, seed=seed, **ARMS[arm]),
                              score_threshold=CANDIDATE_THRESHOLD)


def splits(args, prof) -> dict[str, Dataset]:
    """train (random crops), val (a subset, for curves), val_full and test (full images)."""
    train = D.Nuclei("train", transforms=detection_transforms(prof.detection_crop))
    val = D.Nuclei("val", transforms=detection_transforms(train=False))
    test = D.Nuclei("test", transforms=detection_transforms(train=False))
    if args.smoke:
        return {"train": Subset(train, range(4)), "val": Subset(val, range(1)), "val_full": Subset(val, range(1)),
                "test": Subset(test, range(2))}
    return {"train": train, "val": Subset(val, range(min(args.val_items, len(val)))), "val_full": val, "test": test}


class RankedBy(torch.nn.Module):
    """``model``'s detections with their ``scores`` replaced by another of its outputs (e.g.
    ``centre_scores``): the same masks, ranked (and overlaps resolved) by that score."""

    def __init__(self, model: torch.nn.Module, key: str):
        super().__init__()
        self.model, self.key = model, key

    def forward(self, images):
        return [{**out, "scores": out[self.key]} for out in self.model(images)]


RANKINGS = {"final score": "scores", "centre confidence": "centre_scores"}


def rerank(args, prof, device, precision, data: dict[str, Dataset]) -> None:
    """Score each trained rescoring model of ``args.arms`` × ``args.seeds`` on test under both
    :data:`RANKINGS`, one run each in ``results/basis_rerank.json``; a missing checkpoint is
    skipped with a line saying so."""
    from course_lib.engine import load_checkpoint

    for arm in args.arms:
        if not ARMS[arm]["mask_scoring"]:
            print(f"{arm}: no mask scoring head, its final score is its centre confidence; skipped")
            continue
        for seed in args.seeds:
            ckpt = checkpoint_path(args.study, arm, seed, args.masks, prof.name, args.epochs, args.checkpoint_dir)
            if not ckpt.exists():
                print(f"{arm} seed {seed}: no trained weights at {ckpt}; skipped (train it with this script first)")
                continue
            state = load_checkpoint(ckpt, device)
            if not state.get("complete"):
                print(f"{arm} seed {seed}: {ckpt.name} is an unfinished run; skipped")
                continue
            model = build(arm, seed, args.masks, args.backbone)
            model.load_state_dict(state["model"])
            model.to(device)
            for name, key in RANKINGS.items():
                t0 = time.perf_counter()
                m = evaluate_instances(RankedBy(model, key), data["test"], device, progress=False,
                                       precision=precision, keep_key="centre_scores")
                where = ckpt.relative_to(REPO_ROOT) if ckpt.is_relative_to(REPO_ROOT) else ckpt
                prov = provenance(device, prof.name, precision, checkpoint=str(where), ranked_by=key,
                                  trained_on=state["history"].get("meta", {}),
                                  masks=args.masks, backbone=args.backbone, smoke=args.smoke)
                record_run("basis_rerank", f"{arm}, ranked by {name}", seed, {f"test_{k}": m[k] for k in METRICS},
                           provenance=prov, wall_s=time.perf_counter() - t0,
                           description="the same trained weights scored twice: detections ranked by the final "
                                       "score or by the centre confidence", root=args.results_dir)
                print(f"{arm} seed {seed}, ranked by {name}: test AP {m['AP']:.3f}, AP50 {m['AP50']:.3f}, "
                      f"AP75 {m['AP75']:.3f}, DSB {m['dsb']:.3f}")


def score_quality(model: PredictingDetector, dataset: Dataset, device, precision: str) -> dict:
    """Pearson correlation of the final score and of the centre confidence with each detection's
    true mask IoU, over every detection of ``dataset`` (nan with fewer than 3 or a constant)."""
    q = detection_quality(model, dataset, device, keys=("scores", "centre_scores"), precision=precision)

    def corr(a: np.ndarray, b: np.ndarray) -> float:
        if len(a) < 3 or a.std() == 0 or b.std() == 0:
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])

    return {"score_iou_corr": corr(q["scores"], q["iou"]), "centre_iou_corr": corr(q["centre_scores"], q["iou"]),
            "detections": int(len(q["iou"]))}


def run_one(arm: str, seed: int, args, prof, device, precision, data: dict[str, Dataset]) -> dict:
    seed_everything(seed)  # the augmentations (the global RNG); the model is built from its own seed
    model = build(arm, seed, args.masks, args.backbone)
    generator = torch.Generator().manual_seed(seed)  # the data order
    loader = DataLoader(data["train"], batch_size=prof.detection_batch_size, shuffle=True, drop_last=True,
                        generator=generator, collate_fn=collate_detection, num_workers=0)
    ckpt = checkpoint_path(args.study, arm, seed, args.masks, prof.name, args.epochs, args.checkpoint_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    config = {"arm": arm, "seed": seed, "masks": args.masks, "backbone": args.backbone, "crop": list(prof.detection_crop),
              "batch_size": prof.detection_batch_size, "train_items": len(data["train"])}  # type: ignore[arg-type]
    t0 = time.perf_counter()
    hist = fit_detection(model, loader, data["val"], device=device, epochs=args.epochs, optimizer=opt,
                         schedule="onecycle", checkpoint=ckpt, time_budget_s=args.minutes * 60, progress=False,
                         precision=precision, config=config, val_every=max(1, args.epochs // args.val_points),
                         keep_key="centre_scores")
    wall = time.perf_counter() - t0
    metrics = {}
    for split in ("test", "val_full"):
        m = evaluate_instances(model, data[split], device, progress=False, precision=precision,
                               keep_key="centre_scores")
        prefix = "test" if split == "test" else "val"
        metrics.update({f"{prefix}_{k}": m[k] for k in METRICS})
    metrics.update({f"test_{k}": v for k, v in score_quality(model, data["test"], device, precision).items()})
    metrics["final_train_loss"] = hist["train_loss"][-1]
    prov = provenance(device, prof.name, precision, lr=args.lr, epochs=args.epochs, time_budget_min=args.minutes,
                      crop=list(prof.detection_crop), batch_size=prof.detection_batch_size, masks=args.masks,
                      backbone=args.backbone, threads=torch.get_num_threads(), smoke=args.smoke)
    record_run(args.study, arm, seed, metrics, provenance=prov, history=hist.records, wall_s=wall,
               params_m=count_parameters(model) / 1e6, train_s=hist.train_time_s,
               description=args.description or None, root=args.results_dir)
    return metrics


def print_summary(study: str, root: Path | None = None) -> None:
    runs = recorded_runs(study, root)
    if not runs:
        return
    cols = (*METRICS, "score_iou_corr")
    table = {m: summarize(runs, f"test_{m}") for m in cols}
    print(f"{'arm':10s} {'n':>2s}  " + "  ".join(f"{m:>14s}" for m in cols) + "   (test, mean over seeds)")
    for arm in [a for a in ARMS if a in table["dsb"]]:
        cells = (f"{table[m][arm]['mean']:14.3f}" if arm in table[m] else f"{'-':>14s}" for m in cols)  # nan: none
        print(f"{arm:10s} {table['dsb'][arm]['n']:2d}  " + "  ".join(cells))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reference_arguments(ap, "basis_reference", epochs=12)  # ≈ 1400 steps: about 20–35 min per run at the 1.1–1.5 s per step measured on one thread
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--masks", default="blendmask", choices=("blendmask", "yolact"))
    ap.add_argument("--backbone", default="resnet10", choices=("resnet10", "resnet18", "resnet34"))
    add_budget_arguments(ap, "4 training images, 1 epoch, 1 val / 2 test images")
    ap.add_argument("--rerank", action="store_true",
                    help="train nothing: score the rescoring arms' trained weights ranked two ways (results/basis_rerank.json)")
    args = ap.parse_args(argv)
    run_budget_study(args, splits, run_one, print_summary=print_summary, rerank=rerank if args.rerank else None,
                     setup=f"{args.masks} masks, {args.backbone}, ",
                     describe=lambda m: f"test AP {m['test_AP']:.3f}, AP75 {m['test_AP75']:.3f}, DSB {m['test_dsb']:.3f}, "
                                     f"Boundary IoU {m['test_boundary_iou']:.3f}, score–IoU corr {m['test_score_iou_corr']:.2f}")


if __name__ == "__main__":
    main()
