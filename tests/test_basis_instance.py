"""course_lib.models.basis_instance: CenterNet detector, YOLACT / BlendMask masks, B2Inst parts.
Everything tiny (64 × 64 images, a few instances, a few steps): CPU-cheap."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import masks_to_boxes

from course_lib.boundaries import instance_boundaries
from course_lib.models import (BasisInstanceNet, blend, boundary_score, centernet_focal_loss, centernet_targets,
                               crop_to_boxes, decode_centernet, gaussian_radius, paste_masks, per_instance_boundaries,
                               resample_roi, roi_basis, roi_sample_nearest, yolact_masks)

SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread: these tensors are tiny, and on a busy 2-core machine two OpenMP
    threads waiting on each other made a 64 × 64 training step ~50× slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _disc(cy: float, cx: float, r: float, size: int = SIZE) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _touching_discs() -> tuple[torch.Tensor, dict]:
    """One image [1, 3, 64, 64] with two touching discs and its detection-format target."""
    d1 = _disc(32, 24, 9)
    d2 = _disc(32, 41, 9) & ~d1
    masks = torch.stack([d1, d2]).to(torch.uint8)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, SIZE, SIZE, generator=g) * 0.2
    img[:, :, d1 | d2] += 0.6
    return img, {"boxes": masks_to_boxes(masks), "labels": torch.ones(2, dtype=torch.int64), "masks": masks}


CONFIGS = [("yolact", False, False), ("yolact", True, True), ("blendmask", False, False), ("blendmask", True, True)]


# ------------------------------------------------------------------------------ detector

def test_gaussian_radius_grows_with_the_box():
    radii = [gaussian_radius(s, s) for s in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(radii, radii[1:]))
    assert gaussian_radius(0, 0) == 0
    with pytest.raises(ValueError, match="≥ 0"):
        gaussian_radius(-1, 3)


def test_targets_put_heatmap_peaks_at_the_centres():
    boxes = torch.tensor([[4.0, 8.0, 19.0, 23.0], [40.0, 30.0, 47.0, 33.0], [10.0, 50.0, 10.0, 50.0]])
    labels = torch.tensor([1, 1, 2])
    t = centernet_targets(boxes, labels, (SIZE, SIZE), num_classes=2)
    assert t["heatmap"].shape == (2, 16, 16)
    centre = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / 4
    assert torch.equal(t["centres"], centre.floor().long())
    assert torch.allclose(t["offset"], centre - centre.floor())
    assert torch.allclose(t["size"], (boxes[:, 2:] - boxes[:, :2]) / 4)
    assert torch.equal(t["indices"], t["centres"][:, 1] * 16 + t["centres"][:, 0])
    # exactly 1 at the centre cells, in the right class, and those are the only 1s and 3×3 peaks
    hm = t["heatmap"]
    for (x, y), k in zip(t["centres"].tolist(), labels.tolist()):
        assert hm[k - 1, y, x] == 1
    assert int((hm == 1).sum()) == 3
    peaks = (F.max_pool2d(hm[None], 3, 1, 1)[0] == hm) & (hm > 0)
    assert int(peaks.sum()) == 3
    # the big box has a Gaussian spread (radius ≥ 1), values in [0, 1]
    assert 0 < float(hm[0, 3, 3]) < 1 and float(hm.min()) >= 0


def test_targets_from_masks_equal_targets_from_their_boxes():
    _, target = _touching_discs()
    from_masks = centernet_targets(target["masks"])
    from_boxes = centernet_targets(target["boxes"], target["labels"], (SIZE, SIZE))
    assert all(torch.equal(from_masks[k], from_boxes[k]) for k in from_boxes)
    # the discs' centres (24, 32) and (41.5, 32) → cells (6, 8) and (10, 8)
    assert from_masks["centres"].tolist() == [[6, 8], [10, 8]]


def test_targets_reject_bad_input():
    with pytest.raises(ValueError, match="x2 ≥ x1"):
        centernet_targets(torch.tensor([[10.0, 10.0, 5.0, 20.0]]), torch.tensor([1]), (32, 32))
    with pytest.raises(ValueError, match="labels must be in 1..1"):
        centernet_targets(torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0]), (32, 32))
    with pytest.raises(ValueError, match="image_size"):
        centernet_targets(torch.tensor([[1.0, 1.0, 5.0, 5.0]]))


def test_focal_loss_matches_the_direct_formula():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 6, 7, generator=g)
    target = torch.rand(2, 1, 6, 7, generator=g) * 0.9
    target[0, 0, 2, 3] = target[1, 0, 4, 1] = target[1, 0, 0, 0] = 1.0
    p = 1 / (1 + np.exp(-logits.double().numpy()))
    y = target.double().numpy()
    pos = y == 1
    direct = -(np.sum((1 - p[pos]) ** 2 * np.log(p[pos]))
               + np.sum((1 - y[~pos]) ** 4 * p[~pos] ** 2 * np.log(1 - p[~pos]))) / pos.sum()
    assert float(centernet_focal_loss(logits, target)) == pytest.approx(direct, rel=1e-5)
    # no positive: the negative part, undivided
    t0 = target.clone()
    t0[t0 == 1] = 0.5
    y0 = t0.double().numpy()
    direct0 = -np.sum((1 - y0) ** 4 * p ** 2 * np.log(1 - p))
    assert float(centernet_focal_loss(logits, t0)) == pytest.approx(direct0, rel=1e-5)


def test_decoding_recovers_the_boxes_of_perfect_maps():
    boxes = torch.tensor([[4.0, 8.0, 19.0, 23.0], [40.0, 30.0, 47.0, 33.0], [30.0, 50.0, 37.0, 61.0]])
    t = centernet_targets(boxes, torch.ones(3, dtype=torch.int64), (SIZE, SIZE))
    logits = torch.logit(t["heatmap"].clamp(1e-6, 1 - 1e-6))[None]
    size, offset = torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16)
    for i, (x, y) in enumerate(t["centres"].tolist()):
        size[0, :, y, x], offset[0, :, y, x] = t["size"][i], t["offset"][i]
    det = decode_centernet(logits, size, offset, top_k=400)
    assert det["boxes"].shape == (1, 256, 4)  # top-K capped by the number of cells
    top = det["scores"][0] > 0.5
    assert int(top.sum()) == 3
    found = det["boxes"][0][top]
    found = found[found[:, 0].argsort()]
    assert torch.allclose(found, boxes[boxes[:, 0].argsort()], atol=1e-4)
    assert torch.all(det["labels"][0][top] == 1)


# ------------------------------------------------------------------------------ masks

def test_crop_keeps_exactly_the_pixels_of_an_inclusive_box():
    kept = crop_to_boxes(torch.ones(1, 6, 8), torch.tensor([[2.0, 1.0, 4.0, 3.0]]))[0]
    expected = torch.zeros(6, 8)
    expected[1:4, 2:5] = 1
    assert torch.equal(kept, expected)


def test_yolact_assembly_equals_a_hand_computation():
    protos = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]],
                           [[0.0, 3.0, 1.0], [2.0, 0.0, 0.5]]])  # k = 2, H = 2, W = 3
    coeffs = torch.tensor([[0.5, -1.0], [1.0, 0.25]])
    box = torch.tensor([[1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = torch.zeros(2, 2, 3)
    for n in range(2):
        for y in range(2):
            for x in range(3):
                inside = box[n, 0] <= x <= box[n, 2] and box[n, 1] <= y <= box[n, 3]
                lin = sum(float(coeffs[n, j] * protos[j, y, x]) for j in range(2))
                want[n, y, x] = sig(lin) if inside else 0.0
    assert torch.allclose(yolact_masks(protos, coeffs, box), want, atol=1e-6)
    assert torch.allclose(yolact_masks(protos, coeffs)[1, 1, 2], torch.tensor(sig(0.125)))
    with pytest.raises(ValueError, match="coefficients"):
        yolact_masks(protos, torch.ones(2, 3))


def test_yolact_roi_masks_are_the_box_crop_of_the_combination():
    """Combining before RoIAlign (what the model does) = RoIAligning each prototype, then combining."""
    g = torch.Generator().manual_seed(4)
    net = BasisInstanceNet(num_prototypes=3, seed=0)
    bases = torch.rand(2, 3, 8, 8, generator=g)
    coeffs = torch.rand(3, 3, generator=g) * 2 - 1
    boxes = torch.tensor([[3.0, 5.0, 20.0, 14.0], [0.0, 0.0, 31.0, 31.0], [10.0, 12.0, 13.0, 17.0]])
    batch_index = torch.tensor([0, 1, 1])
    got = net._roi_mask_logits({"bases": bases}, boxes, batch_index, coeffs)
    want = torch.einsum("nk,nkij->nij", coeffs, roi_basis(bases, boxes, batch_index, 28))
    assert got.shape == (3, 28, 28) and torch.allclose(got, want, atol=1e-5)


def test_gt_roi_masks_sample_the_pixel_under_each_bin_centre():
    masks = torch.zeros(1, 10, 12, dtype=torch.uint8)
    masks[0, 2:6, 3:9] = 1
    masks[0, 2, 3] = 0
    roi = roi_sample_nearest(masks, torch.tensor([[3.0, 2.0, 8.0, 5.0]]), 12)  # a 6 × 4 box, 12 bins
    assert roi.dtype == torch.uint8 and roi.shape == (1, 12, 12)
    want = masks[0, 2:6, 3:9].repeat_interleave(3, 0).repeat_interleave(2, 1)
    assert torch.equal(roi[0], want)


def test_resample_roi_is_exact_on_its_own_grid_and_crops_to_the_from_box():
    g = torch.Generator().manual_seed(5)
    roi = torch.rand(2, 6, 6, generator=g)
    boxes = torch.tensor([[3.0, 4.0, 14.0, 9.0], [0.0, 0.0, 5.0, 5.0]])
    assert torch.allclose(resample_roi(roi, boxes, boxes, 6), roi, atol=1e-6)
    # a full mask on box [4, 4, 7, 7] (pixels 4..7), seen on the grid of [0, 0, 15, 15] (16 px, 8 bins
    # of 2 px, centres at 1, 3, ..., 15): bins whose centre lies in [4, 8] are 1
    out = resample_roi(torch.ones(1, 4, 4), torch.tensor([[4.0, 4.0, 7.0, 7.0]]),
                       torch.tensor([[0.0, 0.0, 15.0, 15.0]]), 8)
    inside = torch.tensor([0, 0, 1, 1, 0, 0, 0, 0], dtype=torch.float32)
    assert torch.allclose(out[0], inside[:, None] * inside[None, :])


def test_blender_equals_a_hand_computation():
    g = torch.Generator().manual_seed(2)
    bases = torch.randn(1, 3, 4, 4, generator=g)
    att = torch.randn(1, 3, 4, 4, generator=g)  # A = M: the upsampling is the identity
    want = torch.zeros(4, 4)
    for i in range(4):
        for j in range(4):
            e = [math.exp(float(att[0, k, i, j])) for k in range(3)]
            want[i, j] = sum(e[k] / sum(e) * float(bases[0, k, i, j]) for k in range(3))
    assert torch.allclose(blend(bases, att)[0], want, atol=1e-5)
    # a 1 × 1 attention is constant over the RoI: a fixed convex combination of the bases
    att1 = torch.tensor([0.0, math.log(3.0), -50.0]).view(1, 3, 1, 1)
    assert torch.allclose(blend(bases, att1)[0], 0.25 * bases[0, 0] + 0.75 * bases[0, 1], atol=1e-5)


def test_paste_of_a_full_roi_mask_is_the_box():
    boxes = torch.tensor([[2.0, 1.0, 9.0, 4.0], [0.0, 0.0, 15.0, 11.0]])
    pasted = paste_masks(torch.ones(2, 7, 7), boxes, (12, 16))
    assert torch.allclose(pasted, crop_to_boxes(torch.ones(2, 12, 16), boxes), atol=1e-6)


# ------------------------------------------------------------------------------ B2Inst

def test_boundary_score_is_one_for_identical_maps_and_matches_numpy():
    g = torch.Generator().manual_seed(3)
    a = (torch.rand(3, 9, 9, generator=g) > 0.6).float()
    assert torch.allclose(boundary_score(a, a), torch.ones(3))
    assert torch.allclose(boundary_score(torch.zeros(5, 5), torch.zeros(5, 5)), torch.tensor(1.0))
    p = torch.rand(3, 9, 9, generator=g)
    pn, an = p.double().numpy(), a.double().numpy()
    for eps in (1.0, 1e-6):
        want = (2 * (pn * an).sum((1, 2)) + eps) / ((pn ** 2).sum((1, 2)) + (an ** 2).sum((1, 2)) + eps)
        assert np.allclose(boundary_score(p, a, eps).numpy(), want, rtol=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        boundary_score(p, a[:2])


def test_per_instance_boundaries_equal_instance_boundaries_of_each_mask():
    masks = torch.stack([_disc(5, 5, 4, 12), _disc(6, 7, 5, 12), torch.ones(12, 12, dtype=torch.bool),
                         torch.zeros(12, 12, dtype=torch.bool)])
    got = per_instance_boundaries(masks)
    for m, b in zip(masks, got):
        assert torch.equal(b, instance_boundaries(m[None]))


def test_boundary_basis_target_is_instance_boundaries():
    img, target = _touching_discs()
    net = BasisInstanceNet(boundary_basis=True, seed=0)
    t = net.build_targets([target, {**target, "masks": target["masks"][:1], "boxes": target["boxes"][:1],
                                    "labels": target["labels"][:1]}], (SIZE, SIZE))
    assert t["boundary"].shape == (2, 1, SIZE, SIZE)
    assert torch.equal(t["boundary"][0, 0], instance_boundaries(target["masks"]))
    assert torch.equal(t["boundary"][1, 0], instance_boundaries(target["masks"][:1]))


# ------------------------------------------------------------------------------ the model

@pytest.mark.parametrize("masks,boundary,scoring", CONFIGS)
def test_output_shapes(masks, boundary, scoring):
    net = BasisInstanceNet(masks=masks, boundary_basis=boundary, mask_scoring=scoring, num_prototypes=8, seed=0)
    with torch.no_grad():
        out = net(torch.rand(2, 3, 48, 40))  # not multiples of 32: padded inside, cropped back
    h, w = 12, 10
    assert out["heatmap"].shape == (2, 1, h, w)
    assert out["size"].shape == out["offset"].shape == (2, 2, h, w)
    assert out["instance_features"].shape == out["features"].shape == (2, 64, h, w)
    n_bases = (8 if masks == "yolact" else 4) + boundary
    assert out["bases"].shape == (2, n_bases, h, w)
    assert ("boundary" in out) == boundary and (not boundary or out["boundary"].shape == (2, 1, h, w))
    if masks == "yolact":
        assert float(out["bases"].detach().min()) >= 0  # ReLU prototypes
    with torch.no_grad():
        params = net._instance_params(out, torch.tensor([0, 1, 1]), torch.tensor([0, 5, 119]))
    assert params.shape == ((3, n_bases) if masks == "yolact" else (3, n_bases, 14, 14))
    if masks == "yolact":
        assert float(params.abs().max()) <= 1  # tanh coefficients


def test_switches_off_leave_their_parameters_out():
    names = lambda net: {n.split(".")[0] for n, _ in net.named_parameters()}  # noqa: E731
    base = names(BasisInstanceNet(seed=0))
    both = names(BasisInstanceNet(boundary_basis=True, mask_scoring=True, seed=0))
    assert not base & {"boundary_out", "boundary_param_out", "scoring_head"}
    assert both - base == {"boundary_out", "boundary_param_out", "scoring_head"}
    with pytest.raises(ValueError, match="yolact"):
        BasisInstanceNet(masks="solo")


def test_ablation_arms_share_their_initial_weights():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    arms = [BasisInstanceNet(masks=m, boundary_basis=b, mask_scoring=s, seed=7)
            for m in ("yolact", "blendmask") for b in (False, True) for s in (False, True)]
    assert torch.equal(torch.rand(3), before)  # seeded construction leaves the caller's RNG alone
    ref = arms[0].state_dict()
    for net in arms[1:]:
        sd = net.state_dict()
        shared = [k for k in sd if k.split(".")[0] in ("backbone", "fusion", "heatmap_head", "size_head",
                                                       "offset_head", "instance_tower", "basis_tower")]
        assert len(shared) > 50 and all(torch.equal(sd[k], ref[k]) for k in shared)
        if net.masks == "yolact":  # the mask branch's own outputs too, within a branch
            assert torch.equal(sd["basis_out.weight"], ref["basis_out.weight"])
    yb, yb2 = arms[3].state_dict(), arms[2].state_dict()  # boundary part identical whether scoring is on or not
    assert torch.equal(yb["boundary_out.weight"], yb2["boundary_out.weight"])
    other = BasisInstanceNet(seed=8).state_dict()
    assert not torch.equal(other["fusion.smooth.0.weight"], ref["fusion.smooth.0.weight"])


@pytest.mark.parametrize("masks", ["yolact", "blendmask"])
def test_a_few_steps_lower_the_loss_on_two_touching_discs(masks):
    img, target = _touching_discs()
    net = BasisInstanceNet(masks=masks, boundary_basis=True, mask_scoring=True, num_prototypes=8, seed=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    totals = []
    for _ in range(6):
        losses = net(img, [target])
        assert set(losses) == {"heatmap", "size", "offset", "mask", "boundary", "mask_iou", "boundary_score"}
        total = sum(losses.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert all(math.isfinite(t) for t in totals)
    assert totals[-1] < 0.8 * totals[0], totals


def test_scoring_boxes_at_the_centres_are_the_decoded_boxes():
    img, target = _touching_discs()
    net = BasisInstanceNet(mask_scoring=True, num_prototypes=4, seed=0)
    with torch.no_grad():
        out = net(img)
        cells = centernet_targets(target["masks"])["indices"]
        det = decode_centernet(out["heatmap"], out["size"], out["offset"], top_k=256)
        order = det["indices"][0].argsort()
        decoded = det["boxes"][0][order][cells]  # every cell is among the top 256 of a 16 × 16 map
        got = net._boxes_at(out, torch.zeros_like(cells), cells)
    assert torch.allclose(got, decoded.clamp(0, SIZE - 1), atol=1e-5)
    for boxes in ("gt", "predicted"):
        net = BasisInstanceNet(mask_scoring=True, num_prototypes=4, score_train_boxes=boxes, seed=0)
        losses = net(img, [target])
        assert 0 <= losses["mask_iou"].item() <= 1 and 0 <= losses["boundary_score"].item() <= 1
    with pytest.raises(ValueError, match="score_train_boxes"):
        BasisInstanceNet(score_train_boxes="proposals")


def test_loss_handles_an_image_without_instances():
    img, target = _touching_discs()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, SIZE, SIZE, dtype=torch.uint8)}
    net = BasisInstanceNet(boundary_basis=True, mask_scoring=True, num_prototypes=4, seed=0)
    losses = net(img, [empty])
    assert losses["mask"].item() == 0 and losses["boundary"].item() > 0
    sum(losses.values()).backward()
    losses = net(torch.cat([img, img]), [target, empty])  # mixed batch
    assert all(math.isfinite(v.item()) for v in losses.values())
    with pytest.raises(ValueError, match="masks must be"):
        net(img, [{**target, "masks": target["masks"][:, :10]}])


@pytest.mark.parametrize("masks,boundary,scoring", [CONFIGS[1], CONFIGS[3], CONFIGS[2]])
def test_predict_returns_at_most_top_k_detections_with_masks_in_0_1(masks, boundary, scoring):
    img, _ = _touching_discs()
    net = BasisInstanceNet(masks=masks, boundary_basis=boundary, mask_scoring=scoring, num_prototypes=4, seed=0)
    net.train()
    results = net.predict(torch.cat([img, img]), score_threshold=0.0, top_k=7)
    assert net.training  # mode restored
    assert len(results) == 2
    for r in results:
        n = len(r["scores"])
        assert n == 7  # 256 cells, at least 7 peaks; all above a threshold of 0
        assert r["boxes"].shape == (n, 4) and r["labels"].shape == (n,) and r["masks"].shape == (n, SIZE, SIZE)
        assert float(r["masks"].min()) >= 0 and float(r["masks"].max()) <= 1
        assert torch.all(r["scores"][:-1] >= r["scores"][1:])
        assert torch.all(r["boxes"][:, 2] >= r["boxes"][:, 0]) and float(r["boxes"].max()) <= SIZE - 1
        outside = crop_to_boxes(torch.ones_like(r["masks"]), r["boxes"]) == 0
        assert not r["masks"][outside].any()
        if scoring:
            assert torch.allclose(r["scores"], r["centre_scores"] * r["mask_iou"] * r["boundary_score"])
        if masks == "yolact":
            assert r["coefficients"].shape == (n, 4 + boundary)
        else:
            assert r["attention"].shape == (n, 4 + boundary, 14, 14)
    assert len(net.predict(img, score_threshold=1.0)[0]["scores"]) == 0


def test_on_a_real_nuclei_crop():
    """DSB2018 through the course's dataset (tv_tensors targets as they come), a 64 × 64 crop."""
    from course_lib.data import Nuclei
    from course_lib.data.instances import instance_target

    from .conftest import require_dataset

    require_dataset("nuclei")
    image, target = Nuclei("train")[0]
    ids = torch.zeros(target["masks"].shape[-2:], dtype=torch.int64)
    for i, m in enumerate(target["masks"]):
        ids[m.bool()] = i + 1
    crop = instance_target(ids[:SIZE, :SIZE])  # instances cut by the crop keep their visible part
    assert len(crop["boxes"]) > 0
    net = BasisInstanceNet(boundary_basis=True, mask_scoring=True, num_prototypes=4, seed=0)
    t = net.build_targets([crop], (SIZE, SIZE))
    assert torch.equal(t["boundary"][0, 0], instance_boundaries(crop["masks"]))
    losses = net(image[None, :, :SIZE, :SIZE], [crop])
    assert all(math.isfinite(v.item()) for v in losses.values())


