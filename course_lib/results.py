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
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from .runtime import REPO_ROOT, device_name

RESULTS_DIR = REPO_ROOT / "results"


def git_commit(root: Path = REPO_ROOT) -> str:
    """The checkout's commit (with "+dirty" when files differ from it), or "unknown"."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("+dirty" if dirty and sha else "")


def provenance(device: torch.device, profile: str, precision: str, **extra) -> dict:
    """Where a result came from: command line, commit, profile, device, precision, versions, date."""
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "commit": git_commit(),
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


def summarize(runs: list[dict], metric: str) -> dict[str, dict]:
    """Per arm: ``values`` by seed, ``mean``, ``min``, ``max``, ``spread`` (max − min), ``n``."""
    out: dict[str, dict] = {}
    for r in runs:
        v = r["metrics"].get(metric)
        if v is None:
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
