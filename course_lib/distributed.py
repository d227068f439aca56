"""Training on several processes with PyTorch's own stack: ``torchrun`` + DistributedDataParallel.

``torchrun --standalone --nproc_per_node N script.py`` starts N copies of a script with
``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` set. :func:`course_lib.engine.fit` then calls
:func:`init`, which joins the process group (gloo on CPU, nccl on CUDA: one GPU per process),
wraps the model in DistributedDataParallel, gives each rank a disjoint part of every epoch
(:func:`train_loader`), and sums the training loss and the validation confusion matrix over
the ranks, so every rank reports the same metrics; only rank 0 prints and writes checkpoints.

In a single process (``WORLD_SIZE`` unset or 1) every function here is a no-op: no process
group, no wrapping, the loaders as they were.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler


def active() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Number of processes training together (1 in a single process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0, the process that prints and writes files."""
    return rank() == 0


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group if this process was started by it with ``WORLD_SIZE`` > 1
    (once; later calls only return the device): nccl when ``device`` is CUDA, else gloo.
    Returns the device this rank trains on: ``cuda:$LOCAL_RANK`` for CUDA, else ``device``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if not dist.is_available():
        raise RuntimeError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} (started by torchrun?), but this torch "
                           f"{torch.__version__} was built without torch.distributed. Run in one process "
                           f"(plain `python`) instead.")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend)
    return device


def shutdown() -> None:
    """Leave the process group (end of a torchrun script); no-op without one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of ``t`` over all ranks (a new tensor on ``t``'s device); ``t``
    itself in a single process. Every rank must call it."""
    if not active():
        return t
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    total = t.detach().to(on, copy=True)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.to(t.device)


def any_rank(flag: bool) -> bool:
    """True if ``flag`` is True on any rank (so that all ranks stop at the same batch)."""
    return bool(all_reduce_sum(torch.tensor([int(flag)]))[0] > 0) if active() else flag


def broadcast_buffers(model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP syncs them at
    the start of each forward, but the last training step updates them from each rank's own
    batch; after this, all ranks evaluate, and save, the same model."""
    if active():
        for buf in model.buffers():
            dist.broadcast(buf, src=0)


def _rebuild(loader: DataLoader, sampler: Iterable[int]) -> DataLoader:
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(f"Training on {world_size()} processes needs torch DataLoaders built with a batch_size "
                        f"(each rank gets its share of the dataset through a sampler); got "
                        f"{type(loader).__name__}.")
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory, drop_last=loader.drop_last,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      prefetch_factor=loader.prefetch_factor, persistent_workers=loader.persistent_workers,
                      multiprocessing_context=loader.multiprocessing_context)


def train_loader(loader: DataLoader) -> DataLoader:
    """``loader`` with a :class:`DistributedSampler`: each rank gets a disjoint 1/world_size of
    the items every epoch (the last ones repeated to share evenly), shuffled if ``loader``
    shuffles, seeded by its generator's seed (the same on every rank), at the same batch size
    per rank. Call ``loader.sampler.set_epoch(epoch)`` each epoch. Unchanged in one process."""
    if not active() or isinstance(getattr(loader, "sampler", None), DistributedSampler):
        return loader
    shuffle = isinstance(getattr(loader, "sampler", None), RandomSampler)
    seed = loader.generator.initial_seed() if getattr(loader, "generator", None) is not None else 0
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size(), rank=rank(),
                                 shuffle=shuffle, seed=seed, drop_last=False)
    return _rebuild(loader, sampler)


def eval_loader(loader: DataLoader) -> DataLoader:
    """``loader`` on this rank's share of the items (rank, rank + world_size, ...), each item on
    exactly one rank, none repeated: summed confusion matrices equal a single process's.
    Unchanged in one process."""
    if not active():
        return loader
    return _rebuild(loader, range(rank(), len(loader.dataset), world_size()))  # type: ignore[arg-type]
