import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score, MulticlassJaccardIndex

from course_lib import metrics as M
from tests.conftest import require_dataset


def random_maps(seed, shape=(2, 37, 53), c=5, void_frac=0.1):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, c, shape, generator=g)
    target = torch.randint(0, c, shape, generator=g)
    target[torch.rand(shape, generator=g) < void_frac] = 255
    return pred, target


@pytest.mark.parametrize("seed", range(5))
def test_confusion_matrix_matches_torchmetrics(seed):
    pred, target = random_maps(seed)
    cm = M.confusion_matrix(pred, target, 5)
    ref = MulticlassConfusionMatrix(5, ignore_index=255)(pred, target)
    assert cm.dtype == torch.int64 and cm.shape == (5, 5)
    assert torch.equal(cm, ref)
    assert cm.sum() == (target != 255).sum()


def test_confusion_matrix_rows_are_ground_truth():
    target = torch.tensor([0, 0, 1, 2])
    pred = torch.tensor([1, 1, 1, 2])
    cm = M.confusion_matrix(pred, target, 3)
    assert cm[0, 1] == 2 and cm[0, 0] == 0 and cm[2, 2] == 1


@pytest.mark.parametrize("seed", range(5))
def test_iou_and_dice_match_torchmetrics(seed):
    pred, target = random_maps(seed, c=6)
    cm = M.confusion_matrix(pred, target, 6)
    iou_ref = MulticlassJaccardIndex(6, average=None, ignore_index=255)(pred, target)
    f1_ref = MulticlassF1Score(6, average=None, ignore_index=255, multidim_average="global")(pred, target)
    torch.testing.assert_close(M.iou_per_class(cm), iou_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(M.dice_per_class(cm), f1_ref, atol=1e-6, rtol=0)
    assert math.isclose(M.mean_iou(cm), float(iou_ref.mean()), abs_tol=1e-6)


def test_absent_class_is_nan_and_skipped_by_mean():
    target = torch.tensor([[0, 0], [1, 1]])
    pred = torch.tensor([[0, 0], [1, 0]])
    cm = M.confusion_matrix(pred, target, 3)
    iou = M.iou_per_class(cm)
    assert math.isnan(iou[2]) and math.isnan(M.dice_per_class(cm)[2])
    assert iou[0] == pytest.approx(2 / 3) and iou[1] == pytest.approx(1 / 2)
    assert M.mean_iou(cm) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert M.pixel_accuracy(cm) == pytest.approx(3 / 4)


@pytest.mark.parametrize("bad", [7, -1, 254])
def test_out_of_range_values_raise(bad):
    target = torch.zeros(4, 4, dtype=torch.long)
    pred = torch.zeros(4, 4, dtype=torch.long)
    target[0, 0] = bad
    with pytest.raises(ValueError, match="outside 0..4"):
        M.confusion_matrix(pred, target, 5)
    target[0, 0] = 0
    pred[1, 1] = bad
    with pytest.raises(ValueError, match="pred has values"):
        M.confusion_matrix(pred, target, 5)


def test_ignored_pixels_may_hold_any_prediction_and_shapes_must_match():
    target = torch.full((3, 3), 255)
    pred = torch.zeros(3, 3, dtype=torch.long)
    assert M.confusion_matrix(pred, target, 2).sum() == 0
    with pytest.raises(ValueError, match="same shape"):
        M.confusion_matrix(pred, torch.zeros(3, 4, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="integer"):
        M.confusion_matrix(pred.float(), target, 2)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 20), st.integers(1, 20), st.integers(0, 2**31 - 1))
def test_properties(c, h, w, seed):
    pred, target = random_maps(seed, (h, w), c, void_frac=0.2)
    cm = M.confusion_matrix(pred, target, c)
    assert int(cm.sum()) == int((target != 255).sum())
    iou, dice = M.iou_per_class(cm), M.dice_per_class(cm)
    ok = ~torch.isnan(iou)
    assert torch.all((iou[ok] >= 0) & (iou[ok] <= 1))
    # Dice = 2 IoU / (1 + IoU), class by class
    torch.testing.assert_close(dice[ok], 2 * iou[ok] / (1 + iou[ok]))
    perfect = M.confusion_matrix(torch.where(target == 255, 0, target), target, c)
    assert M.mean_iou(perfect) == 1.0 or int((target != 255).sum()) == 0


