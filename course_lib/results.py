"""Reference-run results with their provenance: ``results/<name>.json``.

A comparison that a notebook concludes from is run by a script in ``benchmarks/`` for longer
than the notebook's live run, once per (arm, seed). Each finished (arm, seed) is written at
once (atomically), so a set can be completed over several sittings, and carries its
provenance: command line, git commit, profile, device, precision, seed, wall time and
per-epoch history. Notebooks and the leaderboard read the same files.

File layout::

    {"name": ..., "description": ..., "runs": [
        {"arm": "fcn8s", "seed": 0, "metrics": {...}, "history": [...], "wall_s": ...,
         "provenance": {"command": ..., "commit": ..., "profile": ..., "device": ..., ...}}]}
"""

from __future__ import annotations

import datetime
import functools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from .runtime import REPO_ROOT, device_name

RESULTS_DIR = REPO_ROOT / "results"


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (with "+dirty" when code differs from it), or "unknown". Results,
    notebooks and Markdown are left out of the dirty check: runs write results while others run,
    and neither changes what the code computes."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)results", ":(exclude)notebooks", ":(exclude)*.md"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty and sha else "")


@functools.cache
def code_commit() -> str:
    """The commit of the code this process runs: :func:`git_commit` of the course's checkout as
    it was when this module was first imported, not when a result is recorded (a run of half an
    hour must not take the commit of whatever was committed while it trained)."""
    return git_commit()


code_commit()  # at import, i.e. when the process loaded the code


def provenance(device: torch.device, profile: str, precision: str, **extra) -> dict:
    """Where a result came from: command line, commit, profile, device, precision, versions, date."""
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": code_commit(),
            "profile": profile, "device": device_name(device), "precision": precision,
            "torch": torch.__version__, "cpu_threads": torch.get_num_threads(),
            "date": datetime.datetime.now().isoformat(timespec="seconds"), **extra}


def _clean(x):
    """JSON-safe copy: tensors → lists, NaN → None."""
    if isinstance(x, torch.Tensor):
        x = x.tolist()
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def results_path(name: str, root: Path | None = None) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"Result name {name!r} must be a plain file stem such as 'camvid_models'.")
    return (root or RESULTS_DIR) / f"{name}.json"


def load_results(name: str, root: Path | None = None) -> dict:
    """The contents of ``results/<name>.json`` (``{"runs": []}`` if it does not exist yet)."""
    path = results_path(name, root)
    if not path.exists():
        return {"name": name, "runs": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it with `git checkout -- {path.name}`.") from None


def record_run(name: str, arm: str, seed: int, metrics: dict, *, provenance: dict, history: list | None = None,
               wall_s: float | None = None, description: str | None = None, root: Path | None = None,
               **extra) -> Path:
    """Add (or replace) the run (``arm``, ``seed``) in ``results/<name>.json``, atomically."""
    path = results_path(name, root)
    data = load_results(name, root)
    if description:
        data["description"] = description
    run = _clean({"arm": arm, "seed": int(seed), "metrics": metrics, "history": history or [],
                  "wall_s": wall_s, "provenance": provenance, **extra})
    data["runs"] = [r for r in data.get("runs", []) if (r["arm"], r["seed"]) != (arm, int(seed))] + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def add_reference_arguments(parser, study: str, epochs: int, epochs_help: str = "training epochs per (arm, seed)") -> None:
    """The command-line options every reference-run script in ``benchmarks/`` shares (study file,
    seeds, epochs, lr, profile, --force, --summary, results and checkpoint folders), added to an
    ``argparse.ArgumentParser``; each script adds its own ``--arms`` and the rest."""
    parser.add_argument("--study", default=study, help=f"results/<study>.json (default: {study})")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=epochs, help=epochs_help)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--description", default="")
    parser.add_argument("--force", action="store_true", help="rerun (arm, seed) pairs already recorded")
    parser.add_argument("--summary", action="store_true", help="only print the table of results/<study>.json")
    parser.add_argument("--results-dir", type=Path, default=None, help="where <study>.json lives (default: results/)")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="default: checkpoints/reference/")