def test_images_as_a_list_or_uint8_and_bad_images():
    net = BasisInstanceNet(num_prototypes=4, seed=0).eval()
    img = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        a = net(img)["heatmap"]
        b = net([im.float() / 255 for im in img])["heatmap"]
    assert torch.allclose(a, b)
    with pytest.raises(ValueError, match="same size"):
        net([torch.rand(3, 32, 32), torch.rand(3, 32, 40)])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        net(torch.rand(1, 1, 32, 32))
    with pytest.raises(ValueError, match="targets for a batch"):
        net(img, [])


def test_predicting_detector_trains_and_scores_through_the_detection_interface():
    """PredictingDetector: losses with targets, predict() in eval mode, so evaluate_instances scores it;
    keep_key="centre_scores" keeps what the detector found, whatever the rescoring."""
    from course_lib.detection import PredictingDetector, detection_quality, evaluate_instances

    img, target = _touching_discs()
    net = BasisInstanceNet(boundary_basis=True, mask_scoring=True, num_prototypes=4, seed=0)
    model = PredictingDetector(net, score_threshold=0.01).train()
    losses = model([img[0]], [target])
    assert set(losses) == {"heatmap", "size", "offset", "mask", "boundary", "mask_iou", "boundary_score"}
    with pytest.raises(ValueError, match="needs targets"):
        model([img[0]])
    # pixel-edge boxes (x2 + 1, as the detection transforms give) are replaced by the masks' own boxes
    edge_boxes = {**target, "boxes": target["boxes"] + torch.tensor([0.0, 0.0, 1.0, 1.0])}
    torch.manual_seed(0)
    a = model([img[0]], [edge_boxes])
    torch.manual_seed(0)
    b = model.model(img, [target])
    assert all(torch.equal(a[k], b[k]) for k in a)
    model.eval()
    (out,) = model([img[0]])
    with torch.no_grad():
        (direct,) = net.predict(img, score_threshold=0.01)
    assert torch.equal(out["scores"], direct["scores"]) and torch.equal(out["masks"], direct["masks"])
    assert bool((out["scores"] <= out["centre_scores"]).all())
    dataset = [(img[0], {k: target[k] for k in ("masks", "labels")})]
    m = evaluate_instances(model, dataset, torch.device("cpu"), progress=False, keep_key="centre_scores",
                           score_threshold=0.01)
    assert 0 <= m["AP"] <= 1 and m["images"] == 1
    # fp32 as `out` was computed: on a CPU with native bf16 the default precision would be bf16, whose
    # slightly different scores can move a detection across the threshold
    q = detection_quality(model, dataset, torch.device("cpu"), keys=("scores", "centre_scores", "mask_iou"),
                          precision="fp32")
    n = len(out["scores"])
    assert set(q) == {"iou", "image", "scores", "centre_scores", "mask_iou"} and all(len(v) == n for v in q.values())
    assert np.allclose(q["scores"], out["scores"].numpy()) and bool(((q["iou"] >= 0) & (q["iou"] <= 1)).all())
    with pytest.raises(KeyError, match="attention"):
        detection_quality(model, dataset, torch.device("cpu"), keys=("attention",))
    assert list(model.state_dict()) == [f"model.{k}" for k in net.state_dict()]
    with pytest.raises(TypeError, match="no predict"):
        PredictingDetector(torch.nn.Linear(2, 2))