# ---------------------------------------------------------------- boundary F (DAVIS)

def davis_seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Reference seg2bmap (DAVIS), written from its description with NumPy."""
    seg = seg.astype(bool)
    e = np.zeros_like(seg); s = np.zeros_like(seg); se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = seg ^ e | seg ^ s | seg ^ se
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = 0
    return b


def davis_f(fg: np.ndarray, gt: np.ndarray, bound_th=0.008) -> float:
    """Reference DAVIS f_measure with scipy's binary dilation and a disk element."""
    r = bound_th if bound_th >= 1 else math.ceil(bound_th * np.linalg.norm(fg.shape))
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    disk = x * x + y * y <= r * r
    fb, gb = davis_seg2bmap(fg), davis_seg2bmap(gt)
    fd = ndimage.binary_dilation(fb, disk)
    gd = ndimage.binary_dilation(gb, disk)
    nf, ng = fb.sum(), gb.sum()
    if nf == 0 and ng == 0:
        return 1.0
    if nf == 0 or ng == 0:
        return 0.0
    p, rc = (fb & gd).sum() / nf, (gb & fd).sum() / ng
    return 0.0 if p + rc == 0 else float(2 * p * rc / (p + rc))


def blob(h, w, cy, cx, r):
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_boundary_map_matches_reference_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(20):
        m = rng.random((rng.integers(2, 30), rng.integers(2, 30))) > 0.6
        assert np.array_equal(M.boundary_map(torch.from_numpy(m)).numpy(), davis_seg2bmap(m))


@pytest.mark.parametrize("tol", [0.008, 0.02, 1, 3])
def test_boundary_f1_matches_reference(tol):
    rng = np.random.default_rng(1)
    for _ in range(10):
        h, w = rng.integers(40, 90, size=2)
        gt = blob(h, w, h / 2, w / 2, min(h, w) / 3)
        pred = blob(h, w, h / 2 + rng.integers(-4, 5), w / 2 + rng.integers(-4, 5), min(h, w) / 3.3)
        pred ^= rng.random((h, w)) > 0.97
        got = M.boundary_f1(torch.from_numpy(pred), torch.from_numpy(gt), tol)
        assert got == pytest.approx(davis_f(pred, gt, tol), abs=1e-9)


def test_boundary_f1_edge_cases_and_tolerance():
    empty = torch.zeros(20, 20, dtype=torch.bool)
    square = empty.clone()
    square[5:15, 5:15] = True
    assert M.boundary_f1(empty, empty) == 1.0
    assert M.boundary_f1(square, empty) == 0.0 and M.boundary_f1(empty, square) == 0.0
    assert M.boundary_f1(square, square) == 1.0
    shifted = torch.roll(square, 2, dims=1)
    assert M.boundary_f1(shifted, square, tolerance=2) == 1.0
    assert M.boundary_f1(shifted, square, tolerance=1) < 1.0
    assert M.tolerance_pixels(0.008, 360, 480) == 5  # ceil(0.008 * 600) = ceil(4.8)
    with pytest.raises(ValueError):
        M.boundary_f1(square[None], square[None])


def test_semantic_boundary_f1_ignores_void_and_absent_classes():
    target = torch.zeros(30, 30, dtype=torch.long)
    target[:, 15:] = 1
    target[:5] = 255
    pred = target.clone()
    pred[:5] = 0  # whatever is predicted under void must not matter
    f = M.semantic_boundary_f1(pred, target, num_classes=3)
    assert f[0] == 1.0 and f[1] == 1.0 and math.isnan(f[2])
    meter = M.SegmentationMeter(3, boundary=True)
    meter.update(pred[None], target[None])
    out = meter.compute()
    assert out["mbf1"] == 1.0 and out["miou"] == 1.0


