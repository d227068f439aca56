"""Seconds per training epoch, data included: a plain fp32 PyTorch loop against the course engine.

    python benchmarks/bench_engine.py                      # cpu profile, three models, full epochs
    python benchmarks/bench_engine.py --steps 10 --bf16-steps 3

For each model, on CamVid train with the profile's training pipeline (rescale, crop, flip,
colour jitter; batch size from the profile):

- ``plain``: what a first PyTorch loop does: a DataLoader that decodes each JPEG/PNG pair and
  resizes it every epoch, fp32, NCHW memory format.
- ``engine``: ``course_lib``: each split decoded once into memory (``InMemory``), the model
  and batches in channels_last, autocast in the precision ``get_precision`` picks for the
  device (bf16 only where the hardware runs it natively), via ``engine.train_one_epoch``.

Both arms see the same number of steps; a step's time includes fetching its batch. It prints
seconds per epoch, the ratio plain / engine, and (for the plain loop) the share of the step
spent waiting for data. ``--bf16-steps N`` also times N steps with bf16 autocast forced, to
show what bf16 costs on a CPU without native bf16. Writes ``results/bench_engine.json`` (or
``--study``'s name) with its provenance. Needs CamVid under $COURSE_DATA_DIR (or <repo>/data).
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from course_lib import data as D
from course_lib import engine as E
from course_lib.models import FCN, DeepLab, UNet, count_parameters
from course_lib.results import provenance, record_run
from course_lib.runtime import get_device, get_precision, get_profile, seed_everything

MODELS = {
    "fcn8s-r18": lambda c: FCN(c, "8s", "resnet18"),
    "unet-w16": lambda c: UNet(c, width=16),
    "deeplabv3plus-r18": lambda c: DeepLab(c, head="aspp_v3", backbone="resnet18", output_stride=16, decoder=True,
                                           channels=128),
}


def timed_steps(step, batches, warmup: int) -> tuple[float, float]:
    """Run ``step(x, y)`` on each batch of the iterator; return (mean seconds per step, mean
    seconds waiting for a batch), both after ``warmup`` steps."""
    total, wait, n = 0.0, 0.0, 0
    it = iter(batches)
    for i in itertools.count():
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        step(x, y)
        t2 = time.perf_counter()
        if i >= warmup:
            total, wait, n = total + (t2 - t0), wait + (t1 - t0), n + 1
    if n == 0:
        raise SystemExit("too few steps to time: raise --steps or lower --warmup")
    return total / n, wait / n


def plain_step(model, loss_fn, opt):
    def step(x, y):
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def engine_step(model, loss_fn, opt, device, precision):
    def step(x, y):
        E.train_one_epoch(model, [(x, y)], loss_fn, opt, device, progress=False, precision=precision)
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=None, help="time this many steps (default: one whole epoch)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps (kernel selection)")
    ap.add_argument("--bf16-steps", type=int, default=0,
                    help="also time this many steps (after warm-up) of the engine with bf16 forced")
    ap.add_argument("--no-record", action="store_true", help="do not write results/<study>.json")
    ap.add_argument("--study", default="bench_engine",
                    help="results/<study>.json to write: one file per kind of machine, since a run replaces the "
                         "same model's row (e.g. bench_engine_avx512 on a CPU with native bf16)")
    args = ap.parse_args()
    prof, device = get_profile(args.profile), get_device()
    precision = get_precision(device)
    size, crop, bs = prof.camvid_size, prof.crop_size, prof.batch_size
    seed_everything(0)

    t0 = time.perf_counter()
    plain_set = D.CamVid("train", transforms=D.train_transforms(size, crop=crop))
    L = D.semantic_loaders("camvid", prof, size, torch.Generator().manual_seed(0), crop=crop)
    decode_s = time.perf_counter() - t0
    weights = L.class_weights.to(device)
    steps_per_epoch = len(L.train)
    n_steps = min(steps_per_epoch, args.steps or steps_per_epoch) + args.warmup
    print(f"profile {prof.name}: {size[0]}x{size[1]} rescaled, {crop[0]}x{crop[1]} crops, batch {bs}, "
          f"{steps_per_epoch} steps per epoch; device {device}, engine precision {precision}; "
          f"{torch.get_num_threads()} threads; decoding train/val/test once took {decode_s:.1f} s")
    prov = provenance(device, prof.name, precision, decode_once_s=round(decode_s, 1))
    for name in args.models:
        row = {}
        for arm in ("plain", "engine"):
            torch.manual_seed(0)
            model = MODELS[name](L.num_classes).to(device)
            loss_fn = nn.CrossEntropyLoss(weight=weights, ignore_index=255)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
            if arm == "plain":
                loader = DataLoader(plain_set, batch_size=bs, shuffle=True, drop_last=True,
                                    generator=torch.Generator().manual_seed(0))
                model.train()
                step = plain_step(model, loss_fn, opt)
            else:
                loader = L.train
                model.to(memory_format=torch.channels_last)
                step = engine_step(model, loss_fn, opt, device, precision)
            batches = itertools.islice(itertools.cycle(loader), n_steps)
            per_step, wait = timed_steps(step, batches, args.warmup)
            row[arm] = {"s_per_step": per_step, "data_s_per_step": wait, "s_per_epoch": per_step * steps_per_epoch}
        ratio = row["plain"]["s_per_epoch"] / row["engine"]["s_per_epoch"]
        print(f"{name:18s} ({count_parameters(model) / 1e6:5.2f} M params): plain {row['plain']['s_per_epoch']:6.1f} s/epoch "
              f"(data {100 * row['plain']['data_s_per_step'] / row['plain']['s_per_step']:.0f} % of a step) | "
              f"engine {row['engine']['s_per_epoch']:6.1f} s/epoch "
              f"(data {100 * row['engine']['data_s_per_step'] / row['engine']['s_per_step']:.0f} %) | "
              f"speed-up {ratio:.2f}x")
        if args.bf16_steps:
            torch.manual_seed(0)
            model = MODELS[name](L.num_classes).to(device).to(memory_format=torch.channels_last)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
            step = engine_step(model, nn.CrossEntropyLoss(weight=weights, ignore_index=255), opt, device, "bf16")
            batches = itertools.islice(itertools.cycle(L.train), args.bf16_steps + args.warmup)
            per_step, _ = timed_steps(step, batches, args.warmup)
            row["engine_bf16_forced"] = {"s_per_step": per_step, "s_per_epoch": per_step * steps_per_epoch}
            print(f"{'':18s} engine with bf16 forced: {per_step * steps_per_epoch:6.1f} s/epoch "
                  f"({row['engine']['s_per_step'] / per_step:.2f}x the engine's {precision} speed)")
        row["speedup"] = ratio
        if not args.no_record:
            record_run(args.study, name, 0, row, provenance=prov, params_m=count_parameters(model) / 1e6,
                       steps_timed=n_steps - args.warmup, steps_per_epoch=steps_per_epoch,
                       description="Seconds per training epoch, data included: a plain fp32 NCHW loop that decodes "
                                   "every epoch vs the course engine (decode once, channels_last, auto precision).")


if __name__ == "__main__":
    main()
