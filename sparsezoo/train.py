"""The fine-tuning loop: :func:`finetune` runs a recipe and writes a run folder.

Built on ``accelerate``: the same code runs on one CPU, one GPU, or several processes launched with
``torchrun`` / ``accelerate launch`` (DDP; gloo on CPU). On CUDA it uses bf16 autocast and channels_last.
Only the main process writes; evaluation shards the validation set over all processes and all-reduces
exact sums, so its numbers cover the whole set once.

Determinism: every epoch reseeds all RNGs from (seed, epoch, rank) and draws its shuffle from
(seed, epoch); learning rate and λ are pure functions of the step. A run resumed from the checkpoint of
epoch k therefore ends with the same weights as an uninterrupted one (exactly, on CPU).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sparsezoo.checkpoint import (
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
from sparsezoo.errors import DataError, SparsezooError
from sparsezoo.io import atomic_write_json, atomic_write_text
from sparsezoo.lock import FolderLock, FolderLockedError
from sparsezoo.recipe import Recipe, validate
from sparsezoo.schedules import TargetController, lam_at, lr_at

log = logging.getLogger(__name__)


class TrainingDivergedError(SparsezooError):
    """The loss or the weights became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class RunResult:
    out: Path
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + rank) % 2**31


def _dist_reduce(t, op: str):
    """All-reduce a tensor across processes (identity when not distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def broadcast_buffers(model) -> None:
    """Copy the main process's buffers (BatchNorm running statistics) to all processes.

    DDP broadcasts buffers at the start of each training forward, so after the last step every process
    holds running statistics of its own last batch; evaluation and checkpoints need one model.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in model.buffers():
            dist.broadcast(buf.data, src=0)


