import json
import sys

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
    # an undefined value (nan, or null once saved) leaves that seed out, not the mean nan
    undefined = [{"arm": "c", "seed": 0, "metrics": {"miou": float("nan")}},
                 {"arm": "c", "seed": 1, "metrics": {"miou": None}}, {"arm": "c", "seed": 2, "metrics": {"miou": 0.3}}]
    assert R.summarize(undefined, "miou")["c"] == {"values": {2: 0.3}, "n": 1, "mean": 0.3, "min": 0.3, "max": 0.3,
                                                   "spread": 0.0}
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


def _script(name: str):
    """benchmarks/<name>.py imported as a module (the folder is not a package)."""
    import importlib

    from course_lib.runtime import REPO_ROOT

    folder = str(REPO_ROOT / "benchmarks")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(name)


@pytest.mark.realdata
def test_reference_script_records_each_arm_and_seed_once(camvid_dir, tmp_path, capsys):
    """benchmarks/camvid_reference.py on smoke-sized CamVid: one file, one run per (arm, seed),
    with history and provenance; a second call skips what is recorded."""
    ref = _script("camvid_reference")
    argv = ["--study", "t", "--arms", "unet-w8", "--seeds", "0", "1", "--epochs", "4", "--profile", "smoke",
            "--val-points", "2", "--results-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "ckpt")]
    ref.main(argv)
    runs = R.load_results("t", tmp_path)["runs"]
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("unet-w8", 0), ("unet-w8", 1)]
    r = runs[0]
    assert 0 <= r["metrics"]["test_miou"] <= 1 and set(r["metrics"]["test_trimap"]) == {"2", "5", "10"}
    assert [h["epoch"] for h in r["history"]] == [1, 2, 3, 4] and "val_miou" in r["history"][-1]
    assert r["provenance"]["profile"] == "smoke" and r["provenance"]["epochs"] == 4 and r["wall_s"] > 0
    ref.main(argv)
    assert "already recorded, skipped" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "ckpt" / "t").iterdir()) == ["unet-w8_seed0_smoke_4ep.pt",
                                                                           "unet-w8_seed1_smoke_4ep.pt"]


def test_reference_sbcb_arm_scores_the_deployed_model_of_its_pair(camvid_dir, tmp_path):
    """An SBCB arm trains with the boundary head and records the plain model: the same
    parameters as its pair, more while training."""
    ref = _script("camvid_reference")
    ref.main(["--study", "s", "--arms", "deeplabv3-r10", "deeplabv3-r10-sbcb", "--seeds", "0", "--epochs", "1",
              "--profile", "smoke", "--val-points", "1", "--results-dir", str(tmp_path),
              "--checkpoint-dir", str(tmp_path / "ckpt")])
    runs = {r["arm"]: r for r in R.load_results("s", tmp_path)["runs"]}
    base, sbcb = runs["deeplabv3-r10"], runs["deeplabv3-r10-sbcb"]
    assert sbcb["params_m"] == base["params_m"] < sbcb["provenance"]["train_params_m"]
    # the boundary term is in the training loss: same data, same initial weights, a larger loss
    assert sbcb["history"][0]["train_loss"] > base["history"][0]["train_loss"]
    assert 0 <= sbcb["metrics"]["test_miou"] <= 1


