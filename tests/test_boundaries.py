"""Semantic edges against SBCB's definition computed per class with SciPy's exact distance
transform (``semantic_edges_reference``), on real CamVid labels (void included) and on
hand-made cases; and the reference itself on a case worked by hand."""

import numpy as np
import pytest
import torch

from tests.conftest import require_dataset
from course_lib.boundaries import semantic_edges, semantic_edges_reference


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_identical_to_the_per_class_distance_transform_on_camvid(radius):
    require_dataset("camvid")
    from course_lib.data import CamVid

    ds = CamVid("val")
    masks = torch.stack([ds.read_mask(i) for i in (0, 37, 80)])  # 360×480, with void
    assert (masks == 255).any()
    got = semantic_edges(masks, 11, radius)
    assert got.shape == (3, 11, 360, 480) and got.dtype == torch.bool
    for b in range(len(masks)):
        ref = semantic_edges_reference(masks[b].numpy(), 11, radius)
        assert np.array_equal(got[b].numpy(), ref), f"image {b}, radius {radius}"
    assert torch.equal(semantic_edges(masks[1], 11, radius), got[1])  # one [H, W] map alike


def test_void_between_classes_and_absent_classes():
    # class 0 | two columns of void | class 1: inner + outer across the void is 1 + 2 = 3 at the
    # void pixel next to class 0, so at radius 2 no edge crosses a 2-pixel void gap ...
    m = torch.tensor([[0, 0, 0, 255, 255, 1, 1, 1]] * 3)
    e2 = semantic_edges(m, 3, 2)
    assert not e2[:, :, 3:5].any() and not e2[0].any() and not e2[1].any() and not e2[2].any()
    # ... at radius 3 it does: the class-0 pixel at the gap (3 from class 1), both void columns
    # (1 + 2) and the class-1 pixel at the gap (3 from class 0)
    e3 = semantic_edges(m, 3, 3)
    assert e3[0, 0].tolist() == [False, False, True, True, True, True, False, False]
    assert not e3[2].any()  # class 2 is absent
    for r in (2, 3):
        assert np.array_equal(semantic_edges(m, 3, r).numpy(), semantic_edges_reference(m.numpy(), 3, r))
    # a fractional radius, on random label maps with void, against the definition
    g = torch.Generator().manual_seed(0)
    rand = torch.randint(0, 4, (12, 14), generator=g)
    rand[torch.rand(12, 14, generator=g) < 0.2] = 255
    for r in (1.5, 2.9, 4):
        assert np.array_equal(semantic_edges(rand, 4, r).numpy(), semantic_edges_reference(rand.numpy(), 4, r))


def test_bad_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="integer label map"):
        semantic_edges(torch.rand(4, 4), 3)
    with pytest.raises(ValueError, match="num_classes"):
        semantic_edges(torch.full((4, 4), 7), 3)
    with pytest.raises(ValueError, match="radius"):
        semantic_edges(torch.zeros(4, 4, dtype=torch.long), 3, radius=0.5)


def test_the_reference_on_a_case_worked_by_hand():
    # a 5×5 square of class 1 in class 0, radius 1: the ring just inside the square and the ring
    # just outside it (4-neighbours only: a diagonal neighbour is √2 > 1 away)
    m = np.zeros((9, 9), np.int64)
    m[2:7, 2:7] = 1
    e = semantic_edges_reference(m, 2, 1)
    inner_ring = np.zeros((9, 9), bool); inner_ring[2:7, 2:7] = True; inner_ring[3:6, 3:6] = False
    outer_ring = np.zeros((9, 9), bool); outer_ring[1:8, 2:7] = True; outer_ring[2:7, 1:8] = True
    outer_ring[2:7, 2:7] = False
    assert np.array_equal(e[1], inner_ring | outer_ring) and np.array_equal(e[0], e[1])


def test_edge_pr_counts_and_ods_against_distance_transforms():
    from scipy.ndimage import distance_transform_edt

    from course_lib.boundaries import edge_pr_counts, ods_f

    g = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 3, (2, 20, 24), generator=g)
    edges = semantic_edges(labels, 3, 1)
    probs = (edges.float() * 0.6 + 0.5 * torch.rand(edges.shape, generator=g)).clamp(0, 1)
    thresholds = torch.tensor([0.3, 0.5, 0.7, 0.9])
    counts = edge_pr_counts(probs, edges, thresholds, tolerance=2)
    for i, t in enumerate(thresholds.tolist()):
        for k in range(3):
            pred, gt = (probs[:, k] >= t).numpy(), edges[:, k].numpy()
            # distance from each pixel to the nearest true edge / predicted pixel, per image
            d_gt = np.stack([distance_transform_edt(~m) if m.any() else np.full(m.shape, np.inf) for m in gt])
            d_pred = np.stack([distance_transform_edt(~m) if m.any() else np.full(m.shape, np.inf) for m in pred])
            ref = [(pred & (d_gt <= 2)).sum(), pred.sum(), (gt & (d_pred <= 2)).sum(), gt.sum()]
            assert counts[i, k].tolist() == [int(v) for v in ref]
    res = ods_f(counts)
    assert res["f"].shape == (4, 3) and 0 < res["mean_f"] <= 1
    assert torch.allclose(res["best_f"], res["f"].max(0).values)
    perfect = ods_f(edge_pr_counts(edges.float(), edges, thresholds, 2))
    assert perfect["mean_f"] == pytest.approx(1.0)


