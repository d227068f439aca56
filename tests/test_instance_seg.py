"""Instance segmentation for notebook 10: the Mask R-CNN builder, detection targets and
transforms, masks → instance-id maps, evaluate_instances / fit_detection, and the U-Net +
watershed baseline. Smoke-sized, CPU; real DSB2018 nuclei where the data is present, with
torchvision (masks_to_boxes), pycocotools (via coco_mask_ap) and scipy as oracles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from scipy import ndimage
from torchvision.ops import masks_to_boxes
from torchvision.ops.misc import FrozenBatchNorm2d

from course_lib import engine
from course_lib.boundaries import instance_boundaries
from course_lib.data.detection import collate_detection, detection_transforms, pixel_boxes
from course_lib.data.instances import instance_target, read_id_map
from course_lib.data.io import read_image
from course_lib.detection import (LOSS_KEYS, detection_ious, detections_to_id_map, evaluate_instances, fit_detection,
                                  masks_to_id_map)
from course_lib.instance_metrics import dsb_score
from course_lib.models import UNet, mask_rcnn
from course_lib.watershed import SemanticInstances, three_class_target, three_class_weights, watershed_instances
from tests.conftest import require_dataset
from tests.test_pretrained import hub, server, serve_as_resnet18, weights  # noqa: F401 (fixtures)

CPU = torch.device("cpu")


# ------------------------------------------------------------------------------ helpers

def nuclei_item(prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A real DSB2018 image uint8 [3, H, W] and its instance-id map int64 [H, W]."""
    root = Path(require_dataset("nuclei"))
    (path,) = (root / "masks").glob(f"{prefix}*.png")
    return read_image(root / "images" / path.name), read_id_map(path)


class ItemList(torch.utils.data.Dataset):
    """(image, id map) pairs → (image, detection target) through ``transforms``."""

    def __init__(self, pairs, transforms):
        self.pairs, self.transforms = pairs, transforms

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        image, ids = self.pairs[i]
        return self.transforms(image, instance_target(ids, image_id=i))


