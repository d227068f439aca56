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
