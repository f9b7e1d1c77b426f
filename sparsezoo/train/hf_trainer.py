"""Drop-in sparsity for people who train with the Hugging Face ``Trainer``.

Two ways, both adding the same penalty as ``sparsezoo finetune`` (see :mod:`sparsezoo.train.penalties`):

1. :class:`SparsityTrainer`, a ``Trainer`` subclass that adds the penalty to the loss and logs it::

       trainer = SparsityTrainer(model=model, args=args, train_dataset=ds, sparsity={"l1": 1e-4})
       trainer.train()   # logs sparsity/l1 (the unweighted penalty) and sparsity/lambda_l1

2. :func:`sparsity_loss_func`, for ``Trainer(compute_loss_func=...)``::

       reg = SparsityPenalty(model, l1=1e-4).attach()
       trainer = Trainer(model=model, args=args, compute_loss_func=sparsity_loss_func(reg, args), ...)

Both accept any ``num_items_in_batch`` convention (absent, None, a count): the task loss follows the
Trainer's own normalization, and the penalty (a per-batch mean) is divided by the gradient-accumulation steps
whenever the Trainer will not divide the loss itself, so one λ means the same with or without accumulation.
Padding never counts: the batch's ``attention_mask`` is handed to the penalty before each forward.

:class:`SparsityTrainer` hooks the model only while ``train()`` runs (a callback attaches the penalty at
``on_train_begin`` and detaches it at ``on_train_end``, and ``train()`` detaches it if it raises), so the model
comes back with no hooks and its ``inplace`` flags as they were, and a second trainer on the same model adds no
second set of hooks. ``nn.DataParallel`` (which the Trainer uses for several GPUs in one process) is refused
with :class:`~sparsezoo.train.penalties.DataParallelError`: run one process per GPU (torchrun or accelerate launch).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback

from sparsezoo.train.penalties import DATA_PARALLEL_MESSAGE, DataParallelError, SparsityPenalty, check_no_data_parallel


def _mask(inputs: Mapping[str, Any]) -> torch.Tensor | None:
    """The batch's attention mask as bool (positions the penalty counts), None without one."""
    mask = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return mask.bool() if isinstance(mask, torch.Tensor) else None


def _refuse_data_parallel(model: torch.nn.Module | None, args: Any) -> None:
    if model is not None:
        check_no_data_parallel(model)
    if args is not None and args.n_gpu > 1:
        raise DataParallelError(f"args.n_gpu={args.n_gpu}: the Trainer would wrap the model in nn.DataParallel; "
                                f"{DATA_PARALLEL_MESSAGE}")


class _PenaltyHooks(TrainerCallback):
    """Attaches the trainer's penalty for the duration of each ``train()`` call."""

    def __init__(self, trainer: SparsityTrainer):
        self._trainer = weakref.ref(trainer)  # the trainer holds this callback: no reference cycle

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self._trainer()
        if trainer is not None:  # a trainer that is gone has no penalty to attach
            trainer._attach_sparsity()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self._trainer()
        if trainer is not None:
            trainer._detach_sparsity()