def test_metrics_on_real_camvid_masks_match_torchmetrics():
    require_dataset("camvid")
    from course_lib.data import CamVid

    ds = CamVid("val")
    targets = torch.stack([ds.read_mask(i) for i in range(4)])
    # a realistic corruption: predictions shifted by 6 pixels, void replaced by Sky
    preds = torch.roll(torch.where(targets == 255, 0, targets), 6, dims=-1)
    cm = M.confusion_matrix(preds, targets, 11)
    ref_iou = MulticlassJaccardIndex(11, average=None, ignore_index=255)(preds, targets)
    ref_f1 = MulticlassF1Score(11, average=None, ignore_index=255, multidim_average="global")(preds, targets)
    present = ~torch.isnan(M.iou_per_class(cm))
    torch.testing.assert_close(M.iou_per_class(cm)[present], ref_iou[present], atol=1e-6, rtol=0)
    torch.testing.assert_close(M.dice_per_class(cm)[present], ref_f1[present], atol=1e-6, rtol=0)
    # and the boundary F of one class against the reference implementation
    p, t = (preds[0] == 3).numpy(), (targets[0] == 3).numpy()
    assert M.boundary_f1(torch.from_numpy(p), torch.from_numpy(t)) == pytest.approx(davis_f(p, t))


def test_class_weights_and_pixel_counts():
    from course_lib.data import Shapes
    from course_lib.losses import class_weights, pixel_counts

    w = class_weights(torch.tensor([75, 25, 0]))
    assert w[2] == 0 and w[:2].mean() == pytest.approx(1.0)
    assert w[1] / w[0] == pytest.approx(3 ** 0.5)
    ds = Shapes(3, size=(16, 16))
    counts = pixel_counts(ds, 4)
    assert int(counts.sum()) == 3 * 16 * 16


@pytest.mark.parametrize("seed", range(3))
def test_dice_loss_matches_smp(seed):
    """smp averages (1 − Dice) over all C classes with absent classes counted as 0; ours
    averages over the present classes, so ours = smp · C / n_present."""
    from segmentation_models_pytorch.losses import DiceLoss as SmpDice

    from course_lib.losses import CEDiceLoss, DiceLoss

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 5, 9, 11, generator=g, requires_grad=True)
    target = torch.randint(0, 4, (2, 9, 11), generator=g)  # class 4 absent
    target[0, :2] = 255
    ours = DiceLoss()(logits, target)
    ref = SmpDice("multiclass", from_logits=True, ignore_index=255, smooth=0.0, eps=1e-6)(logits, target)
    n_present = len(torch.unique(target[target != 255]))
    assert float(ours.detach()) == pytest.approx(float(ref.detach()) * 5 / n_present, rel=1e-5)
    ours.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    perfect = torch.nn.functional.one_hot(torch.where(target == 255, 0, target), 5).permute(0, 3, 1, 2).float() * 50
    assert float(DiceLoss()(perfect, target)) == pytest.approx(0.0, abs=1e-4)
    combo = CEDiceLoss()(logits, target).detach()
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=255)
    assert float(combo) == pytest.approx(float((ce + ours).detach()), rel=1e-6)


def test_trimap_band_marks_pixels_near_label_edges():
    from course_lib.metrics import label_boundaries, trimap_band

    labels = torch.zeros(20, 20, dtype=torch.int64)
    labels[:, 10:] = 1
    edge = label_boundaries(labels)
    assert edge.sum() == 2 * 20 and edge[:, 9].all() and edge[:, 10].all()
    for width in (1, 3, 5):
        band = trimap_band(labels, width)
        cols = band.any(0).nonzero().flatten()
        assert cols.min() == 10 - width and cols.max() == 9 + width  # within `width` px of the edge
        assert band.all(0)[cols].all()
    assert not trimap_band(torch.zeros(8, 8, dtype=torch.int64), 3).any()
    with pytest.raises(ValueError, match="width"):
        trimap_band(labels, 0)


