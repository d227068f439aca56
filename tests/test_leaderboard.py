import json

import pytest

from course_lib import leaderboard as L


def row(model, profile, miou):
    return dict(model=model, notebook="03", params_m=1.5, profile=profile, device="CPU", train_size="176x240",
                train_s=120.0, val_miou=miou, test_miou=miou - 0.02)


def test_record_replaces_and_renders(tmp_path):
    p = tmp_path / "lb.json"
    L.record(row("FCN-8s", "cpu", 0.40), p)
    L.record(row("U-Net", "cpu", 0.45), p)
    L.record(row("FCN-8s", "cpu", 0.42), p)
    L.record(row("FCN-8s", "smoke", 0.01), p)
    rows = json.loads(p.read_text())
    assert [(r["model"], r["profile"]) for r in rows] == [("U-Net", "cpu"), ("FCN-8s", "cpu"), ("FCN-8s", "smoke")]
    table = L.markdown_table(("cpu",), p)
    assert "| FCN-8s | 03 | 1.50 | cpu | CPU | 176x240 | 2.0 min | 42.0 | 40.0 |" in table
    assert "smoke" not in table
    with pytest.raises(ValueError, match="lacks"):
        L.record({"model": "x"}, p)
