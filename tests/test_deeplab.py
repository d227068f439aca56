import pytest
import torch
import torch.nn.functional as F

from course_lib.models import DeepLab, ResNetFeatures, count_parameters
from course_lib.models.deeplab import ASPP, HEADS, KSAC, ASPPv2, ParallelAtrous, SharedAtrous, scaled_rates

ODD = (97, 131)


@pytest.mark.parametrize("output_stride", [8, 16])
def test_dilated_backbone_is_the_same_network_evaluated_densely(output_stride):
    """The "hole algorithm": with the strides removed and later convolutions dilated, the same
    weights compute the undilated features at every position; sampling the dense map every
    32 / output_stride pixels gives back the original map exactly."""
    torch.manual_seed(0)
    plain = ResNetFeatures("resnet10", 32).eval()
    dense = ResNetFeatures("resnet10", output_stride).eval()
    dense.load_state_dict(plain.state_dict())  # same parameters, same shapes
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        f_plain, f_dense = plain(x)[32], dense(x)[32]
    step = 32 // output_stride
    assert f_dense.shape[-2:] == (128 // output_stride, 160 // output_stride)
    torch.testing.assert_close(f_dense[..., ::step, ::step], f_plain, atol=1e-4, rtol=1e-4)
    assert dense.feature_strides[32] == output_stride


def test_backbone_rejects_bad_output_stride():
    with pytest.raises(ValueError, match="output_stride"):
        ResNetFeatures("resnet10", 4)


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplab_any_size_and_gradients(head, output_stride):
    torch.manual_seed(0)
    for decoder in ((False, True) if head not in ("largefov", "aspp_v2") else (False,)):
        model = DeepLab(5, head, "resnet10", output_stride, decoder=decoder, channels=16)
        out = model(torch.randn(2, 3, *ODD))
        assert out.shape == (2, 5, *ODD)
        out.square().mean().backward()
        missing = [n for n, p in model.named_parameters() if p.grad is None]
        assert not missing, f"no gradient reached {missing}"


def test_paper_rates_scale_with_output_stride():
    assert scaled_rates("aspp_v3", 16) == (6, 12, 18)
    assert scaled_rates("aspp_v3", 8) == (12, 24, 36)  # "doubled at output stride 8"
    assert scaled_rates("largefov", 8) == (12,)
    assert scaled_rates("aspp_v2", 8) == (6, 12, 18, 24)
    assert scaled_rates("aspp_v3", 16, resolution_scale=176 / 360) == (3, 6, 9)  # half-resolution input
    assert DeepLab(3, "aspp_v3", "resnet10", 8).rates == (12, 24, 36)
    assert DeepLab(3, "aspp_v3", "resnet10", 16, rates=(3, 6, 9)).rates == (3, 6, 9)


def test_aspp_v2_sums_atrous_branches():
    torch.manual_seed(0)
    head = ASPPv2(8, 3, rates=(1, 2, 4))
    x = torch.randn(1, 8, 20, 24)
    expected = sum(F.conv2d(x, b.weight, b.bias, padding=r, dilation=r) for b, r in zip(head.branches, (1, 2, 4)))
    torch.testing.assert_close(head(x), expected)


def test_ksac_is_aspp_with_one_kernel_shared_by_the_rates():
    torch.manual_seed(0)
    shared = SharedAtrous(8, 4, (1, 3, 5)).eval()
    separate = ParallelAtrous(8, 4, (1, 3, 5)).eval()
    for branch in separate.branches:
        branch[0].weight.data.copy_(shared.weight.data)  # give every branch the shared kernel
    x = torch.randn(2, 8, 16, 16)
    for a, b in zip(shared(x), separate(x)):
        torch.testing.assert_close(a, b)
    # the paper's setting (ResNet-101: 2048 → 256, rates 6/12/18) saves about 62 % of the ASPP parameters
    saved = 1 - count_parameters(KSAC(2048, 256)) / count_parameters(ASPP(2048, 256))
    assert 0.55 < saved < 0.65


def test_image_pooling_branch_can_be_dropped():
    with_pool, without = ASPP(16, 8, (1, 2)), ASPP(16, 8, (1, 2), image_pooling=False)
    assert with_pool.pooling is not None and without.pooling is None
    assert without.project[0][0].in_channels == 3 * 8 and with_pool.project[0][0].in_channels == 4 * 8


def test_decoder_needs_a_feature_head():
    with pytest.raises(ValueError, match="decoder"):
        DeepLab(3, "largefov", "resnet10", decoder=True)
    with pytest.raises(ValueError, match="head must be one of"):
        DeepLab(3, "aspp_v4")
