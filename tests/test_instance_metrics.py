"""Instance-segmentation scores against independent oracles: the DSB2018 score against an
explicit per-pair loop with greedy matching, COCO mask AP against pycocotools driven the
documented way (``loadRes`` + ``summarize``), Boundary IoU against the official algorithm
(iterated 3×3 erosions of the zero-padded mask) and a disk erosion; on hand-made cases,
random shapes and real DSB2018 nuclei masks."""

from pathlib import Path

import numpy as np
import pytest
import torch

from course_lib.instance_metrics import CocoMaskAP, boundary_band, boundary_iou, coco_mask_ap, dsb_score
from tests.conftest import require_dataset

THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


# ------------------------------------------------------------------------------ helpers

def nuclei_ids(prefix: str) -> np.ndarray:
    """A real DSB2018 instance-id map int64 [H, W] by the start of its image id."""
    from course_lib.data.instances import read_id_map

    root = Path(require_dataset("nuclei"))
    (path,) = (root / "masks").glob(f"{prefix}*.png")
    return read_id_map(path).numpy()


def random_id_map(rng, h: int, w: int, n: int) -> np.ndarray:
    """n random rectangles and discs painted in turn (later ones cover earlier ones)."""
    ids = np.zeros((h, w), np.int64)
    yy, xx = np.mgrid[:h, :w]
    for k in range(1, n + 1):
        cy, cx = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(2, max(3, min(h, w) // 3))
        if rng.random() < 0.5:
            shape = (abs(yy - cy) <= r) & (abs(xx - cx) <= rng.integers(2, r + 2))
        else:
            shape = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        ids[shape] = k
    return ids


def perturb(ids: np.ndarray, rng, dy: int = 1, dx: int = 2) -> np.ndarray:
    """A plausible prediction: shifted by (dy, dx), ~10 % of the objects dropped, ~20 % merged
    in pairs, ids made non-contiguous."""
    out = np.zeros_like(ids)
    out[dy:, dx:] = ids[:ids.shape[0] - dy, :ids.shape[1] - dx]
    labels = np.unique(out)[1:]
    drop = rng.choice(labels, len(labels) // 10, replace=False)
    out[np.isin(out, drop)] = 0
    keep = np.setdiff1d(labels, drop)
    for a, b in rng.choice(keep, 2 * (len(keep) // 10), replace=False).reshape(-1, 2):
        out[out == b] = a
    return np.where(out > 0, out * 7 + 3, 0)


def dsb_reference(pred: np.ndarray, gt: np.ndarray, thresholds) -> np.ndarray:
    """The definition read literally: IoU of every overlapping (GT, prediction) pair from
    boolean masks, then per threshold a greedy one-to-one matching, best IoU first."""
    gt_ids = [g for g in np.unique(gt) if g != 0]
    pred_ids = [p for p in np.unique(pred) if p != 0]
    pairs = []
    for g in gt_ids:
        gm = gt == g
        for p in np.unique(pred[gm]):  # a pair that does not overlap has IoU 0: never a match
            if p != 0:
                pm = pred == p
                pairs.append(((gm & pm).sum() / (gm | pm).sum(), g, p))
    pairs.sort(key=lambda x: -x[0])
    scores = []
    for t in thresholds:
        used_g, used_p = set(), set()
        for iou, g, p in pairs:
            if iou > t and g not in used_g and p not in used_p:
                used_g.add(g)
                used_p.add(p)
        tp = len(used_g)
        fp, fn = len(pred_ids) - tp, len(gt_ids) - tp
        scores.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return np.array(scores)


def target_of(ids: np.ndarray) -> dict:
    from course_lib.data.instances import instance_target

    return instance_target(torch.from_numpy(np.ascontiguousarray(ids)))


# ------------------------------------------------------------------------------ DSB score

def test_dsb_score_hand_cases():
    gt = np.zeros((20, 20), np.int64)
    gt[5:15, 5:15] = 1
    perfect = dsb_score(gt * 5, gt)  # other ids, same objects
    assert perfect["score"] == 1.0 and np.all(perfect["per_threshold"] == 1.0)
    assert np.allclose(perfect["thresholds"], THRESHOLDS)

    # the prediction splits the 10×10 square 70 / 30: IoUs 0.7 and 0.3. The 0.7 half is a TP
    # while t < 0.7 (TP 1, FP 1, FN 0 → 1/2), then nothing matches (TP 0, FP 2, FN 1 → 0)
    split = np.zeros_like(gt)
    split[5:15, 5:12] = 4
    split[5:15, 12:15] = 9
    r = dsb_score(split, gt)
    assert r["per_threshold"].tolist() == [0.5] * 4 + [0.0] * 6 and r["score"] == pytest.approx(0.2)
    assert r["tp"].tolist() == [1] * 4 + [0] * 6 and r["fp"].tolist() == [1] * 4 + [2] * 6

    # a copy shifted by 2 px: intersection 80, union 120, IoU 2/3: TP at 0.50..0.65, then FP + FN
    shifted = np.zeros_like(gt)
    shifted[7:17, 5:15] = 1
    r = dsb_score(shifted, gt)
    assert r["per_threshold"].tolist() == [1.0] * 4 + [0.0] * 6 and r["score"] == pytest.approx(0.4)
    # a match needs IoU > t, strictly
    shift1 = np.zeros_like(gt)
    shift1[5:15, 6:16] = 1  # intersection 90, union 110: IoU 0.818
    assert dsb_score(shift1, gt, [0.8, 0.81, 0.82])["per_threshold"].tolist() == [1.0, 1.0, 0.0]
    cut = np.zeros_like(gt)
    cut[5:13, 5:15] = 1  # inside the square, 80 of its 100 pixels: IoU exactly 0.8
    assert dsb_score(cut, gt, [0.79, 0.8])["per_threshold"].tolist() == [1.0, 0.0]

    empty = np.zeros_like(gt)
    both = dsb_score(empty, empty)
    assert both["score"] == 1.0 and np.all(both["per_threshold"] == 1.0)
    assert dsb_score(empty, gt)["score"] == 0.0 and dsb_score(gt, empty)["score"] == 0.0
    # torch input, and a map without background pixels
    assert dsb_score(torch.from_numpy(split), torch.from_numpy(gt))["score"] == pytest.approx(0.2)
    full = np.ones((4, 4), np.int64)
    assert dsb_score(full, full)["score"] == 1.0


def test_dsb_score_matches_the_per_pair_loop_on_random_maps():
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(20, 60, size=2)
        gt = random_id_map(rng, h, w, rng.integers(1, 25))
        if trial % 2:
            pred = perturb(gt, rng, *rng.integers(0, 3, size=2) + np.array([1, 0]))
            pred[random_id_map(rng, h, w, 3) > 0] = 1000  # one more (scattered) object on top
        else:
            pred = random_id_map(rng, h, w, rng.integers(0, 25)) * 3
        got = dsb_score(pred, gt)
        assert np.allclose(got["per_threshold"], dsb_reference(pred, gt, THRESHOLDS)), trial
        assert got["score"] == pytest.approx(got["per_threshold"].mean())


def test_dsb_score_matches_the_per_pair_loop_on_real_nuclei():
    gt = nuclei_ids("07fb37aafa66")  # 696 × 520, 313 nuclei
    assert len(np.unique(gt)) - 1 > 300
    rng = np.random.default_rng(1)
    for dy, dx in ((1, 1), (2, 1)):
        pred = perturb(gt, rng, dy, dx)
        got = dsb_score(torch.from_numpy(pred), torch.from_numpy(gt))
        ref = dsb_reference(pred, gt, THRESHOLDS)
        assert np.allclose(got["per_threshold"], ref)
        assert 0 < got["score"] < 1 and np.all(np.diff(got["per_threshold"]) <= 0)
        assert got["per_threshold"][0] > 0.5 and got["per_threshold"][-1] < 0.2  # spread over thresholds


def test_dsb_score_refuses_bad_input():
    a = np.zeros((5, 5), np.int64)
    with pytest.raises(ValueError, match="same shape"):
        dsb_score(a, np.zeros((5, 6), np.int64))
    with pytest.raises(ValueError, match="integer instance-id map.*scipy.ndimage.label"):
        dsb_score(a.astype(np.float32), a)
    with pytest.raises(ValueError, match="integer instance-id map"):
        dsb_score(a, a.astype(bool))
    with pytest.raises(ValueError, match=r"\[0.5, 1\).*one-to-one"):
        dsb_score(a, a, thresholds=[0.3, 0.5])
    with pytest.raises(ValueError, match="negative"):
        dsb_score(a - 1, a)


# ------------------------------------------------------------------------------ COCO mask AP

def coco_reference(preds, targets, max_dets: int = 100) -> np.ndarray:
    """pycocotools the documented way: a GT COCO object from a dataset dict with one RLE per
    mask, detections through ``loadRes``, ``summarize()`` → the 12 stats (-1 → nan)."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets = [], [], []
    for i, (p, t) in enumerate(zip(preds, targets)):
        m = t["masks"].numpy()
        images.append({"id": 100 + i, "height": m.shape[1], "width": m.shape[2]})
        for k in range(len(m)):
            rle = mask_utils.encode(np.asfortranarray(m[k]))
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 1, "iscrowd": 0,
                         "segmentation": rle, "area": float(mask_utils.area(rle))})
        for k in range(len(p["scores"])):
            dets.append({"image_id": 100 + i, "category_id": int(p["labels"][k]), "score": float(p["scores"][k]),
                         "segmentation": mask_utils.encode(np.asfortranarray(p["masks"][k].numpy().astype(np.uint8)))})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "nucleus"}]}
    gt.createIndex()
    E = COCOeval(gt, gt.loadRes(dets), iouType="segm")
    E.params.maxDets = [1, 10, max_dets]
    E.evaluate()
    E.accumulate()
    E.summarize()
    return np.where(E.stats == -1, np.nan, E.stats)


def prediction_of(ids: np.ndarray, rng) -> dict:
    t = target_of(ids)
    return {"masks": t["masks"].bool(), "scores": torch.from_numpy(rng.random(len(t["labels"]))).float(),
            "labels": t["labels"]}


def grid_of_squares(n_side: int = 12, size: int = 5) -> np.ndarray:
    ids = np.zeros((n_side * (size + 2), n_side * (size + 2)), np.int64)
    for k in range(n_side * n_side):
        r, c = divmod(k, n_side)
        ids[r * (size + 2) + 1:r * (size + 2) + 1 + size, c * (size + 2) + 1:c * (size + 2) + 1 + size] = k + 1
    return ids


def test_coco_mask_ap_of_a_perfect_prediction_is_one():
    targets = [target_of(nuclei_ids(p)) for p in ("2e172afb1f43", "61a15ccbfebb")]
    preds = [{"masks": t["masks"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]} for t in targets]
    r = coco_mask_ap(preds, targets)
    assert r["AP"] == 1.0 and r["AP50"] == 1.0 and r["AP75"] == 1.0 and r["AR"] == 1.0
    # Mask R-CNN's float probabilities [N, 1, H, W] are thresholded at 0.5
    probs = [dict(p, masks=p["masks"][:, None].float() * 0.4 + 0.3) for p in preds]  # 0.3 / 0.7
    assert coco_mask_ap(probs, targets)["AP"] == 1.0


def test_coco_mask_ap_keeps_more_than_100_detections_per_image():
    ids = grid_of_squares()  # 144 squares of 5 × 5
    t = target_of(ids)
    pred = {"masks": t["masks"], "scores": torch.linspace(1, 0.5, 144), "labels": t["labels"]}
    assert coco_mask_ap([pred], [t], max_dets=1000)["AP"] == 1.0
    cut = coco_mask_ap([pred], [t], max_dets=100)
    # 100 of 144 found, all correct: precision 1 up to recall 100/144 = 0.694, so 70 of COCO's
    # 101 recall points (0, 0.01, ..., 0.69) have precision 1 and the rest 0
    assert cut["AP"] == pytest.approx(70 / 101) and cut["AR"] == pytest.approx(100 / 144)
    # pycocotools' own summarize() with its default maxDets agrees on the truncated value
    assert coco_reference([pred], [t], max_dets=100)[0] == pytest.approx(cut["AP"])

    gt = nuclei_ids("07fb37aafa66")  # 313 real nuclei
    t = target_of(gt)
    pred = {"masks": t["masks"], "scores": torch.ones(len(t["labels"])), "labels": t["labels"]}
    assert coco_mask_ap([pred], [t])["AP"] == 1.0
    assert coco_mask_ap([pred], [t], max_dets=100)["AP"] < 0.4


def test_coco_mask_ap_equals_a_direct_pycocotools_run_on_perturbed_nuclei():
    rng = np.random.default_rng(2)
    gts = [nuclei_ids(p) for p in ("2e172afb1f43", "61a15ccbfebb", "930f246a8e4f")]
    targets = [target_of(g) for g in gts]
    preds = [prediction_of(perturb(g, rng, 1 + i % 2, 1), rng) for i, g in enumerate(gts)]
    # an image with objects but no prediction, and one with predictions but no objects
    targets.append(target_of(gts[0]))
    preds.append({"masks": torch.zeros(0, *gts[0].shape, dtype=torch.uint8), "scores": torch.zeros(0),
                  "labels": torch.zeros(0, dtype=torch.int64)})
    targets.append(target_of(np.zeros_like(gts[1])))
    preds.append(prediction_of(perturb(gts[1], rng, 2, 2), rng))
    got = coco_mask_ap(preds, targets, max_dets=100)
    ref = coco_reference(preds, targets, max_dets=100)
    assert 0.1 < got["AP"] < 0.9
    np.testing.assert_allclose([got[k] for k in ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")],
                               ref[:6], rtol=1e-12, equal_nan=True)
    assert got["AR"] == pytest.approx(ref[8])
    # max_dets=1000: summarize() reads AP50 and AR at maxDets[2] (its first line hard-codes 100)
    got = coco_mask_ap(preds, targets)
    ref = coco_reference(preds, targets, max_dets=1000)
    assert got["AP50"] == pytest.approx(ref[1]) and got["AP75"] == pytest.approx(ref[2])
    assert got["AR"] == pytest.approx(ref[8])
    # one image at a time (what evaluate_instances does, keeping only RLEs): the same numbers
    acc = CocoMaskAP(100)
    for p, t in zip(preds, targets):
        acc.add(p, t)
    assert acc.compute() == pytest.approx(coco_mask_ap(preds, targets, max_dets=100), nan_ok=True)
    assert all(not torch.is_tensor(a["segmentation"]) and isinstance(a["segmentation"], dict) for a in acc.dt_anns)


def test_coco_mask_ap_score_order_matters():
    gt = nuclei_ids("2e172afb1f43")
    t = target_of(gt)
    fp = torch.zeros(1, *gt.shape, dtype=torch.uint8)
    ys, xs = np.nonzero(gt == 0)
    fp[0, ys[:40], xs[:40]] = 1  # background pixels only: matches nothing
    masks = torch.cat([t["masks"], fp])
    labels = torch.ones(len(masks), dtype=torch.int64)
    n = len(t["labels"])
    last = coco_mask_ap([{"masks": masks, "scores": torch.cat([torch.ones(n), torch.tensor([0.1])]),
                          "labels": labels}], [t])
    first = coco_mask_ap([{"masks": masks, "scores": torch.cat([torch.ones(n) * 0.5, torch.tensor([0.9])]),
                           "labels": labels}], [t])
    assert last["AP"] == 1.0  # a false positive ranked after every true one costs nothing
    assert first["AP"] < 0.99 and first["AR"] == 1.0


def test_coco_mask_ap_without_ground_truth_and_bad_input():
    t = target_of(np.zeros((8, 8), np.int64))
    none = {"masks": torch.zeros(0, 8, 8), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    assert all(np.isnan(v) for v in coco_mask_ap([none], [t]).values())
    gt = target_of(grid_of_squares(2))
    assert coco_mask_ap([none], [gt])["AP"] == 0.0  # objects, no predictions
    with pytest.raises(ValueError, match="same images"):
        coco_mask_ap([none], [t, t])
    with pytest.raises(ValueError, match="0/1"):
        coco_mask_ap([dict(none, masks=gt["masks"] * 255, scores=torch.ones(4), labels=gt["labels"])], [gt])
    with pytest.raises(ValueError, match="target's size"):
        coco_mask_ap([{"masks": torch.ones(1, 5, 5), "scores": torch.ones(1), "labels": torch.ones(1)}], [gt])
    with pytest.raises(ValueError, match="max_dets"):
        coco_mask_ap([none], [t], max_dets=0)


# ------------------------------------------------------------------------------ Boundary IoU

def band_reference(mask: np.ndarray, d: int, metric: str) -> np.ndarray:
    """The official algorithm (boundary-iou-api's mask_to_boundary with cv2 replaced by SciPy):
    pad with one ring of zeros, erode d times with a 3×3 square (or once with a disk of
    radius d), mask minus eroded mask. border_value=1 as cv2.erode's default border."""
    from scipy.ndimage import binary_erosion

    padded = np.pad(mask, 1)
    if metric == "chessboard":
        eroded = binary_erosion(padded, np.ones((3, 3), bool), iterations=d, border_value=1)
    else:
        r = np.arange(-d, d + 1)
        eroded = binary_erosion(padded, r[:, None] ** 2 + r[None, :] ** 2 <= d * d, border_value=1)
    return mask & ~eroded[1:-1, 1:-1]


def boundary_iou_reference(pred, gt, ratio: float, metric: str) -> float:
    d = max(1, int(round(ratio * np.sqrt(gt.shape[0] ** 2 + gt.shape[1] ** 2))))
    bp, bg = band_reference(pred, d, metric), band_reference(gt, d, metric)
    return 1.0 if not (bp | bg).any() else (bp & bg).sum() / (bp | bg).sum()


@pytest.mark.parametrize("metric", ["chessboard", "euclidean"])
def test_boundary_iou_matches_the_official_algorithm_on_random_shapes(metric):
    rng = np.random.default_rng(3)
    for trial in range(40):
        h, w = rng.integers(16, 70, size=2)
        gt = random_id_map(rng, h, w, rng.integers(1, 4)) > 0
        pred = np.roll(gt, rng.integers(-2, 3, size=2), (0, 1)) | (random_id_map(rng, h, w, 1) > 0)
        ratio = [0.02, 0.05, 0.1][trial % 3]
        assert boundary_iou(pred, gt, ratio, metric) == pytest.approx(boundary_iou_reference(pred, gt, ratio, metric))


def test_boundary_iou_matches_the_official_algorithm_on_real_nuclei():
    gt_ids = nuclei_ids("61a15ccbfebb")  # 256 × 256: d = round(0.02 × 362) = 7
    pred_ids = np.zeros_like(gt_ids)
    pred_ids[1:, 2:] = gt_ids[:-1, :-2]
    ids = np.unique(gt_ids)[1:]
    on_border = [k for k in ids if (gt_ids[[0, -1]] == k).any() or (gt_ids[:, [0, -1]] == k).any()]
    assert on_border  # the image-border convention is exercised
    values = []
    for k in list(ids[:12]) + on_border[:3]:
        for metric in ("chessboard", "euclidean"):
            got = boundary_iou(torch.from_numpy(pred_ids == k), torch.from_numpy(gt_ids == k), metric=metric)
            assert got == pytest.approx(boundary_iou_reference(pred_ids == k, gt_ids == k, 0.02, metric))
            values.append(got)
    assert 0 < min(values) and max(values) < 1


def test_boundary_iou_hand_cases():
    a = np.zeros((200, 200), bool)
    a[50:150, 50:150] = True
    assert boundary_iou(a, a) == 1.0
    b = np.zeros_like(a)
    b[160:190, 10:40] = True
    assert boundary_iou(a, b) == 0.0  # disjoint
    empty = np.zeros_like(a)
    assert boundary_iou(empty, empty) == 1.0 and boundary_iou(a, empty) == 0.0
    # a 1-pixel shift of a 100 × 100 square: mask IoU loses 2 %, boundary IoU (d = 6) 15 %
    s = np.roll(a, 1, 0)
    mask_iou = (a & s).sum() / (a | s).sum()
    assert mask_iou > 0.98 and boundary_iou(s, a) < 0.85 and 1 - boundary_iou(s, a) > 7 * (1 - mask_iou)
    # the band of a mask filling the image is the ring of width d along the image border
    full = np.ones((20, 20), bool)
    assert boundary_band(full, 3).sum() == 400 - 14 * 14
    # chessboard vs Euclidean bands differ only near a concave corner, where the nearest outside
    # pixel is diagonal: (94, 94) is 6 from the corner pixel (100, 100) for the 3×3 square, 8.5 by disk
    ell = a.copy()
    ell[100:, 100:] = False
    diff = boundary_band(ell, 6, "chessboard") & ~boundary_band(ell, 6, "euclidean")
    assert diff[94, 94] and not diff[:90].any() and not diff[:, :90].any()
    assert not (boundary_band(ell, 6, "euclidean") & ~boundary_band(ell, 6, "chessboard")).any()


def test_boundary_iou_refuses_bad_input():
    m = np.zeros((8, 8), bool)
    with pytest.raises(ValueError, match="binary mask.*p > 0.5"):
        boundary_iou(m.astype(np.float32), m)
    with pytest.raises(ValueError, match="binary mask.*ids == k"):
        boundary_iou(m, np.full((8, 8), 2))
    with pytest.raises(ValueError, match="same shape"):
        boundary_iou(m, np.zeros((8, 9), bool))
    with pytest.raises(ValueError, match="dilation_ratio"):
        boundary_iou(m, m, dilation_ratio=0)
    with pytest.raises(ValueError, match="metric"):
        boundary_iou(m, m, metric="manhattan")


def test_merges_and_splits_count_what_the_definitions_say():
    from course_lib.instance_metrics import merges_and_splits

    gt = np.zeros((8, 16), int)
    gt[1:7, 1:4], gt[1:7, 4:7] = 1, 2          # two touching nuclei ...
    gt[1:7, 9:15] = 3                           # ... and a third one alone
    pred = np.zeros_like(gt)
    pred[1:7, 1:7] = 5                          # one instance over 1 and 2: a merge
    pred[1:7, 9:12], pred[1:7, 12:15] = 7, 9    # 3 cut in halves: a split
    assert merges_and_splits(pred, gt) == (1, 1)
    assert merges_and_splits(gt, gt) == (0, 0)
    # a quarter is enough for a split, a half is not enough for a merge
    pred2 = np.zeros_like(gt)
    pred2[1:7, 9:10] = 1                        # 6 of 36 px of nucleus 3: under a quarter
    pred2[1:7, 10:15] = 2
    assert merges_and_splits(pred2, gt) == (0, 0)
    pred2[1:7, 9:11] = 1                        # 12 of 36: a third
    assert merges_and_splits(pred2, gt)[1] == 1
    half = np.zeros_like(gt)
    half[1:4, 1:7] = 4                          # exactly half of 1 and of 2: not more than half
    assert merges_and_splits(half, gt) == (0, 0)
    assert merges_and_splits(np.zeros_like(gt), gt) == (0, 0) and merges_and_splits(gt, np.zeros_like(gt)) == (0, 0)
    # the same counts from the per-pair masks, on random maps
    rng = np.random.default_rng(0)
    for _ in range(10):
        g, p = rng.integers(0, 5, (12, 12)), rng.integers(0, 6, (12, 12))
        cover = np.array([[((g == a) & (p == b)).sum() / (g == a).sum() for b in np.unique(p[p > 0])]
                          for a in np.unique(g[g > 0])])
        assert merges_and_splits(p, g) == (int(((cover > 0.5).sum(0) >= 2).sum()), int(((cover >= 0.25).sum(1) >= 2).sum()))
    with pytest.raises(ValueError, match="same"):
        merges_and_splits(gt[:4], gt)
