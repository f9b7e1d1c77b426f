"""Drop-in sparsity for people who train with the Hugging Face ``Trainer``.

Two ways, both adding the same penalty as ``sparsezoo finetune`` (see :mod:`sparsezoo.penalties`):

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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer

from sparsezoo.penalties import SparsityPenalty


def _mask(inputs: Mapping[str, Any]) -> torch.Tensor | None:
    m = inputs.get("attention_mask") if isinstance(inputs, Mapping) else None
    return m.bool() if isinstance(m, torch.Tensor) else None


class SparsityTrainer(Trainer):
    """``transformers.Trainer`` with a sparsity penalty on the model's feature sites.

    Args:
        sparsity: a :class:`~sparsezoo.penalties.SparsityPenalty` built on the model, or ``{kind: λ}``
            (e.g. ``{"l1": 1e-4}``) to build one on all activation sites.
        *args, **kwargs: everything ``Trainer`` takes.
    """

    def __init__(self, *args, sparsity: SparsityPenalty | Mapping[str, float], **kwargs):
        super().__init__(*args, **kwargs)
        self.sparsity = sparsity if isinstance(sparsity, SparsityPenalty) else SparsityPenalty(self.model, lams=sparsity)
        self.sparsity.attach()
        self._pen_sums: dict[str, float] = {}
        self._pen_count = 0

    def _loss_scaled_for_ga(self, num_items_in_batch) -> bool:
        fixed = getattr(self, "loss_is_scaled_for_ga", None)
        if fixed is not None:
            return bool(fixed)
        return bool((getattr(self, "model_accepts_loss_kwargs", False) and num_items_in_batch is not None)
                    or getattr(self, "compute_loss_func", None) is not None)

    def compute_loss(self, model, inputs, return_outputs: bool = False, **kwargs):
        self.sparsity.position_mask = _mask(inputs)
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        penalty = self.sparsity.penalty()
        if model.training and self.sparsity.last_terms:
            if self._loss_scaled_for_ga(kwargs.get("num_items_in_batch")):
                penalty = penalty / max(1, getattr(self, "current_gradient_accumulation_steps", 1))
            for k, v in self.sparsity.last_terms.items():
                self._pen_sums[k] = self._pen_sums.get(k, 0.0) + float(v)
            self._pen_count += 1
        loss = loss + penalty
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self._pen_count and "loss" in logs:  # training logs: the mean penalty since the last log
            for k, v in self._pen_sums.items():
                logs[f"sparsity/{k}"] = v / self._pen_count
                logs[f"sparsity/lambda_{k}"] = self.sparsity.lams[k]
            self._pen_sums, self._pen_count = {}, 0
        super().log(logs, *args, **kwargs)


def sparsity_loss_func(reg: SparsityPenalty, args: Any = None):
    """A ``compute_loss_func`` for ``Trainer``: cross-entropy on the logits plus ``reg``'s penalty.

    With ``compute_loss_func`` set, the Trainer does not divide the loss by the accumulation steps and passes
    ``num_items_in_batch`` (the label count of the whole accumulated batch): the cross-entropy is summed and
    divided by it, and the penalty divided by ``args.gradient_accumulation_steps``. Set ``reg.position_mask``
    yourself if your batches are padded (:class:`SparsityTrainer` does it for you).
    """
    steps = max(1, getattr(args, "gradient_accumulation_steps", 1) or 1)

    def compute_loss(outputs, labels, num_items_in_batch=None, **_):
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
