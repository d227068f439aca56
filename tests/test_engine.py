import math
import os
import warnings

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from course_lib import engine as E
from course_lib.data import Shapes, eval_transforms, train_transforms


def tiny_net(c_in=3, classes=4, width=8):
    """Stride-2 encoder + bilinear upsampling: small, but it learns Shapes."""
    return nn.Sequential(
        nn.Conv2d(c_in, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, classes, 1),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
    )


@pytest.fixture
def loaders():
    train = Shapes(24, size=(32, 32), seed=0, transforms=train_transforms((32, 32), scale=(0.8, 1.25)))
    val = Shapes(8, size=(32, 32), seed=1, transforms=eval_transforms())
    return DataLoader(train, batch_size=8, shuffle=True), DataLoader(val, batch_size=8)


def test_fit_learns_and_checkpoint_skips_retraining(loaders, tmp_path, capsys):
    torch.manual_seed(0)
    train, val = loaders
    model = tiny_net()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ckpt = tmp_path / "ck" / "tiny.pt"
    hist = E.fit(model, train, val, num_classes=4, device=torch.device("cpu"), epochs=6,
                 optimizer=opt, checkpoint=ckpt, progress=False, verbose=False)
    assert len(hist) == 6 and hist["train_loss"][-1] < hist["train_loss"][0]
    assert hist["val_miou"][-1] > hist["val_miou"][0]
    assert ckpt.exists() and not ckpt.with_name("tiny.pt.tmp").exists()
    state = torch.load(ckpt, weights_only=True)
    assert state["complete"] and state["epoch"] == 6
    # a fresh model + the complete checkpoint: loads, does not train, same predictions
    model2 = tiny_net()
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    E.LOADED.clear()
    assert "every model was trained in this run" in E.ran_for(0.0, "smoke", "cpu")
    hist2 = E.fit(model2, train, val, num_classes=4, device=torch.device("cpu"), epochs=6,
                  optimizer=opt2, checkpoint=ckpt, progress=False, verbose=False)
    assert "Loaded trained weights" in capsys.readouterr().out  # said even when not verbose
    assert "1 model(s) loaded from checkpoints" in E.ran_for(0.0, "smoke", "cpu")
    E.LOADED.clear()
    assert hist2.records == hist.records
    x = next(iter(val))[0]
    model.eval(), model2.eval()
    torch.testing.assert_close(model(x), model2(x))


def test_interrupted_run_resumes_where_it_stopped(loaders, tmp_path):
    train, val = loaders
    ckpt = tmp_path / "resume.pt"
    torch.manual_seed(0)
    model = tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    E.fit(model, train, None, num_classes=4, device=torch.device("cpu"), epochs=2,
          optimizer=opt, checkpoint=ckpt, progress=False, verbose=False)
    state = torch.load(ckpt, weights_only=True)
    state["complete"] = False  # as if it had been stopped after epoch 2 of 4
    state["config"]["epochs"] = 4
    E.save_checkpoint(ckpt, **state)
    model2 = tiny_net()
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.05, momentum=0.9)
    hist = E.fit(model2, train, None, num_classes=4, device=torch.device("cpu"), epochs=4,
                 optimizer=opt2, checkpoint=ckpt, progress=False, verbose=False)
    assert hist["epoch"] == [1, 2, 3, 4]
    assert torch.load(ckpt, weights_only=True)["complete"]


def test_corrupt_checkpoint_has_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="Delete it to retrain"):
        E.load_checkpoint(bad)


def test_failed_save_leaves_no_partial_file(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        E.save_checkpoint(tmp_path / "x.pt", thing=Unpicklable())
    assert list(tmp_path.iterdir()) == []


def test_time_budget_stops_early(loaders):
    train, _ = loaders
    model = tiny_net()
    hist = E.fit(model, train, None, num_classes=4, device=torch.device("cpu"), epochs=50,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.01), time_budget_s=0.0,
                 progress=False, verbose=False)
    assert len(hist) == 1


