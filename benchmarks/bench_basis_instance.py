"""Seconds per training step of :class:`course_lib.models.BasisInstanceNet`, every configuration
(YOLACT / BlendMask masks × boundary basis × mask scoring), on one fixed batch of DSB2018
nuclei crops (fp32, Adam; forward + loss + backward + step).

    python benchmarks/bench_basis_instance.py                 # 256 × 256, batch 4, 3 steps
    python benchmarks/bench_basis_instance.py --steps 5 --threads 1

The batch: the first ``--batch`` training images (Nuclei's seeded split) that are at least
``--size`` pixels in both directions, cropped at their top-left corner. One untimed warm-up
step per configuration, then the mean of ``--steps`` timed ones. Needs the nuclei folder under
$COURSE_DATA_DIR (or <repo>/data). Prints only: wall times depend on what else runs.
"""

from __future__ import annotations

import argparse
import time

import torch

from course_lib import data as D
from course_lib.data.instances import instance_target, read_id_map
from course_lib.data.io import read_image
from course_lib.models import BasisInstanceNet, count_parameters


def nuclei_batch(size: int, batch: int) -> tuple[torch.Tensor, list[dict]]:
    ds = D.Nuclei("train")
    images, targets = [], []
    for image_path, mask_path in ds.pairs:
        ids = read_id_map(mask_path)
        if min(ids.shape) < size:
            continue
        ids = ids[:size, :size]
        images.append(read_image(image_path)[:, :size, :size].float() / 255)
        t = instance_target(ids)
        targets.append({k: t[k].as_subclass(torch.Tensor) for k in ("boxes", "labels", "masks")})
        if len(images) == batch:
            break
    return torch.stack(images), targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--backbone", default="resnet10")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, targets = nuclei_batch(args.size, args.batch)
    print(f"batch {tuple(images.shape)}, instances per image {[len(t['boxes']) for t in targets]}, "
          f"threads {torch.get_num_threads()}")
    for masks in ("yolact", "blendmask"):
        for boundary in (False, True):
            for scoring in (False, True):
                net = BasisInstanceNet(masks=masks, backbone=args.backbone, boundary_basis=boundary,
                                       mask_scoring=scoring, seed=0)
                opt = torch.optim.Adam(net.parameters(), lr=1e-3)
                times = []
                for step in range(args.steps + 1):
                    t0 = time.perf_counter()
                    losses = net(images, targets)
                    total = sum(losses.values())
                    opt.zero_grad()
                    total.backward()
                    opt.step()
                    if step:
                        times.append(time.perf_counter() - t0)
                print(f"{masks:9s} boundary_basis={boundary!s:5s} mask_scoring={scoring!s:5s} "
                      f"params {count_parameters(net) / 1e6:.2f} M  {sum(times) / len(times):.2f} s/step "
                      f"(steps {', '.join(f'{t:.2f}' for t in times)}), loss {float(total.detach()):.3f}", flush=True)


if __name__ == "__main__":
    main()