def same_partition(a, b) -> bool:
    """Two id maps describe the same instances (ids may differ): background matches and the
    pairs (id in a, id in b) are one-to-one."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    if not np.array_equal(a == 0, b == 0):
        return False
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def two_touching_discs(h: int = 64, w: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    ids = np.zeros((h, w), np.int64)
    ids[(yy - h // 2) ** 2 + (xx - 34) ** 2 <= 15 ** 2] = 1
    ids[((yy - h // 2) ** 2 + (xx - 62) ** 2 <= 15 ** 2) & (ids == 0)] = 2
    return ids


def disc_target(h: int, w: int) -> dict:
    t = instance_target(torch.from_numpy(two_touching_discs(h, w)))
    return {"boxes": pixel_boxes(t["masks"]), "labels": t["labels"], "masks": t["masks"]}


# ------------------------------------------------------------------------------ the builder

def test_mask_rcnn_train_and_eval_shapes():
    torch.manual_seed(0)
    model = mask_rcnn(backbone="resnet10")
    images = [torch.rand(3, 64, 96), torch.rand(3, 64, 96)]
    losses = model(images, [disc_target(64, 96), disc_target(64, 96)])
    assert set(losses) == set(LOSS_KEYS)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("backbone.body.layer1"))
    model.eval()
    with torch.no_grad():
        outs = model([torch.rand(3, 80, 112), torch.rand(3, 50, 70)])
    for out, (h, w) in zip(outs, [(80, 112), (50, 70)]):
        d = len(out["scores"])
        assert out["boxes"].shape == (d, 4) and out["labels"].shape == (d,)
        assert out["masks"].shape == (d, 1, h, w) and out["masks"].dtype == torch.float32
        assert bool(((out["masks"] >= 0) & (out["masks"] <= 1)).all())
        assert bool((out["scores"][:-1] >= out["scores"][1:]).all())


@pytest.mark.parametrize("norm, layer", [("group", nn.GroupNorm), ("batch", nn.BatchNorm2d)])
def test_mask_rcnn_from_scratch_trains_every_parameter_and_normalisation(norm, layer):
    model = mask_rcnn(norm=norm)
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    backbone_norms = [m for m in model.backbone.body.modules() if isinstance(m, layer)]
    # slim: the FPN taps layer1–3, so layer4 is not built into the body: stem + 2 convs × 2 blocks
    # × 3 stages + 2 downsamples
    assert len(backbone_norms) == 1 + 3 * 2 * 2 + 2
    assert all(m.weight.requires_grad for m in backbone_norms)
    slim = sum(p.numel() for p in model.parameters())
    assert 3.5e6 < slim < 4.5e6  # the REFERENCE's slim heads: 3.9 M parameters with ResNet-18



@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_mask_rcnn_trains_at_the_profiles_detection_crop(profile):
    """Notebook 10's Mask R-CNN at the profile's crop (the gpu plan's shape check for it: its
    inputs are lists of images and targets, which course_lib.gpu_plan does not model); two
    images stand for the batch, one optimiser step, every parameter gets a gradient."""
    from course_lib.runtime import PROFILES

    h, w = PROFILES[profile].detection_crop
    torch.manual_seed(0)
    model = mask_rcnn(backbone="resnet18", norm="group", slim=True)
    losses = model([torch.rand(3, h, w), torch.rand(3, h, w)], [disc_target(h, w), disc_target(h, w)])
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None for p in model.parameters())

def test_mask_rcnn_refuses_what_cannot_work():
    with pytest.raises(ValueError, match="norm='batch'"):
        mask_rcnn(norm="group", pretrained=True)  # raised before any download
    with pytest.raises(ValueError, match="ImageNet weights"):
        mask_rcnn(backbone="resnet10", norm="batch", pretrained=True)
    with pytest.raises(ValueError, match="norm must be"):
        mask_rcnn(norm="frozen")
    with pytest.raises(ValueError, match="both min_size and max_size"):
        mask_rcnn(min_size=256)
    with pytest.raises(ValueError, match="one size per FPN level"):
        mask_rcnn(anchor_sizes=(8, 16, 32))


def test_mask_rcnn_pretrained_goes_through_the_course_weights(hub, server, weights, monkeypatch):  # noqa: F811
    base, www, requested = server
    state, data, prefix = weights
    name = f"resnet18-{prefix}.pth"
    (www / name).write_bytes(data)
    serve_as_resnet18(monkeypatch, base, name)  # a local server: no internet
    model = mask_rcnn(norm="batch", pretrained=True)
    body = model.backbone.body
    assert requested == [f"/{name}"] and (hub / name).exists()
    assert torch.equal(body.conv1.weight, state["conv1.weight"])
    assert torch.equal(body.layer3[1].bn2.running_var, state["layer3.1.bn2.running_var"])
    assert isinstance(body.bn1, nn.BatchNorm2d) and all(p.requires_grad for p in model.parameters())


def test_mask_rcnn_detections_per_img_is_honoured():
    torch.manual_seed(0)
    assert mask_rcnn().roi_heads.detections_per_img == 400
    model = mask_rcnn(backbone="resnet10", detections_per_img=7).eval()
    model.roi_heads.score_thresh = 0.0  # an untrained model: keep every box that survives NMS
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])[0]
    assert len(out["scores"]) == 7


def test_mask_rcnn_keeps_images_at_their_scale_unless_told():
    images = [torch.rand(3, 100, 140)]
    native = mask_rcnn(backbone="resnet10").eval()
    assert native.transform(images)[0].image_sizes == [(100, 140)]
    rescaled = mask_rcnn(backbone="resnet10", min_size=200, max_size=400).eval()
    assert rescaled.transform(images)[0].image_sizes == [(200, 280)]
    anchors = native.rpn.anchor_generator.sizes
    assert [a[0] for a in anchors] == [8, 16, 32, 64]
    assert [a[0] for a in mask_rcnn(slim=False).rpn.anchor_generator.sizes] == [8, 16, 32, 64, 128]


# ------------------------------------------------------------------------------ targets and transforms

def test_target_round_trip_on_real_nuclei():
    image, ids = nuclei_item("61a15ccbfebb")
    out_image, target = detection_transforms(train=False)(image, instance_target(ids))
    assert out_image.dtype == torch.float32 and float(out_image.max()) <= 1.0
    masks = target["masks"]
    assert masks.dtype == torch.uint8 and masks.shape[1:] == ids.shape
    assert target["labels"].dtype == torch.int64 and target["boxes"].dtype == torch.float32
    # boxes: torchvision's masks_to_boxes with the max edge one pixel further
    assert torch.equal(target["boxes"], masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.equal(masks_to_id_map(masks), ids)  # ids here are 1..N in order
    scores = torch.rand(len(masks))
    as_detections = {"masks": masks[:, None].float() * 0.9, "scores": scores}
    assert same_partition(detections_to_id_map(as_detections, score_threshold=0.0), ids)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_crop_and_flips_keep_masks_and_boxes_consistent(seed):
    _, ids = nuclei_item("07fb37aafa66")  # 520 × 696, 313 nuclei
    # the image *is* the id map (high byte, low byte, 0), so whatever geometry the transform
    # applies to the image must have been applied to the masks too
    painted = torch.stack([ids // 256, ids % 256, torch.zeros_like(ids)]).to(torch.uint8)
    from torchvision import tv_tensors

    torch.manual_seed(seed)
    image, target = detection_transforms((128, 160), color=False)(tv_tensors.Image(painted), instance_target(ids))
    assert image.shape == (3, 128, 160)
    masks = target["masks"]
    assert len(masks) == len(target["labels"]) == len(target["boxes"]) > 0
    assert bool((masks.flatten(1) != 0).any(1).all())  # no instance cropped to nothing
    assert torch.equal(target["boxes"], pixel_boxes(masks))
    assert bool((target["boxes"][:, 2:] > target["boxes"][:, :2]).all())
    from_image = torch.round(image[0] * 255).long() * 256 + torch.round(image[1] * 255).long()
    assert same_partition(masks_to_id_map(masks), from_image)


def test_detection_transforms_and_collate_refuse_bad_input():
    with pytest.raises(ValueError, match="crop must be"):
        detection_transforms(None, train=True)
    with pytest.raises(ValueError, match="crop=None"):
        detection_transforms((64, 64), train=False)
    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])
    images, targets = collate_detection([(torch.zeros(3, 4, 5), {"a": 1}), (torch.zeros(3, 6, 7), {"a": 2})])
    assert [im.shape for im in images] == [(3, 4, 5), (3, 6, 7)] and targets == [{"a": 1}, {"a": 2}]


def test_masks_to_id_map_highest_score_wins():
    masks = torch.zeros(3, 4, 6, dtype=torch.uint8)
    masks[0, :, :4] = 1
    masks[1, :, 2:] = 1
    masks[2, 0, 0] = 1
    ids = masks_to_id_map(masks, torch.tensor([0.5, 0.9, 0.1]))
    # ranks: mask 1 → 1, mask 0 → 2, mask 2 → 3
    assert ids[1, 2:].eq(1).all() and ids[1, :2].eq(2).all() and ids[0, 0] == 2
    assert torch.equal(masks_to_id_map(masks)[1], torch.tensor([1, 1, 2, 2, 2, 2]))
    probs = masks[:, None].float() * torch.tensor([0.9, 0.4, 0.9])[:, None, None, None]
    out = detections_to_id_map({"masks": probs, "scores": torch.tensor([0.8, 0.9, 0.3])}, score_threshold=0.5)
    assert same_partition(out, masks[0])  # mask 1 too faint (no pixel > 0.5), mask 2 scored too low
    with pytest.raises(ValueError, match="binary"):
        masks_to_id_map(probs[:, 0])


# ------------------------------------------------------------------------------ watershed baseline

def test_three_class_target():
    ids = torch.from_numpy(two_touching_discs())
    masks = instance_target(ids)["masks"]
    cls = three_class_target(masks)
    assert torch.equal(cls == 2, instance_boundaries(masks).bool())
    assert torch.equal(cls > 0, ids > 0)
    assert ids[32, 49] == 1 and ids[32, 50] == 2 and bool((cls[32, 49:51] == 2).all())  # both sides of the touching line
    assert torch.equal(three_class_target(torch.zeros(0, 5, 5, dtype=torch.uint8)), torch.zeros(5, 5, dtype=torch.int64))



def test_three_class_weights_are_sqrt_inverse_frequency_with_mean_one():
    masks = instance_target(torch.from_numpy(two_touching_discs()))["masks"]
    item = (torch.zeros(3, *masks.shape[-2:]), {"masks": masks})
    counts = torch.bincount(three_class_target(masks).flatten(), minlength=3).double()
    expected = (counts.sum() / counts).sqrt()
    w = three_class_weights([item, item], items=5)
    assert w.dtype == torch.float32 and w.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(w.double(), expected / expected.mean())
    assert w[2] > w[1] > w[0]  # contour pixels are the fewest, background the most
    with pytest.raises(ValueError, match="no pixels"):
        three_class_weights([item], items=0)

def test_watershed_splits_touching_discs_where_connected_components_merge_them():
    ids = two_touching_discs()
    cls = three_class_target(instance_target(torch.from_numpy(ids))["masks"]).numpy()
    interior, contour = (cls == 1).astype(np.float32), (cls == 2).astype(np.float32)
    _, n_components = ndimage.label(interior + contour > 0.5)
    assert n_components == 1
    split = watershed_instances(interior, contour)
    assert len(np.unique(split[split > 0])) == 2
    # which side gets a contour pixel of the touching line is a tie (both sides have contour
    # probability 1), so not every pixel matches; every IoU with the truth is > 0.95
    assert dsb_score(split, ids)["score"] == 1.0
    # soft probabilities: a blurred copy still splits into the same two discs
    soft_i, soft_c = ndimage.gaussian_filter(interior, 1.0), ndimage.gaussian_filter(contour, 1.0)
    soft = watershed_instances(torch.from_numpy(soft_i), torch.from_numpy(soft_c))
    assert len(np.unique(soft[soft > 0])) == 2


def test_watershed_gives_a_blob_without_marker_its_own_instance():
    interior, contour = np.zeros((20, 20), np.float32), np.zeros((20, 20), np.float32)
    contour[2:4, 2:4] = 0.9  # a tiny nucleus seen only as contour
    interior[10:16, 10:16] = 0.9
    ids = watershed_instances(interior, contour)
    assert len(np.unique(ids[ids > 0])) == 2 and ids[2, 2] != ids[12, 12]
    with pytest.raises(ValueError, match="same shape"):
        watershed_instances(interior, contour[:5])


def test_semantic_instances_answers_like_a_detection_model():
    torch.manual_seed(0)
    model = SemanticInstances(UNet(3, width=4)).eval()
    with pytest.raises(RuntimeError, match="eval"):
        SemanticInstances(UNet(3, width=4)).train()([torch.rand(3, 8, 8)])
    (out,) = model([torch.rand(3, 40, 52)])
    n = len(out["scores"])
    assert out["masks"].shape == (n, 40, 52) and out["masks"].dtype == torch.uint8
    assert int(out["masks"].sum(0).max()) <= 1  # disjoint
    assert out["labels"].tolist() == [1] * n and bool(((out["scores"] >= 0) & (out["scores"] <= 1)).all())


# ------------------------------------------------------------------------------ evaluation and training

class Oracle(nn.Module):
    """Answers with the ground truth of the i-th item, as Mask R-CNN would (float masks [D, 1, H, W])."""

    def __init__(self, dataset):
        super().__init__()
        self.targets, self.calls = [dataset[i][1] for i in range(len(dataset))], 0

    def forward(self, images):
        t = self.targets[self.calls]
        self.calls += 1
        n = len(t["labels"])
        return [{"masks": t["masks"][:, None].float(), "scores": torch.ones(n), "labels": t["labels"],
                 "boxes": t["boxes"]}]


def test_evaluate_instances_of_a_perfect_prediction():
    pairs = [nuclei_item(p) for p in ("2e172afb1f43", "61a15ccbfebb")]
    dataset = ItemList(pairs, detection_transforms(train=False))
    m = evaluate_instances(Oracle(dataset), dataset, CPU, progress=False)
    assert m["AP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(1.0)
    assert m["dsb"] == pytest.approx(1.0) and m["boundary_iou"] == pytest.approx(1.0)
    assert m["matched"] == sum(int(ids.max()) for _, ids in pairs) and m["images"] == 2


def test_fit_detection_records_losses_and_reuses_its_checkpoint(tmp_path, capsys):
    image, ids = nuclei_item("61a15ccbfebb")
    train = ItemList([(image, ids)] * 2, detection_transforms((96, 96)))
    val = ItemList([(image[:, :96, :96], ids[:96, :96])], detection_transforms(train=False))
    loader = torch.utils.data.DataLoader(train, batch_size=2, collate_fn=collate_detection)

    def run(lr=1e-3):
        torch.manual_seed(0)
        model = mask_rcnn(backbone="resnet10")
        opt = torch.optim.AdamW(model.parameters(), lr=lr)
        return fit_detection(model, loader, val, device=CPU, epochs=1, optimizer=opt, schedule="constant",
                             checkpoint=tmp_path / "m.pt",
                             progress=False, precision="fp32", config={"seed": 0})

    history = run()
    (record,) = history.records
    assert set(LOSS_KEYS) <= set(record) and np.isfinite(record["train_loss"])
    assert record["train_loss"] == pytest.approx(sum(record[k] for k in LOSS_KEYS), rel=1e-5)
    assert 0 <= record["val_dsb"] <= 1 and "val_AP50" in record
    state = engine.load_checkpoint(tmp_path / "m.pt")
    assert state["complete"] and state["config"]["seed"] == 0 and state["config"]["loss"] == "detection losses (sum)"
    loaded = len(engine.LOADED)
    again = run()
    assert len(engine.LOADED) == loaded + 1 and again.records == history.records
    assert "Loaded trained weights" in capsys.readouterr().out
    with pytest.raises(engine.CheckpointMismatchError, match="opt_lr"):
        run(lr=1e-4)


class HalfScored(Oracle):
    """The oracle with every detection rescored to 0.4, its "centre_scores" left at 1."""

    def forward(self, images):
        (out,) = super().forward(images)
        return [{**out, "centre_scores": out["scores"], "scores": torch.full_like(out["scores"], 0.4)}]


def test_evaluate_instances_keeps_detections_by_keep_key():
    """A rescored model's low scores still rank (AP unchanged); keep_key decides what enters the id map."""
    dataset = ItemList([nuclei_item("2e172afb1f43")], detection_transforms(train=False))
    by_scores = evaluate_instances(HalfScored(dataset), dataset, CPU, progress=False)
    by_centre = evaluate_instances(HalfScored(dataset), dataset, CPU, progress=False, keep_key="centre_scores")
    assert by_scores["AP"] == pytest.approx(1.0) and by_centre["AP"] == pytest.approx(1.0)
    assert by_scores["dsb"] == 0.0 and by_scores["matched"] == 0  # 0.4 < 0.5: nothing kept
    assert by_centre["dsb"] == pytest.approx(1.0)
    with pytest.raises(KeyError, match="keep_key 'nope'"):
        evaluate_instances(HalfScored(dataset), dataset, CPU, progress=False, keep_key="nope")