def test_schedules():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = E.make_scheduler(opt, "poly", 10, power=0.9)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == 1.0 and lrs[5] == pytest.approx(0.5 ** 0.9)
    assert opt.param_groups[0]["lr"] == 0.0
    opt = torch.optim.SGD([p], lr=1.0)
    sched = E.make_scheduler(opt, "onecycle", 20)
    seen = []
    for _ in range(20):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert max(seen) == pytest.approx(1.0, rel=1e-3) and seen[0] < 0.1 and seen[-1] < 0.01
    assert E.make_scheduler(opt, "constant", 5) is None
    with pytest.raises(ValueError):
        E.make_scheduler(opt, "cosine-ish", 5)


def test_evaluate_is_at_label_resolution():
    """A model that predicts at low resolution is scored against full-size labels."""

    class Oracle(nn.Module):  # predicts class 1 everywhere, at 1/4 of the input size
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, x.shape[2] // 4, x.shape[3] // 4)
            out[:, 1] = 1
            return {"out": out}

    images = torch.zeros(2, 3, 40, 60)
    masks = torch.ones(2, 40, 60, dtype=torch.long)
    masks[:, :10] = 0
    masks[:, 0, 0] = 255
    m = E.evaluate(Oracle(), [(images, masks)], 2, torch.device("cpu"), input_size=(20, 30),
                   boundary=True, progress=False)
    assert m["cm"].sum() == 2 * (40 * 60 - 1)
    assert m["iou"][1] == pytest.approx(30 * 60 / (40 * 60 - 1))
    assert math.isfinite(m["mbf1"])


def test_predict_test_time_augmentation():
    torch.manual_seed(0)
    model = tiny_net().eval()
    x = torch.randn(2, 3, 32, 40)
    plain = E.predict(model, x)
    # one scale, no flip: the plain logits
    torch.testing.assert_close(E.predict(model, x, scales=(1.0,), flip=False), plain)
    # several passes: log of averaged probabilities, at the requested output size
    tta = E.predict(model, x, scales=(0.5, 1.0, 1.5), flip=True, out_size=(16, 20))
    assert tta.shape == (2, 4, 16, 20)
    torch.testing.assert_close(tta.exp().sum(1), torch.ones(2, 16, 20))
    # flip TTA of a mirror-symmetric model (1×1 convolutions only) changes nothing
    pointwise = nn.Conv2d(3, 4, 1).eval()
    torch.testing.assert_close(E.predict(pointwise, x, flip=True).softmax(1), E.predict(pointwise, x).softmax(1))
    # flip TTA of a model that is not symmetric averages it with its mirror image
    shift = nn.Conv2d(3, 4, 3, padding=1).eval()
    both = (E.predict(shift, x).softmax(1) + E.predict(shift, x.flip(-1)).flip(-1).softmax(1)) / 2
    torch.testing.assert_close(E.predict(shift, x, flip=True).exp(), both)
    res = E.evaluate(model, [(x, torch.zeros(2, 32, 40, dtype=torch.int64))], 4, torch.device("cpu"),
                     progress=False, scales=(0.75, 1.0), flip=True)
    assert 0.0 <= res["pixel_acc"] <= 1.0


def test_fit_recipe_is_reproducible(loaders):
    """Same initial weights + fit_recipe → identical models (same data order and augmentations),
    whatever the RNG state before the call."""
    from types import SimpleNamespace

    train, _ = loaders
    generator = torch.Generator()
    train = DataLoader(train.dataset, batch_size=8, shuffle=True, generator=generator)
    L = SimpleNamespace(train=train, num_classes=4, class_weights=torch.ones(4))
    weights = []
    for noise in (1, 2):
        torch.manual_seed(0)
        model = tiny_net()
        torch.rand(noise)  # disturb the global RNG
        generator.manual_seed(123)
        hist = E.fit_recipe(model, L, device=torch.device("cpu"), epochs=2, generator=generator)
        assert len(hist) == 2
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    torch.testing.assert_close(weights[0], weights[1])


