"""Speed of course_lib.metrics against the libraries that do the same.

    python benchmarks/bench_metrics.py [--device cuda] [--repeats 20]

Prints wall time per call and the ratio (library / ours) for
- the confusion matrix of a batch of 8 CamVid-sized label maps (360×480, 11 classes + void)
  vs torchmetrics' MulticlassConfusionMatrix;
- the boundary F-measure of one 360×480 mask (5 px tolerance) vs a SciPy implementation
  (binary_dilation with a disk), the way the DAVIS reference code computes it.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np
import torch
from scipy import ndimage
from torchmetrics.classification import MulticlassConfusionMatrix

from course_lib import metrics as M


def timeit(fn, repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def scipy_boundary_f(pred: np.ndarray, gt: np.ndarray, r: int) -> float:
    def bmap(s):
        e = np.zeros_like(s); so = np.zeros_like(s); se = np.zeros_like(s)
        e[:, :-1], so[:-1, :], se[:-1, :-1] = s[:, 1:], s[1:, :], s[1:, 1:]
        b = s ^ e | s ^ so | s ^ se
        b[-1, :], b[:, -1], b[-1, -1] = s[-1, :] ^ e[-1, :], s[:, -1] ^ so[:, -1], False
        return b
    y, x = np.ogrid[-r:r + 1, -r:r + 1]
    disk = x * x + y * y <= r * r
    bp, bg = bmap(pred), bmap(gt)
    p = (bp & ndimage.binary_dilation(bg, disk)).sum() / max(bp.sum(), 1)
    rc = (bg & ndimage.binary_dilation(bp, disk)).sum() / max(bg.sum(), 1)
    return 0.0 if p + rc == 0 else 2 * p * rc / (p + rc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 11, (8, 360, 480), generator=g)
    target[torch.rand(target.shape, generator=g) < 0.05] = 255
    pred = torch.randint(0, 11, (8, 360, 480), generator=g)
    target, pred = target.to(device), pred.to(device)
    print(f"device {device} ({torch.cuda.get_device_name(0) if device.type == 'cuda' else platform.processor() or platform.machine()}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.repeats} repeats")

    tm = MulticlassConfusionMatrix(11, ignore_index=255).to(device)
    ours = timeit(lambda: M.confusion_matrix(pred, target, 11), args.repeats, device)
    lib = timeit(lambda: tm(pred, target), args.repeats, device)
    assert torch.equal(M.confusion_matrix(pred, target, 11).cpu(), tm(pred, target).cpu())
    print(f"confusion matrix 8x360x480: ours {1e3 * ours:7.2f} ms | torchmetrics {1e3 * lib:7.2f} ms | ratio {lib / ours:5.2f}x")

    yy, xx = np.mgrid[0:360, 0:480]
    gt = (yy - 180) ** 2 / 120 ** 2 + (xx - 240) ** 2 / 160 ** 2 <= 1
    pr = np.roll(gt, 3, axis=1) ^ (np.random.default_rng(0).random(gt.shape) > 0.995)
    r = M.tolerance_pixels(0.008, 360, 480)
    pr_t, gt_t = torch.from_numpy(pr).to(device), torch.from_numpy(gt).to(device)
    ours = timeit(lambda: M.boundary_f1(pr_t, gt_t), args.repeats, device)
    lib = timeit(lambda: scipy_boundary_f(pr, gt, r), args.repeats, torch.device("cpu"))
    assert math.isclose(M.boundary_f1(pr_t, gt_t), scipy_boundary_f(pr, gt, r), abs_tol=1e-9)
    print(f"boundary F 360x480, r={r}px:  ours {1e3 * ours:7.2f} ms | scipy        {1e3 * lib:7.2f} ms | ratio {lib / ours:5.2f}x")


if __name__ == "__main__":
    main()
