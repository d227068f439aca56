import math

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
    hist2 = E.fit(model2, train, val, num_classes=4, device=torch.device("cpu"), epochs=6,
                  optimizer=opt2, checkpoint=ckpt, progress=False)
    assert "Loaded trained weights" in capsys.readouterr().out
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