def test_checkpoint_records_config_and_refuses_another(loaders, tmp_path, capsys):
    """Issue 9, item 5: a finished checkpoint is never reused after a setting changes."""
    train, _ = loaders
    ckpt = tmp_path / "cfg.pt"

    def run(epochs=2, lr=0.05, config=None, verbose=False):
        torch.manual_seed(0)
        model = tiny_net()
        return E.fit(model, train, None, num_classes=4, device=torch.device("cpu"), epochs=epochs,
                     optimizer=torch.optim.SGD(model.parameters(), lr=lr), checkpoint=ckpt,
                     progress=False, verbose=verbose, config=config, precision="fp32")

    run(config={"seed": 0, "width": 8})
    saved = torch.load(ckpt, weights_only=True)["config"]
    assert saved["epochs"] == 2 and saved["seed"] == 0 and saved["width"] == 8
    assert saved["model"] == "Sequential" and saved["precision"] == "fp32" and saved["opt_lr"] == 0.05
    hist = run(config={"seed": 0, "width": 8}, verbose=True)  # same settings: loaded
    out = capsys.readouterr().out
    assert "Loaded trained weights" in out and "2 epochs" in out and "CPU" in out and "fp32" in out
    assert hist.meta["precision"] == "fp32" and hist.meta["finished"]
    with pytest.raises(E.CheckpointMismatchError, match=r"(?s)epochs: 2 in the checkpoint, 3 now.*Delete it"):
        run(epochs=3, config={"seed": 0, "width": 8})
    with pytest.raises(E.CheckpointMismatchError, match="opt_lr: 0.05 in the checkpoint, 0.1 now"):
        run(lr=0.1, config={"seed": 0, "width": 8})
    with pytest.raises(E.CheckpointMismatchError, match="seed: 0 in the checkpoint, 1 now"):
        run(config={"seed": 1, "width": 8})
    state = torch.load(ckpt, weights_only=True)
    del state["config"]  # a checkpoint from before configurations were recorded
    E.save_checkpoint(ckpt, **state)
    with pytest.raises(E.CheckpointMismatchError, match="not recorded"):
        run(config={"seed": 0, "width": 8})


def test_precision_bf16_autocasts_forward_but_loss_is_fp32(loaders):
    train, _ = loaders
    seen = {}

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_net()

        def forward(self, x):
            y = self.net(x)
            seen["forward"] = y.dtype
            return y

    def loss_fn(logits, target):
        seen["loss_input"] = logits.dtype
        return nn.functional.cross_entropy(logits, target, ignore_index=255)

    model = Probe()
    for precision, expected in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        E.train_one_epoch(model, [next(iter(train))], loss_fn, torch.optim.SGD(model.parameters(), lr=0.01),
                          torch.device("cpu"), progress=False, precision=precision)
        assert seen == {"forward": expected, "loss_input": torch.float32}
        logits = E.predict(model.eval(), next(iter(train))[0], precision=precision)
        assert logits.dtype == torch.float32 and seen["forward"] == expected


# ---------------------------------------------------------------- reliability (issue 9)

def test_non_finite_loss_stops_with_a_clear_error_and_nothing_is_marked_complete(loaders, tmp_path):
    train, val = loaders
    torch.manual_seed(0)
    model = tiny_net()
    ckpt = tmp_path / "nan.pt"
    with pytest.raises(FloatingPointError, match=r"(nan|inf).*epoch \d+.*batch \d+.*learning rate"):
        E.fit(model, train, val, num_classes=4, device=torch.device("cpu"), epochs=3,
              optimizer=torch.optim.AdamW(model.parameters(), lr=1e6), checkpoint=ckpt,
              progress=False, verbose=False)
    assert not ckpt.exists() or not torch.load(ckpt, weights_only=True)["complete"]
    # a later run with a sane lr trains instead of loading the diverged weights
    model2 = tiny_net()
    hist = E.fit(model2, train, None, num_classes=4, device=torch.device("cpu"), epochs=1,
                 optimizer=torch.optim.SGD(model2.parameters(), lr=0.01), checkpoint=tmp_path / "ok.pt",
                 progress=False, verbose=False)
    assert math.isfinite(hist["train_loss"][-1])


def test_weights_that_went_non_finite_on_the_last_step_are_caught():
    """A finite loss whose step overflows the weights: the epoch must not end 'fine'."""

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            return self.conv(x)

    model = Boom()
    x, y = 1e3 * torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    opt = torch.optim.SGD(model.parameters(), lr=1e38)  # lr × gradient beyond float32: the step gives inf
    with pytest.raises(FloatingPointError, match="weights"):
        E.train_one_epoch(model, [(x, y)], nn.CrossEntropyLoss(), opt, torch.device("cpu"), progress=False)


