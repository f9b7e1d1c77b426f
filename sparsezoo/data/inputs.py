"""Models and samples for measuring (``analyze``, ``explain``): any model name, preprocessed like its family expects.

:func:`load_model` returns a model in eval mode with its family, task and tokenizer/processor; :func:`sample_loader`
returns the first N samples of a data source (validation split first, then training) preprocessed for that model:
timm transforms, an HF image processor's, or tokenization with padding masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from sparsezoo.recipe import DataSpec


@dataclass
class LoadedModel:
    model: Any
    family: str  # "timm" | "transformers"
    task: str  # "image-classification" | "text-classification"
    preprocessor: Any = None  # tokenizer / image processor (transformers)


def load_model(name: str, weights: str | None = None, pretrained: bool = True, task: str = "auto",
               device: str = "cpu") -> LoadedModel:
    """Any model name (timm, ``hf-hub:``, run folder, transformers id or folder), its own head kept.

    ``pretrained=False`` applies to timm architecture names only: a folder or Hub repo *is* its weights.
    """
    from sparsezoo.models.factory import create_model
    from sparsezoo.models.hf import load_hf_model, model_family, resolve_task
    from sparsezoo.models.names import local_model_dir
    from sparsezoo.models.offline_weights import packaged_model_dir
    from sparsezoo.recipe import ModelSpec

    name = packaged_model_dir(name)
    family = model_family(name)
    if family == "transformers":
        task = resolve_task(name, task)
        model, pre = load_hf_model(name, task, None, pretrained=pretrained or Path(name).is_dir())
    else:
        pretrained = pretrained or name.startswith("hf-hub:") or local_model_dir(name) is not None
        model, task, pre = create_model(ModelSpec(name=name, pretrained=pretrained, weights=weights)), \
            "image-classification", None
    return LoadedModel(model.to(device).eval(), family, task, pre)


class Samples(NamedTuple):
    loader: Any  # DataLoader of the first ``count`` samples (validation split first)
    count: int
    description: str
    label_names: list[str]  # the data set's classes


def class_names(model: Any) -> list[str] | None:
    """Names of a model's output classes: a timm checkpoint's ``label_names``; ImageNet's class names for a timm
    model with an ImageNet-sized head (1k, 12k or 21k classes, named by timm's ``ImageNetInfo``); a transformers
    ``id2label`` that is not the placeholder ``LABEL_i``."""
    cfg = getattr(model, "pretrained_cfg", None)
    names = (cfg or {}).get("label_names")
    if names:
        return list(names)
    if cfg is not None:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            info = ImageNetInfo(subset)
            return [d.split(",")[0] for d in info.label_descriptions()]
    id2label = getattr(getattr(model, "config", None), "id2label", None) or {}
    names = [str(id2label[i]) for i in sorted(id2label)]
    return names if names and names != [f"LABEL_{i}" for i in range(len(names))] else None


SPLIT_ROLES = {"train": "train", "validation": "val", "test": "test"}  # a split's role -> the data's attribute


def _parts(data: Any, split: str | None) -> list[Any]:
    """The parts of ``data`` to draw samples from: validation then training (``split`` None), or one split by role.

    Raises:
        DataError: an unknown role, or a test split asked of a source that has none.
    """
    from sparsezoo.errors import DataError

    if split is None:
        return [data.val, data.train]
    if split not in SPLIT_ROLES:
        raise DataError(f"split {split!r} is not one of {', '.join(SPLIT_ROLES)}")
    part = getattr(data, SPLIT_ROLES[split])
    if part is None:
        raise DataError(f"{data.description} has no {split} split")
    return [part]


def sample_loader(loaded: LoadedModel, spec: DataSpec, samples: int, batch_size: int, *,
                  split: str | None = None) -> Samples:
    """The first ``samples`` samples of ``spec.source``, preprocessed for the model (evaluation transforms, in order):
    of the validation split, then the training split when validation is smaller (``split`` None), or of one split
    (``train``, ``validation`` or ``test``)."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader, Subset

    pin = torch.cuda.is_available()
    if loaded.task == "text-classification":
        from datasets import concatenate_datasets

        from sparsezoo.data.text import TextCollator, load_text_data

        data = load_text_data(spec)
        both = concatenate_datasets(_parts(data, split))
        n = min(samples, len(both))
        return Samples(DataLoader(both.select(range(n)), batch_size=batch_size, shuffle=False, pin_memory=pin,
                                  collate_fn=TextCollator(loaded.preprocessor, spec.max_length)),
                       n, _describe(data.description, n, len(data.val), split), list(data.label_names))
    from sparsezoo.data.loaders import Transformed, build_transforms, load_image_data

    data = load_image_data(spec)
    collate = None
    if loaded.family == "transformers":
        from sparsezoo.train.tasks import hf_image_transforms

        _, eval_tf, hw = hf_image_transforms(loaded.preprocessor, spec.img_size, "none")
        native = getattr(loaded.model.config, "image_size", None)
        extra = {"interpolate_pos_encoding": True} if native and tuple(hw) != (native, native) else {}

        def collate(rows):
            return {"pixel_values": torch.stack([r[0] for r in rows]), **extra}
    else:
        _, eval_tf, _ = build_transforms(loaded.model, spec, data)
    both = ConcatDataset([Transformed(part, eval_tf) for part in _parts(data, split)])
    n = min(samples, len(both))
    return Samples(DataLoader(Subset(both, range(n)), batch_size=batch_size, shuffle=False, num_workers=0,
                              pin_memory=pin, collate_fn=collate),
                   n, _describe(data.description, n, len(data.val), split), list(data.label_names))


def split_loader(loaded: LoadedModel, spec: DataSpec, split: str, batch_size: int,
                 max_samples: int | None = None) -> Samples:
    """All samples of one split (``train``, ``validation`` or ``test``; the first ``max_samples`` of it), with
    evaluation transforms, in a fixed order: what compaction and the zoo's measurements read."""
    return sample_loader(loaded, spec, max_samples or 2**62, batch_size, split=split)


def _describe(data: str, n: int, validation: int, split: str | None = None) -> str:
    """The data set and where the ``n`` samples come from (top-1 on training samples is not held-out accuracy)."""
    if split is not None:
        return f"{data}; {n} {split} samples"
    if n <= validation:
        return f"{data}; {n} validation samples"
    return f"{data}; {validation} validation + {n - validation} training samples (the validation split is smaller)"
