"""Speed of ``course_lib.boundaries.semantic_edges`` (disk dilations, whole batch and all classes
at once) against the per-class SciPy distance-transform loop that defines it.

    python benchmarks/bench_edges.py [--batch 8] [--radius 2] [--repeats 5] [--device cpu]

Real CamVid val labels at 360×480 (11 classes + void). Prints the time per batch of each, the
ratio, and whether the outputs are identical. Target (issue 10): ≥ 5× on the 2-core CPU.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from course_lib.boundaries import semantic_edges, semantic_edges_reference
from course_lib.data import CamVid
from course_lib.runtime import device_name


def best_of(fn, repeats: int, device: torch.device) -> float:
    """The fastest of ``repeats`` calls after one warm-up, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--radius", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    ds = CamVid("val")
    masks = torch.stack([ds.read_mask(i) for i in range(0, len(ds), max(1, len(ds) // args.batch))][: args.batch])
    masks_dev = masks.to(device)
    c = 11

    def ours():
        return semantic_edges(masks_dev, c, args.radius)

    def scipy_loop():
        return [semantic_edges_reference(m.numpy(), c, args.radius) for m in masks]

    same = np.array_equal(ours().cpu().numpy(), np.stack(scipy_loop()))
    t_ours = best_of(ours, args.repeats, device)
    t_ref = best_of(scipy_loop, max(1, args.repeats // 2), torch.device("cpu"))
    print(f"{len(masks)} CamVid labels {tuple(masks.shape[-2:])}, {c} classes + void, radius {args.radius}; "
          f"{device_name(device)}, {torch.get_num_threads()} threads")
    print(f"  per-class SciPy distance transforms: {1000 * t_ref:8.1f} ms per batch")
    print(f"  semantic_edges (disk dilations):     {1000 * t_ours:8.1f} ms per batch")
    print(f"  speed-up {t_ref / t_ours:.1f}×; identical output: {same}")


if __name__ == "__main__":
    main()
