
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors

from course_lib import data as D
from course_lib.runtime import get_profile
from tests.conftest import require_dataset


# ---------------------------------------------------------------- real datasets

def test_camvid_splits_items_and_labels():
    require_dataset("camvid")
    sizes = {s: len(D.CamVid(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    ds = D.CamVid("train")
    image, mask = ds[0]
    assert isinstance(image, tv_tensors.Image) and image.dtype == torch.uint8 and image.shape == (3, 360, 480)
    assert isinstance(mask, tv_tensors.Mask) and mask.dtype == torch.int64 and mask.shape == (360, 480)
    values = set(torch.unique(mask).tolist())
    assert values <= set(range(11)) | {255}
    assert len(ds.classes) == 11 and len(ds.palette) == 11 and ds.classes[2] == "Pole"
    # upstream void (11) is read as 255 and nothing else is lost
    raw = np.array(Image.open(ds.items[0][1]))
    assert int((raw == 11).sum()) == int((mask == 255).sum())


def test_camvid_accepts_png_and_jpg(tmp_path):
    root = tmp_path / "camvid"
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train" / "a.png")
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train" / "b.jpg")
    for n in "ab":
        Image.fromarray(np.full((4, 6), 11, np.uint8)).save(root / "trainannot" / f"{n}.png")
    (root / "train.txt").write_text("train/a.png trainannot/a.png\ntrain/b.png trainannot/b.png\n")
    ds = D.CamVid("train", root=tmp_path)
    assert [p.suffix for p, _ in ds.items] == [".png", ".jpg"]
    assert torch.all(ds[1][1] == 255)


def _broken_camvid(tmp_path, mask: np.ndarray, image_size=(4, 6)):
    root = tmp_path / "camvid"
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(root / "train" / "x.png")
    Image.fromarray(mask).save(root / "trainannot" / "x.png")
    (root / "train.txt").write_text("train/x.png trainannot/x.png\n")
    return D.CamVid("train", root=tmp_path)


def test_bad_class_id_names_file(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    mask[0, 0] = 17
    with pytest.raises(ValueError, match=r"x\.png.*\[17\]"):
        _broken_camvid(tmp_path, mask)[0]


def test_size_mismatch_names_both_files(tmp_path):
    with pytest.raises(ValueError, match=r"\(4, 6\).*\(5, 6\)"):
        _broken_camvid(tmp_path, np.zeros((5, 6), np.uint8))[0]


def test_unreadable_file_names_file(tmp_path):
    ds = _broken_camvid(tmp_path, np.zeros((4, 6), np.uint8))
    ds.items[0][0].write_bytes(b"this is not a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*x\.png"):
        ds[0]


def test_membrane():
    require_dataset("membrane")
    train, test = D.Membrane("train"), D.Membrane("test")
    assert len(train) == 30 and len(test) == 30
    image, mask = train[0]
    assert image.shape == (1, 512, 512) and image.dtype == torch.uint8
    assert set(torch.unique(mask).tolist()) == {0, 1}
    assert 0.1 < float((mask == 1).float().mean()) < 0.4  # membranes are the thin minority
    assert test[0][1] is None


def test_nuclei_split_is_fixed_and_disjoint():
    require_dataset("nuclei")
    splits = {s: D.Nuclei(s).names for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 664
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    assert D.Nuclei("val").names == splits["val"]
    image, target = D.Nuclei("val")[0]
    n = len(target["labels"])
    assert target["masks"].shape == (n, *image.shape[-2:]) and target["masks"].dtype == torch.uint8
    assert target["boxes"].format.value == "XYXY" and torch.all(target["labels"] == 1)
    x0, y0, x1, y1 = target["boxes"][0].tolist()
    ys, xs = torch.nonzero(target["masks"][0], as_tuple=True)
    assert (x0, y0, x1, y1) == (xs.min().item(), ys.min().item(), xs.max().item(), ys.max().item())


def test_tiny_coco_through_torchvision_wrapper():
    require_dataset("tiny_coco")
    ds = D.TinyCOCO()
    assert len(ds) == 16
    total = 0
    for i in range(len(ds)):
        image, target = ds[i]
        if "masks" in target:
            assert target["masks"].shape[0] == target["boxes"].shape[0] == target["labels"].shape[0]
            assert target["masks"].shape[-2:] == (image.height, image.width)
            total += len(target["labels"])
    assert total == 197


def test_penn_fudan_reader_on_a_built_folder(tmp_path):
    root = tmp_path / "penn_fudan"
    (root / "PNGImages").mkdir(parents=True)
    (root / "PedMasks").mkdir()
    ids = np.zeros((20, 30), np.uint8)
    ids[2:10, 3:8], ids[5:15, 20:25] = 1, 2
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "PNGImages" / "FudanPed00001.png")
    Image.fromarray(ids).save(root / "PedMasks" / "FudanPed00001_mask.png")
    image, target = D.PennFudan(root=tmp_path)[0]
    assert target["boxes"].tolist() == [[3, 2, 7, 9], [20, 5, 24, 14]]


def test_voc_absent_gives_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC 2012 not found"):
        D.voc_segmentation("train", root=tmp_path)


# ---------------------------------------------------------------- synthetic + fallback

def test_shapes_is_deterministic_and_consistent():
    a, b = D.Shapes(6, size=(48, 64), seed=3), D.Shapes(6, size=(48, 64), seed=3)
    for i in range(6):
        (ia, ma), (ib, mb) = a[i], b[i]
        assert torch.equal(ia, ib) and torch.equal(ma, mb)
    assert not torch.equal(a[0][0], D.Shapes(6, size=(48, 64), seed=4)[0][0])
    image, target = D.Shapes(6, size=(48, 64), seed=3, mode="instance")[2]
    sem = a[2][1]
    union = torch.zeros_like(sem)
    for m, lab in zip(target["masks"], target["labels"]):
        union[m.bool()] = lab
    assert torch.equal(union, sem)  # instance masks paint exactly the semantic map
    with pytest.raises(IndexError):
        a[6]


def test_semantic_dataset_falls_back_only_in_smoke(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    ds = D.semantic_dataset("camvid", "train", get_profile("smoke"))
    assert isinstance(ds, D.Shapes)
    assert "using the synthetic Shapes dataset" in capsys.readouterr().out
    with pytest.raises(D.DatasetNotFoundError):
        D.semantic_dataset("camvid", "train", get_profile("cpu"))


# ---------------------------------------------------------------- joint augmentation

def test_train_transforms_keep_image_and_mask_aligned():
    """Image pixels encode their own class, so any misalignment (a flip applied to one
    but not the other, a different crop) shows up as disagreement."""
    torch.manual_seed(0)
    mask = torch.zeros(60, 80, dtype=torch.int64)
    mask[:30, 50:], mask[30:, :20], mask[40:, 20:] = 1, 2, 3  # asymmetric under flips
    image = tv_tensors.Image(mask.to(torch.uint8).expand(3, -1, -1).clone() * 60)
    for crop in (None, (32, 40)):
        _check_alignment(image, mask, D.train_transforms((48, 64), scale=(0.5, 2.0), color=False, crop=crop), crop or (48, 64))


def _check_alignment(image, mask, tf, out_size):
    telling = 0  # draws in which a flipped image would disagree with the mask
    for _ in range(20):
        x, m = tf(image, tv_tensors.Mask(mask.clone()))
        assert x.shape == (3, *out_size) and x.dtype == torch.float32
        assert m.shape == out_size and m.dtype == torch.int64
        assert set(torch.unique(m).tolist()) <= {0, 1, 2, 3, 255}  # nearest: no new ids
        pixel = (D.denormalize(x)[0] * 255 / 60).round()
        # bilinear (image) and nearest (mask) resampling differ only near region edges
        mf = m[None, None].float()
        interior = (F.max_pool2d(mf, 5, 1, 2) == -F.max_pool2d(-mf, 5, 1, 2))[0, 0] & (m != 255)
        interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False  # a region
        # edge just outside a crop is mixed into the crop's last row by bilinear resampling only
        agree = (pixel[interior] == m[interior]).float().mean()
        assert agree > 0.99, agree
        flipped = (pixel.flip(-1)[interior] == m[interior]).float().mean()
        telling += int(flipped < 0.9)
    # A 2x zoom into one region can be nearly mirror-symmetric; most draws must not be, or the
    # agreement above would not catch an image flipped without its mask.
    assert telling >= 10, telling


def test_padding_uses_the_ignore_value():
    torch.manual_seed(1)
    tf = D.train_transforms((32, 32), scale=(0.5, 0.5), hflip=False, color=False)
    image = tv_tensors.Image(torch.full((3, 32, 32), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(32, 32, dtype=torch.int64))
    _, m = tf(image, mask)
    assert (m == 255).float().mean() == pytest.approx(0.75, abs=0.05)  # half size → 3/4 padded
    assert set(torch.unique(m).tolist()) == {1, 255}


def test_rescale_is_relative_to_the_target_size_on_non_square_images():
    """scale=(r, r) rescales a (H, W) image by exactly r: 1 leaves it whole (no padding), 0.5
    pads three quarters. torchvision's ScaleJitter takes its target size as (width, height);
    given (H, W) it would shrink a 4:3 image by 0.75 first."""
    image = tv_tensors.Image(torch.full((3, 48, 64), 200, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.ones(48, 64, dtype=torch.int64))
    torch.manual_seed(0)
    for r, padded in ((1.0, 0.0), (0.5, 0.75), (2.0, 0.0)):
        tf = D.train_transforms((48, 64), scale=(r, r), hflip=False, color=False)
        x, m = tf(image, mask)
        assert tuple(m.shape) == (48, 64) and tuple(x.shape) == (3, 48, 64)
        assert (m == 255).float().mean() == pytest.approx(padded, abs=0.02), r
    same = D.train_transforms((48, 64), scale=(1, 1), color=False)
    for _ in range(10):
        _, m = same(image, tv_tensors.Mask(torch.arange(48 * 64).view(48, 64) % 7))
        ref = torch.arange(48 * 64).view(48, 64) % 7
        assert torch.equal(m, ref) or torch.equal(m, ref.flip(-1))


def test_eval_transforms_keep_full_resolution():
    image = tv_tensors.Image(torch.zeros(3, 36, 48, dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.zeros(36, 48, dtype=torch.int64))
    x, m = D.eval_transforms()(image, mask)
    assert x.shape == (3, 36, 48) and torch.equal(m, mask)


def test_to_model_input_on_plain_batches():
    batch = torch.full((2, 3, 4, 5), 255, dtype=torch.uint8)  # torch.stack of Images is a plain tensor
    x = D.to_model_input()(batch)
    assert x.dtype == torch.float32
    torch.testing.assert_close(D.denormalize(x), torch.ones(2, 3, 4, 5))


def test_semantic_loaders_smoke_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    prof = get_profile("smoke")
    L = D.semantic_loaders("camvid", prof, (32, 48), torch.Generator().manual_seed(0))
    x, y = next(iter(L.train))
    assert x.shape == (prof.batch_size, 3, 32, 48) and y.shape == (prof.batch_size, 32, 48)
    cropped = D.semantic_loaders("camvid", prof, (32, 48), crop=(16, 24))
    assert next(iter(cropped.train))[0].shape[-2:] == (16, 24)
    assert L.num_classes == 4 and len(L.class_weights) == 4
    xv, yv = next(iter(L.val))
    assert xv.dtype == torch.float32 and yv.shape[-2:] == xv.shape[-2:]


@pytest.mark.realdata
def test_in_memory_cache_gives_the_same_batches(camvid_dir):
    """Decoding once (InMemory) must not change a single augmented pixel or label."""
    from torch.utils.data import Subset

    from course_lib.data import InMemory
    from course_lib.runtime import get_profile

    size, crop = (96, 128), (64, 96)
    plain = Subset(D.CamVid("train", transforms=D.train_transforms(size, crop=crop)), range(6))
    cached = InMemory(Subset(D.CamVid("train"), range(6)), size, D.train_transforms(size, crop=crop), progress=False)
    assert cached.nbytes == 6 * (3 + 1) * 96 * 128  # uint8 images and masks
    for i in range(6):
        torch.manual_seed(i)
        a = plain[i]
        torch.manual_seed(i)
        b = cached[i]
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and b[1].dtype == torch.int64
    assert torch.equal(cached.read_mask(2), D.CamVid("train").read_mask(2))  # full-resolution labels
    # the loaders built on it: same first batch, same class weights, cached or not
    prof = get_profile("smoke")
    batches = []
    for cache in (False, True):
        L = D.semantic_loaders("camvid", prof, size, torch.Generator().manual_seed(0), crop=crop, cache=cache)
        torch.manual_seed(0)
        batches.append((next(iter(L.train)), next(iter(L.val)), L.class_weights))
    (x0, y0), (vx0, vy0), w0 = batches[0]
    (x1, y1), (vx1, vy1), w1 = batches[1]
    assert torch.equal(x0, x1) and torch.equal(y0, y1) and torch.equal(vx0, vx1) and torch.equal(vy0, vy1)
    assert torch.equal(w0, w1) and vy1.shape[-2:] == (360, 480)


def test_in_memory_refuses_float_images():
    from course_lib.data import InMemory

    float_shapes = D.Shapes(2, size=(16, 16), seed=0, transforms=D.eval_transforms())
    with pytest.raises(TypeError, match="caches uint8 images"):
        InMemory(float_shapes, progress=False)


# ---------------------------------------------------------------- reliability (issue 9)

def _nuclei_folder(tmp_path, mask: np.ndarray, mode: str | None = None):
    root = tmp_path / "nuclei"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.zeros((*mask.shape[:2], 3), np.uint8)).save(root / "images" / "case.png")
    Image.fromarray(mask, mode=mode).save(root / "masks" / "case.png") if mode else \
        Image.fromarray(mask).save(root / "masks" / "case.png")
    return D.Nuclei("train", root=tmp_path)  # one item: it is in train


def _three_blobs(value=255, dtype=np.uint8):
    m = np.zeros((20, 30), dtype)
    m[2:6, 2:6] = m[10:14, 10:14] = m[2:6, 20:26] = value
    return m


@pytest.mark.parametrize("value,dtype", [(255, np.uint8), (65535, np.uint16)])
def test_binary_nuclei_mask_is_not_read_as_one_instance(tmp_path, value, dtype):
    ds = _nuclei_folder(tmp_path, _three_blobs(value, dtype))
    with pytest.raises(ValueError, match=rf"case\.png.*binary.*{value}.*instance-id map.*scipy\.ndimage\.label"):
        ds[0]


def test_bilevel_png_mask_is_refused(tmp_path):
    ds = _nuclei_folder(tmp_path, _three_blobs(1, np.uint8).astype(bool), mode="1")
    with pytest.raises(ValueError, match="binary"):
        ds[0]


def test_real_id_maps_still_read(tmp_path):
    ids = _three_blobs(1)
    ids[10:14, 10:14], ids[2:6, 20:26] = 2, 3
    _, target = _nuclei_folder(tmp_path, ids)[0]
    assert target["masks"].shape == (3, 20, 30)
    one = np.zeros((20, 30), np.uint8)
    one[3:8, 3:8] = 1  # a single instance with id 1 is a valid id map
    assert _nuclei_folder(tmp_path / "b", one)[0][1]["masks"].shape == (1, 20, 30)


def test_rgb_instance_mask_says_single_channel(tmp_path):
    ds = _nuclei_folder(tmp_path, np.stack([_three_blobs(1)] * 3, -1))
    with pytest.raises(ValueError, match=r"case\.png.*\(20, 30, 3\).*single-channel"):
        ds[0]


def _camvid_with_splits(tmp_path, **splits):
    root = tmp_path / "camvid"
    (root / "train").mkdir(parents=True)
    (root / "trainannot").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(root / "train" / "x.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(root / "trainannot" / "x.png")
    for name, text in splits.items():
        (root / f"{name}.txt").write_text(text)
    return root


def test_empty_split_file_is_named(tmp_path):
    _camvid_with_splits(tmp_path, train="\n\n", val="train/x.png trainannot/x.png\n")
    with pytest.raises(ValueError, match=r"train\.txt lists no image/label pairs.*download"):
        D.CamVid("train", root=tmp_path)


def test_empty_val_split_is_not_a_silent_nan(tmp_path):
    _camvid_with_splits(tmp_path, train="train/x.png trainannot/x.png\n", val="")
    with pytest.raises(ValueError, match=r"val\.txt lists no image/label pairs"):
        D.CamVid("val", root=tmp_path)


def test_missing_split_file_says_the_folder_is_incomplete(tmp_path):
    _camvid_with_splits(tmp_path, train="train/x.png trainannot/x.png\n")
    with pytest.raises(FileNotFoundError, match=r"val\.txt.*incomplete.*python -m course_lib\.data camvid"):
        D.CamVid("val", root=tmp_path)


def test_image_folders_without_images_are_named(tmp_path):
    (tmp_path / "membrane" / "train" / "label").mkdir(parents=True)
    (tmp_path / "membrane" / "train" / "label" / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"no images.*membrane/train/image"):
        D.Membrane("train", root=tmp_path)
    (tmp_path / "nuclei" / "masks").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no images.*nuclei/images"):
        D.Nuclei("train", root=tmp_path)


def test_tiny_coco_bad_annotation_file_is_named(tmp_path):
    root = tmp_path / "tiny_coco"
    (root / "train_2017_small").mkdir(parents=True)
    ann = root / "instances_train2017_small.json"
    for text in ("{not json", "", '{"images": []}'):
        ann.write_text(text)
        with pytest.raises(ValueError, match=r"instances_train2017_small\.json.*(download|COCO)"):
            D.TinyCOCO(root=tmp_path)


@pytest.mark.parametrize("fractions", [(70, 15, 15), (0.9, 0.3, -0.2), (0.5, 0.5), (0.6, 0.2, float("nan"))])
def test_seeded_split_fractions_are_validated(fractions):
    with pytest.raises(ValueError, match="fractions"):
        D.seeded_split([str(i) for i in range(100)], "train", fractions=fractions)


def test_instance_target_needs_an_integer_id_map():
    with pytest.raises(ValueError, match="integer"):
        D.instance_target(torch.rand(4, 4))


def test_unknown_semantic_dataset_name_lists_the_choices():
    with pytest.raises(ValueError, match=r"'voc'.*camvid.*membrane"):
        D.semantic_dataset("voc", "train", get_profile("smoke"))
    with pytest.raises(ValueError, match="'CamVid'"):
        D.semantic_loaders("CamVid", get_profile("smoke"), (32, 32))


def test_oversized_image_names_the_file(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = tmp_path / "x.png"
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(path)
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 40 × 60 is over twice the limit
    with pytest.raises(ValueError, match=r"Cannot read image .*x\.png.*decompression bomb"):
        D.io.read_array(path)


def test_recipe_scale_range_is_the_range_every_committed_run_trained_with():
    """The recipe keeps the rescale that the old call ScaleJitter(target_size=(H, W), 0.5–2)
    produced (ScaleJitter takes (W, H)): same output sizes, draw by draw."""
    from torchvision.transforms import v2

    from course_lib.data.transforms import recipe_scale_range

    size = (176, 240)
    assert recipe_scale_range(size) == pytest.approx((0.5 * 176 / 240, 2 * 176 / 240))
    legacy = v2.ScaleJitter(target_size=size, scale_range=(0.5, 2.0))
    recipe = v2.ScaleJitter(target_size=(size[1], size[0]), scale_range=recipe_scale_range(size))
    x = torch.zeros(3, *size)
    for seed in range(300):
        torch.manual_seed(seed)
        a = legacy.make_params([x])["size"]
        torch.manual_seed(seed)
        assert recipe.make_params([x])["size"] == a
