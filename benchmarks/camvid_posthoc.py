"""Evaluations made after training, on the weights of the reference runs: test-time
augmentation and output stride 8 (notebook 07), the fully connected CRF (notebook 06).

    python benchmarks/camvid_posthoc.py --study tta --seeds 0 1 2   # v3: flip, scales, output stride 8
    python benchmarks/camvid_posthoc.py --study crf --seeds 0 1 2   # DeepLab v1 (+ v3) with a CRF tuned on val
    python benchmarks/camvid_posthoc.py --study crf --summary

Each seed's model is the one ``benchmarks/camvid_reference.py`` trained (its checkpoint in the
git-ignored ``checkpoints/reference/``; train it first). Every variant of a seed is scored on
the same model, so the comparison is paired. Results go to ``results/camvid_<study>.json`` with
their provenance, one (variant, seed) at a time, all scored on CamVid **test** at 360×480, void
ignored. The CRF's w1, θα, θβ are chosen on validation images only (every 4th of the clip), by a
grid that grows until its best point is inside it (``course_lib.crf.grid_search``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camvid_reference import ARMS, TRIMAP, checkpoint_path  # noqa: E402

from course_lib import data as D  # noqa: E402
from course_lib.crf import crf_labels, crf_miou, grid_search  # noqa: E402
from course_lib.engine import evaluate, load_checkpoint, predict  # noqa: E402
from course_lib.metrics import SegmentationMeter  # noqa: E402
from course_lib.results import load_results, provenance, record_run, study_table  # noqa: E402
from course_lib.runtime import get_device, get_precision, get_profile  # noqa: E402

TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
CRF_GRID = {"w1": (3.0, 5.0), "theta_alpha": (20.0, 40.0, 80.0), "theta_beta": (3.0, 6.0, 12.0)}
CRF_ITERATIONS = 10
CRF_NETS = (("deeplabv1-r10", "v1"), ("deeplabv3-r10", "v3"))  # reference arm → label in camvid_crf.json


def trained_model(arm: str, seed: int, args, prof, L, output_stride: int | None = None) -> torch.nn.Module:
    """The reference run's model of (arm, seed), in eval mode; ``output_stride`` rebuilds a
    DeepLab at another stride (rates rescaled) with the same weights."""
    path = checkpoint_path(args.reference_study, arm, seed, prof.name, args.epochs, args.checkpoint_dir)
    if not path.exists():
        raise SystemExit(f"{path} does not exist: train it first with "
                         f"`python benchmarks/camvid_reference.py --arms {arm} --seeds {seed} --epochs {args.epochs}`.")
    state = load_checkpoint(path)
    if not state.get("complete"):
        raise SystemExit(f"{path} is not a finished run: complete it with benchmarks/camvid_reference.py first.")
    extra = {} if output_stride is None else {"output_stride": output_stride}
    model = ARMS[arm].build(L.num_classes, prof.camvid_size, **extra)
    model.load_state_dict(state["model"])
    return model.eval()


def scored(model, L, device, precision, size, **kw) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = evaluate(model, L.test, L.num_classes, device, input_size=size, boundary=True, trimap_widths=TRIMAP,
                 progress=False, precision=precision, **kw)
    return r, (time.perf_counter() - t0) / len(L.test.dataset)


def first_test_images(L, n: int | None):
    """``L`` with its test loader cut to the first ``n`` images (None: all), for quick checks."""
    if n is None or n >= len(L.test.dataset):
        return L
    from dataclasses import replace

    from torch.utils.data import DataLoader, Subset

    test = DataLoader(Subset(L.test.dataset, range(n)), batch_size=L.test.batch_size, num_workers=0)
    return replace(L, test=test)


def metrics_of(r: dict, s_per_image: float, **extra) -> dict:
    return {"test_miou": r["miou"], "test_mbf1": r["mbf1"], "test_iou": r["iou"],
            "test_trimap": {str(w): r["trimap"][w] for w in TRIMAP}, "s_per_image": s_per_image, **extra}


def run_tta(seed: int, args, prof, L, device, precision, record) -> None:
    size = prof.camvid_size
    v3 = trained_model("deeplabv3-r10", seed, args, prof, L).to(device)
    for variant, kw in (("single scale", {}), ("flip", dict(flip=True)), ("scales", dict(scales=TTA_SCALES)),
                        ("scales + flip", dict(scales=TTA_SCALES, flip=True))):
        r, s = scored(v3, L, device, precision, size, **kw)
        record(variant, seed, metrics_of(r, s, passes=len(kw.get("scales", (1,))) * (2 if kw.get("flip") else 1)))
    os8 = trained_model("deeplabv3-r10", seed, args, prof, L, output_stride=8).to(device)
    r, s = scored(os8, L, device, precision, size)
    record("output stride 8 (same weights)", seed, metrics_of(r, s, passes=1))


def _probabilities(model, dataset, raw, i: int, device, size) -> tuple[np.ndarray, np.ndarray, torch.Tensor, float]:
    x, y = dataset[i]
    t0 = time.perf_counter()
    p = predict(model, x[None].to(device), input_size=size)[0].softmax(0).cpu().numpy()
    return raw[i][0].permute(1, 2, 0).numpy(), p, y, time.perf_counter() - t0


def run_crf(seed: int, args, prof, L, device, precision, record) -> None:
    size, C = prof.camvid_size, L.num_classes
    raw_val = D.semantic_dataset("camvid", "val", prof)
    raw_test = D.semantic_dataset("camvid", "test", prof)
    for arm, label in [(a, lab) for a, lab in CRF_NETS if lab in args.crf_nets]:
        if {(label, seed), (f"{label} + CRF", seed)} <= args.recorded and not args.force:
            continue  # this network's seed is done (another sitting)
        model = trained_model(arm, seed, args, prof, L).to(device)
        tune = [_probabilities(model, L.val.dataset, raw_val, i, device, size)[:3]
                for i in range(0, len(L.val.dataset), args.val_step)]
        t0 = time.perf_counter()
        best, scores = grid_search(lambda **p: crf_miou(tune, C, CRF_ITERATIONS, **p), args.crf_grid)
        search_s = time.perf_counter() - t0
        meters = {k: SegmentationMeter(C, boundary=True, trimap_widths=TRIMAP) for k in ("net", "crf")}
        test = [_probabilities(model, L.test.dataset, raw_test, i, device, size) for i in range(len(L.test.dataset))]
        crf_out, crf_s = crf_labels(test, CRF_ITERATIONS, **best)  # the images split over the cores
        for (_, p, y, _), q in zip(test, crf_out):
            meters["net"].update(torch.from_numpy(p.argmax(0)), y)
            meters["crf"].update(torch.from_numpy(q.astype(np.int64)), y)
        net_s = [t for *_, t in test]
        del test
        grid = {k: sorted({pt[i] for pt in scores}) for i, k in enumerate(args.crf_grid)}
        tuned = dict(crf_params=best, crf_grid=grid, tune_images=len(tune), search_s=search_s,
                     val_miou_before=crf_miou(tune, C, 0, **best), val_miou_after=max(scores.values()))
        record(label, seed, metrics_of(meters["net"].compute(), float(np.median(net_s))))
        record(f"{label} + CRF", seed, metrics_of(meters["crf"].compute(), float(np.median(crf_s)), **tuned))


STUDIES = {"tta": run_tta, "crf": run_crf}
VARIANTS = {"tta": 5, "crf": 2}  # (variant, seed) records one seed writes (crf: per network of --crf-nets)


def parse_grid(items: list[str]) -> dict[str, tuple[float, ...]]:
    """["w1=3,5", "theta_alpha=20,40,80", ...] → {"w1": (3.0, 5.0), ...}; the three CRF
    parameters must all be given."""
    grid = {}
    for item in items:
        name, _, values = item.partition("=")
        try:
            grid[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise SystemExit(f"--crf-grid {item!r}: expected name=v1,v2,... with numbers") from None
    if set(grid) != set(CRF_GRID):
        raise SystemExit(f"--crf-grid needs exactly {sorted(CRF_GRID)}, got {sorted(grid)}")
    return grid


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", required=True, choices=list(STUDIES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=12, help="of the reference runs to load")
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--reference-study", default="camvid_reference")
    ap.add_argument("--val-step", type=int, default=4, help="CRF tuning on every n-th validation image")
    ap.add_argument("--crf-grid", nargs=3, default=[f"{k}={','.join(str(v) for v in vs)}" for k, vs in CRF_GRID.items()],
                    help="the starting grid, grown until its best point is inside (default: %(default)s)")
    ap.add_argument("--crf-nets", nargs="+", default=[lab for _, lab in CRF_NETS], choices=[lab for _, lab in CRF_NETS],
                    help="the reference networks the CRF study post-processes (default: all)")
    ap.add_argument("--test-images", type=int, default=None, help="score only the first N test images (quick checks)")
    ap.add_argument("--force", action="store_true", help="redo seeds already recorded")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--results-dir", type=Path, default=None)
    ap.add_argument("--checkpoint-dir", type=Path, default=None, help="of the reference runs (default: checkpoints/reference/)")
    args = ap.parse_args(argv)
    args.crf_grid = parse_grid(args.crf_grid)
    name = f"camvid_{args.study}"
    if not args.summary:
        prof, device = get_profile(args.profile), get_device()
        precision = get_precision(device)
        args.recorded = {(r["arm"], r["seed"]) for r in load_results(name, args.results_dir)["runs"]}
        # a seed is done when all its variants are recorded (a stopped sitting leaves some)
        per_seed = VARIANTS[args.study] * (len(args.crf_nets) if args.study == "crf" else 1)
        wanted = (lambda arm: arm.split(" + ")[0] in args.crf_nets) if args.study == "crf" else (lambda arm: True)
        recorded = [seed for arm, seed in args.recorded if wanted(arm)]
        done = {seed for seed in set(recorded) if recorded.count(seed) >= per_seed}
        L = D.semantic_loaders("camvid", prof, prof.camvid_size, torch.Generator(), crop=prof.crop_size)
        L = first_test_images(L, args.test_images)
        for seed in args.seeds:
            if seed in done and not args.force:
                print(f"seed {seed}: already recorded, skipped")
                continue
            t0 = time.perf_counter()

            def record(variant: str, seed: int, metrics: dict) -> None:
                prov = provenance(device, prof.name, precision, reference_study=args.reference_study,
                                  epochs=args.epochs, test_images=len(L.test.dataset))
                record_run(name, variant, seed, metrics, provenance=prov, wall_s=time.perf_counter() - t0,
                           root=args.results_dir)
                print(f"seed {seed} {variant}: test mIoU {100 * metrics['test_miou']:.1f}, "
                      f"boundary F {100 * metrics['test_mbf1']:.1f}", flush=True)

            STUDIES[args.study](seed, args, prof, L, device, precision, record)
    runs = load_results(name, args.results_dir)["runs"]
    print(study_table(runs, {"test_miou": "test mIoU", "test_mbf1": "boundary F", "test_trimap.2": "trimap 2 px"}))


if __name__ == "__main__":
    main()
