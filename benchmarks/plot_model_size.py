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
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4.6))
    arms = sorted({r["arm"] for r in runs}, key=lambda a: -max(x["metrics"]["test_miou"] for x in runs if x["arm"] == a))
    for k, arm in enumerate(arms):
        mine = [r for r in runs if r["arm"] == arm]
        color = plt.get_cmap("tab20")(k % 20)  # 15+ arms: ten default colours would repeat
        for r in mine:  # one point per seed; a hollow point: trained on one thread, not comparable in time
            one_thread = r["provenance"].get("cpu_threads") == 1
            style = dict(s=30, edgecolors=color, facecolors="none" if one_thread else color)
            a1.scatter(r["params_m"], 100 * r["metrics"]["test_miou"], **style)
            a2.scatter(r["train_s"] / 60, 100 * r["metrics"]["test_miou"], **style)
        a1.scatter([], [], s=30, color=color, label=f"{arm} ({len(mine)} seed{'s' if len(mine) > 1 else ''})")
    epochs = sorted({r["provenance"].get("epochs") for r in runs})
    a1.set_xscale("log")
    ticks = [0.25, 0.5, 1, 2, 5, 10, 20, 50]
    a1.set_xticks(ticks, [f"{t:g}" for t in ticks])
    a1.minorticks_off()
    a1.set_xlim(0.25, 50)
    a2.margins(x=0.1, y=0.15)
    a1.margins(y=0.15)
    fig.legend(*a1.get_legend_handles_labels(), fontsize=8, loc="center left", bbox_to_anchor=(0.995, 0.5), frameon=False)
    a1.set_xlabel("parameters (M, log)")
    a2.set_xlabel("training time (min, without the validation passes; hollow: one thread;\nlonger where the machine was shared)")
    for a in (a1, a2):
        a.set_ylabel("CamVid test mIoU (%)")
        a.grid(alpha=0.3)
    device = runs[0]["provenance"].get("device", "?")
    fig.suptitle(f"{args.study}: course recipe, {'/'.join(map(str, epochs))} epochs, seeds "
                 f"{sorted({r['seed'] for r in runs})}, {device}", fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100, bbox_inches="tight")
    print(f"wrote {args.out} ({len(runs)} runs)")


if __name__ == "__main__":
    main()
