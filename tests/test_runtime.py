import pytest
import torch

from course_lib import runtime as R


def test_profile_from_env_and_default(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    assert R.get_profile().name == "smoke"
    monkeypatch.delenv("COURSE_PROFILE")
    assert R.get_profile().name == ("gpu" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("COURSE_PROFILE", "turbo")
    with pytest.raises(ValueError, match="Unknown profile 'turbo'.*smoke"):
        R.get_profile()


def test_profiles_share_fields_and_grow():
    s, c, g = (R.PROFILES[n] for n in ("smoke", "cpu", "gpu"))
    assert s.camvid_size[0] < c.camvid_size[0] < g.camvid_size[0] == 360
    for p in (s, c, g):  # crops fit inside the training size
        assert p.crop_size[0] <= p.camvid_size[0] and p.crop_size[1] <= p.camvid_size[1]
    assert s.subset(367) == 8 and c.subset(367) == 367 and s.subset(101, train=False) == 4


def test_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    assert R.data_root() == tmp_path.resolve()
    monkeypatch.delenv("COURSE_DATA_DIR")
    assert R.data_root() == R.REPO_ROOT / "data"


def test_setup_seeds_and_prints(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    s = R.setup(seed=3, profile="smoke")
    a = torch.rand(3)
    R.setup(seed=3, profile="smoke", verbose=False)
    assert torch.equal(a, torch.rand(3))
    out = capsys.readouterr().out
    assert "profile : smoke" in out and "device  : cpu" in out and "data    :" in out
    assert s.device == torch.device("cpu") and s.profile.name == "smoke"


def test_precision_auto_env_and_errors(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.delenv("COURSE_PRECISION", raising=False)
    monkeypatch.setattr(R, "cpu_has_fast_bf16", lambda: False)
    assert R.get_precision(cpu) == "fp32"  # emulated bf16 is slower than fp32: never chosen
    monkeypatch.setattr(R, "cpu_has_fast_bf16", lambda: True)
    assert R.get_precision(cpu) == "bf16"
    assert R.get_precision(torch.device("cuda")) == "bf16"
    assert R.get_precision(torch.device("mps")) == "fp32"
    monkeypatch.setenv("COURSE_PRECISION", " FP32 ")
    assert R.get_precision(cpu) == "fp32"
    monkeypatch.setenv("COURSE_PRECISION", "half")
    with pytest.raises(ValueError, match="Unknown precision 'half'.*fp32.*bf16"):
        R.get_precision(cpu)
    with pytest.raises(ValueError, match="not supported on MPS"):
        R.get_precision(torch.device("mps"), "bf16")


def test_setup_prints_precision(capsys, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    monkeypatch.setenv("COURSE_PRECISION", "bf16")
    s = R.setup(profile="smoke")
    assert s.precision == "bf16" and "precision: bf16 autocast" in capsys.readouterr().out
