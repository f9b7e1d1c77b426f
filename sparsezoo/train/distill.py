"""Distillation from a dense teacher, the standard recovery tool of sparsification recipes (SparseML's
DistillationModifier; Hinton et al. 2015):

    loss = (1 − h) · CE(student, labels) + h · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

on the logits of the same (augmented) batch; the teacher runs in eval mode without gradients. h (``weight``) is
typically 0.5–1, T (``temperature``) 2; the T² keeps the soft term's gradients on the scale of the hard one's.

A teacher is any checkpoint :func:`sparsezoo.load` reads (a run folder, a zoo ``ENTRY:VARIANT``, a Hub id) whose
predictions are over the same classes as the student's data and whose inputs are the student's
(:func:`check_teacher`: same library, same number and names of classes, and for transformers the same vocabulary).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparsezoo.errors import SparsezooError

if TYPE_CHECKING:
    from torch import Tensor

    from sparsezoo.hub.loading import ZooModel
    from sparsezoo.recipe import DistillSpec
    from sparsezoo.train.tasks import Task


class DistillError(SparsezooError):
    """The teacher cannot teach this student: another label space, another input family or vocabulary."""


def distillation_loss(student: Tensor, teacher: Tensor, labels: Tensor, weight: float, temperature: float) -> Tensor:
    """(1 − h)·CE + h·T²·KL(teacher ‖ student), mean over the batch (nats); ``weight`` = h, ``temperature`` = T.
    With h = 0 it is the plain cross-entropy."""
    import torch.nn.functional as F

    ce = F.cross_entropy(student.float(), labels)
    if weight == 0:
        return ce
    t = temperature
    kl = F.kl_div(F.log_softmax(student.float() / t, dim=-1), F.log_softmax(teacher.float() / t, dim=-1),
                  log_target=True, reduction="batchmean")
    return (1 - weight) * ce + weight * t * t * kl


def load_teacher(spec: DistillSpec) -> ZooModel:
    """The teacher of ``spec`` by Hub id or run folder (:func:`sparsezoo.hub.loading.load`; callers that know the
    zoo's short names resolve those with :func:`sparsezoo.load` and pass the model in)."""
    from sparsezoo.hub.loading import load

    return load(spec.teacher)


def _classes(teacher: ZooModel) -> tuple[int, list[str] | None]:
    """(number of classes, their names if the checkpoint names them) of a teacher's head."""
    model = teacher.model
    if teacher.library == "transformers":
        config = model.config
        names = [config.id2label[i] for i in range(config.num_labels)] if getattr(config, "id2label", None) else None
        generic = names is not None and all(n == f"LABEL_{i}" for i, n in enumerate(names))
        return config.num_labels, None if generic else names
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    return model.num_classes, list(names) if names else None


def check_teacher(teacher: ZooModel, task: Task, name: str) -> None:
    """A teacher must see the student's inputs and predict the student's classes.

    Raises:
        DistillError: another library (timm vs transformers), another number or order of classes, or (text) another
            vocabulary.
    """
    if teacher.library != task.family:
        raise DistillError(f"teacher {name} is a {teacher.library} model and the student a {task.family} model: it "
                           "cannot read the student's inputs, so it cannot be distilled from")
    n, names = _classes(teacher)
    if n != len(task.label_names):
        raise DistillError(f"teacher {name} predicts {n} classes, the data has {len(task.label_names)}: another label "
                           "space cannot be distilled from")
    if names is not None and [str(x) for x in names] != [str(x) for x in task.label_names]:
        raise DistillError(f"teacher {name}'s classes ({', '.join(map(str, names[:4]))}, …) are not the data's "
                           f"({', '.join(map(str, task.label_names[:4]))}, …) in the same order")
    if task.family == "transformers":
        vocab = getattr(teacher.model.config, "vocab_size", None), getattr(task.model.config, "vocab_size", None)
        if vocab[0] != vocab[1]:
            raise DistillError(f"teacher {name} has a vocabulary of {vocab[0]} tokens, the student {vocab[1]}: they "
                               "do not read the same token ids")


def teacher_logits(task: Task, teacher: Any, inputs: Any) -> Tensor:
    """The teacher's logits on the student's batch (eval mode, no gradients)."""
    import torch

    with torch.no_grad():
        return task.logits(teacher, inputs)
