"""One process or many: seeds, the all-reduce of exact sums, buffers and parameters kept in step across processes, and
each process's share of an epoch's shuffle."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def dist_reduce(t, op: str):
    """All-reduce a tensor across processes (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model: nn.Module) -> None:
    """Copy the main process's buffers (BatchNorm running statistics) to all processes.

    DDP broadcasts buffers at the start of each training forward, so after the last step every process
    holds running statistics of its own last batch; evaluation and checkpoints need one model.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def params_in_sync(model: nn.Module) -> bool:
    """Whether every process holds the same parameters and buffers (fingerprints compared exactly)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    tensors = list(model.state_dict().values())
    fp = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for t in tensors]).flatten()
    hi, lo = dist_reduce(fp, "max"), -dist_reduce(-fp, "max")
    return bool(torch.equal(hi, lo))


@dataclass(frozen=True)
class LoaderOptions:
    """How :func:`make_loader` batches its share: batch size, worker processes, whether a short last batch is
    dropped, the generator's seed and the collate function (None: PyTorch's default)."""

    batch_size: int
    workers: int
    drop_last: bool
    seed: int
    collate: Callable[[list], Any] | None = None


def make_loader(dataset: Any, indices: Sequence[int], options: LoaderOptions) -> Any:
    """A DataLoader over ``dataset[indices]`` in that order (no shuffle: the indices are the shuffle)."""
    import torch
    from torch.utils.data import DataLoader, Subset

    g = torch.Generator().manual_seed(options.seed)
    return DataLoader(Subset(dataset, indices), batch_size=options.batch_size, shuffle=False,
                      drop_last=options.drop_last, num_workers=options.workers, generator=g, persistent_workers=False,
                      collate_fn=options.collate, pin_memory=torch.cuda.is_available())


def train_indices(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This process's share of epoch ``epoch``'s shuffle (equal length on every process)."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch_seed(seed, epoch))).tolist()
    per = math.ceil(n / world)
    perm += perm[: per * world - n]  # pad like DistributedSampler so every process has as many batches
    return perm[rank::world]
