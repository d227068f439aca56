"""Plot a reference study's test mIoU against model size and training time.

    python benchmarks/plot_model_size.py                       # results/camvid_reference.json
    python benchmarks/plot_model_size.py --study camvid_reference --out docs/model_size.png

Each (arm, seed) of ``results/<study>.json`` trained with the recipe's loss (class-weighted
cross-entropy: the loss arms of notebook 05 share their U-Net's size) is one point (from
``benchmarks/camvid_reference.py``): left, test mIoU against parameters (log scale); right,
test mIoU against training seconds, labelled with the threads the run had (from its
provenance), since a run on one thread is not comparable in time with one on two.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from course_lib.results import load_results  # noqa: E402
from course_lib.runtime import REPO_ROOT  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="camvid_reference")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "model_size.png")
    args = ap.parse_args()
    runs = [r for r in load_results(args.study)["runs"] if r["provenance"].get("loss", "weighted_ce") == "weighted_ce"]
    if not runs:
        raise SystemExit(f"results/{args.study}.json has no runs yet: run benchmarks/camvid_reference.py first.")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in sorted(runs, key=lambda r: r["params_m"]):
        miou = 100 * r["metrics"]["test_miou"]
        threads = r["provenance"].get("cpu_threads", "?")
        a1.scatter(r["params_m"], miou, s=30)
        a1.annotate(r["arm"], (r["params_m"], miou), textcoords="offset points", xytext=(5, 3), fontsize=8)
        a2.scatter(r["train_s"] / 60, miou, s=30)
        a2.annotate(f"{r['arm']} ({threads} thr.)", (r["train_s"] / 60, miou), textcoords="offset points",
                    xytext=(5, 3), fontsize=8)
    epochs = sorted({r["provenance"].get("epochs") for r in runs})
    a1.set_xscale("log")
    ticks = [0.25, 0.5, 1, 2, 5, 10, 20, 50]
    a1.set_xticks(ticks, [f"{t:g}" for t in ticks])
    a1.minorticks_off()
    a1.set_xlim(0.25, 50)
    a2.margins(x=0.35, y=0.15)
    a1.margins(y=0.15)
    a1.set_xlabel("parameters (M, log)")
    a2.set_xlabel("training time (min, without the validation passes)")
    for a in (a1, a2):
        a.set_ylabel("CamVid test mIoU (%)")
        a.grid(alpha=0.3)
    device = runs[0]["provenance"].get("device", "?")
    fig.suptitle(f"{args.study}: course recipe, {'/'.join(map(str, epochs))} epochs, seeds "
                 f"{sorted({r['seed'] for r in runs})}, {device}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
