"""Train a small U-Net on the synthetic ``Shapes`` dataset with the course engine, in one
process or in several under ``torchrun`` (DistributedDataParallel; see
:mod:`course_lib.distributed`). A check that the multi-process path works here, and a
template for your own scripts::

    python -m course_lib.train_ddp --epochs 2 --checkpoint /tmp/ddp/unet.pt
    torchrun --standalone --nproc_per_node 2 -m course_lib.train_ddp --epochs 2 --checkpoint /tmp/ddp/unet.pt
    # one process per GPU (nccl), here 4 GPUs:
    torchrun --standalone --nproc_per_node 4 -m course_lib.train_ddp --device cuda --checkpoint /tmp/ddp/unet.pt

``--batch-size`` is per process: N processes train on N× that batch per step. Only rank 0
prints and writes the checkpoint. ``--report DIR`` makes every rank write
``DIR/rank<r>.json``: its metrics, how many checkpoint writes it made and a SHA-256 of its
final weights and buffers (the ranks must agree).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from . import distributed, engine
from .data import Shapes, eval_transforms, train_transforms
from .models import UNet
from .runtime import get_device, seed_everything


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over a model's state_dict (names, and values in contiguous layout)."""
    h = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--items", type=int, default=32, help="training images (validation: half as many)")
    p.add_argument("--size", type=int, default=32, help="image side in pixels")
    p.add_argument("--batch-size", type=int, default=4, help="per process")
    p.add_argument("--width", type=int, default=8, help="U-Net width (channels of its first stage)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu | cuda | mps (default: automatic, or $COURSE_DEVICE)")
    p.add_argument("--precision", default=None, help="fp32 | bf16 (default: automatic)")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--report", type=Path, default=None, help="folder for each rank's rank<r>.json")
    args = p.parse_args(argv)

    device = distributed.init(get_device(args.device))
    gen = seed_everything(args.seed)  # the same initial weights and shuffle seed on every rank
    model = UNet(Shapes.num_classes, width=args.width, depth=2)
    torch.manual_seed(args.seed + distributed.rank())  # but each rank its own augmentations
    size = (args.size, args.size)
    train = Shapes(args.items, size=size, seed=0, transforms=train_transforms(size, scale=(0.8, 1.25)))
    val = Shapes(max(1, args.items // 2), size=size, seed=1, transforms=eval_transforms())
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, drop_last=True, generator=gen)
    val_loader = DataLoader(val, batch_size=args.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    history = engine.fit(model, train_loader, val_loader, num_classes=Shapes.num_classes, device=device,
                         epochs=args.epochs, optimizer=opt, checkpoint=args.checkpoint, progress=False,
                         precision=args.precision, config={"seed": args.seed})
    if distributed.is_main():
        print(f"trained on {distributed.world_size()} process(es): loss {history['train_loss'][-1]:.4f}, "
              f"val mIoU {history['val_miou'][-1]:.3f}"
              + (f"; checkpoint {args.checkpoint}" if args.checkpoint else ""))
    if args.report is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        report = {"rank": distributed.rank(), "world_size": distributed.world_size(),
                  "checkpoint_writes": len(engine.SAVED), "state_sha256": state_sha256(model),
                  "train_loss": history["train_loss"], "val_miou": history["val_miou"]}
        (args.report / f"rank{distributed.rank()}.json").write_text(json.dumps(report, indent=1))
    distributed.shutdown()


if __name__ == "__main__":
    main()