def test_meter_trimap_counts_only_pixels_near_boundaries():
    from course_lib.metrics import trimap_band

    g = torch.Generator().manual_seed(0)
    target = torch.zeros(2, 24, 32, dtype=torch.int64)
    target[:, 8:16, 10:20] = 1
    target[1, :, 25:] = 2
    target[0, 0, 0] = 255
    pred = torch.where(torch.rand(2, 24, 32, generator=g) < 0.2, torch.randint(0, 3, (2, 24, 32), generator=g), target)
    meter = M.SegmentationMeter(3, trimap_widths=(1, 4))
    meter.update(pred, target)
    res = meter.compute()
    for w in (1, 4):
        cm = sum(M.confusion_matrix(p, torch.where(trimap_band(t, w), t, 255), 3) for p, t in zip(pred, target))
        assert res["trimap"][w] == pytest.approx(M.mean_iou(cm))
    assert res["miou"] != res["trimap"][1]  # the band changes what is counted
    assert "trimap" not in M.SegmentationMeter(3).compute()


# ---------------------------------------------------------------- input validation (issue 9)

def test_boundary_f1_requires_binary_masks():
    g = torch.Generator().manual_seed(0)
    gt = torch.zeros(20, 20, dtype=torch.bool)
    gt[5:15, 5:15] = True
    probs = torch.rand(20, 20, generator=g)  # probabilities: every pixel non-zero
    logits = torch.randn(20, 20, generator=g)
    multi = torch.randint(0, 3, (20, 20), generator=g)
    for bad in (probs, logits, multi):
        with pytest.raises(ValueError, match=r"binary.*bool or \{0, 1\}"):
            M.boundary_f1(bad, gt)
        with pytest.raises(ValueError, match="binary"):
            M.boundary_f1(gt, bad)
    # bool, {0, 1} integers and {0., 1.} floats are the same mask
    ref = M.boundary_f1(gt.roll(1, 0), gt)
    assert M.boundary_f1(gt.roll(1, 0).long(), gt.long()) == ref
    assert M.boundary_f1(gt.roll(1, 0).float(), gt.float()) == ref


@pytest.mark.parametrize("tolerance", [-1.0, float("nan"), float("inf")])
def test_boundary_tolerance_is_validated(tolerance):
    m = torch.zeros(8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="tolerance"):
        M.boundary_f1(m, m, tolerance=tolerance)


def test_iou_and_friends_refuse_what_is_not_a_confusion_matrix():
    cm = torch.tensor([[3, 1], [0, 2]])
    negative = torch.tensor([[1, -1], [0, 1]])
    label_map = torch.randint(0, 3, (6, 9))
    fractional = torch.tensor([[0.5, 0.25], [0.0, 0.25]])
    with_nan = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    for fn in (M.iou_per_class, M.dice_per_class, M.mean_iou, M.pixel_accuracy):
        fn(cm)  # fine
        fn(cm.double())  # whole-number float counts are fine too
        with pytest.raises(ValueError, match="negative"):
            fn(negative)
        with pytest.raises(ValueError, match=r"square \[C, C\].*confusion_matrix"):
            fn(label_map)
        with pytest.raises(ValueError, match=r"square \[C, C\]"):
            fn(torch.tensor([1, 2, 3]))
        with pytest.raises(ValueError, match="whole-number"):
            fn(fractional)
        with pytest.raises(ValueError, match="finite"):
            fn(with_nan)


def test_negative_counts_gave_an_iou_above_one_before():
    """The bug this guards against: IoU 2.5 from a matrix with a negative count."""
    cm = torch.tensor([[5, -3], [0, 0]])  # TP 5, FP 0, FN −3 → 5 / 2
    with pytest.raises(ValueError):
        M.iou_per_class(cm)


_CM_VALUES = st.one_of(st.integers(-3, 50), st.sampled_from([0.5, float("nan"), float("inf"), 2.0]))


@settings(max_examples=80, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data(),
       dtype=st.sampled_from([torch.int64, torch.int32, torch.float32, torch.float64]))
