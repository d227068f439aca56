"""benchmarks/basis_reference.py (notebook 11's reference runs) in its --smoke mode: every arm
of one seed trained a step or two on 4 nuclei crops and scored on 2 test images."""

from __future__ import annotations

import math

import torch

from course_lib import results as R
from tests.conftest import require_dataset
from tests.test_results import _script


def test_smoke_mode_records_every_arm_once(tmp_path, capsys):
    require_dataset("nuclei")
    ref = _script("basis_reference")
    before = torch.get_num_threads()
    argv = ["--smoke", "--threads", "1", "--results-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ckpt")]
    try:
        ref.main(argv)
        runs = R.load_results("basis_reference", tmp_path)["runs"]
        assert sorted(r["arm"] for r in runs) == ["base", "both", "boundary", "scoring"]
        assert {r["seed"] for r in runs} == {0}
        for r in runs:
            m = r["metrics"]
            assert all(0 <= m[f"test_{k}"] <= 1 for k in ("AP", "AP50", "AP75", "dsb"))
            assert m["test_boundary_iou"] is None or 0 <= m["test_boundary_iou"] <= 1  # None: nothing matched
            assert m["test_detections"] >= 0 and math.isfinite(m["final_train_loss"])
            assert r["provenance"]["profile"] == "smoke" and r["provenance"]["masks"] == "blendmask"
            assert [h["epoch"] for h in r["history"]] == [1]
        # the same seed: the same shared initial weights in every arm, so the base and both arms differ
        # only by their switches (the parameter count says which parts were added)
        params = {r["arm"]: r["params_m"] for r in runs}
        assert params["base"] < params["boundary"] < params["both"] and params["base"] < params["scoring"] < params["both"]
        ref.main(argv)
        assert "already recorded, skipped" in capsys.readouterr().out
        ref.main(["--summary", "--results-dir", str(tmp_path)])
        out = capsys.readouterr().out
        assert "score_iou_corr" in out and all(a in out for a in ("base", "boundary", "scoring", "both"))
        # --rerank: the rescoring arms' trained weights scored again, ranked two ways; ranked by the final
        # score they reproduce what training recorded (the checkpoint is the model that was scored)
        ref.main(argv + ["--rerank", "--arms", "base", "scoring", "both"])
        assert "base: no mask scoring head" in capsys.readouterr().out
        reranked = {(r["arm"], r["seed"]): r["metrics"] for r in R.load_results("basis_rerank", tmp_path)["runs"]}
        assert sorted(reranked) == [(f"{arm}, ranked by {how}", 0) for arm in ("both", "scoring")
                                    for how in ("centre confidence", "final score")]
        trained = {r["arm"]: r["metrics"] for r in runs}
        for arm in ("scoring", "both"):
            for k in ("AP", "AP75", "dsb"):
                assert reranked[(f"{arm}, ranked by final score", 0)][f"test_{k}"] == trained[arm][f"test_{k}"]
    finally:
        torch.set_num_threads(before)