class SparsityTrainer(Trainer):
    """``transformers.Trainer`` with a sparsity penalty on the model's feature sites.

    The penalty's hooks are attached when ``train()`` starts and detached when it ends or raises (a penalty
    passed in already attached is left attached). :meth:`compute_loss` called outside ``train()`` with autograd
    on attaches them for that call.

    Args:
        sparsity: a :class:`~sparsezoo.train.penalties.SparsityPenalty` built on the model, or ``{kind: λ}``
            (e.g. ``{"l1": 1e-4}``) to build one on all activation sites (rebuilt on the new model, with the
            current λ, when ``model_init`` makes a new one for ``train()``).
        *args, **kwargs: everything ``Trainer`` takes.

    Raises:
        DataParallelError: the model is or contains ``nn.DataParallel``, or ``args.n_gpu > 1`` (the Trainer
            would wrap it in one); use DDP (torchrun / accelerate launch) instead.
    """

    def __init__(self, model: nn.Module | None = None, args: Any = None, *rest: Any,
                 sparsity: SparsityPenalty | Mapping[str, float], **kwargs: Any):
        _refuse_data_parallel(model, args)  # before the Trainer moves the model anywhere
        super().__init__(model, args, *rest, **kwargs)
        _refuse_data_parallel(self.model, self.args)  # a model from model_init, default args
        self._owns_sparsity = not isinstance(sparsity, SparsityPenalty)  # built here, so rebuilt for model_init
        self.sparsity: SparsityPenalty = (sparsity if isinstance(sparsity, SparsityPenalty)
                                          else SparsityPenalty(self._trained_model(), lams=sparsity))
        self._detach_at_end = False
        self.add_callback(_PenaltyHooks(self))
        self._pen_sums: dict[str, float] = {}
        self._pen_count = 0

    def _trained_model(self) -> nn.Module:
        """The unwrapped model; ``model_init`` may have made a new one for this ``train()``."""
        if self.model is None:
            raise ValueError("SparsityTrainer needs a model (or model_init)")
        return self.model

    def _attach_sparsity(self) -> None:
        model = self._trained_model()
        _refuse_data_parallel(model, None)
        if not any(m is self.sparsity.model for m in model.modules()):  # model_init built a new model
            if not self._owns_sparsity:
                raise ValueError("the SparsityPenalty was built on another model than the one being trained "
                                 "(model_init makes a new one each train()): pass sparsity={kind: λ} instead")
            self.sparsity.detach()
            self.sparsity = SparsityPenalty(model, lams=self.sparsity.lams)
        if not self.sparsity.attached:
            self.sparsity.attach()
            self._detach_at_end = True

    def _detach_sparsity(self) -> None:
        if self._detach_at_end:
            self.sparsity.detach()
            self._detach_at_end = False

    def train(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().train(*args, **kwargs)
        finally:  # on_train_end has detached already unless train() raised
            self._detach_sparsity()

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        fixed = getattr(self, "loss_is_scaled_for_ga", None)
        if fixed is not None:
            return bool(fixed)
        return bool((getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                    or getattr(self, "compute_loss_func", None) is not None)

    # the keyword arguments of Trainer.compute_loss change across transformers versions: pass them all through
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,  # type: ignore[override]
                     **kwargs: Any) -> Any:
        if not self.sparsity.attached and torch.is_grad_enabled():  # called outside train(): hooks for this call
            with self.sparsity:
                return self.compute_loss(model, inputs, return_outputs, **kwargs)
        self.sparsity.position_mask = _mask(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        penalty = self.sparsity.penalty()
        if model.training and self.sparsity.last_terms:
            if self._loss_scaled_for_ga(kwargs.get("num_items_in_batch")):
                penalty = penalty / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
            for k, v in self.sparsity.last_terms.to_json().items():
                self._pen_sums[k] = self._pen_sums.get(k, 0.0) + v
            self._pen_count += 1
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        if self._pen_count and "loss" in logs:  # training logs: the mean penalty since the last log
            for k, v in self._pen_sums.items():
                logs[f"sparsity/{k}"] = v / self._pen_count
                logs[f"sparsity/lambda_{k}"] = self.sparsity.lams[k]
            self._pen_sums, self._pen_count = {}, 0
        super().log(logs, *args, **kwargs)


def sparsity_loss_func(reg: SparsityPenalty, args: Any = None) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func`` for ``Trainer``: cross-entropy on the logits plus ``reg``'s penalty.

    With ``compute_loss_func`` set, the Trainer does not divide the loss by the accumulation steps and passes
    ``num_items_in_batch`` (the label count of the whole accumulated batch): the cross-entropy is summed and
    divided by it, and the penalty divided by ``args.gradient_accumulation_steps``. Set ``reg.position_mask``
    yourself if your batches are padded (:class:`SparsityTrainer` does it for you).
    """
    steps = max(1, getattr(args, "gradient_accumulation_steps", 1) or 1)

    def compute_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None,
                     **_: Any) -> torch.Tensor:
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        logits = logits.view(-1, logits.shape[-1]).float()
        if num_items_in_batch is not None:
            task = F.cross_entropy(logits, labels.view(-1), reduction="sum") / num_items_in_batch
            penalty = reg.penalty() / steps
        else:
            task = F.cross_entropy(logits, labels.view(-1))
            penalty = reg.penalty()
        return task + penalty.to(task.device)

    return compute_loss
