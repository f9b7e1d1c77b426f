"""Models and samples for measuring (``analyze``, ``explain``): any model name, preprocessed like its family expects.

:func:`load_model` returns a model in eval mode with its family, task and tokenizer/processor; :func:`sample_loader`
returns the first N samples of a data source (validation split first, then training) preprocessed for that model:
timm transforms, an HF image processor's, or tokenization with padding masks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    from sparsezoo.hf_models import load_hf_model, model_family, resolve_task
    from sparsezoo.models import create_model, local_model_dir
    from sparsezoo.offline_weights import packaged_model_dir
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


def sample_loader(loaded: LoadedModel, spec: DataSpec, samples: int, batch_size: int):
    """(DataLoader, number of samples, data description): the first ``samples`` samples of ``spec.source``."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader, Subset

    pin = torch.cuda.is_available()
    if loaded.task == "text-classification":
        from datasets import concatenate_datasets

        from sparsezoo.text_data import TextCollator, load_text_data

        data = load_text_data(spec)
        both = concatenate_datasets([data.val, data.train])
        n = min(samples, len(both))
        return DataLoader(both.select(range(n)), batch_size=batch_size, shuffle=False, pin_memory=pin,
                          collate_fn=TextCollator(loaded.preprocessor, spec.max_length)), n, data.description
    from sparsezoo.data import Transformed, build_transforms, load_image_data

    data = load_image_data(spec)
    collate = None
    if loaded.family == "transformers":
        from sparsezoo.tasks import hf_image_transforms

        _, eval_tf, hw = hf_image_transforms(loaded.preprocessor, spec.img_size, "none")
        native = getattr(loaded.model.config, "image_size", None)
        extra = {"interpolate_pos_encoding": True} if native and tuple(hw) != (native, native) else {}

        def collate(rows):
            return {"pixel_values": torch.stack([r[0] for r in rows]), **extra}
    else:
        _, eval_tf, _ = build_transforms(loaded.model, spec, data)
    both = ConcatDataset([Transformed(data.val, eval_tf), Transformed(data.train, eval_tf)])
    n = min(samples, len(both))
    return DataLoader(Subset(both, range(n)), batch_size=batch_size, shuffle=False, num_workers=0, pin_memory=pin,
                      collate_fn=collate), n, data.description
