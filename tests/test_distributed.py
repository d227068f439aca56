"""Multi-process training for real: ``torchrun --standalone --nproc_per_node 2`` on CPU (gloo)
runs ``python -m course_lib.train_ddp`` for a few steps of a tiny U-Net on Shapes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from course_lib.runtime import REPO_ROOT

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason=f"torch {torch.__version__} has no torch.distributed with the gloo "
                                       f"backend, which CPU multi-process training needs")

EPOCHS = 2
# 16 items, batch 4: 4 steps per epoch in one process, 2 per rank with two processes
ARGS = ["-m", "course_lib.train_ddp", "--epochs", str(EPOCHS), "--items", "16", "--size", "32",
        "--batch-size", "4", "--width", "4", "--device", "cpu", "--precision", "fp32"]


def run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1", TORCH_HOME=str(tmp / "torch"))
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit code {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def reports(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]


def test_torchrun_two_processes_stay_in_sync_and_write_one_checkpoint(tmp_path):
    ckpt_dir, report = tmp_path / "ckpt", tmp_path / "report"
    # `python -m torch.distributed.run` is what the `torchrun` command runs, with this interpreter
    proc = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *ARGS,
                "--checkpoint", str(ckpt_dir / "unet.pt"), "--report", str(report)], tmp_path)
    r0, r1 = reports(report)
    assert (r0["rank"], r1["rank"]) == (0, 1) and r0["world_size"] == r1["world_size"] == 2
    # one checkpoint file, no temporaries, written by rank 0 alone (once per epoch)
    assert [p.name for p in ckpt_dir.iterdir()] == ["unet.pt"]
    assert (r0["checkpoint_writes"], r1["checkpoint_writes"]) == (EPOCHS, 0)
    # the ranks end with identical weights and buffers, equal to the checkpoint's
    assert r0["state_sha256"] == r1["state_sha256"]
    from course_lib.models import UNet
    from course_lib.train_ddp import state_sha256

    state = torch.load(ckpt_dir / "unet.pt", weights_only=True)
    model = UNet(4, width=4, depth=2)
    model.load_state_dict(state["model"])
    assert state_sha256(model) == r0["state_sha256"]
    assert state["complete"] and state["epoch"] == EPOCHS and state["config"]["world_size"] == 2
    # metrics reduced over the ranks: the same numbers on both
    assert r0["train_loss"] == r1["train_loss"] and r0["val_miou"] == r1["val_miou"]
    assert len(r0["val_miou"]) == EPOCHS and all(0 <= m <= 1 for m in r0["val_miou"])
    # only rank 0 prints
    assert proc.stdout.count("trained on 2 process(es)") == 1
    assert proc.stdout.count(f"epoch   1/{EPOCHS}") == 1


def test_the_same_entry_point_runs_in_one_process(tmp_path):
    ckpt, report = tmp_path / "ckpt" / "unet.pt", tmp_path / "report"
    proc = run([sys.executable, *ARGS, "--checkpoint", str(ckpt), "--report", str(report)], tmp_path)
    (r0,) = reports(report)
    assert r0["world_size"] == 1 and r0["checkpoint_writes"] == EPOCHS and ckpt.exists()
    assert "world_size" not in torch.load(ckpt, weights_only=True)["config"]  # as before: no trace of DDP
    assert "trained on 1 process(es)" in proc.stdout