@pytest.mark.realdata
def test_posthoc_evaluations_score_every_variant_of_a_trained_seed(camvid_dir, tmp_path, capsys):
    """camvid_posthoc.py on smoke-sized reference models: TTA / output stride 8 variants and the
    CRF (grid tuned on val) are recorded per seed; a missing reference model is a clear exit."""
    ref, post = _script("camvid_reference"), _script("camvid_posthoc")
    common = ["--epochs", "1", "--profile", "smoke", "--results-dir", str(tmp_path), "--checkpoint-dir", str(tmp_path / "c")]
    with pytest.raises(SystemExit, match="does not exist: train it first"):
        post.main(["--study", "tta", "--seeds", "0", *common])
    ref.main(["--arms", "deeplabv3-r10", "deeplabv1-r10", "--seeds", "0", "--val-points", "1", *common])
    post.main(["--study", "tta", "--seeds", "0", "--test-images", "4", *common])
    runs = R.load_results("camvid_tta", tmp_path)["runs"]
    assert sorted(r["arm"] for r in runs) == ["flip", "output stride 8 (same weights)", "scales", "scales + flip",
                                              "single scale"]
    assert {r["metrics"]["passes"] for r in runs} == {1, 2, 6, 12}
    crf = ["--study", "crf", "--seeds", "0", "--val-step", "50", "--test-images", "3",
           "--crf-grid", "w1=4", "theta_alpha=40,80", "theta_beta=5", *common]
    post.main(crf + ["--crf-nets", "v1"])
    runs = {r["arm"]: r for r in R.load_results("camvid_crf", tmp_path)["runs"]}
    assert sorted(runs) == ["v1", "v1 + CRF"]
    v1_wall = runs["v1 + CRF"]["wall_s"]
    post.main(crf)  # both networks: v1's seed is kept, v3 is added
    runs = {r["arm"]: r for r in R.load_results("camvid_crf", tmp_path)["runs"]}
    assert sorted(runs) == ["v1", "v1 + CRF", "v3", "v3 + CRF"] and runs["v1 + CRF"]["wall_s"] == v1_wall
    m = runs["v1 + CRF"]["metrics"]
    grid = m["crf_grid"]  # θα, the one searched axis, grew until its best point was inside (or 3 steps)
    assert grid["w1"] == [4.0] and grid["theta_beta"] == [5.0]
    assert grid["theta_alpha"][0] < m["crf_params"]["theta_alpha"] < grid["theta_alpha"][-1] or len(grid["theta_alpha"]) == 5
    # the CRF's best setting on val, and the network alone (0 iterations) on the same images; the
    # CRF may still lose to the network (an untrained smoke model), so no order is asserted
    assert 0 <= m["val_miou_before"] <= 1 and 0 <= m["val_miou_after"] <= 1


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
    zero = [dict(r, metrics={"m": 0.0}) for r in runs]   # a score at 0 in every run: no axis below 0
    ax_zero = R.plot_seeds(zero, "m", ["a", "b"])
    assert ax_zero.get_ylim() == pytest.approx((0.0, 4.0))
    # four arms at 0 in a narrow panel (as in a row of panels): the seed names stay clear of the means' values
    crowded = [dict(r, arm=arm, metrics={"m": 0.0}) for arm in "abcd" for r in runs if r["arm"] == "a"]
    _, narrow = plt.subplots(figsize=(3.5, 3))
    R.plot_seeds(crowded, "m", ax=narrow)
    narrow.figure.canvas.draw()
    from matplotlib.text import Text

    names = [(t.get_text(), Text.get_window_extent(t)) for t in narrow.texts]  # the text alone, not its arrow
    seed_boxes = [b for text, b in names if text.startswith("s")]
    mean_boxes = [b for text, b in names if not text.startswith("s")]
    assert len(seed_boxes) == 3 and len(mean_boxes) == 4
    assert not any(s.overlaps(m) for s in seed_boxes for m in mean_boxes)
    assert not any(a.overlaps(b) for i, a in enumerate(seed_boxes) for b in seed_boxes[i + 1:])  # nor each other
    bar_start = narrow.transData.transform((-0.3, 0.0))[0]   # the first arm's mean bar spans x = -0.3 … 0.3
    assert all(b.x1 <= bar_start for b in seed_boxes)           # the names end before it
    frame = narrow.get_window_extent()
    assert all(frame.y0 <= b.y0 and b.y1 <= frame.y1 for b in seed_boxes)  # and stay inside the panel
    plt.close("all")
    axes = R.plot_curves(runs)
    assert len(axes[0].lines) == 6 and axes[0].get_legend() is None  # one legend, in the last panel:
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["a", "b", "seed 0", "seed 1", "seed 2"]
    # the legend sits right of the last panel, so it covers no curve
    fig = axes[-1].figure
    fig.canvas.draw()
    legend_box = axes[-1].get_legend().get_window_extent(fig.canvas.get_renderer())
    assert legend_box.x0 >= axes[-1].get_window_extent().x1
    plt.close("all")


