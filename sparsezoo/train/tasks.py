"""What differs between fine-tuning a timm CNN, an HF vision model and an HF text model, in one place.

:func:`build_task` turns a recipe into a :class:`Task`: the model (head sized to the labels, activation
variant applied), the train/validation datasets with their collation, the feature sites, and the three
operations the training loop needs: split a batch into (inputs, labels, position mask) (:meth:`Task.split_batch`),
compute logits, and save the final model in the layout its library loads (timm ``local-dir``/``hf-hub`` or
``save_pretrained``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.errors import DataError, RecipeError
from sparsezoo.recipe import Recipe

if TYPE_CHECKING:
    from sparsezoo.data.common import SealedSplit

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


@dataclass
class Task:
    family: str  # "timm" | "transformers"
    task: str  # "image-classification" | "text-classification"
    model: Any
    label_names: list[str]
    train_ds: Any
    val_ds: Any
    description: str
    sites: list = field(default_factory=list)
    collate: Callable | None = None
    preprocessor: Any = None  # tokenizer / image processor (transformers)
    data_config: dict = field(default_factory=dict)  # timm input config saved with the model
    forward_kwargs: dict = field(default_factory=dict)
    test: SealedSplit | None = None  # the test split, opened once after everything is chosen on validation
    splits: dict = field(default_factory=dict)  # what the run records of its splits (name, size, how held out)

    @property
    def is_text(self) -> bool:
        return self.task == "text-classification"

    def split_batch(self, batch: Any, device, channels_last: bool = False):
        """One batch of a loader as (model inputs, labels, position mask or None) on ``device``."""
        import torch

        if isinstance(batch, dict):
            inputs = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "labels"}
            return inputs, batch["labels"].to(device, non_blocking=True), inputs.get("attention_mask")
        x, y = batch
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True), None

    def logits(self, model, inputs):
        if isinstance(inputs, dict):
            return model(**inputs, **self.forward_kwargs).logits
        if self.family == "transformers":
            return model(pixel_values=inputs, **self.forward_kwargs).logits
        return model(inputs)

    def save(self, out: Path, raw_model, metadata: dict[str, str]) -> None:
        if self.family == "transformers":
            from sparsezoo.models.hf import save_hf_model

            save_hf_model(out, raw_model, self.preprocessor, metadata)
        else:
            from sparsezoo.train.checkpoint import save_model_files

            save_model_files(out, raw_model, self.label_names, self.data_config, metadata)


def hf_image_transforms(processor: Any, img_size: int | None, augment: str):
    """torchvision transforms from an HF image processor's size / mean / std."""
    from torchvision import transforms as T

    size = getattr(processor, "size", None) or {}
    if img_size:
        hw = (img_size, img_size)
    elif "height" in size:
        hw = (size["height"], size["width"])
    else:
        edge = size.get("shortest_edge", 224)
        hw = (edge, edge)
    mean = getattr(processor, "image_mean", None) or [0.5, 0.5, 0.5]
    std = getattr(processor, "image_std", None) or [0.5, 0.5, 0.5]
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    eval_tf = T.Compose([T.Resize(hw, interpolation=T.InterpolationMode.BICUBIC), *norm])
    if augment == "none":
        train_tf = eval_tf
    elif augment == "light":
        train_tf = T.Compose([T.RandomResizedCrop(hw, scale=(0.8, 1.0), ratio=(0.9, 1.1)), *norm])
    else:
        train_tf = T.Compose([T.RandomResizedCrop(hw), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4), *norm])
    return train_tf, eval_tf, hw


def _apply_activation(model, sites: list, spec: str | None) -> list:
    if not spec:
        return sites
    from sparsezoo.models.activations import replace_activations

    acts = [s for s in sites if s.kind == "activation"]
    if not acts:
        raise RecipeError("model.activation needs activation sites (sites.kinds must include 'activation')")
    new = {s.name: s for s in replace_activations(model, acts, spec)}
    log.info("replaced %d activations by %s", len(new), spec)
    return [new.get(s.name, s) for s in sites]


def _with_test(task: Task, data: Any, prepare: Callable[[Any], Any]) -> None:
    """Give ``task`` the data's split records and its test split (prepared like validation), sealed."""
    from sparsezoo.data.common import SealedSplit

    task.splits = data.splits
    if data.test is not None:
        task.test = SealedSplit(prepare(data.test), data.splits["test"])


def build_task(recipe: Recipe) -> Task:
    """Model, data and sites for ``recipe`` (raises SparsezooError subclasses on bad input)."""
    from analysis.sites import find_sites
    from sparsezoo.data.loaders import Transformed, build_transforms, load_image_data
    from sparsezoo.models.hf import load_hf_model, model_family, resolve_task
    from sparsezoo.models.offline_weights import packaged_model_dir

    d = recipe.data
    m = dataclasses.replace(recipe.model, name=packaged_model_dir(recipe.model.name))
    family = model_family(m.name)
    if family == "timm":
        if m.task not in ("auto", "image-classification"):
            raise RecipeError(f"{m.name} is a timm image model; task {m.task!r} does not apply")
        from sparsezoo.models.factory import create_model

        data = load_image_data(d)
        model = create_model(m, num_classes=len(data.label_names), img_size=d.img_size)
        train_tf, eval_tf, data_cfg = build_transforms(model, d, data)
        task = Task("timm", "image-classification", model, data.label_names, Transformed(data.train, train_tf),
                    Transformed(data.val, eval_tf), data.description, data_config=data_cfg)
        _with_test(task, data, lambda part: Transformed(part, eval_tf))
    else:
        if m.weights:
            raise RecipeError("--weights applies to timm models; a transformers model loads its own weights")
        kind = resolve_task(m.name, m.task)
        if kind == "text-classification":
            from sparsezoo.data.text import TextCollator, load_text_data

            data = load_text_data(d)
            model, tok = load_hf_model(m.name, kind, data.label_names, m.pretrained)
            task = Task("transformers", kind, model, data.label_names, data.train, data.val, data.description,
                        collate=TextCollator(tok, d.max_length, d.padding), preprocessor=tok)
            _with_test(task, data, lambda part: part)
        else:
            data = load_image_data(d)
            model, proc = load_hf_model(m.name, kind, data.label_names, m.pretrained)
            augment = data.default_augment if d.augment == "auto" else d.augment
            train_tf, eval_tf, hw = hf_image_transforms(proc, d.img_size, augment)
            native = getattr(model.config, "image_size", None)
            fwd = {"interpolate_pos_encoding": True} if native and tuple(hw) != (native, native) else {}
            task = Task("transformers", kind, model, data.label_names, Transformed(data.train, train_tf),
                        Transformed(data.val, eval_tf), data.description, preprocessor=proc, forward_kwargs=fwd)
            _with_test(task, data, lambda part: Transformed(part, eval_tf))
    sites = find_sites(task.model, recipe.sites.include or None, recipe.sites.exclude or None, kinds=recipe.sites.kinds)
    task.sites = _apply_activation(task.model, sites, m.activation)
    if len(task.val_ds) == 0:
        raise DataError("the validation split is empty")
    return task
