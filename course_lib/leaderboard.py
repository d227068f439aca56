"""The course's CamVid leaderboard: notebooks record results, the README shows them.

Two sources, both committed outputs of real runs:
- the notebooks' live runs, ``results/camvid_leaderboard.json``, one row per (notebook, model,
  profile): two notebooks may train a model of the same name (08's and 09's DeepLab v3+) without
  one erasing the other; recording again from the same notebook replaces its row;
- the reference runs, ``results/camvid_reference.json`` (``benchmarks/camvid_reference.py``):
  one row per arm, the mean over its seeds with the range (:func:`reference_rows`).

``markdown_table()`` renders both for the README (``python -m course_lib.leaderboard``).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


from .runtime import REPO_ROOT, device_name  # noqa: F401  (notebooks call leaderboard.device_name)

PATH = REPO_ROOT / "results" / "camvid_leaderboard.json"
COLUMNS = ("model", "notebook", "params_m", "profile", "device", "train_size", "train_s", "val_miou", "test_miou")
PROVENANCE = ("seed", "commit", "date")  # kept when given; ``record`` fills commit and date


def load(path: Path = PATH) -> list[dict]:
    """The rows recorded in ``path`` ([] if it does not exist)."""
    if not path.exists():
        return []
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"The leaderboard file {path} is damaged ({e}); restore it with "
                         f"`git checkout -- {path.name}` (it is committed) or delete it.") from None


def _check_row(row: dict) -> None:
    for c in ("params_m", "train_s", "val_miou", "test_miou"):
        v = row[c]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ValueError(f"leaderboard row field {c} must be a finite number ≥ 0, got {v!r}.")
        if c.endswith("miou") and v > 1:
            raise ValueError(f"leaderboard row field {c} must be a fraction in 0..1 (not a percentage), got {v!r}.")


def record(row: dict, path: Path = PATH) -> list[dict]:
    """Add or replace the row with the same (notebook, model, profile); written atomically. The row keeps
    its provenance: ``seed`` if given, and the checkout's ``commit`` and the ``date`` (UTC)."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"leaderboard row lacks {missing}")
    _check_row(row)
    key = ("notebook", "model", "profile")
    rows = [r for r in load(path) if tuple(r.get(k) for k in key) != tuple(row[k] for k in key)]
    from datetime import datetime, timezone

    from .results import code_commit

    row = {"commit": code_commit(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"), **row}
    rows.append({c: row[c] for c in COLUMNS + PROVENANCE if c in row})
    rows.sort(key=lambda r: (r["profile"], -r["val_miou"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)
    return rows


def reference_rows(study: str = "camvid_reference", root: Path | None = None) -> list[dict]:
    """One row per arm of ``results/<study>.json``: test and final-val mIoU averaged over its
    seeds (``test_min``/``test_max``: the range), seeds, parameters, mean training seconds,
    epochs; best mean test mIoU first."""
    from .results import load_results, summarize

    runs = load_results(study, root)["runs"]
    test, val = summarize(runs, "test_miou"), summarize(runs, "final_val_miou")
    rows = []
    for arm, t in test.items():
        mine = [r for r in runs if r["arm"] == arm]
        rows.append(dict(model=arm, params_m=mine[0].get("params_m") or 0.0, seeds=sorted(t["values"]),
                         epochs=mine[0]["provenance"].get("epochs"), device=mine[0]["provenance"].get("device", "?"),
                         train_s=sum(r.get("train_s") or 0.0 for r in mine) / len(mine),
                         test_miou=t["mean"], test_min=t["min"], test_max=t["max"],
                         val_miou=val[arm]["mean"] if arm in val else float("nan")))
    return sorted(rows, key=lambda r: -r["test_miou"])


def markdown_table(profiles: tuple[str, ...] = ("cpu", "gpu"), path: Path = PATH,
                   study: str | None = "camvid_reference", notebooks: tuple[str, ...] | None = None) -> str:
    """The leaderboard as Markdown: the notebooks' live runs (best test mIoU first within each
    profile; only ``notebooks``' rows if given), then, if ``study`` has runs, the reference runs
    (mean over seeds [min, max])."""
    lines = ["| model | notebook | params (M) | profile | device | trained at | train time | val mIoU | test mIoU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(load(path), key=lambda r: (r["profile"], -r["test_miou"])):
        if r["profile"] in profiles and (notebooks is None or r["notebook"] in notebooks):
            lines.append(f"| {r['model']} | {r['notebook']} | {r['params_m']:.2f} | {r['profile']} | {r['device']} | "
                         f"{r['train_size']} | {r['train_s'] / 60:.1f} min | {100 * r['val_miou']:.1f} | {100 * r['test_miou']:.1f} |")
    ref = reference_rows(study) if study else []
    if ref:
        lines += ["", f"Reference runs (`results/{study}.json`, `benchmarks/camvid_reference.py`): the mean over "
                  "each arm's paired seeds, [min, max] over seeds; an arm with fewer than 3 seeds is a calibration "
                  "point, not a comparison.", "",
                  "| arm | params (M) | epochs | seeds | train time (mean) | final val mIoU | test mIoU [min, max] |",
                  "|---|---|---|---|---|---|---|"]
        for r in ref:
            lines.append(f"| {r['model']} | {r['params_m']:.2f} | {r['epochs']} | {len(r['seeds'])} | "
                         f"{r['train_s'] / 60:.1f} min | {100 * r['val_miou']:.1f} | "
                         f"{100 * r['test_miou']:.1f} [{100 * r['test_min']:.1f}, {100 * r['test_max']:.1f}] |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