def test_metric_paths_table_and_verdict(tmp_path):
    for seed, (a, b) in enumerate([(0.40, 0.45), (0.42, 0.46), (0.41, 0.47)]):
        R.record_run("v", "base", seed, {"m": a, "tri": {"2": a / 2}, "iou": [a, None]}, provenance={}, root=tmp_path)
        R.record_run("v", "new", seed, {"m": b, "tri": {"2": b / 2}, "iou": [a, None]}, provenance={}, root=tmp_path)
        R.record_run("v", "noisy", seed, {"m": a + (0.05 if seed == 1 else -0.01)}, provenance={}, root=tmp_path)
    runs = R.load_results("v", tmp_path)["runs"]
    assert R.metric_value(runs[0], "tri.2") == pytest.approx(0.2) and R.metric_value(runs[0], "iou.1") is None
    assert R.metric_value(runs[0], "iou.7") is None and R.metric_value(runs[0], "absent") is None
    # every seed +0.03..+0.06, spreads 0.02: a difference
    assert R.verdict(runs, "m", "new", "base").endswith("new is higher")
    # seeds disagree on the sign: no claim
    assert R.verdict(runs, "m", "noisy", "base").endswith("no difference at this budget")
    # all seeds +0.025 (half of m), spreads 0.01: still a difference on the nested metric
    assert "new is higher" in R.verdict(runs, "tri.2", "new", "base")
    assert "too few" in R.verdict(runs[:2], "m", "new", "base")
    # two paired seeds that agree are still no verdict: they are listed, nothing is claimed
    two = [r for r in runs if r["seed"] < 2]
    assert R.verdict(two, "m", "new", "base") == ("new vs base: 2 paired seed(s) so far (+5.0, +4.0), "
                                                  "too few to compare (a verdict needs 3).")
    # unscaled values (a correlation) keep three decimals: at 0.1 a difference of 0.08 would read "-0.1 … spread 0.0"
    assert "(+0.050, +0.040)" in R.verdict(two, "m", "new", "base", scale=1.0)
    t = R.study_table(runs, {"m": "test mIoU", "tri.2": "trimap 2 px"}, ["new", "base"])
    lines = t.splitlines()
    assert lines[1].startswith("new") and "46.0 [45.0, 47.0]" in lines[1] and lines[1].endswith("3")
    assert "—" in t.splitlines()[-1] or "noisy" not in t  # arms without a metric show a dash


def test_select_renames_and_orders(tmp_path):
    for arm in ("x-long-name", "y", "z"):
        R.record_run("s", arm, 0, {"m": 0.1}, provenance={}, root=tmp_path)
    runs = R.select(R.load_results("s", tmp_path)["runs"], {"Z": "z", "X": "x-long-name"})
    assert [r["arm"] for r in runs] == ["Z", "X"]