@pytest.mark.parametrize("loss_fn,ignore", [(nn.CrossEntropyLoss(ignore_index=255), 255),
                                            (nn.CrossEntropyLoss(), -100)])
def test_labels_out_of_range_are_named_with_num_classes_and_ignore_index(loss_fn, ignore):
    model = tiny_net(classes=4)
    x = torch.randn(2, 3, 8, 8)
    y = torch.zeros(2, 8, 8, dtype=torch.long)
    y[0, 0, 0], y[1, 2, 2] = 11, 255
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=rf"\[11, 255\]|\[11\].*num_classes=4.*ignore_index={ignore}"):
        E.train_one_epoch(model, [(x, y)], loss_fn, opt, torch.device("cpu"), progress=False)


def test_check_targets_accepts_valid_labels_and_ignore():
    logits = torch.zeros(1, 3, 2, 2)
    E.check_targets(logits, torch.tensor([[[0, 2], [255, 1]]]), 255)
    with pytest.raises(ValueError, match=r"\[-1\]"):
        E.check_targets(logits, torch.tensor([[[0, -1], [255, 1]]]), 255)


@pytest.mark.parametrize("steps", range(1, 13))
def test_one_cycle_with_few_steps_neither_crashes_nor_trains_at_zero(steps):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sched = E.make_scheduler(opt, "onecycle", steps)
    seen = []
    for _ in range(steps):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None:
            sched.step()
    assert max(seen) > 0.9  # the peak is (nearly: steps are discrete) reached
    assert all(math.isfinite(v) and v > 0 for v in seen[:max(1, steps - 1)])


def test_one_cycle_with_one_or_two_steps_says_so():
    p = nn.Parameter(torch.zeros(1))
    with pytest.warns(UserWarning, match="constant"):
        E.make_scheduler(torch.optim.SGD([p], lr=1.0), "onecycle", 2)


@pytest.mark.parametrize("which", ["pooled", "deeplab_aspp_v3"])
def test_batch_of_one_in_batchnorm_says_what_to_do(which):
    if which == "pooled":
        model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(4),
                              nn.Upsample(size=(8, 8)))
    else:  # ASPP's image pooling branch fails at every input size
        from course_lib.models import DeepLab

        model = DeepLab(4, head="aspp_v3", channels=16)
    x, y = torch.randn(1, 3, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"batch of 1.*BatchNorm.*drop_last=True"):
        E.train_one_epoch(model, [(x, y)], nn.CrossEntropyLoss(), opt, torch.device("cpu"), progress=False)


def test_an_empty_training_loader_is_an_error_not_a_loss_of_zero():
    model = tiny_net()
    with pytest.raises(ValueError, match="no batches"):
        E.train_one_epoch(model, [], nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1),
                          torch.device("cpu"), progress=False)


def _train_once(loaders, ckpt, model, epochs=1):
    train, _ = loaders
    return E.fit(model, train, None, num_classes=4, device=torch.device("cpu"), epochs=epochs,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.01), checkpoint=ckpt,
                 progress=False, verbose=False)


def test_checkpoint_of_another_width_names_the_path_and_the_fix(loaders, tmp_path):
    ckpt = tmp_path / "w.pt"
    _train_once(loaders, ckpt, tiny_net(width=8))
    # the recorded configuration catches it first (the parameter count differs) ...
    with pytest.raises(E.CheckpointMismatchError, match=rf"(?s){ckpt.name}.*params: 8\d\d in the checkpoint.*Delete it"):
        _train_once(loaders, ckpt, tiny_net(width=16))
    # ... and weights that do not fit a model with the same configuration are named too
    with pytest.raises(RuntimeError, match=rf"(?s){ckpt.name}.*different model.*(Delete|move).*size mismatch"):
        E._restore_model(tiny_net(width=16), torch.load(ckpt, weights_only=True), ckpt)


