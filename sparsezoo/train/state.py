"""The objects a run is made of: :class:`Training` (what a run fixes when it starts), :class:`TrainState` (what changes
as it goes), :class:`StepPlan` (how epochs divide into steps), :class:`LossSums` / :class:`LossMeans` (the task loss
and penalty terms over steps) and :class:`RunResult`."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.errors import DataError
from sparsezoo.recipe import Recipe
from sparsezoo.train.schedules import TargetController

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator
    from torch import Tensor, nn

    from sparsezoo.hub.loading import ZooModel
    from sparsezoo.train.penalties import SparsityPenalty
    from sparsezoo.train.recovery import RecoveryController
    from sparsezoo.train.tasks import Task


@dataclass
class RunResult:
    out: Path
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)


@dataclass
class StepPlan:
    """How every epoch divides into steps, on each process."""

    batches: int  # micro-batches per epoch (a multiple of grad_accum: every epoch ends on an optimizer step)
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int
    warmup_steps: int  # of the learning rate


def plan_steps(recipe: Recipe, train_samples: int, val_samples: int, world: int) -> StepPlan:
    """The step plan of ``recipe`` for data split over ``world`` processes (DataError when a split is too small)."""
    train_cfg, optim_cfg = recipe.train, recipe.optim
    if val_samples < world:
        raise DataError(f"validation set has {val_samples} samples, fewer than the {world} processes")
    per_rank = math.ceil(train_samples / world)
    batches = per_rank // train_cfg.batch_size
    if train_cfg.max_steps_per_epoch:
        batches = min(batches, train_cfg.max_steps_per_epoch * optim_cfg.grad_accum)
    batches -= batches % optim_cfg.grad_accum  # every epoch ends on an optimizer step
    if batches == 0:
        raise DataError(f"{per_rank} training samples per process is less than one step "
                        f"(batch_size {train_cfg.batch_size} x grad_accum {optim_cfg.grad_accum})")
    steps_per_epoch = batches // optim_cfg.grad_accum
    return StepPlan(batches, steps_per_epoch, steps_per_epoch * train_cfg.epochs,
                    round(optim_cfg.warmup_epochs * steps_per_epoch))


@dataclass
class LossMeans:
    """The mean task loss and the mean unweighted term of each penalty kind over some steps.

    ``to_json()`` gives the ``task_loss`` and ``penalty`` entries of the records in ``train_log.jsonl`` and
    ``metrics.json`` (``penalty`` by kind, in the order the kinds first had a term).
    """

    task: float
    penalty: dict[str, float]

    def to_json(self) -> dict:
        return {"task_loss": self.task, "penalty": dict(self.penalty)}

    def finite(self) -> bool:
        return math.isfinite(self.task) and all(map(math.isfinite, self.penalty.values()))

    def describe(self) -> str:
        """``task 2.31, l1 nan``: for messages."""
        return ", ".join([f"task {self.task:g}", *(f"{kind} {v:g}" for kind, v in self.penalty.items())])


@dataclass
class LossSums:
    """Sums over training steps of the task loss and of the unweighted term of each penalty kind
    (:attr:`SparsityPenalty.last_terms <sparsezoo.train.penalties.SparsityPenalty.last_terms>`): 0-d tensors on the
    device, so adding a step costs no host sync. ``steps`` counts the steps added."""

    task: Tensor
    penalty: dict[str, Tensor] = field(default_factory=dict)
    steps: int = 0

    @classmethod
    def zeros(cls, device: torch.device | str, kinds: Iterable[str] = ()) -> LossSums:
        import torch

        return cls(torch.zeros((), device=device), {kind: torch.zeros((), device=device) for kind in kinds})

    def add(self, task_loss: Tensor, penalty_terms: Mapping[str, Tensor]) -> None:
        self.task = self.task + task_loss
        for kind, value in penalty_terms.items():
            self.penalty[kind] = self.penalty.get(kind, 0) + value
        self.steps += 1

    def restarted(self) -> LossSums:
        """Zero sums of the same kinds (the next logging window)."""
        return LossSums.zeros(self.task.device, self.penalty)

    def means(self, n: int) -> LossMeans:
        """Each sum divided by ``n`` (host floats: one sync per sum)."""
        return LossMeans(float(self.task) / n, {kind: float(v) / n for kind, v in self.penalty.items()})


@dataclass
class Training:
    """What a run fixes when it starts: recipe, processes, task, model, optimizer, penalty and its λ controllers."""

    recipe: Recipe
    accelerator: Accelerator
    task: Task
    model: nn.Module  # as prepared by accelerate (DDP-wrapped with several processes)
    raw_model: nn.Module  # the unwrapped model: evaluated, checkpointed, saved
    forward_model: Callable[..., Any]  # ``model``, or the model compiled (analysis.collect.compile_with_hook_guards)
    optimizer: torch.optim.Optimizer
    penalty: SparsityPenalty
    targets: dict[str, TargetController]  # penalty kind -> controller of its λ (recipe's target_zero_frac)
    plan: StepPlan
    stages: dict[str, str]  # site -> network stage (analysis.sites.site_stages)
    channels_last: bool
    eval_loader: Iterable[Any]  # this process's share of the validation set
    env: dict[str, Any]  # metrics.json "environment"
    out: Path
    progress: bool
    teacher: nn.Module | None = None  # the distillation teacher (eval mode, no gradients), when the recipe has one
    recovery: RecoveryController | None = None  # the recovery target's controller (recipe.recovery)
    check_loader: Iterable[Any] | None = None  # this process's share of the controller's validation subset
    fused_eval: bool = False  # validation's sparsity statistics in one compiled kernel

    @property
    def pressure(self) -> float:
        """What every penalty's λ is multiplied by (the recovery controller's pressure; 1 without one)."""
        return self.recovery.pressure if self.recovery is not None else 1.0

    @property
    def target_every(self) -> int:
        """Optimizer steps between two updates of the λ controllers (0 without controllers)."""
        return min((p.target_every for p in self.recipe.penalties if p.kind in self.targets), default=0)


@dataclass
class RunOptions:
    """How :func:`~sparsezoo.train.loop.finetune` runs a recipe (none of it changes the result): continue or replace
    a run in the folder, show progress, a callback per epoch, and the distillation teacher already loaded (by
    callers that resolve names the training room does not know, such as the zoo's ``ENTRY:VARIANT``)."""

    resume: bool = False
    force: bool = False
    progress: bool = False
    on_epoch: Callable[[dict], None] | None = None
    teacher: ZooModel | None = None
    reference: ZooModel | None = None  # the recovery target's dense reference, already loaded


@dataclass
class TrainState:
    """What changes as the run goes: epochs done, optimizer steps done, the history of the finished epochs, the
    learning rate of the latest step, and the folder written (a --force run builds in a staging folder beside
    ``out`` until its first checkpoint replaces the old run)."""

    work: Path
    epoch: int = 0
    opt_step: int = 0
    history: list[dict] = field(default_factory=list)
    lr: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # restored from a checkpoint: the recovery controller's state

    @property
    def log_path(self) -> Path:
        return self.work / "train_log.jsonl"