def test_show_study_prints_provenance_table_verdicts_and_draws(tmp_path, capsys):
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    for seed, (a, b) in enumerate([(0.40, 0.45), (0.42, 0.46), (0.41, 0.47)]):
        prov = {"epochs": 12, "profile": "cpu", "device": "cpu", "precision": "fp32", "commit": f"abc{seed}def0"}
        hist = [{"epoch": 1, "train_loss": 1.0, "val_miou": a}]
        R.record_run("w", "base", seed, {"m": a, "bf": a}, provenance=prov, history=hist, root=tmp_path)
        R.record_run("w", "new", seed, {"m": b, "bf": a}, provenance=prov, history=hist, root=tmp_path)
    runs = R.load_results("w", tmp_path)["runs"]
    plt.close("all")
    R.show_study(runs, {"m": "test mIoU", "bf": "boundary F"}, [("new", "base")], arms=["base", "new"])
    out = capsys.readouterr().out
    assert "12 epochs" in out and "seeds [0, 1, 2]" in out and "abc0def, abc1def, abc2def" in out
    assert "test mIoU: new − base: +5.0" in out and out.count("no difference at this budget") == 1
    assert len(plt.get_fignums()) == 2  # the seeds figure and the curves
    # the curves colour the arms in the order given (recorded order: base, new), whatever the runs' order
    curves = plt.figure(plt.get_fignums()[1]).axes[0]
    assert [ln.get_color() for ln in curves.lines[::3]] == ["C0", "C1"]
    plt.close("all")
    R.show_study(runs, {"m": "test mIoU"}, [("new", "base")], arms=["new", "base"])
    curves = plt.figure(plt.get_fignums()[1]).axes[0]
    assert [ln.get_color() for ln in curves.lines[::3]] == ["C0", "C1"]
    assert curves.lines[0].get_label() == "new"
    plt.close("all")
    R.show_study([], {"m": "x"}, [], missing="run: python benchmarks/x.py")
    assert "no runs recorded yet. run: python benchmarks/x.py" in capsys.readouterr().out
    for r in runs:   # arms with their own schedules are said each
        if r["arm"] == "new":
            r["provenance"] = dict(r["provenance"], epochs=8)
    R.show_study(runs, {"m": "test mIoU"}, [], curves=False)
    assert "epochs 12 (base), 8 (new);" in capsys.readouterr().out
    plt.close("all")
    for r in runs:   # seeds run at different precisions (two machines) are said per seed, not from the first run
        if r["seed"] > 0:
            r["provenance"] = dict(r["provenance"], precision="bf16")
    R.show_study(runs, {"m": "test mIoU"}, [], curves=False)
    assert ", fp32 (seed 0), bf16 (seeds 1, 2);" in capsys.readouterr().out
    plt.close("all")
    runs[0]["provenance"]["commit"] = "abc0def0+dirty"   # a run from uncommitted code keeps its mark
    R.show_study(runs[:1], {"m": "test mIoU"}, [], curves=False)
    assert "commits abc0def+dirty;" in capsys.readouterr().out
    plt.close("all")


def test_study_table_scales_per_metric(tmp_path):
    for seed in range(2):
        R.record_run("t", "a", seed, {"m": 0.05 + 0.01 * seed, "s_per_image": 0.195 + 0.01 * seed}, provenance={},
                     root=tmp_path)
    t = R.study_table(R.load_results("t", tmp_path)["runs"], {"m": "mIoU", "s_per_image": "s / image"},
                      scales={"s_per_image": 1})
    assert "5.5 [5.0, 6.0]" in t and "0.200 [0.195, 0.205]" in t


