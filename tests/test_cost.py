import pytest
import torch
import torch.nn as nn

from course_lib.cost import saved_activation_bytes, seconds_per_call


def test_saved_activation_bytes_counts_what_backward_needs():
    # a bias-free linear layer saves its input (for the weight gradient); ReLU saves its output
    lin = nn.Linear(10, 20, bias=False)
    x = torch.randn(4, 10)
    assert saved_activation_bytes(lin, x) == 4 * 10 * 4
    assert saved_activation_bytes(nn.Sequential(lin, nn.ReLU()), x) == 4 * 10 * 4 + 4 * 20 * 4
    assert lin.weight.grad is None  # gradients are not left behind
    # a denser feature map costs proportionally more
    conv = nn.Conv2d(3, 8, 3, padding=1)
    small = saved_activation_bytes(conv, torch.randn(1, 3, 16, 16))
    assert saved_activation_bytes(conv, torch.randn(1, 3, 32, 32)) == 4 * small


def test_seconds_per_call_is_the_median():
    calls = []
    durations = iter([0.0, 0.03, 0.0, 0.01])
    import time

    def fn():
        calls.append(1)
        time.sleep(next(durations))

    t = seconds_per_call(fn, repeats=3, warmup=1)
    assert len(calls) == 4 and 0.0 <= t < 0.02


def test_seconds_per_call_needs_a_repeat():
    with pytest.raises(ValueError, match="repeats"):
        seconds_per_call(lambda: None, repeats=0)
