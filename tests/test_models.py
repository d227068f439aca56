import itertools

import pytest
import torch
import torch.nn.functional as F

from course_lib.models import (FCN, PatchClassifier, SegNet, UNet, bilinear_kernel, bilinear_upsampler,
                               convolutionalize, count_parameters, dense_logits, extract_patches,
                               pad_for_centres)

ODD = (97, 131)


def _check_shape_and_grads(model, c_in=3, classes=5):
    x = torch.randn(2, c_in, *ODD)
    out = model(x)
    assert out.shape == (2, classes, *ODD)
    out.square().mean().backward()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert not missing, f"no gradient reached {missing}"
    return frozen


@pytest.mark.parametrize("variant", ["32s", "16s", "8s"])
def test_fcn_shapes_gradients_and_frozen_final_upsampling(variant):
    torch.manual_seed(0)
    model = FCN(5, variant=variant, backbone="resnet10")
    frozen = _check_shape_and_grads(model)
    assert frozen == {"up_final.weight"}  # the final ×8/16/32 bilinear upsampling is fixed
    assert count_parameters(model) > 0


def test_fcn_staged_init_copies_shared_weights_and_skips_start_at_zero():
    torch.manual_seed(0)
    fcn32 = FCN(4, "32s", "resnet10")
    fcn16 = FCN(4, "16s", "resnet10").init_from(fcn32)
    s32, s16 = fcn32.state_dict(), fcn16.state_dict()
    shared = [k for k in s32 if not k.startswith("up_final")]
    assert shared and all(torch.equal(s32[k], s16[k]) for k in shared)
    # zero-initialised skip: at the start FCN-16s' scores are FCN-32s' scores upsampled ×2
    feats = fcn16.backbone(torch.randn(1, 3, 64, 96))
    assert torch.count_nonzero(fcn16.score16(feats[16])) == 0


def test_unet_and_segnet_any_size():
    torch.manual_seed(0)
    _check_shape_and_grads(UNet(5, width=4))
    _check_shape_and_grads(SegNet(5, width=4))
    _check_shape_and_grads(UNet(2, in_channels=1, width=4), c_in=1, classes=2)


def test_segnet_unpools_with_encoder_indices():
    """SegNet's decoder puts values back where the encoder's maxima were."""
    seg = SegNet(2, width=4, stages=1)
    calls = []
    orig = seg.unpool.forward
    seg.unpool.forward = lambda x, idx, output_size=None: calls.append(idx) or orig(x, idx, output_size=output_size)
    seg(torch.randn(1, 3, 8, 8))
    assert len(calls) == 1 and calls[0].dtype == torch.int64


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_bilinear_upsampler_matches_interpolate_in_the_interior(factor):
    x = torch.randn(1, 3, 12, 14, dtype=torch.float64)
    up = bilinear_upsampler(3, factor).double()
    ours = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert ours.shape == ref.shape
    m = factor  # one input pixel of border on each side behaves differently (zero padding)
    torch.testing.assert_close(ours[..., m:-m, m:-m], ref[..., m:-m, m:-m])
    assert bilinear_kernel(2).tolist()[1] == pytest.approx([0.1875, 0.5625, 0.5625, 0.1875])


def test_convolutionalized_classifier_equals_sliding_window():
    torch.manual_seed(0)
    clf = PatchClassifier(num_classes=6, width=8, hidden=16)
    # give BN non-trivial statistics, then freeze it (eval-mode BN is a per-channel affine map)
    clf.train()
    clf(torch.randn(16, 3, 32, 32))
    clf.eval()
    images = torch.randn(2, 3, 21, 26)
    dense = dense_logits(convolutionalize(clf), images)
    assert dense.shape == (2, 6, 6, 7)
    padded = pad_for_centres(images)
    for b, i, j in itertools.product(range(2), range(6), range(7)):
        y, x = 4 * i, 4 * j
        patch = extract_patches(padded, torch.tensor([y]), torch.tensor([x]), torch.tensor([b]))
        torch.testing.assert_close(clf(patch)[0], dense[b, :, i, j], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="32×32"):
        clf(images)


def test_extract_patches_centres():
    img = torch.arange(10 * 12, dtype=torch.float32).view(1, 1, 10, 12)
    padded = pad_for_centres(img)
    p = extract_patches(padded, torch.tensor([3, 9]), torch.tensor([5, 0]), torch.tensor([0, 0]))
    assert p.shape == (2, 1, 32, 32)
    assert p[0, 0, 16, 16] == img[0, 0, 3, 5] and p[1, 0, 16, 16] == img[0, 0, 9, 0]


def test_smp_model_takes_any_size_and_matches_the_bare_model_where_it_divides():
    """smp.DeepLabV3Plus needs H, W divisible by 16: the wrapper pads 360×480-like inputs and
    crops the logits back; on a divisible size it is the bare model."""
    from course_lib.models import PadToMultiple, smp_model

    torch.manual_seed(0)
    m = smp_model("DeepLabV3Plus", "resnet18", 5, encoder_output_stride=16, decoder_channels=16).eval()
    assert isinstance(m, PadToMultiple) and m.multiple == 16
    with torch.no_grad():
        assert m(torch.randn(1, 3, 45, 60)).shape == (1, 5, 45, 60)
        x = torch.randn(1, 3, 64, 96)
        assert torch.equal(m(x), m.model(x))
        with pytest.raises(RuntimeError):
            m.model(torch.randn(1, 3, 45, 60))  # the bare model refuses it
    assert smp_model("Unet", "resnet18", 3).multiple == 32
    with pytest.raises(ValueError, match="positive"):
        PadToMultiple(torch.nn.Identity(), 0)