def add_budget_arguments(parser, smoke_help: str) -> None:
    """The options of the reference scripts that train with a time budget and validate on a
    subset (``nuclei_reference``, ``basis_reference``): --minutes, --threads, --val-items,
    --val-points and --smoke (``smoke_help`` says what a smoke run trains);
    :func:`apply_budget_arguments` acts on them."""
    parser.add_argument("--minutes", type=float, default=30.0, help="training time budget per (arm, seed)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    parser.add_argument("--val-items", type=int, default=25, help="val images scored during training (curves)")
    parser.add_argument("--val-points", type=int, default=4, help="how many validation points on each curve")
    parser.add_argument("--smoke", action="store_true",
                        help=f"smoke profile, {smoke_help}, one seed; results and checkpoints in a temporary "
                             f"folder unless --results-dir / --checkpoint-dir say otherwise")


def apply_budget_arguments(args) -> None:
    """--threads sets torch's threads; --smoke switches to the smoke profile, one epoch and the
    first seed, with results and checkpoints in a new temporary folder unless given."""
    import tempfile

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        tmp = Path(tempfile.mkdtemp(prefix=f"{args.study}_smoke_"))
        args.profile, args.epochs, args.seeds = "smoke", 1, args.seeds[:1]
        args.results_dir = args.results_dir or tmp / "results"
        args.checkpoint_dir = args.checkpoint_dir or tmp / "checkpoints"


def recorded_runs(name: str, root: Path | None = None) -> list[dict]:
    """The runs of ``results/<name>.json`` for a summary table; says so when there are none yet."""
    runs = load_results(name, root)["runs"]
    if not runs:
        print(f"{results_path(name, root)} has no runs yet.")
    return runs


def run_pending(args, run: Callable[[str, int], dict], describe: Callable[[dict], str]) -> None:
    """Run each (arm, seed) of ``args.arms`` × ``args.seeds`` that ``results/<args.study>.json``
    does not hold yet (all of them with ``args.force``), seed-major, so a sitting that stops early
    still leaves whole pairs; ``run(arm, seed)`` trains, scores and records one and returns its
    metrics, and ``describe(metrics)`` is the line printed after it."""
    done = {(r["arm"], r["seed"]) for r in load_results(args.study, args.results_dir)["runs"]}
    for seed in args.seeds:
        for arm in args.arms:
            if (arm, seed) in done and not args.force:
                print(f"{arm} seed {seed}: already recorded, skipped")
                continue
            start = time.perf_counter()
            metrics = run(arm, seed)
            print(f"{arm} seed {seed}: {describe(metrics)} ({time.perf_counter() - start:.0f} s)", flush=True)


def run_budget_study(args, splits: Callable, run_one: Callable, describe: Callable[[dict], str],
                     print_summary: Callable, setup: str = "", rerank: Callable | None = None) -> None:
    """The body of a time-budgeted detection reference script (``nuclei_reference``,
    ``basis_reference``) once its options are parsed: ``--summary`` prints the table and stops;
    otherwise :func:`apply_budget_arguments`, the splits built once (``splits(args, profile)`` →
    ``{"train": Dataset, ...}``), then :func:`run_pending` with ``run_one(arm, seed, args, profile,
    device, precision, data)`` → metrics. ``setup`` adds the script's own settings to the banner.
    With ``rerank``, ``rerank(args, profile, device, precision, data)`` runs instead of training
    (an evaluation of trained weights)."""
    from .runtime import get_device, get_precision, get_profile

    if args.summary:
        print_summary(args.study, args.results_dir)
        return
    apply_budget_arguments(args)
    prof, device = get_profile(args.profile), get_device()
    precision = get_precision(device)
    data = splits(args, prof)
    print(f"study {args.study}: profile {prof.name}, {device} ({precision}, {torch.get_num_threads()} threads), "
          f"{setup}crop {prof.detection_crop}, batch {prof.detection_batch_size}, "
          f"{len(data['train']) // prof.detection_batch_size} steps per epoch, arms {args.arms}, seeds {args.seeds}")
    if rerank is not None:
        rerank(args, prof, device, precision, data)
        return
    run_pending(args, lambda arm, seed: run_one(arm, seed, args, prof, device, precision, data), describe)
    print_summary(args.study, args.results_dir)
    if args.smoke:
        print(f"smoke results in {args.results_dir}")


def metric_value(run: dict, metric: str) -> float | None:
    """``run["metrics"][metric]``, where ``metric`` may reach inside: "test_trimap.5" (a key of a
    dict), "test_iou.3" (an index of a list, e.g. a class). None when absent or NaN."""
    v = run["metrics"]
    for part in metric.split("."):
        if isinstance(v, dict):
            v = v.get(part)
        elif isinstance(v, list) and part.isdigit() and int(part) < len(v):
            v = v[int(part)]
        else:
            return None
        if v is None:
            return None
    return float(v)


def select(runs: list[dict], arms: dict[str, str]) -> list[dict]:
    """The runs of the chosen arms, renamed: ``arms`` maps a notebook's label → a recorded arm
    name, e.g. ``{"v3": "deeplabv3-r10", "v3+": "deeplabv3plus-r10"}``; label order is kept."""
    by_arm = {arm: label for label, arm in arms.items()}
    picked = [dict(r, arm=by_arm[r["arm"]]) for r in runs if r["arm"] in by_arm]
    order = list(arms)
    return sorted(picked, key=lambda r: (order.index(r["arm"]), r["seed"]))


def summarize(runs: list[dict], metric: str) -> dict[str, dict]:
    """Per arm: ``values`` by seed, ``mean``, ``min``, ``max``, ``spread`` (max − min), ``n``.
    ``metric`` as in :func:`metric_value`. A run where the metric is undefined (None, or nan:
    e.g. a Boundary IoU with no object matched) is left out of its arm, so ``n`` counts the
    seeds that have it."""
    out: dict[str, dict] = {}
    for r in runs:
        v = metric_value(r, metric)
        if v is None or math.isnan(float(v)):
            continue
        out.setdefault(r["arm"], {"values": {}})["values"][r["seed"]] = float(v)
    for arm, d in out.items():
        vals = list(d["values"].values())
        d.update(n=len(vals), mean=sum(vals) / len(vals), min=min(vals), max=max(vals), spread=max(vals) - min(vals))
    return out


def paired_differences(runs: list[dict], metric: str, arm: str, baseline: str) -> dict[int, float]:
    """``metric`` of ``arm`` minus ``baseline`` for each seed both have (a paired comparison)."""
    s = summarize(runs, metric)
    if arm not in s or baseline not in s:
        return {}
    a, b = s[arm]["values"], s[baseline]["values"]
    return {seed: a[seed] - b[seed] for seed in sorted(set(a) & set(b))}


MIN_SEEDS = 3
"""Paired seeds a :func:`verdict` needs: with two, one lucky seed decides the spread."""


def _decimals(scale: float, largest: float = 0.0) -> int:
    """Decimals to print values multiplied by ``scale``: 1 for percentages (scale ≥ 100) and for
    values of 10 or more (seconds), else 3 (a correlation: at 0.1 a difference of 0.08 would read
    "-0.1 … spread 0.0")."""
    return 1 if scale >= 100 or abs(largest) >= 10 else 3


def verdict(runs: list[dict], metric: str, arm: str, baseline: str, scale: float = 100.0) -> str:
    """One line on ``arm`` − ``baseline`` over the paired seeds: the mean difference, each seed's,
    and whether it is a difference at all (from :data:`MIN_SEEDS` paired seeds on; fewer are
    listed without a verdict). The course claims one only when every seed agrees on
    its sign and the mean difference exceeds both arms' seed spread (max − min); otherwise it
    says so ("no difference at this budget")."""
    d = paired_differences(runs, metric, arm, baseline)
    digits = _decimals(scale)
    if len(d) < MIN_SEEDS:
        so_far = f" ({', '.join(f'{scale * v:+.{digits}f}' for v in d.values())})" if d else ""
        return (f"{arm} vs {baseline}: {len(d)} paired seed(s) so far{so_far}, too few to compare "
                f"(a verdict needs {MIN_SEEDS}).")
    s = summarize(runs, metric)
    mean = sum(d.values()) / len(d)
    spread = max(s[arm]["spread"], s[baseline]["spread"])
    seeds = ", ".join(f"{scale * v:+.{digits}f}" for v in d.values())
    same_sign = all(v > 0 for v in d.values()) or all(v < 0 for v in d.values())
    real = same_sign and abs(mean) > spread
    word = ("higher" if mean > 0 else "lower") if real else "no difference at this budget"
    return (f"{arm} − {baseline}: {scale * mean:+.{digits}f} (seeds {seeds}; seed spread {scale * spread:.{digits}f}) → "
            + (f"{arm} is {word}" if real else word))


def study_table(runs: list[dict], metrics: dict[str, str], arms: list[str] | None = None,
                scale: float = 100.0, scales: dict[str, float] | None = None) -> str:
    """A text table, one row per arm: for each metric (key → column title) the mean over seeds
    with its [min, max], then n seeds. Arms in the given order (default: as recorded). Values
    are multiplied by ``scale`` (fractions → %), or by ``scales[metric]`` where given (1 for
    seconds)."""
    sums = {m: summarize(runs, m) for m in metrics}
    arms = [a for a in (arms or list(dict.fromkeys(r["arm"] for r in runs))) if any(a in s for s in sums.values())]
    width = max([len(a) for a in arms] + [4]) + 2
    lines = [f"{'arm':<{width}}" + "".join(f"{t:>22}" for t in metrics.values()) + "  seeds"]
    for a in arms:
        cells = []
        for m in metrics:
            d, k = sums[m].get(a), (scales or {}).get(m, scale)
            digits = _decimals(k, k * d["max"]) if d else 1
            cells.append(f"{k * d['mean']:6.{digits}f} [{k * d['min']:.{digits}f}, {k * d['max']:.{digits}f}]" if d else "—")
        n = max((sums[m][a]["n"] for m in metrics if a in sums[m]), default=0)
        lines.append(f"{a:<{width}}" + "".join(f"{c:>22}" for c in cells) + f"  {n}")
    return "\n".join(lines)


def plot_seeds(runs: list[dict], metric: str, arms: list[str] | None = None, ax=None, scale: float = 100.0,
               label: str | None = None, min_span: float = 4.0):
    """Each seed's value of ``metric`` per arm (points, seeds joined across arms by thin lines:
    the pairing, each seed named left of its first point, where no mean label is) with the arm's
    mean (a red bar and its value), so the spread is visible next to the difference. The y-axis
    spans at least ``min_span`` (in scaled units: 4 points by default), so that a fraction of a
    point does not fill a panel."""
    import matplotlib.pyplot as plt

    s = summarize(runs, metric)
    arms = [a for a in (arms or list(s)) if a in s]
    if ax is None:
        _, ax = plt.subplots(figsize=(1.3 * len(arms) + 2, 3.2))
    seeds = sorted({k for a in arms for k in s[a]["values"]})
    labels = []  # (x, y, seed) of each seed's first point, named once the y-range is known
    for seed in seeds:
        xs = [i for i, a in enumerate(arms) if seed in s[a]["values"]]
        ys = [scale * s[arms[i]]["values"][seed] for i in xs]
        ax.plot(xs, ys, "-o", color="0.6", lw=0.8, ms=4, zorder=2)
        if xs:
            labels.append((xs[0], ys[0], seed))
    digits = _decimals(scale)
    for i, a in enumerate(arms):
        ax.hlines(scale * s[a]["mean"], i - 0.3, i + 0.3, color="C3", lw=2.5, zorder=3)
        ax.annotate(f"{scale * s[a]['mean']:.{digits}f}", (i + 0.32, scale * s[a]["mean"]), va="center", fontsize=9)
    ax.set_xticks(range(len(arms)), arms, rotation=20, ha="right")
    ax.set_xlim(-0.75, len(arms) - 0.4 + 0.5)
    lo, hi = ax.get_ylim()
    if hi - lo < min_span:
        mid = (hi + lo) / 2
        lo, hi = mid - min_span / 2, mid + min_span / 2
    values = [scale * v for a in arms for v in s[a]["values"].values()]
    if lo < 0 <= min(values, default=0.0):  # scores are never negative: no axis below 0 for values at 0
        lo, hi = 0.0, max(hi - lo, hi)
    ax.set_ylim(lo, hi)
    # seed names left of the first arm (the means are named right of each bar); where values nearly
    # coincide they are pushed apart, the stack centred on the values and kept inside the panel
    lo, hi = ax.get_ylim()
    gap = 0.06 * (hi - lo)
    for x in sorted({t[0] for t in labels}):
        group = sorted((t for t in labels if t[0] == x), key=lambda t: t[1])
        ys = [y for _, y, _ in group]
        stacked = ys[:1]
        for y in ys[1:]:
            stacked.append(max(y, stacked[-1] + gap))
        shift = sum(stacked) / len(stacked) - sum(ys) / len(ys)
        shift = max(shift, stacked[-1] - (hi - gap / 2))   # not above the panel
        shift = min(shift, stacked[0] - (lo + gap / 2))    # nor below it
        for (_, y, seed), y_text in zip(group, stacked):
            y_text -= shift
            ax.annotate(f"s{seed}", (x, y), xytext=(x - 0.36, y_text), va="center", ha="right", fontsize=8, color="0.4",
                        arrowprops=dict(arrowstyle="-", color="0.75", lw=0.5) if abs(y_text - y) > 1e-9 else None)
    ax.set_ylabel(label or metric)
    ax.set_title(f"{label or metric}: each seed (grey, paired) and the mean (red)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    return ax


def plot_curves(runs: list[dict], keys: tuple[str, ...] = ("train_loss", "val_miou"), axes=None):
    """Training curves of every (arm, seed) from the stored per-epoch history: one colour per
    arm, one line style per seed (:func:`course_lib.viz.plot_history`)."""
    from .viz import SEED_STYLES, plot_history

    arms = list(dict.fromkeys(r["arm"] for r in runs))
    seeds = sorted({r["seed"] for r in runs})
    names = {f"{r['arm']} · seed {r['seed']}": r for r in runs}
    first_seed = {a: min(r["seed"] for r in runs if r["arm"] == a) for a in arms}
    axes = plot_history({n: r["history"] for n, r in names.items()}, keys, axes,
                        colors={n: f"C{arms.index(r['arm']) % 10}" for n, r in names.items()},
                        labels={n: (r["arm"] if r["seed"] == first_seed[r["arm"]] else None) for n, r in names.items()},
                        styles={n: SEED_STYLES[seeds.index(r["seed"]) % len(SEED_STYLES)] for n, r in names.items()})
    if len(seeds) > 1:  # one legend for both codes: colour = arm, line style = seed
        from matplotlib.lines import Line2D

        arm_handles, arm_labels = axes[0].get_legend_handles_labels()
        if axes[0].get_legend() is not None:
            axes[0].get_legend().remove()
        seed_handles = [Line2D([], [], color="0.4", ls=SEED_STYLES[i % len(SEED_STYLES)]) for i in range(len(seeds))]
        # outside the last panel, to the right: inside it the legend covered curves
        axes[-1].legend(arm_handles + seed_handles, arm_labels + [f"seed {s}" for s in seeds], fontsize=8,
                        loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return axes


def _by_seed(runs: list[dict], key: str) -> str:
    """A provenance field shared by all runs ("bf16"), or, where seeds were run differently (on
    two machines, say), which seeds had which value ("fp32 (seed 0), bf16 (seeds 1, 2)")."""
    seeds_of: dict[str, set] = {}
    for r in runs:
        seeds_of.setdefault(str(r["provenance"].get(key, "?")), set()).add(r["seed"])
    if len(seeds_of) == 1:
        return next(iter(seeds_of))
    parts = []
    for value, seeds in sorted(seeds_of.items(), key=lambda kv: min(kv[1])):
        seeds = sorted(seeds)
        parts.append(f"{value} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})")
    return ", ".join(parts)


def show_study(runs: list[dict], metrics: dict[str, str], comparisons: list[tuple[str, str]],
               arms: list[str] | None = None, verdict_metrics: list[str] | None = None, curves: bool = True,
               what: str = "reference run", missing: str = "", scales: dict[str, float] | None = None) -> None:
    """A notebook's view of a multi-seed study: where the runs came from, :func:`study_table`,
    a :func:`verdict` for each ``(arm, baseline)`` pair on each of ``verdict_metrics`` (default:
    all ``metrics``), one :func:`plot_seeds` panel per metric and, if ``curves`` and the runs
    store per-epoch histories, :func:`plot_curves`. Metrics are fractions shown in % unless
    ``scales`` says otherwise (``{"s_per_image": 1}``). With no runs it prints ``missing`` (the
    command that produces them)."""
    import matplotlib.pyplot as plt

    if not runs:
        print(f"no runs recorded yet. {missing}".strip())
        return
    p = runs[0]["provenance"]
    # short hashes, keeping the mark of runs made from uncommitted code
    commits = sorted({c[:7] + ("+dirty" if c.endswith("+dirty") else "")
                      for c in (r["provenance"].get("commit", "?") for r in runs)})
    seeds = sorted({r["seed"] for r in runs})
    epochs = {r["arm"]: r["provenance"].get("epochs") for r in runs}
    if len(set(epochs.values())) > 1:   # arms with their own schedules: say each
        trained = "epochs " + ", ".join(f"{e} ({a})" for a, e in epochs.items()) + "; "
    else:
        trained = f"{p['epochs']} epochs, " if p.get("epochs") else ""
    print(f"{what}: {trained}{p.get('profile', '?')} sizes, {_by_seed(runs, 'device')}, {_by_seed(runs, 'precision')}; "
          f"seeds {seeds}; commits {', '.join(commits)}; mean [min, max] over seeds\n")
    scales = scales or {}
    print(study_table(runs, metrics, arms, scales=scales))
    print()
    width = max(len(metrics[m]) for m in (verdict_metrics or metrics))
    for m in verdict_metrics or metrics:
        for arm, baseline in comparisons:
            print(f"{metrics[m]:>{width}}: {verdict(runs, m, arm, baseline, scales.get(m, 100.0))}")
    n = len(metrics)
    n_arms = len(arms or {r["arm"] for r in runs})
    # panels at least 4.5 in wide, so arm names and mean labels do not overlap; more rows if needed
    panel_w = max(4.5, 1.1 * n_arms + 1.6)
    ncols = max(1, min(n, int(16 // panel_w)))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(ncols * panel_w, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax, (m, label) in zip(axes.flat, metrics.items()):
        k = scales.get(m, 100.0)
        # an axis at least 4 % of the metric's full range tall: 4 points of mIoU, 0.04 of a correlation
        plot_seeds(runs, m, arms, ax=ax, scale=k, label=f"{label} (%)" if k == 100 else label, min_span=0.04 * k)
        ax.set_title(label, fontsize=10)
    fig.suptitle(f"{what}: each seed (grey, paired across arms) and the mean (red)", fontsize=10)
    plt.tight_layout()
    plt.show()
    if curves and all(r.get("history") for r in runs):
        # colours follow the order of ``arms`` (the table's), so an arm keeps its colour between studies
        order = {a: i for i, a in enumerate(arms or [])}
        plot_curves(sorted(runs, key=lambda r: order.get(r["arm"], len(order))))
        plt.suptitle(f"{what}: training loss and val mIoU per epoch, every seed", fontsize=10, y=1.02)
        plt.show()