# ------------------------------------------------------------------ instance boundaries (B2Inst)

def _laplacian_reference(masks: np.ndarray) -> np.ndarray:
    """BMask R-CNN's boundary target one instance at a time with SciPy (zero padding), OR'd.
    Each instance is convolved in its bounding box with a ring of zeros around it: outside the
    box the Laplacian of a 0/1 mask is ≤ 0, so nothing there is boundary."""
    from scipy.ndimage import convolve

    kernel = -np.ones((3, 3))
    kernel[1, 1] = 8
    out = np.zeros(masks.shape[1:], bool)
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = np.pad(m, 1)[y0:y1 + 2, x0:x1 + 2].astype(float)  # padded coordinates are shifted by 1
        lap = convolve(crop, kernel, mode="constant", cval=0.0)[1:-1, 1:-1]
        out[y0:y1, x0:x1] |= np.clip(lap, 0, None) > 0.1
    return out


def test_instance_boundaries_keep_both_sides_of_a_contact():
    from course_lib.boundaries import instance_boundaries

    masks = torch.zeros(2, 8, 12, dtype=torch.bool)
    masks[0, 2:6, 2:6] = True   # two 4 × 4 squares touching along columns 5 | 6
    masks[1, 2:6, 6:10] = True
    ring = np.zeros((8, 12), np.uint8)
    for c0 in (2, 6):
        ring[2:6, c0:c0 + 4] = 1
        ring[3:5, c0 + 1:c0 + 3] = 0  # the inside of each square is not boundary
    got = instance_boundaries(masks)
    assert got.dtype == torch.uint8 and got.shape == (8, 12)
    assert np.array_equal(got.numpy(), ring)
    assert got[3:5, 5].tolist() == [1, 1] and got[3:5, 6].tolist() == [1, 1]  # the contact line, both sides
    # the merged foreground as one instance loses the contact line
    merged = instance_boundaries(masks.any(0, keepdim=True))
    assert merged[3:5, 5:7].sum() == 0 and merged.sum() < got.sum()
    # a mask on the image border: zero padding makes its border pixels boundary
    full = instance_boundaries(torch.ones(1, 4, 5, dtype=torch.uint8))
    assert full.sum() == 4 * 5 - 2 * 3 and full[1:3, 1:4].sum() == 0


@pytest.mark.parametrize("block_values", [None, 256 * 320 * 16])  # one conv2d; blocks of 16 / 20 instances
def test_instance_boundaries_equal_the_per_instance_convolution_on_real_nuclei(block_values, monkeypatch):
    require_dataset("nuclei")
    from course_lib import boundaries
    from course_lib.data import Nuclei

    if block_values:
        monkeypatch.setattr(boundaries, "_BLOCK_VALUES", block_values)
    ds = Nuclei("val")
    for i in (0, 6):  # 62 nuclei at 256 × 256, 73 at 256 × 320
        masks = ds[i][1]["masks"]  # uint8 [N, H, W]
        assert len(masks) > 50
        got = boundaries.instance_boundaries(masks)
        assert np.array_equal(got.numpy().astype(bool), _laplacian_reference(masks.numpy()))
        # touching nuclei: the map holds more than the boundary of the merged foreground
        assert got.sum() > boundaries.instance_boundaries(masks.amax(0, keepdim=True)).sum()


def test_instance_boundaries_of_no_instances_and_bad_input():
    from course_lib.boundaries import instance_boundaries

    empty = instance_boundaries(torch.zeros(0, 6, 9, dtype=torch.uint8))
    assert empty.shape == (6, 9) and empty.dtype == torch.uint8 and empty.sum() == 0
    with pytest.raises(ValueError, match=r"\[N, H, W\].*empty \[0, H, W\]"):
        instance_boundaries(torch.zeros(6, 9, dtype=torch.uint8))
    with pytest.raises(ValueError, match="threshold probabilities"):
        instance_boundaries(torch.rand(2, 6, 9))


def test_touching_pixels_mark_both_sides_of_each_contact_and_nothing_else():
    from course_lib.boundaries import touching_pixels

    ids = np.zeros((6, 9), int)
    ids[1:4, 1:4] = 1
    ids[1:4, 4:6] = 2      # touches 1 along columns 3 | 4
    ids[4, 4:6] = 3        # touches 2 along rows 3 | 4
    ids[1:3, 7:9] = 4      # alone (a background column between it and 2)
    got = touching_pixels(ids)
    # brute force: an instance pixel with a 4-neighbour of another instance
    want = np.zeros_like(got)
    for r in range(6):
        for c in range(9):
            for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < 6 and 0 <= cc < 9 and ids[r, c] > 0 and ids[rr, cc] > 0 and ids[rr, cc] != ids[r, c]:
                    want[r, c] = True
    assert np.array_equal(got, want)
    assert got[1:4, 3].all() and got[1:4, 4].all() and got[3, 4:6].all() and got[4, 4:6].all()
    assert not got[:, 7:].any() and not got[ids == 0].any()
    # diagonal neighbours do not touch
    diag = np.array([[1, 0], [0, 2]])
    assert not touching_pixels(diag).any()
    with pytest.raises(ValueError, match="masks_to_id_map"):
        touching_pixels(np.zeros((2, 4, 4), int))
