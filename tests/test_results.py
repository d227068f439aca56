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


@pytest.mark.realdata
def test_reference_script_records_each_arm_and_seed_once(camvid_dir, tmp_path, capsys):
    """benchmarks/camvid_reference.py on smoke-sized CamVid: one file, one run per (arm, seed),
    with history and provenance; a second call skips what is recorded."""
    import importlib.util

    from course_lib.runtime import REPO_ROOT

    spec = importlib.util.spec_from_file_location("camvid_reference", REPO_ROOT / "benchmarks" / "camvid_reference.py")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    argv = ["--study", "t", "--arms", "unet-w8", "--seeds", "0", "1", "--epochs", "4", "--profile", "smoke",
            "--val-points", "2", "--results-dir", str(tmp_path)]
    ref.main(argv)
    runs = R.load_results("t", tmp_path)["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("unet-w8", 0), ("unet-w8", 1)]
    r = runs[0]
    assert 0 <= r["metrics"]["test_miou"] <= 1 and set(r["metrics"]["test_trimap"]) == {"2", "5", "10"}
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3, 4] and "val_miou" in r["history"][-1]
    assert r["provenance"]["profile"] == "smoke" and r["provenance"]["epochs"] == 4 and r["wall_s"] > 0
    ref.main(argv)
    assert "already recorded, skipped" in capsys.readouterr().out


def test_plots_show_every_seed_and_curve(tmp_path):
    import matplotlib.pyplot as plt

    for arm, base in (("a", 0.4), ("b", 0.5)):
        for seed in range(3):
            R.record_run("p", arm, seed, {"m": base + 0.01 * seed}, provenance={}, root=tmp_path,
                         history=[{"epoch": e, "train_loss": 1.0 / e, "val_miou": base} for e in (1, 2, 3)])
    runs = R.load_results("p", tmp_path)["runs"]
    ax = R.plot_seeds(runs, "m", ["a", "b"])
    assert len(ax.lines) == 3  # one paired line per seed
    assert [round(float(c.get_segments()[0][0][1]), 3) for c in ax.collections] == [41.0, 51.0]
    axes = R.plot_curves(runs)
    assert len(axes[0].lines) == 6 and len(axes[0].get_legend().get_texts()) == 2
    plt.close("all")
