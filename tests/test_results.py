import json

import pytest
import torch

from course_lib import results as R


def test_record_run_adds_replaces_and_keeps_provenance(tmp_path):
    prov = R.provenance(torch.device("cpu"), "smoke", "fp32", note="test")
    assert prov["profile"] == "smoke" and prov["precision"] == "fp32" and prov["device"].startswith("CPU")
    assert prov["commit"] and prov["command"] and prov["date"]
    R.record_run("demo", "a", 0, {"miou": 0.5, "iou": torch.tensor([0.1, float("nan")])}, provenance=prov,
                 history=[{"epoch": 1, "train_loss": 1.0}], wall_s=3.0, root=tmp_path, description="d")
    R.record_run("demo", "b", 0, {"miou": 0.6}, provenance=prov, root=tmp_path)
    R.record_run("demo", "a", 1, {"miou": 0.7}, provenance=prov, root=tmp_path)
    R.record_run("demo", "a", 0, {"miou": 0.4}, provenance=prov, root=tmp_path)  # replaces (a, 0)
    data = json.loads((tmp_path / "demo.json").read_text())
    assert data["description"] == "d" and len(data["runs"]) == 3
    assert not list(tmp_path.glob("*.tmp"))
    s = R.summarize(data["runs"], "miou")
    assert s["a"]["values"] == {1: 0.7, 0: 0.4}
    assert s["a"]["mean"] == pytest.approx(0.55) and s["a"]["spread"] == pytest.approx(0.3) and s["b"]["n"] == 1
    assert R.paired_differences(data["runs"], "miou", "b", "a") == {0: pytest.approx(0.2)}
    run_b = next(r for r in R.load_results("demo", tmp_path)["runs"] if r["arm"] == "b")
    assert run_b["provenance"]["note"] == "test"


def test_nan_becomes_null_and_bad_names_and_files_are_refused(tmp_path):
    R.record_run("x", "a", 0, {"iou": [float("nan"), 1.0]}, provenance={}, root=tmp_path)
    assert R.load_results("x", tmp_path)["runs"][0]["metrics"]["iou"] == [None, 1.0]
    with pytest.raises(ValueError, match="plain file stem"):
        R.results_path("../evil")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON.*git checkout"):
        R.load_results("broken", tmp_path)
    assert R.load_results("absent", tmp_path) == {"name": "absent", "runs": []}
