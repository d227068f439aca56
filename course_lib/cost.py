"""What a model costs: activation memory kept for the backward pass, and wall time per call.

Both are measured the same way on any device, so the notebooks can compare output strides,
heads and decoders on a laptop CPU as well as on a GPU.
"""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn as nn


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, output: Callable | None = None) -> int:
    """Bytes of the tensors autograd saves for the backward pass of ``model(x)`` (one forward
    + backward, counted with ``torch.autograd.graph.saved_tensors_hooks``, parameters left out):
    the activation memory that training needs on top of the weights. ``output`` maps the model's output to a
    tensor (default: the output itself, or its last value if it is a dict)."""
    total = 0
    weights = {p.data_ptr() for p in model.parameters()}  # saved parameters are not activations

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        if t.data_ptr() not in weights:
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = model(x)
        if output is not None:
            y = output(y)
        elif isinstance(y, dict):
            y = list(y.values())[-1]
        y.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return total


def seconds_per_call(fn: Callable[[], object], repeats: int = 3, warmup: int = 1,
                     device: torch.device | None = None) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (CUDA is
    synchronised around each call so that queued kernels are counted)."""
    if repeats < 1:
        raise ValueError(f"repeats must be ≥ 1, got {repeats}.")
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