def params_in_sync(model) -> bool:
    """Whether every process holds the same parameters and buffers (fingerprints compared exactly)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return True
    tensors = list(model.state_dict().values())
    fp = torch.stack([torch.stack([t.double().sum(), t.double().square().sum()]) for t in tensors]).flatten()
    hi, lo = _dist_reduce(fp, "max"), -_dist_reduce(-fp, "max")
    return bool(torch.equal(hi, lo))


def build_optimizer(model, o):
    """AdamW or SGD; no weight decay on biases and normalization parameters (1-D tensors)."""
    import torch

    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if o.name == "sgd":
        return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum, nesterov=o.momentum > 0)
    return torch.optim.AdamW(groups, lr=o.lr, betas=tuple(o.betas))


def _loader(dataset, indices, batch_size: int, workers: int, drop_last: bool, seed: int, collate=None):
    import torch
    from torch.utils.data import DataLoader, Subset

    g = torch.Generator().manual_seed(seed)
    return DataLoader(Subset(dataset, indices), batch_size=batch_size, shuffle=False, drop_last=drop_last,
                      num_workers=workers, generator=g, persistent_workers=False, collate_fn=collate,
                      pin_memory=torch.cuda.is_available())


def train_indices(n: int, epoch: int, seed: int, rank: int, world: int) -> list[int]:
    """This process's share of epoch ``epoch``'s shuffle (equal length on every process)."""
    import torch

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(_epoch_seed(seed, epoch))).tolist()
    per = math.ceil(n / world)
    perm += perm[: per * world - n]  # pad like DistributedSampler so every process has as many batches
    return perm[rank::world]


def evaluate(model, loader, task, sites, stages: dict[str, str], device, autocast, channels_last: bool) -> dict:
    """Top-1 accuracy, mean task loss and feature sparsity on ``loader`` (summed over all processes).

    Padded tokens are left out of the sparsity statistics (the meter gets each batch's attention mask).
    """
    import torch
    import torch.nn.functional as F

    from analysis.sparsity import SparsityMeter, summarize

    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
    with SparsityMeter(model, [s for s in sites if s.kind != "attention"]) as meter, torch.no_grad():
        for batch in loader:
            inputs, y, mask = task.split(batch, device, channels_last)
            meter.position_mask = mask.bool() if mask is not None else None
            with autocast():
                logits = task.logits(model, inputs)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum()
            count += y.numel()
    loss_sum, correct, count = (_dist_reduce(t, "sum") for t in (loss_sum, correct, count))
    meter.reduce_(_dist_reduce)
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


def _environment(acc, precision: str) -> dict:
    import timm
    import torch
    import transformers

    return {"torch": torch.__version__, "timm": timm.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "device": str(acc.device), "processes": acc.num_processes, "precision": precision}


def finetune(recipe: Recipe, out: str | Path, *, resume: bool = False, force: bool = False, progress: bool = False,
             on_epoch: Callable[[dict], None] | None = None) -> RunResult:
    """Fine-tune ``recipe.model`` on ``recipe.data`` with the recipe's sparsity penalties.

    The run holds an exclusive lock on ``out`` (:mod:`sparsezoo.lock`) from start to end. Everything that can
    be checked is checked before anything is written; with ``force`` an existing run is replaced only once the
    new one has its first checkpoint; a run that fails before its first checkpoint leaves nothing behind.

    Args:
        recipe: a :class:`~sparsezoo.recipe.Recipe` (validated again here).
        out: run folder (see :mod:`sparsezoo.checkpoint` for its layout).
        resume: continue from the newest checkpoint in ``out`` (made under the same recipe).
        force: replace an existing run in ``out``.
        progress: show tqdm progress bars (main process only).
        on_epoch: called with each epoch's record (after its checkpoint is written).

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
    t_cfg = recipe.train
    precision = "bf16" if t_cfg.precision == "bf16" or (t_cfg.precision == "auto" and cuda) else "no"
    acc = Accelerator(cpu=not cuda, mixed_precision=precision, gradient_accumulation_steps=recipe.optim.grad_accum)
    lock = _lock_output(out, acc)
    try:
        return _finetune(recipe, out, acc, precision, resume, force, progress, on_epoch)
    finally:
        if lock is not None:
            lock.release()


def _lock_output(out: Path, acc) -> FolderLock | None:
    """The main process locks ``out`` and clears what a killed run left beside it; every process learns whether
    the lock was taken (one all-reduce), so all of them stop together when it was not."""
    import torch

    lock, err = None, None
    if acc.is_main_process:
        try:
            lock = FolderLock(out).acquire()
        except FolderLockedError as e:
            err = e
    if float(_dist_reduce(torch.tensor(float(err is not None), device=acc.device), "max")):
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


def _finetune(recipe: Recipe, out: Path, acc, precision: str, resume: bool, force: bool, progress: bool,
              on_epoch: Callable[[dict], None] | None) -> RunResult:
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from analysis.sites import site_stages
    from sparsezoo.penalties import SparsityPenalty
    from sparsezoo.tasks import build_task

    t_cfg, o_cfg = recipe.train, recipe.optim
    cuda = torch.cuda.is_available()
    main, rank, world = acc.is_main_process, acc.process_index, acc.num_processes

    ckpt = prepare_output(out, recipe, resume, force)  # read-only on every process, before any write
    seed_all(t_cfg.seed)
    task = build_task(recipe)
    model, sites = task.model, task.sites
    if len(task.val_ds) < world:
        raise DataError(f"validation set has {len(task.val_ds)} samples, fewer than the {world} processes")
    train_ds, val_ds = task.train_ds, task.val_ds
    per_rank = math.ceil(len(train_ds) / world)
    batches = per_rank // t_cfg.batch_size
    if t_cfg.max_steps_per_epoch:
        batches = min(batches, t_cfg.max_steps_per_epoch * o_cfg.grad_accum)
    batches -= batches % o_cfg.grad_accum  # every epoch ends on an optimizer step
    if batches == 0:
        raise DataError(f"{per_rank} training samples per process is less than one step "
                        f"(batch_size {t_cfg.batch_size} x grad_accum {o_cfg.grad_accum})")
    steps_per_epoch = batches // o_cfg.grad_accum
    total_steps = steps_per_epoch * t_cfg.epochs
    warmup_steps = round(o_cfg.warmup_epochs * steps_per_epoch)
    stages = site_stages(model, [s.name for s in sites])
    targets = {p.kind: TargetController(p.target_zero_frac, p.lam, p.target_gain)
               for p in recipe.penalties if p.target_zero_frac is not None}
    reg = SparsityPenalty(model, lams={p.kind: 0.0 for p in recipe.penalties}, sites=sites,
                          site_weights=recipe.sites.weights, track_zero_frac=bool(targets))

    created = not out.exists() or not any(out.iterdir())
    work = staging_folder(out) if force and not created else out  # --force: build beside the old run
    acc.wait_for_everyone()  # every process has validated its input; now the main one may write
    with _discard_on_failure(out, work, created, main and ckpt is None):
        if main:
            work.mkdir(parents=True, exist_ok=True)
            atomic_write_text(work / "recipe.yaml", recipe.to_yaml())

        channels_last = (t_cfg.channels_last if t_cfg.channels_last is not None else cuda) and not task.is_text
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = model.to(acc.device)
        optimizer = build_optimizer(model, o_cfg)

        target_every = min((p.target_every for p in recipe.penalties if p.kind in targets), default=0)
        history: list[dict] = []
        start_epoch, opt_step = 0, 0
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer)
            start_epoch, opt_step, history = state["epoch"], state["opt_step"], state["history"]
            for kind, st in state.get("targets", {}).items():
                targets[kind].load_state_dict(st)
            if main:
                truncate_log(work / "train_log.jsonl", start_epoch)  # the interrupted epoch is done again
            log.info("resuming %s from %s (epoch %d, step %d)", out, ckpt.name, start_epoch, opt_step)

        model, optimizer = acc.prepare(model, optimizer)
        raw_model = acc.unwrap_model(model)
        fwd_model = torch.compile(model) if t_cfg.compile else model
        eval_loader = _loader(val_ds, list(range(rank, len(val_ds), world)), t_cfg.eval_batch_size or t_cfg.batch_size,
                              recipe.data.num_workers, False, 0, task.collate)
        log_path = work / "train_log.jsonl"
        env = _environment(acc, precision)
        reg.attach()
        t_run = time.perf_counter()
        try:
            for epoch in range(start_epoch, t_cfg.epochs):
                seed_all(_epoch_seed(t_cfg.seed, epoch, rank))
                idx = train_indices(len(train_ds), epoch, t_cfg.seed, rank, world)[: batches * t_cfg.batch_size]
                loader = _loader(train_ds, idx, t_cfg.batch_size, recipe.data.num_workers, True,
                                 _epoch_seed(t_cfg.seed, epoch, rank), task.collate)
                model.train()
                bar = tqdm(total=batches, desc=f"epoch {epoch + 1}/{t_cfg.epochs}", disable=not (progress and main),
                           leave=False, dynamic_ncols=True)
                sums = {"task": torch.zeros((), device=acc.device)}
                window = {"task": torch.zeros((), device=acc.device)}
                n_win, t_win, t_epoch, seen = 0, time.perf_counter(), time.perf_counter(), 0
                for i, batch in enumerate(loader):
                    x, y, mask = task.split(batch, acc.device, channels_last)
                    reg.position_mask = mask.bool() if mask is not None else None
                    pos = epoch + i / batches
                    for p in recipe.penalties:
                        base = targets[p.kind].lam if p.kind in targets else p.lam
                        reg.set_lam(p.kind, lam_at(base, pos, p.schedule.warmup_epochs, p.schedule.ramp_epochs,
                                                   p.schedule.shape))
                    lr = lr_at(opt_step, total_steps, o_cfg.lr, warmup_steps, o_cfg.schedule, o_cfg.min_lr_ratio)
                    for g in optimizer.param_groups:
                        g["lr"] = lr
                    with acc.accumulate(model):
                        logits = task.logits(fwd_model, x)
                        task_loss = F.cross_entropy(logits.float(), y)
                        penalty = reg.penalty()
                        acc.backward(task_loss + penalty)
                        if acc.sync_gradients and o_cfg.grad_clip:
                            acc.clip_grad_norm_(model.parameters(), o_cfg.grad_clip)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    for k, v in [("task", task_loss.detach())] + [(f"pen_{k}", v) for k, v in reg.last_terms.items()]:
                        sums[k] = sums.get(k, 0) + v
                        window[k] = window.get(k, 0) + v
                    n_win += 1
                    seen += y.shape[0] * world
                    if acc.sync_gradients:
                        opt_step += 1
                        zf = reg.pop_zero_frac() if targets and opt_step % target_every == 0 else None
                        if zf is not None:
                            zf = float(_dist_reduce(zf, "sum")) / world  # one host sync per controller update
                            for p in recipe.penalties:
                                if p.kind in targets and pos >= p.schedule.warmup_epochs:
                                    targets[p.kind].update(zf)
                    bar.update(1)
                    if n_win == t_cfg.log_every or i == batches - 1:
                        vals = {k: float(v) / n_win for k, v in window.items()}  # one host sync per window
                        if not all(map(math.isfinite, vals.values())):
                            raise _diverged(work, f"non-finite loss in epoch {epoch + 1} by step {opt_step} ("
                                            + ", ".join(f"{k.removeprefix('pen_')} {v:g}" for k, v in vals.items()) + ")")
                        rate = n_win * y.shape[0] * world / max(time.perf_counter() - t_win, 1e-9)
                        rec = {"event": "step", "epoch": epoch + 1, "step": opt_step, "lr": lr,
                               "task_loss": vals.pop("task"), "penalty": {k[4:]: v for k, v in vals.items()},
                               "lam": dict(reg.lams), "img_per_s": rate}
                        if main:
                            with open(log_path, "a") as f:
                                f.write(json.dumps(rec) + "\n")
                        bar.set_postfix(loss=f"{rec['task_loss']:.3f}",
                                        pen=",".join(f"{v:.3g}" for v in rec["penalty"].values()) or "-",
                                        ips=f"{rate:.0f}")
                        window = {k: torch.zeros((), device=acc.device) for k in window}
                        n_win, t_win = 0, time.perf_counter()
                bar.close()
                train_time = time.perf_counter() - t_epoch
                broadcast_buffers(raw_model)
                val = evaluate(raw_model, eval_loader, task, sites, stages, acc.device, acc.autocast, channels_last)
                record = {
                    "epoch": epoch + 1,
                    "step": opt_step,
                    "train": {"task_loss": float(sums.pop("task")) / batches,
                              "penalty": {k[4:]: float(v) / batches for k, v in sums.items()},
                              "lam": dict(reg.lams), "lr": lr, "seconds": train_time, "img_per_s": seen / train_time},
                    "val": val,
                }
                if not _all_finite(raw_model):
                    raise _diverged(work, f"non-finite weights at the end of epoch {epoch + 1}")
                history.append(record)
                if main:
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"event": "epoch", **{k: v for k, v in record.items() if k != "val"},
                                            "val": {k: v for k, v in val.items() if k != "sparsity_per_site"}}) + "\n")
                    save_checkpoint(work, epoch + 1, raw_model, optimizer, {
                        "opt_step": opt_step, "history": history, "recipe_hash": recipe.hash(),
                        "recipe": recipe.to_dict(), "targets": {k: c.state_dict() for k, c in targets.items()}},
                        t_cfg.keep_checkpoints)
                    atomic_write_json(work / "metrics.json", _metrics(recipe, history, env, done=False))
                    if work != out:  # --force: the new run has a checkpoint now, so it replaces the old one
                        replace_run(work, out)
                if work != out:
                    work, log_path = out, out / "train_log.jsonl"
                log.info("epoch %d/%d: top1 %.4f, val loss %.4f, zero_frac %.4f (mean over %d sites), %.1fs",
                         epoch + 1, t_cfg.epochs, val["top1"], val["loss"], val["sparsity"]["zero_frac_mean_sites"],
                         val["sparsity"]["sites"], train_time)
                if on_epoch is not None:
                    on_epoch(record)
                acc.wait_for_everyone()
        finally:
            reg.detach()

        final = _metrics(recipe, history, env, done=True)
        final["wall_seconds_this_session"] = time.perf_counter() - t_run
        if world > 1:
            final["environment"]["params_in_sync"] = in_sync = params_in_sync(raw_model)
            if not in_sync:
                log.error("parameters differ between the %d processes at the end of training", world)
        if main:
            task.save(out, raw_model, {"recipe_hash": recipe.hash(), "sparsezoo": "finetune"})
            atomic_write_json(out / "metrics.json", final)
        acc.wait_for_everyone()
        return RunResult(out, history, final["final"])


