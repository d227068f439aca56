import json

import pytest

from course_lib import leaderboard as L


def row(model, profile, miou):
    return dict(model=model, notebook="03", params_m=1.5, profile=profile, device="CPU", train_size="176x240",
                train_s=120.0, val_miou=miou, test_miou=max(miou - 0.02, 0.0))


def test_record_replaces_and_renders(tmp_path):
    p = tmp_path / "lb.json"
    L.record(row("FCN-8s", "cpu", 0.40), p)
    L.record(row("U-Net", "cpu", 0.45), p)
    L.record(row("FCN-8s", "cpu", 0.42), p)
    L.record({**row("FCN-8s", "smoke", 0.01), "seed": 3, "unknown": 1}, p)
    rows = json.loads(p.read_text())
    from course_lib.results import code_commit

    assert rows[-1]["seed"] == 3 and rows[-1]["commit"] == code_commit() and "unknown" not in rows[-1]
    assert "seed" not in rows[0] and len(rows[0]["date"]) == 16  # provenance: commit and date always, seed if given
    assert [(r["model"], r["profile"]) for r in rows] == [("U-Net", "cpu"), ("FCN-8s", "cpu"), ("FCN-8s", "smoke")]
    table = L.markdown_table(("cpu",), p)
    assert "| FCN-8s | 03 | 1.50 | cpu | CPU | 176x240 | 2.0 min | 42.0 | 40.0 |" in table
    assert "smoke" not in table
    assert "U-Net" in table and L.markdown_table(("cpu",), p, notebooks=("05",)).count("| 03 |") == 0
    with pytest.raises(ValueError, match="lacks"):
        L.record({"model": "x"}, p)


def test_same_model_name_from_two_notebooks_keeps_both_rows(tmp_path):
    p = tmp_path / "lb.json"
    L.record({**row("DeepLab v3+", "cpu", 0.40), "notebook": "08"}, p)
    L.record({**row("DeepLab v3+", "cpu", 0.38), "notebook": "09"}, p)
    L.record({**row("DeepLab v3+", "cpu", 0.41), "notebook": "08"}, p)  # 08 again: replaces 08's row only
    rows = json.loads(p.read_text())
    assert sorted((r["notebook"], r["val_miou"]) for r in rows) == [("08", 0.41), ("09", 0.38)]


@pytest.mark.parametrize("field,value", [("val_miou", float("nan")), ("test_miou", 1.7), ("val_miou", -0.1),
                                         ("train_s", float("inf")), ("params_m", "12")])
def test_record_refuses_non_finite_or_out_of_range_numbers(tmp_path, field, value):
    p = tmp_path / "lb.json"
    L.record(row("FCN-8s", "cpu", 0.40), p)
    before = p.read_text()
    bad = row("U-Net", "cpu", 0.45)
    bad[field] = value
    with pytest.raises(ValueError, match=field):
        L.record(bad, p)
    assert p.read_text() == before  # nothing written


def test_damaged_leaderboard_file_is_named(tmp_path):
    p = tmp_path / "lb.json"
    p.write_text("[{not json")
    with pytest.raises(ValueError, match=r"lb\.json"):
        L.load(p)


def test_reference_rows_average_seeds_and_appear_in_the_table(tmp_path, monkeypatch):
    from course_lib import results as R

    monkeypatch.setattr(R, "RESULTS_DIR", tmp_path)
    for seed, (a, b) in enumerate([(0.30, 0.40), (0.32, 0.44)]):
        for arm, v in (("small", a), ("big", b)):
            R.record_run("ref", arm, seed, {"test_miou": v, "final_val_miou": v + 0.1}, params_m=1.5,
                         train_s=60.0 * (seed + 1), provenance={"epochs": 12, "device": "CPU"})
    rows = L.reference_rows("ref")
    assert [r["model"] for r in rows] == ["big", "small"]
    assert rows[0]["test_miou"] == pytest.approx(0.42) and rows[0]["test_min"] == pytest.approx(0.40)
    assert rows[0]["seeds"] == [0, 1] and rows[0]["train_s"] == pytest.approx(90.0)
    table = L.markdown_table(path=tmp_path / "none.json", study="ref")
    assert "| big | 1.50 | 12 | 2 | 1.5 min | 52.0 | 42.0 [40.0, 44.0] |" in table
    assert "Reference runs" not in L.markdown_table(path=tmp_path / "none.json", study="absent")
