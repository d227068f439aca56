"""benchmarks/nuclei_reference.py (notebook 10's reference runs) in its --smoke mode: both arms
of one seed trained one epoch on 4 nuclei crops and scored on 2 test images."""

from __future__ import annotations

import math

import torch

from course_lib import results as R
from tests.conftest import require_dataset
from tests.test_results import _script


def test_smoke_mode_records_both_arms_once(tmp_path, capsys):
    require_dataset("nuclei")
    ref = _script("nuclei_reference")
    before = torch.get_num_threads()
    argv = ["--smoke", "--threads", "1", "--results-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ckpt")]
    try:
        ref.main(argv)
        assert torch.get_num_threads() == 1   # --threads was applied
        runs = R.load_results("nuclei_reference", tmp_path)["runs"]
        assert sorted(r["arm"] for r in runs) == ["maskrcnn-r18-slim", "unet-watershed"]
        assert {r["seed"] for r in runs} == {0}
        for r in runs:
            m = r["metrics"]
            assert all(0 <= m[f"test_{k}"] <= 1 for k in ("AP", "AP50", "AP75", "dsb"))
            assert math.isfinite(m["final_train_loss"]) and r["provenance"]["profile"] == "smoke"
            assert [h["epoch"] for h in r["history"]] == [1]
        assert list((tmp_path / "ckpt").rglob("*.pt"))   # checkpoints in the folder given, not in the repo's
        ref.main(argv)
        assert "already recorded, skipped" in capsys.readouterr().out
        ref.main(["--summary", "--results-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert "maskrcnn-r18-slim" in out and "unet-watershed" in out
    finally:
        torch.set_num_threads(before)
