"""The fine-tuning loop: :func:`finetune` runs a recipe and writes a run folder.

Built on ``accelerate``: the same code runs on one CPU, one GPU, or several processes launched with
``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU). On CUDA it uses bf16 autocast and channels_last.
Only the main process writes; evaluation shards the validation set over all processes and all-reduces
exact sums, so its numbers cover the whole set once.

Determinism: every epoch reseeds all RNGs from (seed, epoch, rank) and draws its shuffle from
(seed, epoch); learning rate and λ are pure functions of the step. A run resumed from the checkpoint of
epoch k therefore ends with the same weights as an uninterrupted one (exactly, on CPU).

The loop in steps: :func:`~sparsezoo.train.state.plan_steps` (how epochs divide into steps), then per epoch
:func:`train_epoch` (:func:`train_step` per batch, :func:`log_window` every ``log_every`` batches) and
:func:`end_epoch` (evaluate, :func:`save_epoch`: log line, checkpoint, metrics.json). :mod:`sparsezoo.train.state`
holds the objects a run is made of (what it fixes, what changes, the loss sums); :mod:`~sparsezoo.train.setup`
builds them, :mod:`~sparsezoo.train.evaluation` validates, :mod:`~sparsezoo.train.distributed` keeps processes in
step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.errors import SparsezooError
from sparsezoo.io import atomic_write_json, atomic_write_text
from sparsezoo.recipe import Recipe, validate
from sparsezoo.train.checkpoint import (
    CHECKPOINTS,
    RUN_FILES,
    latest_checkpoint,
    load_checkpoint,
    prepare_output,
    recover_output,
    replace_run,
    save_checkpoint,
    staging_folder,
    truncate_log,
)
from sparsezoo.train.distributed import (
    LoaderOptions,
    broadcast_buffers,
    dist_reduce,
    epoch_seed,
    make_loader,
    params_in_sync,
    seed_all,
    train_indices,
)
from sparsezoo.train.environment import environment
from sparsezoo.train.evaluation import EvalContext, evaluate
from sparsezoo.train.lock import FolderLock, FolderLockedError
from sparsezoo.train.recovery import check_every, finish_recovery, recovery_check, start_recovery
from sparsezoo.train.schedules import TargetController, lr_at, scheduled_lam
from sparsezoo.train.setup import build_penalty, eval_loader, fused_eval, model_and_optimizer
from sparsezoo.train.state import LossSums, RunOptions, RunResult, Training, TrainState, plan_steps
from sparsezoo.train.thresholding import apply_thresholds, save_thresholded

if TYPE_CHECKING:
    from torch import Tensor, nn

    from sparsezoo.hub.loading import ZooModel
    from sparsezoo.train.tasks import Task


log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


class TrainingDivergedError(SparsezooError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


def finetune(recipe: Recipe, out: str | Path, *, resume: bool = False, force: bool = False, progress: bool = False,
             on_epoch: Callable[[dict], None] | None = None, teacher: ZooModel | None = None,
             reference: ZooModel | None = None) -> RunResult:
    """Fine-tune ``recipe.model`` on ``recipe.data`` with the recipe's sparsity penalties.

    The run holds an exclusive lock on ``out`` (:mod:`sparsezoo.train.lock`) from start to end. Everything that can
    be checked is checked before anything is written; with ``force`` an existing run is replaced only once the
    new one has its first checkpoint; a run that fails before its first checkpoint leaves nothing behind.

    Args:
        recipe: a :class:`~sparsezoo.recipe.Recipe` (validated again here).
        out: run folder (see :mod:`sparsezoo.train.checkpoint` for its layout).
        resume: continue from the newest checkpoint in ``out`` (made under the same recipe).
        force: replace an existing run in ``out``.
        progress: show tqdm progress bars (main process only).
        on_epoch: called with each epoch's record (after its checkpoint is written).
        teacher: the distillation teacher of ``recipe.distill``, already loaded (default: loaded from
            ``recipe.distill.teacher``, a run folder or Hub id; zoo short names are resolved by
            :func:`sparsezoo.load`, which the CLI and the zoo do).
        reference: the dense reference of ``recipe.recovery``, already loaded (default: loaded from
            ``recipe.recovery.reference``, else the teacher).

    Returns:
        The run folder, the per-epoch history and the final metrics.

    Raises:
        SparsezooError subclasses for bad input (see :mod:`sparsezoo.errors`); nothing is written then.
        FolderLockedError: another run is writing into ``out``.
        TrainingDivergedError: the loss or the weights became non-finite (the last good checkpoint is kept).
    """
    import torch
    from accelerate import Accelerator

    validate(recipe)  # a recipe built in Python has not been through Recipe.from_dict
    out = Path(out)
    cuda = torch.cuda.is_available()
    precision = "bf16" if recipe.train.precision == "bf16" or (recipe.train.precision == "auto" and cuda) else "no"
    accelerator = Accelerator(cpu=not cuda, mixed_precision=precision,
                              gradient_accumulation_steps=recipe.optim.grad_accum)
    lock = _lock_output(out, accelerator)
    try:
        options = RunOptions(resume, force, progress, on_epoch, teacher, reference)
        return _finetune(recipe, out, accelerator, precision, options)
    finally:
        if lock is not None:
            lock.release()


def _lock_output(out: Path, accelerator) -> FolderLock | None:
    """The main process locks ``out`` and clears what a killed run left beside it; every process learns whether
    the lock was taken (one all-reduce), so all of them stop together when it was not."""
    import torch

    lock, err = None, None
    if accelerator.is_main_process:
        try:
            lock = FolderLock(out).acquire()
        except FolderLockedError as e:
            err = e
    if float(dist_reduce(torch.tensor(float(err is not None), device=accelerator.device), "max")):
        raise err or FolderLockedError(f"{out} is in use by another run")
    if lock is not None:
        recover_output(out)
    return lock


def _diverged(work: Path, what: str) -> TrainingDivergedError:
    ckpt = latest_checkpoint(work)
    kept = (f"kept the last good checkpoint {ckpt} (metrics.json says incomplete)" if ckpt is not None
            else "no epoch had finished, so nothing is kept")
    return TrainingDivergedError(f"training diverged: {what}; {kept}; lower --lr or the penalty's λ")


def _all_finite(model) -> bool:
    """Whether every parameter is finite (one host sync for the whole model)."""
    import torch

    return bool(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all())


@contextlib.contextmanager
def _discard_on_failure(out: Path, work: Path, created: bool, active: bool):
    """On failure before the run's first checkpoint exists, remove what it wrote (the old run of a --force stays:
    only its staging folder goes)."""
    try:
        yield
    except BaseException:
        if active and latest_checkpoint(out if work == out else work) is None:
            if work != out:
                shutil.rmtree(work, ignore_errors=True)
            elif created:
                for name in RUN_FILES:
                    (out / name).unlink(missing_ok=True)
                shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
                with contextlib.suppress(OSError):
                    out.rmdir()
        raise


# ----------------------------------------------------------------------------- the run


def _finetune(recipe: Recipe, out: Path, accelerator, precision: str, options: RunOptions) -> RunResult:
    from analysis.collect import compile_with_hook_guards
    from analysis.sites import site_stages
    from sparsezoo.train.tasks import build_task

    resume, force, progress = options.resume, options.force, options.progress
    ckpt = prepare_output(out, recipe, resume, force)  # read-only on every process, before any write
    seed_all(recipe.train.seed)
    task = build_task(recipe)
    teacher = _teacher(recipe, task, options.teacher, accelerator.device)
    reference = _reference(recipe, task, options.reference, accelerator.device) if recipe.recovery else None
    plan = plan_steps(recipe, len(task.train_ds), len(task.val_ds), accelerator.num_processes)
    stages = site_stages(task.model, [s.name for s in task.sites])
    penalty, targets = build_penalty(recipe, task)

    created = not out.exists() or not any(out.iterdir())
    work = staging_folder(out) if force and not created else out  # --force: build beside the old run
    accelerator.wait_for_everyone()  # every process has validated its input; now the main one may write
    with _discard_on_failure(out, work, created, accelerator.is_main_process and ckpt is None):
        if accelerator.is_main_process:
            work.mkdir(parents=True, exist_ok=True)
            atomic_write_text(work / "recipe.yaml", recipe.to_yaml())
        model, optimizer, channels_last = model_and_optimizer(recipe, task, accelerator.device)
        state = TrainState(work)
        if ckpt is not None:
            _resume(state, ckpt, model, optimizer, targets, accelerator.is_main_process)
            log.info("resuming %s from %s (epoch %d, step %d)", out, ckpt.name, state.epoch, state.opt_step)
        model, optimizer = accelerator.prepare(model, optimizer)
        training = Training(
            recipe=recipe, accelerator=accelerator, task=task, model=model, raw_model=accelerator.unwrap_model(model),
            forward_model=compile_with_hook_guards(model) if recipe.train.compile else model, optimizer=optimizer,
            penalty=penalty, targets=targets, plan=plan, stages=stages, channels_last=channels_last,
            eval_loader=eval_loader(recipe, task, accelerator), env=environment(accelerator, precision), out=out,
            progress=progress, teacher=teacher, fused_eval=fused_eval(recipe, len(task.val_ds)))
        against = reference if reference is not None else teacher  # validate() makes sure there is one
        if recipe.recovery is not None and against is not None:
            training.recovery, training.check_loader = start_recovery(recipe, task, against, accelerator)
            if ckpt is not None and "recovery" in state.extra:
                training.recovery.load_state_dict(state.extra["recovery"])
        return _train(training, state, options.on_epoch)


def _reference(recipe: Recipe, task: Task, loaded: ZooModel | None, device: Any) -> nn.Module | None:
    """The recovery target's dense reference on ``device`` (eval mode), checked like a teacher; None when the
    recipe measures recovery against its distillation teacher."""
    if recipe.recovery is None or (recipe.recovery.reference is None and loaded is None):
        return None
    from sparsezoo.hub.loading import load
    from sparsezoo.train.distill import check_teacher

    zoo = loaded if loaded is not None else load(str(recipe.recovery.reference))
    check_teacher(zoo, task, recipe.recovery.reference or "reference")
    model = zoo.model.to(device).eval()
    model.requires_grad_(False)
    return model


def _teacher(recipe: Recipe, task: Task, loaded: ZooModel | None, device: Any) -> nn.Module | None:
    """The recipe's distillation teacher on ``device`` (eval mode, no gradients), checked against the student's
    inputs and classes before anything is written; None without distillation."""
    if recipe.distill is None:
        return None
    from sparsezoo.train.distill import check_teacher, load_teacher

    zoo = loaded or load_teacher(recipe.distill)
    check_teacher(zoo, task, recipe.distill.teacher)
    model = zoo.model.to(device).eval()
    model.requires_grad_(False)
    return model


def _resume(state: TrainState, ckpt: Path, model, optimizer, targets: dict[str, TargetController], main: bool) -> None:
    """Restore model, optimizer, λ controllers and progress from checkpoint ``ckpt`` (the main process also cuts
    train_log.jsonl back to the checkpoint's epoch)."""
    saved = load_checkpoint(ckpt, model, optimizer)
    state.epoch, state.opt_step, state.history = saved["epoch"], saved["opt_step"], saved["history"]
    state.extra = {k: saved[k] for k in ("recovery",) if k in saved}
    for kind, controller_state in saved.get("targets", {}).items():
        targets[kind].load_state_dict(controller_state)
    if main:
        truncate_log(state.log_path, state.epoch)  # the interrupted epoch is done again


def _train(training: Training, state: TrainState, on_epoch: Callable[[dict], None] | None) -> RunResult:
    """The epochs left, with the penalty's hooks attached; then the final model and metrics."""
    training.penalty.attach()
    started = time.perf_counter()
    try:
        for epoch in range(state.epoch, training.recipe.train.epochs):
            sums, seen, seconds = train_epoch(training, state, epoch)
            end_epoch(training, state, epoch, sums, seen, seconds)
            if on_epoch is not None:
                on_epoch(state.history[-1])
            training.accelerator.wait_for_everyone()
    finally:
        training.penalty.detach()
    return _finish(training, state, started)


def train_epoch(training: Training, state: TrainState, epoch: int) -> tuple[LossSums, int, float]:
    """One epoch of steps (``epoch`` counts from 0). Returns the sums of its losses, the samples seen by all
    processes, and its seconds."""
    from tqdm.auto import tqdm

    cfg, accelerator, plan = training.recipe.train, training.accelerator, training.plan
    rank, world = accelerator.process_index, accelerator.num_processes
    seed_all(epoch_seed(cfg.seed, epoch, rank))
    indices = train_indices(len(training.task.train_ds), epoch, cfg.seed, rank, world)[: plan.batches * cfg.batch_size]
    loader = make_loader(training.task.train_ds, indices, LoaderOptions(
        cfg.batch_size, training.recipe.data.num_workers, True, epoch_seed(cfg.seed, epoch, rank), training.task.collate))
    training.model.train()
    bar = tqdm(total=plan.batches, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not (training.progress and accelerator.is_main_process), leave=False, dynamic_ncols=True)
    sums, window = LossSums.zeros(accelerator.device), LossSums.zeros(accelerator.device)
    window_started, started, seen = time.perf_counter(), time.perf_counter(), 0
    for i, batch in enumerate(loader):
        position = epoch + i / plan.batches
        task_loss, batch_size = train_step(training, state, batch, position)
        sums.add(task_loss, training.penalty.last_terms)
        window.add(task_loss, training.penalty.last_terms)
        seen += batch_size * world
        if accelerator.sync_gradients:
            _optimizer_stepped(training, state, position)
        bar.update(1)
        if window.steps == cfg.log_every or i == plan.batches - 1:
            bar.set_postfix(**log_window(training, state, epoch, window, window.steps * batch_size * world,
                                         window_started))
            window, window_started = window.restarted(), time.perf_counter()
    bar.close()
    return sums, seen, time.perf_counter() - started


def train_step(training: Training, state: TrainState, batch: Any, position: float) -> tuple[Tensor, int]:
    """One batch at ``position`` (epochs, fractional): λ and learning rate of that point of their schedules,
    forward, backward and, once every grad_accum batches, the optimizer step. Returns the task loss (detached)
    and the batch size."""

    accelerator, optim_cfg, plan, penalty = training.accelerator, training.recipe.optim, training.plan, training.penalty
    inputs, labels, mask = training.task.split_batch(batch, accelerator.device, training.channels_last)
    penalty.position_mask = mask.bool() if mask is not None else None
    for p in training.recipe.penalties:
        base = training.targets[p.kind].lam if p.kind in training.targets else p.lam * training.pressure
        penalty.set_lam(p.kind, scheduled_lam(p.schedule, base, position))
    state.lr = lr_at(state.opt_step, plan.total_steps, optim_cfg.lr, plan.warmup_steps, optim_cfg.schedule,
                     optim_cfg.min_lr_ratio)
    for group in training.optimizer.param_groups:
        group["lr"] = state.lr
    with accelerator.accumulate(training.model):
        logits = training.task.logits(training.forward_model, inputs)
        task_loss = _task_loss(training, logits, labels, inputs)
        accelerator.backward(task_loss + penalty.penalty())
        if accelerator.sync_gradients and optim_cfg.grad_clip:
            accelerator.clip_grad_norm_(training.model.parameters(), optim_cfg.grad_clip)
        training.optimizer.step()
        training.optimizer.zero_grad(set_to_none=True)
    return task_loss.detach(), labels.shape[0]


def _task_loss(training: Training, logits: Tensor, labels: Tensor, inputs: Any) -> Tensor:
    """Cross-entropy, or with a teacher the distillation loss (1 − h)·CE + h·T²·KL (:mod:`sparsezoo.train.distill`)."""
    import torch.nn.functional as F

    if training.teacher is None or training.recipe.distill is None:
        return F.cross_entropy(logits.float(), labels)
    from sparsezoo.train.distill import distillation_loss, teacher_logits

    with training.accelerator.autocast():
        soft = teacher_logits(training.task, training.teacher, inputs)
    d = training.recipe.distill
    return distillation_loss(logits, soft, labels, d.weight, d.temperature)


def _optimizer_stepped(training: Training, state: TrainState, position: float) -> None:
    """Count the step; every ``target_every`` steps, feed the λ controllers the zero_frac of the training batches
    (mean over processes; one host sync per update)."""
    state.opt_step += 1
    every = check_every(training)
    if every and state.opt_step % every == 0:
        recovery_check(training, state)
    if not training.targets or state.opt_step % training.target_every != 0:
        return
    zero_frac = training.penalty.pop_zero_frac()
    if zero_frac is None:
        return
    zero_frac = float(dist_reduce(zero_frac, "sum")) / training.accelerator.num_processes
    for p in training.recipe.penalties:
        if p.kind in training.targets and position >= p.schedule.warmup_epochs:
            training.targets[p.kind].update(zero_frac)


def log_window(training: Training, state: TrainState, epoch: int, window: LossSums, samples: int,
               started: float) -> dict[str, str]:
    """Write the ``step`` record of the batches summed in ``window`` (``samples`` over all processes, since
    ``started``) to train_log.jsonl; returns the progress bar's postfix. A non-finite loss stops the run."""
    means = window.means(window.steps)  # one host sync per window
    if not means.finite():
        raise _diverged(state.work, f"non-finite loss in epoch {epoch + 1} by step {state.opt_step} "
                                    f"({means.describe()})")
    rate = samples / max(time.perf_counter() - started, 1e-9)
    record = {"event": "step", "epoch": epoch + 1, "step": state.opt_step, "lr": state.lr, **means.to_json(),
              "lam": dict(training.penalty.lams), "img_per_s": rate}
    if training.accelerator.is_main_process:
        with open(state.log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
    return {"loss": f"{means.task:.3f}", "pen": ",".join(f"{v:.3g}" for v in means.penalty.values()) or "-",
            "ips": f"{rate:.0f}"}


def end_epoch(training: Training, state: TrainState, epoch: int, sums: LossSums, seen: int, seconds: float) -> None:
    """Evaluate the model after epoch ``epoch``, append the epoch's record to the history and save it
    (:func:`save_epoch`); weights that are no longer finite stop the run."""
    accelerator, raw_model = training.accelerator, training.raw_model
    broadcast_buffers(raw_model)
    ctx = EvalContext(training.task, accelerator.device, accelerator.autocast, training.channels_last)
    val = evaluate(raw_model, training.eval_loader, ctx, training.task.sites, training.stages, training.fused_eval)
    record = {
        "epoch": epoch + 1,
        "step": state.opt_step,
        "train": {**sums.means(training.plan.batches).to_json(), "lam": dict(training.penalty.lams), "lr": state.lr,
                  "seconds": seconds, "img_per_s": seen / seconds},
        "val": val,
    }
    if not _all_finite(raw_model):
        raise _diverged(state.work, f"non-finite weights at the end of epoch {epoch + 1}")
    state.history.append(record)
    state.epoch = epoch + 1
    if accelerator.is_main_process:
        save_epoch(training, state, record)
    state.work = training.out  # a --force run has replaced the old one now
    log.info("epoch %d/%d: top1 %.4f, val loss %.4f, zero_frac %.4f (mean over %d sites), %.1fs",
             epoch + 1, training.recipe.train.epochs, val["top1"], val["loss"],
             val["sparsity"]["zero_frac_mean_sites"], val["sparsity"]["sites"], seconds)


def save_epoch(training: Training, state: TrainState, record: dict) -> None:
    """Main process: the epoch's line of train_log.jsonl, its checkpoint, metrics.json (``complete: false``); a
    --force run that built beside the old one then replaces it."""
    recipe = training.recipe
    with open(state.log_path, "a") as f:
        f.write(json.dumps({"event": "epoch", **{k: v for k, v in record.items() if k != "val"},
                            "val": {k: v for k, v in record["val"].items() if k != "sparsity_per_site"}}) + "\n")
    save_checkpoint(state.work, state.epoch, training.raw_model, training.optimizer, {
        "opt_step": state.opt_step, "history": state.history, "recipe_hash": recipe.hash(),
        "recipe": recipe.to_dict(), "targets": {k: c.state_dict() for k, c in training.targets.items()},
        **({"recovery": training.recovery.state_dict()} if training.recovery is not None else {})},
        recipe.train.keep_checkpoints)
    atomic_write_json(state.work / "metrics.json", _metrics(training, state.history, done=False))
    if state.work != training.out:  # --force: the new run has a checkpoint now, so it replaces the old one
        replace_run(state.work, training.out)


def _finish(training: Training, state: TrainState, started: float) -> RunResult:
    """Final metrics (and, with several processes, whether they all hold the same parameters); the main process
    saves the model and metrics.json (``complete: true``)."""
    accelerator, world = training.accelerator, training.accelerator.num_processes
    recovered = finish_recovery(training, state.work)  # back to the sparsest checkpoint that met the target
    thresholded = apply_thresholds(training, _threshold_budget(training, recovered))  # on validation, if asked
    final = _metrics(training, state.history, done=True)
    if recovered is not None:
        final["final"] = {k: recovered["val"][k] for k in ("top1", "loss", "sparsity")}
        final["recovery"] = recovered["recovery"]
    if thresholded is not None:  # the final numbers are the thresholded model's
        final["final"] = {k: thresholded["val"][k] for k in ("top1", "loss", "sparsity")}
        final.update({k: v for k, v in thresholded.items() if k != "val"})
    final["test"] = evaluate_test(training)  # everything is chosen now: the test split is read once
    final["wall_seconds_this_session"] = time.perf_counter() - started
    if world > 1:
        final["environment"]["params_in_sync"] = in_sync = params_in_sync(training.raw_model)
        if not in_sync:
            log.error("parameters differ between the %d processes at the end of training", world)
    if accelerator.is_main_process:
        save_thresholded(training, {"recipe_hash": training.recipe.hash(), "sparsezoo": "finetune"})
        atomic_write_json(training.out / "metrics.json", final)
    accelerator.wait_for_everyone()
    return RunResult(training.out, state.history, final["final"])


def _threshold_budget(training: Training, recovered: dict | None) -> float | None:
    """With a recovery target, the threshold search may spend only the validation top-1 left above it (absolute);
    None: the recipe's own budget."""
    if recovered is None:
        return None
    floor = recovered["recovery"]["floor"]
    return max(0.0, recovered["val"]["top1"] - floor)


def evaluate_test(training: Training) -> dict | None:
    """Top-1, loss and sparsity of the final model on the test split (None without one). Called once, after the
    last choice (epochs, thresholds) has been made on validation: it opens the sealed test split."""
    if training.task.test is None:
        return None
    loader = eval_loader(training.recipe, training.task, training.accelerator, training.task.test.open())
    ctx = EvalContext(training.task, training.accelerator.device, training.accelerator.autocast,
                      training.channels_last)
    result = evaluate(training.raw_model, loader, ctx, training.task.sites, training.stages)
    log.info("test (%s, %d samples): top1 %.4f", training.task.test.info["name"], result["samples"], result["top1"])
    return {k: result[k] for k in ("samples", "top1", "loss", "sparsity")}


def _metrics(training: Training, history: list[dict], done: bool) -> dict:
    """metrics.json: the final (validation) numbers, the splits used, the history, the definitions."""
    from analysis.definitions import definitions_of

    last = history[-1]["val"] if history else {}
    return {
        "complete": done,
        "recipe_hash": training.recipe.hash(),
        "environment": training.env,
        "splits": training.task.splits,
        "final": {k: last[k] for k in ("top1", "loss", "sparsity") if k in last},
        "history": history,
        "definitions": definitions_of(("top1", "loss", "zero_frac", "zero_frac_mean_sites", "zero_frac_all_entries",
                                       "zero_frac_per_stage", "l0_per_position", "near_zero_frac(abs,tau)",
                                       "near_zero_frac(rel,tau)", "hoyer", "penalty.l1", "penalty.hoyer_square")),
    }
