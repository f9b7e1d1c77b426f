"""A recovery target instead of a guessed λ (``--min-recovery R``, recipe ``recovery``).

The λ a user types means different things on different tasks, by more than a decade. With a recovery target the
user states what matters (validation top-1 ≥ R × a dense reference's) and the run finds the pressure: every penalty's
λ is the recipe's λ (the starting pressure, still shaped by its schedule) times the controller's ``pressure``. A few
times an epoch (``checks_per_epoch``) the controller validates on a fixed subset of the validation split (at most
``subset`` samples, a seeded choice fixed by ``data.split_seed``, recorded with the run) and

- when top-1 ≥ R × the reference's top-1 on the same samples, multiplies the pressure by ``raise_by`` and, if this
  checkpoint is the sparsest one so far that met the target (``zero_frac_mean_sites`` of the same pass), keeps it;
- when it falls below, divides the pressure by ``back_off`` (once the target has been met at least once: before that
  the student is still learning the task, and the pressure is held).

At the end the run goes back to the kept checkpoint (none met: the last one, and ``met: false`` is recorded). A
threshold search after training (``--thresholds``) then spends only what is left above the target on the whole
validation split. Nothing here reads the test split: it is opened once, after all of this
(:func:`sparsezoo.train.loop.evaluate_test`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.recipe import RecoverySpec
from sparsezoo.train.checkpoint import CHECKPOINTS

if TYPE_CHECKING:
    from torch import nn

    from sparsezoo.recipe import Recipe
    from sparsezoo.train.state import Training, TrainState
    from sparsezoo.train.tasks import Task

BEST_FILE = "recovery-best.safetensors"  # in the run's checkpoints folder: the kept checkpoint's weights


@dataclass
class RecoveryController:
    """The pressure on λ and the sparsest checkpoint that met the target (see the module docstring).

    ``reference_top1`` is the reference's top-1 on the controller's validation subset; a check meets the target when
    the student's top-1 on the same subset is ≥ ``spec.min × reference_top1``."""

    spec: RecoverySpec
    reference_top1: float
    subset: dict[str, Any]  # what the run records of the check subset (size, of how many, seed)
    reference_top1_full: float  # the reference's top-1 on the whole validation split (the final check's target)
    pressure: float = 1.0
    best: dict[str, Any] | None = None  # the kept check: step, top1, zero_frac, pressure
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def floor(self) -> float:
        return self.spec.min * self.reference_top1

    def observe(self, top1: float, zero_frac: float, step: int) -> bool:
        """Record one check at optimizer step ``step`` and move the pressure; True when this checkpoint is the new
        sparsest one that meets the target (the caller keeps its weights)."""
        met = top1 >= self.floor
        record = {"step": step, "top1": top1, "zero_frac": zero_frac, "pressure": self.pressure, "met": met}
        self.checks.append(record)
        better = met and (self.best is None or zero_frac > self.best["zero_frac"])
        if met:
            self.pressure *= self.spec.raise_by
        elif self.best is not None:  # before the student first reaches the target it is still learning the task:
            self.pressure /= self.spec.back_off  # a miss then says nothing about the pressure, which is held
        if better:
            self.best = record
        return better

    def state_dict(self) -> dict[str, Any]:
        return {"pressure": self.pressure, "best": self.best, "checks": list(self.checks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pressure, self.best, self.checks = state["pressure"], state["best"], list(state["checks"])

    def to_json(self) -> dict[str, Any]:
        """What metrics.json records (``recovery``)."""
        return {"min_recovery": self.spec.min, "reference": self.spec.reference, "split": "validation",
                "subset": self.subset, "reference_top1_subset": self.reference_top1, "floor_subset": self.floor,
                "reference_top1": self.reference_top1_full, "floor": self.spec.min * self.reference_top1_full,
                "met": self.best is not None, "kept": self.best, "final_pressure": self.pressure,
                "checks": self.checks}


def check_indices(n: int, spec: RecoverySpec, seed: int) -> tuple[list[int], dict[str, Any]]:
    """The validation samples the controller checks on: all ``n`` of them, or a seeded choice of ``spec.subset``
    (fixed by ``seed``, the recipe's ``data.split_seed``); and what the run records of that choice."""
    import numpy as np

    if n <= spec.subset:
        return list(range(n)), {"size": n, "of": n}
    keep = np.sort(np.random.default_rng(seed).permutation(n)[: spec.subset]).tolist()
    return keep, {"size": spec.subset, "of": n, "seed": seed}


def save_best(folder: Path, model: nn.Module) -> None:
    """The kept checkpoint's weights (atomically: a temporary file, then a rename)."""
    from sparsezoo.io import atomic_save_safetensors
    from sparsezoo.train.checkpoint import model_state

    folder.mkdir(parents=True, exist_ok=True)
    atomic_save_safetensors(folder / BEST_FILE, model_state(model))


def restore_best(folder: Path, model: nn.Module) -> bool:
    """Load the kept checkpoint's weights into ``model``; False when there is none."""
    from safetensors.torch import load_file

    path = folder / BEST_FILE
    if not path.is_file():
        return False
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in load_file(str(path)).items()})
    return True