def test_plain_state_dict_file_is_explained(loaders, tmp_path):
    ckpt = tmp_path / "sd.pt"
    torch.save(tiny_net().state_dict(), ckpt)
    with pytest.raises(ValueError, match=r"sd\.pt.*plain state_dict.*model\.load_state_dict"):
        _train_once(loaders, ckpt, tiny_net())
    assert ckpt.exists()  # the user's file is untouched


def test_directory_as_checkpoint_path_is_explained(loaders, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match=r"runs.*is a folder.*runs/model\.pt"):
        E.load_checkpoint(folder)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        _train_once(loaders, folder, tiny_net())


class _CountingLoader:
    def __init__(self, loader):
        self.loader, self.batches = loader, 0

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for b in self.loader:
            self.batches += 1
            yield b


def test_unwritable_checkpoint_location_fails_before_training(loaders, tmp_path):
    train, _ = loaders
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    counting = _CountingLoader(train)
    model = tiny_net()
    with pytest.raises(OSError, match=r"a_file/ck\.pt.*before training.*writable"):
        E.fit(model, counting, None, num_classes=4, device=torch.device("cpu"), epochs=2,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.01), checkpoint=blocker / "ck.pt",
              progress=False, verbose=False)
    assert counting.batches == 0
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's read-only /proc")
def test_checkpoint_on_a_read_only_filesystem_fails_before_training(loaders):
    """/proc refuses new files even to root: a read-only location on any account."""
    train, _ = loaders
    counting = _CountingLoader(train)
    model = tiny_net()
    with pytest.raises(OSError, match=r"/proc/course-ckpt/ck\.pt.*before training"):
        E.fit(model, counting, None, num_classes=4, device=torch.device("cpu"), epochs=2,
              optimizer=torch.optim.SGD(model.parameters(), lr=0.01), checkpoint="/proc/course-ckpt/ck.pt",
              progress=False, verbose=False)
    assert counting.batches == 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_checkpoint_folder_fails_before_training(loaders, tmp_path):
    train, _ = loaders
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    counting = _CountingLoader(train)
    model = tiny_net()
    try:
        with pytest.raises(OSError, match="before training"):
            E.fit(model, counting, None, num_classes=4, device=torch.device("cpu"), epochs=2,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.01), checkpoint=ro / "ck.pt",
                  progress=False, verbose=False)
    finally:
        ro.chmod(0o700)
    assert counting.batches == 0


def test_evaluate_on_an_empty_loader_is_an_error_not_nan():
    model = tiny_net()
    with pytest.raises(ValueError, match="no labelled pixels"):
        E.evaluate(model, [], 4, torch.device("cpu"), progress=False)
    all_void = (torch.zeros(1, 3, 8, 8), torch.full((1, 8, 8), 255))
    with pytest.raises(ValueError, match="no labelled pixels"):
        E.evaluate(model, [all_void], 4, torch.device("cpu"), progress=False)


@pytest.mark.parametrize("scales", [(), (0.0,), (-1.0, 1.0), (float("nan"),)])
def test_predict_scales_are_validated(scales):
    model = nn.Conv2d(3, 4, 1).eval()
    with pytest.raises(ValueError, match="scales"):
        E.predict(model, torch.randn(1, 3, 8, 8), scales=scales)


def test_save_checkpoint_to_a_folder_or_next_to_a_user_tmp_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder"):
        E.save_checkpoint(tmp_path, a=1)
    mine = tmp_path / "x.pt.tmp"
    mine.write_text("my notes")  # a file of the user's that happens to have the old temp name
    E.save_checkpoint(tmp_path / "x.pt", a=1)
    assert mine.read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt", "x.pt.tmp"]


def test_a_complete_checkpoint_with_nan_weights_is_not_loaded_silently(loaders, tmp_path):
    """Checkpoints that older versions saved after a divergence: refuse them on load."""
    ckpt = tmp_path / "diverged.pt"
    model = tiny_net()
    _train_once(loaders, ckpt, model)
    state = torch.load(ckpt, weights_only=True)
    state["model"] = {k: v.float().fill_(float("nan")) if v.is_floating_point() else v for k, v in state["model"].items()}
    E.save_checkpoint(ckpt, **state)
    with pytest.raises(FloatingPointError, match=rf"{ckpt.name}.*NaN.*[Dd]elete it"):
        _train_once(loaders, ckpt, tiny_net())


