"""The course's CamVid leaderboard: notebooks record results, the README shows them.

Rows live in ``results/camvid_leaderboard.json`` (committed: they are outputs of real runs),
one per (model, profile); recording again replaces the row. ``markdown_table()`` renders
the rows of the chosen profiles for the README (``python -m course_lib.leaderboard``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path


from .runtime import REPO_ROOT, device_name  # noqa: F401  (notebooks call leaderboard.device_name)

PATH = REPO_ROOT / "results" / "camvid_leaderboard.json"
COLUMNS = ("model", "notebook", "params_m", "profile", "device", "train_size", "train_s", "val_miou", "test_miou")


def load(path: Path = PATH) -> list[dict]:
    return json.loads(path.read_text()) if path.exists() else []


def record(row: dict, path: Path = PATH) -> list[dict]:
    """Add or replace the row with the same (model, profile); written atomically."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"leaderboard row lacks {missing}")
    rows = [r for r in load(path) if (r["model"], r["profile"]) != (row["model"], row["profile"])]
    rows.append({c: row[c] for c in COLUMNS})
    rows.sort(key=lambda r: (r["profile"], -r["val_miou"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    os.replace(tmp, path)
    return rows


def markdown_table(profiles: tuple[str, ...] = ("cpu", "gpu"), path: Path = PATH) -> str:
    """The leaderboard as a Markdown table (best val mIoU first within each profile)."""
    lines = ["| model | notebook | params (M) | profile | device | trained at | train time | val mIoU | test mIoU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in load(path):
        if r["profile"] in profiles:
            lines.append(f"| {r['model']} | {r['notebook']} | {r['params_m']:.2f} | {r['profile']} | {r['device']} | "
                         f"{r['train_size']} | {r['train_s'] / 60:.1f} min | {100 * r['val_miou']:.1f} | {100 * r['test_miou']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