def _metrics(recipe: Recipe, history: list[dict], env: dict, done: bool) -> dict:
    from analysis.sparsity import DEFAULT_TAU_ABS, DEFAULT_TAU_REL

    last = history[-1]["val"] if history else {}
    return {
        "complete": done,
        "recipe_hash": recipe.hash(),
        "environment": env,
        "final": {k: last[k] for k in ("top1", "loss", "sparsity") if k in last},
        "history": history,
        "definitions": {
            "top1": "fraction of validation samples whose arg-max logit is the label",
            "loss": "mean cross-entropy on the validation set (nats)",
            "zero_frac": "fraction of activation entries exactly 0 at a site",
            "zero_frac_mean_sites": "zero_frac averaged over sites, each site weighted equally",
            "zero_frac_all_entries": "fraction of all activation entries (all sites) exactly 0",
            "zero_frac_per_stage": "zero_frac averaged over the sites of each stage (rN = output stride N)",
            "l0_per_position": "non-zero channels per code vector (b, h, w) or (b, t)",
            "near_zero_frac": f"fraction with |a| <= tau (abs tau={DEFAULT_TAU_ABS:g}; rel tau={DEFAULT_TAU_REL:g}"
                              " x per-position max |a|)",
            "hoyer_mean": "mean over non-empty code vectors of (sqrt(n) - l1/l2)/(sqrt(n) - 1)",
            "penalty.l1": "per sample (mean over the batch), sum over sites and positions of ||a[b,:,pos]||_1",
            "penalty.hoyer_square": "per sample (mean over the batch), sum over sites and positions of"
                                    " ||a||_1^2/||a||_2^2",
        },
    }
