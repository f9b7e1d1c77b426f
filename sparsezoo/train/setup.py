"""What a run sets up before its first step: the optimizer, the penalty and its λ controllers, the model on its device,
and this process's validation loader."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparsezoo.recipe import OptimSpec, Recipe
from sparsezoo.train.distributed import LoaderOptions, make_loader
from sparsezoo.train.schedules import TargetController

if TYPE_CHECKING:
    import torch
    from torch import nn

    from sparsezoo.train.penalties import SparsityPenalty
    from sparsezoo.train.tasks import Task


def build_optimizer(model: nn.Module, spec: OptimSpec) -> torch.optim.Optimizer:
    """AdamW or SGD; no weight decay on biases and normalization parameters (1-D tensors)."""
    import torch

    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if spec.name == "sgd":
        return torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.momentum > 0)
    beta1, beta2 = spec.betas
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(beta1, beta2))


def build_penalty(recipe: Recipe, task: Task) -> tuple[SparsityPenalty, dict[str, TargetController]]:
    """The recipe's penalty on the task's sites (every λ 0 until the schedule raises it) and the λ controllers
    of the penalties that have a ``target_zero_frac``."""
    from sparsezoo.train.penalties import SparsityPenalty

    targets = {p.kind: TargetController(p.target_zero_frac, p.lam, p.target_gain)
               for p in recipe.penalties if p.target_zero_frac is not None}
    penalty = SparsityPenalty(task.model, lams={p.kind: 0.0 for p in recipe.penalties}, sites=task.sites,
                              site_weights=recipe.sites.weights, track_zero_frac=bool(targets))
    return penalty, targets


def model_and_optimizer(recipe: Recipe, task: Task, device) -> tuple[Any, Any, bool]:
    """The task's model on ``device`` and its optimizer; and whether the model is channels_last (the recipe's
    choice, by default on CUDA; never for text)."""
    import torch

    cfg = recipe.train
    channels_last = (cfg.channels_last if cfg.channels_last is not None else torch.cuda.is_available()) \
        and not task.is_text
    model = task.model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device)
    return model, build_optimizer(model, recipe.optim), channels_last


def eval_loader(recipe: Recipe, task: Task, accelerator, dataset: Any = None):
    """This process's share of the validation set (or of ``dataset``: the opened test split), every world-th
    sample, in order."""
    rank, world = accelerator.process_index, accelerator.num_processes
    options = LoaderOptions(recipe.train.eval_batch_size or recipe.train.batch_size, recipe.data.num_workers, False, 0,
                            task.collate)
    dataset = task.val_ds if dataset is None else dataset
    return make_loader(dataset, list(range(rank, len(dataset), world)), options)


FUSED_EVAL_MIN_SAMPLES = 20_000  # validation samples a run evaluates in all before compiling the statistics pays


def fused_eval(recipe: Recipe, val_samples: int) -> bool:
    """Whether validation computes its sparsity statistics in one compiled kernel (``train.fused_eval``; by default
    when torch.compile is available and the run validates at least :data:`FUSED_EVAL_MIN_SAMPLES` samples in all,
    counting the recovery controller's checks: compiling costs about 15 s per process, and the fused statistics then
    cost about 1.2× of the forward against 1.8× eager; a compile failure falls back to the eager path)."""
    if recipe.train.fused_eval is not None:
        return recipe.train.fused_eval
    import torch

    if not hasattr(torch, "compile"):
        return False
    passes = recipe.train.epochs * val_samples
    if recipe.recovery is not None:
        passes += recipe.train.epochs * recipe.recovery.checks_per_epoch * min(val_samples, recipe.recovery.subset)
    return passes >= FUSED_EVAL_MIN_SAMPLES