class _FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_timed_one_cycle_follows_torchs_one_cycle_over_time(optim):
    """At elapsed time k/(T−1)·budget the time-driven cycle gives OneCycleLR's lr and momentum
    (β1 for AdamW) of step k (oracle: torch.optim.lr_scheduler.OneCycleLR)."""
    T, pct, budget = 40, 0.25, 120.0

    def make():
        p = nn.Parameter(torch.zeros(1))
        return (torch.optim.SGD([p], lr=0.5, momentum=0.9) if optim == "sgd"
                else torch.optim.AdamW([p], lr=0.5))

    def momentum(opt):
        g = opt.param_groups[0]
        return g["betas"][0] if "betas" in g else g["momentum"]

    ref_opt, opt, clock = make(), make(), _FakeClock()
    ref = torch.optim.lr_scheduler.OneCycleLR(ref_opt, max_lr=0.5, total_steps=T, pct_start=pct)
    # torch's warm-up ends at step pct·T − 1 of T − 1: the same point as a fraction of the time
    timed = E.TimedOneCycle(opt, budget, pct_start=(pct * T - 1) / (T - 1), clock=clock)
    for k in range(T):
        clock.now = k / (T - 1) * budget
        if k:
            ref_opt.step(); ref.step()
            timed.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
        assert momentum(opt) == pytest.approx(momentum(ref_opt), rel=1e-6)
    clock.now = 10 * budget  # past the budget the cycle stays at its end
    timed.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 / 25 / 1e4)


def test_timed_one_cycle_counts_time_already_trained():
    p = nn.Parameter(torch.zeros(1))
    opt, clock = torch.optim.SGD([p], lr=1.0), _FakeClock()
    timed = E.TimedOneCycle(opt, 100.0, clock=clock)
    clock.now = 5.0
    timed.start(already_s=25.0)  # a resumed run: a quarter of the budget is spent, at the peak
    assert timed.progress() == pytest.approx(0.25) and opt.param_groups[0]["lr"] == pytest.approx(1.0)


def test_fit_with_a_timed_one_cycle_ends_its_cycle_with_the_budget():
    torch.manual_seed(0)
    model = nn.Conv2d(3, 2, 1)
    train = [(torch.rand(2, 3, 8, 8), torch.randint(0, 2, (2, 8, 8))) for _ in range(4)]
    nn.functional.cross_entropy(model(train[0][0]), train[0][1]).backward()  # first-call set-up, outside the budget
    model.zero_grad()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    seen = []  # the lr of every step (the per-epoch records sample it too sparsely on a busy machine)
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append(o.param_groups[0]["lr"]))
    hist = E.fit(model, train, None, num_classes=2, device=torch.device("cpu"), epochs=None,
                 optimizer=opt, schedule="onecycle-time", time_budget_s=1.0, progress=False, verbose=False,
                 precision="fp32")
    assert len(hist) >= 1 and hist.records[-1]["epoch"] == len(hist)  # epochs=None: until the budget
    # from peak/25 up past half the peak (the warm-up's top quarter lasts 0.2 s here), and down at the end
    assert seen[0] == pytest.approx(0.01 / 25) and max(seen) > 0.005
    assert opt.param_groups[0]["lr"] < 0.01 / 25  # and ended at the low end of the cycle
    with pytest.raises(ValueError, match="time budget"):
        E.fit(model, train, None, num_classes=2, device=torch.device("cpu"), epochs=2, optimizer=opt,
              schedule="onecycle-time", progress=False, verbose=False)
    with pytest.raises(ValueError, match="until time_budget_s"):
        E.fit(model, train, None, num_classes=2, device=torch.device("cpu"), epochs=None, optimizer=opt,
              progress=False, verbose=False)
    with pytest.raises(ValueError, match="onecycle-time"):
        E.fit(model, train, None, num_classes=2, device=torch.device("cpu"), epochs=None, optimizer=opt,
              schedule="onecycle", time_budget_s=1.0, progress=False, verbose=False)