def test_git_commit_is_dirty_for_code_not_for_results(tmp_path):
    import subprocess

    def git(*a):
        subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q"); git("config", "user.email", "t@t"); git("config", "user.name", "t")
    (tmp_path / "results").mkdir(); (tmp_path / "results" / "r.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "."); git("commit", "-qm", "c")
    assert not R.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "results" / "r.json").write_text('{"runs": []}')  # a run recorded meanwhile
    assert not R.git_commit(tmp_path).endswith("+dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert R.git_commit(tmp_path).endswith("+dirty")


def test_provenance_keeps_the_commit_the_process_started_with(monkeypatch):
    started = R.code_commit()
    assert started == R.git_commit()
    # a commit made while a long run trains must not be recorded as the code that ran
    monkeypatch.setattr(R, "git_commit", lambda root=None: "0123456789ab")
    assert R.provenance(torch.device("cpu"), "smoke", "fp32")["commit"] == started


@pytest.mark.realdata
def test_budget_script_writes_its_run_with_provenance(camvid_dir, tmp_path, capsys):
    """benchmarks/camvid_budget.py on a few CamVid images: one run in results/<study>.json,
    keyed by a label that names the precision, with the per-epoch history; --record refuses a
    subset (the leaderboard holds whole-split scores only)."""
    from course_lib.runtime import get_device, get_precision

    budget = _script("camvid_budget")
    argv = ["--model", "unet-w16", "--recipe", "course", "--size", "48", "64", "--batch", "2", "--epochs", "2",
            "--max-items", "4", "--study", "b", "--results-dir", str(tmp_path)]
    budget.main(argv)
    (run,) = R.load_results("b", tmp_path)["runs"]
    precision = get_precision(get_device())
    assert run["arm"] == f"unet-w16 (course, loss wce, lr 0.001; 48x64; 2 epochs, {precision})" and run["seed"] == 0
    assert run["provenance"]["precision"] == precision and run["provenance"]["max_items"] == 4
    assert [h["epoch"] for h in run["history"]] == [1, 2] and run["metrics"]["epochs"] == 2
    assert 0 <= run["metrics"]["test_miou"] <= 1 and len(run["metrics"]["val_iou"]) == 11
    with pytest.raises(SystemExit):
        budget.main(argv + ["--record"])
    assert "drop --max-items" in capsys.readouterr().err
    # under a time budget both recipes train to the deadline; the course recipe's cycle follows the clock
    budget.main(argv[:9] + ["--minutes", "0.05", *argv[11:]])
    run = R.load_results("b", tmp_path)["runs"][-1]
    assert run["arm"] == f"unet-w16 (course, loss wce, lr 0.001; 48x64; 0.05 min budget, to the deadline, {precision})"
    assert run["metrics"]["schedule"] == "onecycle-time" and run["train_s"] >= 3.0
    # the reference runs' architectures come from camvid_reference.py, built for the training size
    ref = _script("camvid_reference")
    flagship, arm = budget.build_model("deeplabv3plus-r10", 11, (240, 320)), ref.ARMS["deeplabv3plus-r10"].build(11, (240, 320))
    assert [(k, v.shape) for k, v in flagship.state_dict().items()] == [(k, v.shape) for k, v in arm.state_dict().items()]
    with pytest.raises(SystemExit, match="unknown --model 'fcn9s'"):
        budget.build_model("fcn9s", 11)


def test_show_study_wraps_many_panels_so_arm_names_stay_apart(tmp_path):
    """Six metrics of four arms (notebook 11's ablation): panels wrap into rows at a width where
    neighbouring arm names on the x-axis do not overlap."""
    import matplotlib
    import matplotlib.pyplot as plt

    matplotlib.use("Agg")
    metrics = {f"m{i}": f"metric {i}" for i in range(6)}
    for arm in ("base", "boundary", "scoring", "both"):
        for seed in range(3):
            R.record_run("wide", arm, seed, {m: 0.3 + 0.01 * seed for m in metrics}, provenance={}, root=tmp_path)
    plt.close("all")
    R.show_study(R.load_results("wide", tmp_path)["runs"], metrics, [], arms=["base", "boundary", "scoring", "both"],
                 curves=False, scales={"m5": 1.0})
    fig = plt.figure(plt.get_fignums()[0])
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 6 and len({round(ax.get_position().y0, 3) for ax in shown}) >= 2
    # seeds 0.02 apart do not fill a panel: at least 4 points in %, 0.04 unscaled (a correlation)
    spans = [ax.get_ylim()[1] - ax.get_ylim()[0] for ax in shown]
    assert min(spans[:5]) >= 4.0 - 1e-9 and 0.04 - 1e-9 <= spans[5] < 1.0
    fig.canvas.draw()
    for ax in shown:
        boxes = [t.get_window_extent() for t in ax.get_xticklabels()]
        assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:]))
    plt.close("all")
