"""Hugging Face transformers models: which family a name belongs to, loading for a task, saving.

A model name is a *transformers* model when it is a local folder whose ``config.json`` has a ``model_type``
(``save_pretrained`` layout), or a Hub id that is not a timm architecture (``bert-base-uncased``,
``google/vit-base-patch16-224``). timm names, ``hf-hub:`` names and timm folders stay on the timm path.
``trust_remote_code`` is never enabled: only architectures built into ``transformers`` load.
transformers' logging and progress bars are left as the caller set them (the CLI quiets them while a command runs).
"""

from __future__ import annotations

import logging
from pathlib import Path

from sparsezoo.errors import ModelNotFoundError, WeightsUnavailableError
from sparsezoo.models.names import local_config

log = logging.getLogger(__name__)

TASKS = ("image-classification", "text-classification")


def model_family(name: str) -> str:
    """``timm`` or ``transformers`` for a model name (see module docstring)."""
    if name.startswith(("hf-hub:", "local-dir:")):
        return "timm"
    cfg = local_config(name)
    if cfg is not None:
        return "transformers" if "model_type" in cfg and "architecture" not in cfg else "timm"
    from timm.models import is_model, split_model_name_tag

    if is_model(split_model_name_tag(name)[0]) or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return "timm"
    return "transformers"


def _config(name: str):
    from transformers import AutoConfig

    from sparsezoo.models.names import hub_reachable

    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        if local_config(name) is None and not hub_reachable():
            from sparsezoo.models.names import check_architecture

            try:
                check_architecture(name)  # raises with close timm names
            except ModelNotFoundError as timm_err:
                raise ModelNotFoundError(f"{timm_err} (not a Hugging Face model in the cache either; the Hub is not "
                                         "reachable)") from timm_err
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelNotFoundError(f"cannot load the config of {name!r}: {msg}") from e


def _task_classes():
    from transformers.models.auto import modeling_auto as ma

    return {"text-classification": ma.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
            "image-classification": ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES}


def resolve_task(name: str, task: str) -> str:
    """The task for a transformers model: ``task`` if given, else the only one its architecture supports."""
    cfg = _config(name)
    supported = [t for t, mapping in _task_classes().items() if cfg.model_type in mapping]
    if task != "auto":
        if task not in TASKS:
            raise ModelNotFoundError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
        if task not in supported:
            raise ModelNotFoundError(f"{name} ({cfg.model_type}) has no {task} head class in transformers")
        return task
    if len(supported) != 1:
        what = "no classification head class" if not supported else f"several tasks ({', '.join(supported)})"
        raise ModelNotFoundError(f"{name} ({cfg.model_type}) has {what} in transformers; pass --task")
    return supported[0]


def load_hf_model(name: str, task: str, label_names: list[str] | None = None, pretrained: bool = True):
    """A transformers model with a classification head for ``label_names`` (None: the checkpoint's own head)
    and its tokenizer / processor."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = getattr(transformers, "AutoModelForSequenceClassification" if task == "text-classification"
                  else "AutoModelForImageClassification")
    kwargs = {} if label_names is None else dict(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                                                 label2id={n: i for i, n in enumerate(label_names)})
    try:
        if pretrained:
            model = cls.from_pretrained(name, ignore_mismatched_sizes=True, trust_remote_code=False, **kwargs)
        else:
            cfg = transformers.AutoConfig.from_pretrained(name, trust_remote_code=False, **kwargs)
            model = cls.from_config(cfg)
        pre = (AutoTokenizer if task == "text-classification" else AutoImageProcessor).from_pretrained(name)
    except (OSError, ValueError) as e:
        raise WeightsUnavailableError(f"cannot load {name}: {str(e).strip().splitlines()[0]}") from e
    return model, pre


def save_hf_model(out: Path, model, preprocessor, metadata: dict[str, str]) -> None:
    """``save_pretrained`` of model and tokenizer/processor into ``out``, each file replaced atomically."""
    import os
    import shutil
    import tempfile

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".save-", dir=out))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        preprocessor.save_pretrained(tmp)
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.debug("saved transformers model to %s (%s)", out, metadata)