def start_recovery(recipe: Recipe, task: Task, reference: nn.Module, accelerator) -> tuple[RecoveryController, Any]:
    """The controller of ``recipe.recovery`` and this process's share of its check subset, with the reference's
    top-1 measured on that subset (``reference``: the dense reference or the teacher, eval mode)."""
    from torch.utils.data import Subset

    from sparsezoo.train.evaluation import EvalContext, top1
    from sparsezoo.train.setup import eval_loader

    spec = recipe.recovery
    keep, subset = check_indices(len(task.val_ds), spec, recipe.data.split_seed)
    loader = eval_loader(recipe, task, accelerator, Subset(task.val_ds, keep))
    ctx = EvalContext(task, accelerator.device, accelerator.autocast, False)
    ref = top1(reference, loader, ctx)
    full = ref if subset["size"] == subset["of"] else top1(reference, eval_loader(recipe, task, accelerator), ctx)
    return RecoveryController(spec, ref, subset, full), loader


def check_every(training: Training) -> int:
    """Optimizer steps between two checks of the controller (0 without one)."""
    spec = training.recipe.recovery
    if training.recovery is None or spec is None:
        return 0
    return max(1, training.plan.steps_per_epoch // spec.checks_per_epoch)


def recovery_check(training: Training, state: TrainState) -> None:
    """One check: validation top-1 and zero_frac on the subset, the pressure moved, the sparsest checkpoint that met
    the target kept (main process writes it)."""
    import logging

    from sparsezoo.train.evaluation import EvalContext, evaluate

    acc, controller = training.accelerator, training.recovery
    ctx = EvalContext(training.task, acc.device, acc.autocast, training.channels_last)
    val = evaluate(training.raw_model, training.check_loader, ctx, training.task.sites, training.stages,
                   fused=training.fused_eval)
    zero_frac = val["sparsity"]["zero_frac_mean_sites"]
    if controller.observe(val["top1"], zero_frac, state.opt_step) and acc.is_main_process:
        save_best(state.work / CHECKPOINTS, training.raw_model)
    logging.getLogger(__package__).info(
        "recovery check at step %d: top1 %.4f (target %.4f), zero_frac %.4f; pressure now %.3g", state.opt_step,
        val["top1"], controller.floor, zero_frac, controller.pressure)


def finish_recovery(training: Training, work: Path) -> dict[str, Any] | None:
    """Back to the kept checkpoint (every process) and its numbers on the whole validation split; None without a
    controller. The threshold search that may follow spends only what is left above the target."""
    controller = training.recovery
    if controller is None:
        return None
    from sparsezoo.train.distributed import broadcast_buffers
    from sparsezoo.train.evaluation import EvalContext, evaluate

    training.accelerator.wait_for_everyone()
    restored = controller.best is not None and restore_best(work / CHECKPOINTS, training.raw_model)
    broadcast_buffers(training.raw_model)
    acc = training.accelerator
    ctx = EvalContext(training.task, acc.device, acc.autocast, training.channels_last)
    val = evaluate(training.raw_model, training.eval_loader, ctx, training.task.sites, training.stages,
                   fused=training.fused_eval)
    floor = controller.spec.min * controller.reference_top1_full
    summary = {**controller.to_json(), "restored": restored, "top1": val["top1"], "met_full": val["top1"] >= floor}
    return {"recovery": summary, "val": val}
