"""Estimated GPU memory of every model the notebooks train in the ``gpu`` profile, at its gpu batch.

    python benchmarks/gpu_memory.py            # table; exit status 1 if a model does not fit
    python benchmarks/gpu_memory.py --markdown # the same table for the README

No GPU is lent to the course, so this is an estimate measured on CPU, not a GPU measurement:
for each model of :func:`course_lib.gpu_plan.plan` (built from the notebooks' own ``CFG``),

    estimate = 16 B × parameters                   fp32 weights, gradients, AdamW's two moments
             + saved activations × batch / b       course_lib.cost.saved_activation_bytes, one
                                                   fp32 forward + backward of b = 1 image (2 for
                                                   image pooling) at the gpu training size
             + 1 GiB                               CUDA context, cuDNN workspace, transients

and checks it against 15 GiB, what a 16 GB card (T4, V100-16GB) offers PyTorch. Activations are
counted in fp32: bf16 autocast (the engine's choice on CUDA) stores most of them in half the
bytes, so this errs on the high side for bf16, and it is what an fp32 run needs (e.g.
``COURSE_PRECISION=fp32``, or a card without bf16). A tensor saved by two operations is
counted twice (high side again). Takes about 2 minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from course_lib.gpu_plan import plan, training_memory

GIB = 2 ** 30
OVERHEAD = 1 * GIB
BUDGET = 15 * GIB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--notebooks", nargs="*", help="only these notebooks, e.g. 05 08")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    t0 = time.perf_counter()
    for m in plan("gpu", tuple(args.notebooks) if args.notebooks else None):
        est = training_memory(m, precision="fp32")
        total = est.total + OVERHEAD
        rows.append((m.notebook, m.name, f"{est.batch} × {m.train_size[0]}×{m.train_size[1]}",
                     f"{est.params / 1e6:.2f} M", f"{est.state / GIB:.2f}", f"{est.activations / GIB:.2f}",
                     f"{total / GIB:.1f}", "yes" if total <= BUDGET else "NO"))
        print(f"  measured {m.notebook} {m.name} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    head = ("notebook", "model", "gpu batch", "params", "weights+grads+AdamW (GiB)", "activations (GiB)",
            "estimate (GiB)", "fits 15 GiB")
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
        for r in (head, *rows):
            print("  ".join(str(x).ljust(w) for x, w in zip(r, widths)))
    bad = [r[1] for r in rows if r[-1] != "yes"]
    if bad:
        print(f"over the 15 GiB budget: {', '.join(bad)}", file=sys.stderr)
        return 1
    print(f"all {len(rows)} models fit a 16 GB card (estimate incl. {OVERHEAD / GIB:.0f} GiB overhead ≤ "
          f"{BUDGET / GIB:.0f} GiB); measured in {time.perf_counter() - t0:.0f} s on CPU", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