def test_b2inst_arms_are_the_four_switch_combinations():
    from course_lib.models import B2INST_ARMS

    assert list(B2INST_ARMS) == ["base", "boundary", "scoring", "both"]
    assert {(a["boundary_basis"], a["mask_scoring"]) for a in B2INST_ARMS.values()} == \
        {(False, False), (True, False), (False, True), (True, True)}


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
@pytest.mark.parametrize("masks", ["yolact", "blendmask"])
def test_basis_model_trains_at_the_notebooks_crop(profile, masks):
    """Notebook 11's models at its CFG crop and backbone for the profile, with every part switched
    on (the gpu plan's shape check for them: they take images and targets, which
    course_lib.gpu_plan does not model). Two images stand for the batch: finite losses, a
    gradient for every parameter."""
    from course_lib.gpu_plan import notebook_cfg

    cfg = notebook_cfg("11", profile)
    h, w = cfg["crop"]
    r = min(h, w) / 8
    discs = torch.stack([_disc(h / 2, w / 2 - r, r, size=max(h, w))[:h, :w],
                         _disc(h / 2, w / 2 + r, r, size=max(h, w))[:h, :w]])
    discs[1] &= ~discs[0]
    target = {"boxes": masks_to_boxes(discs), "labels": torch.ones(2, dtype=torch.int64), "masks": discs.to(torch.uint8)}
    net = BasisInstanceNet(masks=masks, backbone=cfg["backbone"], boundary_basis=True, mask_scoring=True, seed=0)
    losses = net(torch.rand(2, 3, h, w), [target, target])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in net.parameters())
