"""Validation during training: top-1, mean loss and feature sparsity over the whole validation set, sharded over
processes and all-reduced as exact sums."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sparsezoo.train.distributed import dist_reduce

if TYPE_CHECKING:
    import torch
    from torch import nn

    from analysis.sites import Site
    from sparsezoo.train.tasks import Task


@dataclass(frozen=True)
class EvalContext:
    """How a validation pass runs its batches: the task (batch splitting, logits), the device, the autocast
    context factory and whether image inputs go channels_last."""

    task: Task
    device: torch.device | str
    autocast: Callable[[], Any]
    channels_last: bool


def evaluate(model: nn.Module, loader: Iterable, ctx: EvalContext, sites: list[Site], stages: dict[str, str],
             fused: bool = False) -> dict:
    """Top-1 accuracy, mean task loss and feature sparsity on ``loader`` (summed over all processes).

    Padded tokens are left out of the sparsity statistics (the meter gets each batch's attention mask). ``fused``:
    the statistics in one compiled kernel (:class:`analysis.sparsity.SparsityMeter`; the same numbers, less overhead
    once compiled; see :func:`sparsezoo.train.setup.fused_eval`).
    """
    import torch
    import torch.nn.functional as F

    from analysis.sparsity import SparsityMeter, summarize

    task, device, autocast, channels_last = ctx.task, ctx.device, ctx.autocast, ctx.channels_last
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    with SparsityMeter(model, [s for s in sites if s.kind != "attention"], fused=fused) as meter, torch.no_grad():
        for batch in loader:
            inputs, labels, mask = task.split_batch(batch, device, channels_last)
            meter.position_mask = mask.bool() if mask is not None else None
            with autocast():
                logits = task.logits(model, inputs)
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").double()
            correct += (logits.argmax(-1) == labels).sum()
            count += labels.numel()
    loss_sum, correct, count = (dist_reduce(t, "sum") for t in (loss_sum, correct, count))
    meter.reduce_(dist_reduce)
    per_site = meter.results()
    model.train(was_training)
    n = int(count)
    return {
        "samples": n,
        "top1": int(correct) / n,
        "loss": float(loss_sum) / n,
        "sparsity": summarize(per_site, stages),
        "sparsity_per_site": per_site,
    }


def top1(model: nn.Module, loader: Iterable, ctx: EvalContext) -> float:
    """Top-1 accuracy on ``loader`` alone (summed over all processes): the cheap pass the threshold search repeats."""
    import torch

    task, device, autocast, channels_last = ctx.task, ctx.device, ctx.autocast, ctx.channels_last
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad():
        for batch in loader:
            inputs, labels, _ = task.split_batch(batch, device, channels_last)
            with autocast():
                logits = task.logits(model, inputs)
            correct += (logits.argmax(-1) == labels).sum()
            count += labels.numel()
    model.train(was_training)
    correct, count = dist_reduce(correct, "sum"), dist_reduce(count, "sum")
    return int(correct) / int(count)