def test_smallest_images_picks_the_fewest_pixels_in_dataset_order():
    from PIL import Image

    from course_lib.data import Nuclei
    from course_lib.data.detection import smallest_images

    require_dataset("nuclei")
    ds = Nuclei("val")
    pixels = [Image.open(p).size[0] * Image.open(p).size[1] for p, _ in ds.pairs]
    sub = smallest_images(ds, 5)
    assert sub.indices == sorted(sub.indices) and len(sub) == 5
    assert max(pixels[i] for i in sub.indices) <= min(p for i, p in enumerate(pixels) if i not in sub.indices)
    assert smallest_images(ds, None) is ds and len(smallest_images(ds, 0)) == 0
    with pytest.raises(TypeError, match="no .pairs"):
        smallest_images(sub, 2)


def test_detection_ious_are_each_detections_best_match():
    gt = torch.zeros(2, 6, 8, dtype=torch.uint8)
    gt[0, :2, :4] = 1   # 8 px
    gt[1, 3:, 4:] = 1   # 12 px
    pred = torch.zeros(4, 6, 8, dtype=torch.bool)
    pred[0] = gt[0].bool()             # exact
    pred[1, :2, :2] = True             # half of gt 0: 4 / 8
    pred[2, 3:, 2:] = True             # gt 1 plus 6 px: 12 / 18
    # pred 3 empty
    ious = detection_ious(pred, gt)
    assert torch.allclose(ious, torch.tensor([1.0, 0.5, 12 / 18, 0.0]))
    assert torch.equal(detection_ious(pred, gt, chunk=1), ious)
    assert torch.equal(detection_ious(pred, gt[:0]), torch.zeros(4))
    with pytest.raises(ValueError, match="binary"):
        detection_ious(pred.float(), gt)
