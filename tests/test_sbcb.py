"""SBCB: the head's shapes, the boundary loss against its definition, and the deployed model
identical to the baseline architecture (same weights → same output, no extra parameters)."""

import pytest
import torch
import torch.nn.functional as F

from course_lib.boundaries import semantic_edges
from course_lib.models import DeepLab, count_parameters
from course_lib.models.sbcb import SBCB, SBCBLoss, boundary_bce


def test_head_shapes_and_deployed_model_equals_the_baseline():
    torch.manual_seed(0)
    base = DeepLab(5, "aspp_v3", "resnet10", 16, channels=16)
    torch.manual_seed(0)
    model = DeepLab(5, "aspp_v3", "resnet10", 16, channels=16)
    sbcb = SBCB(model, 5)
    # wrapping changes nothing in the model (the dry run that sizes the head is in eval mode)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), model.state_dict().values()))
    assert sbcb.head.sides[0][0].in_channels == 64 and sbcb.head.last[0].in_channels == 512
    x = torch.randn(2, 3, 64, 96)
    sbcb.train()
    out = sbcb(x)
    fused, last = sbcb.edge_logits
    assert out.shape == fused.shape == last.shape == (2, 5, 64, 96)
    sbcb.eval()
    assert sbcb(x) is not None and sbcb.edge_logits is None  # no head at inference
    seg, fused_eval, _ = sbcb.forward_with_edges(x)  # unless asked for
    assert seg.shape == fused_eval.shape == (2, 5, 64, 96)
    deployed = sbcb.deploy()
    assert deployed is not model and count_parameters(deployed) == count_parameters(base)
    assert all(not m._forward_hooks for m in deployed.modules())  # no taps left in the deployed copy
    assert sbcb.forward_with_edges(x)[1].shape == (2, 5, 64, 96)  # and the wrapper still works
    base.load_state_dict(deployed.state_dict(), strict=True)  # the baseline architecture takes the weights as they are
    base.eval()
    with torch.no_grad():
        assert torch.equal(deployed(x), base(x))


def test_boundary_bce_matches_its_definition():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 9, generator=g)
    edges = torch.rand(2, 3, 8, 9, generator=g) < 0.1
    edges[1] = False  # an image without edges: pos_weight clamps to H·W, the loss is the negatives' BCE
    ref = []
    for b in range(2):
        pos = edges[b].sum().item()
        pw = min(max((edges[b].numel() - pos) / max(pos, 1), 1.0), 8 * 9)
        ref.append(F.binary_cross_entropy_with_logits(logits[b], edges[b].float(), pos_weight=torch.tensor(pw)))
    torch.testing.assert_close(boundary_bce(logits, edges), torch.stack(ref).mean())
    with pytest.raises(ValueError, match="shape"):
        boundary_bce(logits, edges[:, :2])


def test_sbcb_loss_adds_the_weighted_boundary_terms_and_trains():
    torch.manual_seed(0)
    sbcb = SBCB(DeepLab(4, "aspp_v3", "resnet10", 16, channels=16), 4).train()
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    loss_fn = SBCBLoss(sbcb, ce, 4, weight=5.0)
    x = torch.randn(2, 3, 64, 64)
    y = torch.zeros(2, 64, 64, dtype=torch.long)
    y[:, 20:40, 10:50] = 2
    y[:, :4] = 255
    logits = sbcb(x)
    loss = loss_fn(logits, y)
    edges = semantic_edges(y, 4, 2)
    fused, last = sbcb.edge_logits
    expected = ce(logits, y) + 5.0 * (boundary_bce(fused, edges) + boundary_bce(last, edges))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert sbcb.head.fuse.weight.grad is not None and sbcb.model.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    assert set(loss_fn.last_terms) == {"seg", "boundary"}
    sbcb.eval()
    sbcb(x)
    torch.testing.assert_close(loss_fn(logits.detach(), y), ce(logits.detach(), y))  # eval: segmentation only


def test_bad_taps_are_named():
    with pytest.raises(ValueError, match="no module"):
        SBCB(DeepLab(3, "aspp_v3", "resnet10", 16, channels=8), 3, taps=("a", "b", "c", "d"))