def test_confusion_matrix_validation_property(shape, data, dtype):
    """Any tensor is either a valid confusion matrix (2-D, square, finite, whole, ≥ 0: then
    IoUs lie in [0, 1] or are NaN, mIoU agrees with a NumPy oracle) or ValueError."""
    n = int(np.prod(shape))
    values = data.draw(st.lists(_CM_VALUES, min_size=n, max_size=n))
    if not dtype.is_floating_point:
        values = [v if isinstance(v, int) else 1 for v in values]
    cm = torch.tensor(values, dtype=torch.float64).reshape(shape).to(dtype)
    arr = cm.double().numpy()
    valid = (cm.dim() == 2 and shape[0] == shape[1] and np.isfinite(arr).all()
             and (arr >= 0).all() and (arr == np.round(arr)).all())
    if not valid:
        with pytest.raises(ValueError):
            M.iou_per_class(cm)
        with pytest.raises(ValueError):
            M.mean_iou(cm)
        return
    iou = M.iou_per_class(cm).numpy()
    tp = np.diag(arr)
    denom = arr.sum(0) + arr.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.where(denom > 0, tp / denom, np.nan)
    np.testing.assert_allclose(iou, ref, rtol=1e-6, equal_nan=True)
    assert np.all((iou[~np.isnan(iou)] >= 0) & (iou[~np.isnan(iou)] <= 1))


@settings(max_examples=60, deadline=None)
@given(h=st.integers(2, 12), w=st.integers(2, 12), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(["bool", "int01", "float01", "prob", "logit", "multi"]))
def test_boundary_f1_validation_property(h, w, seed, kind):
    """Binary input (bool, or any dtype holding only 0 and 1) gives the DAVIS reference
    value; anything else raises ValueError (unless it happens to hold only 0 and 1)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(h, w, generator=g) > 0.5
    gt = torch.rand(h, w, generator=g) > 0.5
    x = {"bool": base, "int01": base.long(), "float01": base.float(),
         "prob": torch.rand(h, w, generator=g), "logit": torch.randn(h, w, generator=g),
         "multi": torch.randint(0, 4, (h, w), generator=g)}[kind]
    binary = bool(((x == 0) | (x == 1)).all())
    if binary:
        assert M.boundary_f1(x, gt) == pytest.approx(davis_f(x.numpy().astype(bool), gt.numpy()), abs=1e-9)
    else:
        with pytest.raises(ValueError, match="binary"):
            M.boundary_f1(x, gt)


def test_class_weights_need_labelled_pixels_and_non_negative_counts():
    from course_lib.losses import class_weights

    with pytest.raises(ValueError, match="no labelled pixels"):
        class_weights(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="negative"):
        class_weights(torch.tensor([-1, 5, 3]))


@pytest.mark.parametrize("width", [0, -2, float("nan"), 1.5])
def test_trimap_width_is_a_whole_number_of_pixels(width):
    with pytest.raises(ValueError, match="width"):
        M.trimap_band(torch.zeros(4, 4, dtype=torch.long), width)


def test_semantic_boundary_f1_needs_integer_label_maps():
    with pytest.raises(ValueError, match="integer label maps"):
        M.semantic_boundary_f1(torch.rand(4, 4), torch.zeros(4, 4, dtype=torch.long), 2)


@pytest.mark.parametrize("radius", [1, 2, 3, 5, 8, 2 ** 0.5, 3 - 2 ** 0.5 + 1, 2.9])
def test_dilate_equals_convolution_with_the_disk(radius):
    """The row-segment dilation is exactly the disk dilation (conv2d with the disk > 0), also
    for a fractional radius (whole-pixel offsets with dy² + dx² ≤ r²)."""
    import math

    import torch.nn.functional as F

    from course_lib.metrics import dilate

    g = torch.Generator().manual_seed(int(10 * radius))
    k = math.ceil(radius)
    r = torch.arange(-k, k + 1)
    disk = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius ** 2 + 1e-9).float()
    for shape in ((1, 37, 53), (3, 5, 64), (2, 64, 4)):
        m = torch.rand(shape, generator=g) > 0.97
        ref = F.conv2d(m[:, None].float(), disk[None, None], padding=k)[:, 0] > 0.5
        assert torch.equal(dilate(m, radius), ref)
    assert torch.equal(dilate(torch.zeros(4, 4, dtype=torch.bool), radius), torch.zeros(4, 4, dtype=torch.bool))
