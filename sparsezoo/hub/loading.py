"""Load a checkpoint (a Hub repo, pulled and verified first, or a local run folder) as a ready model, from the
safetensors weights only: never unpickling, never running code from the repo."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparsezoo.errors import WeightsUnavailableError
from sparsezoo.hub.cards import Library, detect_library, read_json
from sparsezoo.hub.download import pull
from sparsezoo.hub.errors import UnsafeModelError, one_line
from sparsezoo.models.weight_check import check_weights
from sparsezoo.recipe import Recipe, load_recipe


@dataclass
class ZooModel:
    """A ready model (eval mode) with what was published with it.

    ``recipe`` and ``metrics`` are None for checkpoints without ``recipe.yaml`` / ``metrics.json``;
    ``processor`` is the tokenizer or image processor of a transformers checkpoint (None for timm).
    """

    model: Any
    library: Library
    path: Path
    recipe: Recipe | None
    metrics: dict | None
    processor: Any = None
    repo_id: str | None = None
    commit: str | None = None


def load(name: str, *, revision: str | None = None, token: str | None = None) -> ZooModel:
    """Load a checkpoint by Hub id (``org/name``, ``hf-hub:org/name``, ``org/name@rev``) or local run folder.
    ``sparsezoo.load`` (:func:`sparsezoo.zoo.loading.load`) also takes the zoo's short names ``ENTRY:VARIANT``.

    Hub checkpoints are pulled and verified first (:func:`pull`); timm and transformers models are built from
    the safetensors weights only, and ``trust_remote_code`` is never enabled. A compacted folder (``sparsezoo
    compact``, with ``compaction.json``) is built as its base architecture, the recorded modules resized to their
    saved widths, then its weights loaded strictly.

    Example:
        >>> zoo = sparsezoo.load("myorg/minilm-l1")
        >>> zoo.model(**zoo.processor("a fine film", return_tensors="pt")).logits

    Raises:
        HubError subclasses (see :func:`pull`), UnsafeModelError, WeightsUnavailableError, RecipeError.
        BrokenWeightsError: a weight file is truncated or not safetensors.
    """
    local = Path(name).expanduser()
    if not name.startswith("hf-hub:") and local.is_dir():
        folder, repo_id, commit = local, None, None
        if not any(local.glob("*.safetensors")):
            raise UnsafeModelError(f"{local} has no safetensors weights; sparsezoo never unpickles")
    else:
        snap = pull(name, revision=revision, token=token)
        folder, repo_id, commit = snap.path, snap.repo_id, snap.commit
    config = read_json(folder / "config.json")
    library = detect_library(config) if isinstance(config, dict) else None
    if library is None:
        raise WeightsUnavailableError(f"{folder}/config.json is neither a timm nor a transformers model config")
    check_weights(folder, finite=False)  # a truncated or corrupt file: one line, not the loader's traceback
    if (folder / "compaction.json").is_file():  # sparsezoo compact's output: widths differ from the base config
        model, processor = _build_compacted(folder, library, config)
    else:
        model, processor = (_build_timm(folder), None) if library == "timm" else _build_transformers(folder, config)
    from sparsezoo.models.thresholds import restore_thresholds

    restore_thresholds(model, folder)  # hard activation thresholds saved beside the weights, if any
    recipe = load_recipe(str(folder / "recipe.yaml")) if (folder / "recipe.yaml").is_file() else None
    metrics = read_json(folder / "metrics.json") if (folder / "metrics.json").is_file() else None
    return ZooModel(model.eval(), library, folder, recipe, metrics, processor, repo_id, commit)


def _build_timm(folder: Path):
    import timm

    try:
        return timm.create_model(f"local-dir:{folder}", pretrained=True)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise WeightsUnavailableError(f"cannot build the timm model in {folder}: {one_line(e)[:300]}") from e


def _transformers_class(folder: Path, config: dict):
    import transformers

    arch = (config.get("architectures") or [""])[0]
    cls = getattr(transformers, arch, None) if arch else transformers.AutoModel
    if not (isinstance(cls, type) and hasattr(cls, "from_pretrained")):
        raise UnsafeModelError(f"{folder} needs the model class {arch!r}, which is not part of transformers; "
                               "sparsezoo never runs code from a repo (trust_remote_code)")
    return cls


def _processor(folder: Path):
    import transformers

    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    if (folder / "preprocessor_config.json").is_file():
        return transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
    return None


def _build_transformers(folder: Path, config: dict):
    cls = _transformers_class(folder, config)
    try:
        model = cls.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        processor = _processor(folder)
    except (OSError, ValueError, KeyError) as e:
        raise WeightsUnavailableError(f"cannot build the transformers model in {folder}: {one_line(e)[:300]}") from e
    return model, processor


def _build_compacted(folder: Path, library: Library, config: dict):
    """A compacted checkpoint: the base architecture built from ``config.json`` without weights, the modules listed
    in ``compaction.json`` resized to their saved widths (:func:`sparsezoo.models.compaction.resize_modules`), then
    ``model.safetensors`` loaded strictly."""
    from safetensors.torch import load_file

    from sparsezoo.models.compaction import COMPACTION_FILE, FORMAT, resize_modules

    spec = read_json(folder / COMPACTION_FILE)
    if not isinstance(spec, dict) or spec.get("format") != FORMAT or not isinstance(spec.get("widths"), dict):
        raise WeightsUnavailableError(f"{folder}/{COMPACTION_FILE} is not a {FORMAT} file")
    try:
        if library == "timm":
            import timm

            model, processor = timm.create_model(f"local-dir:{folder}", pretrained=False), None
        else:
            import transformers

            cls = _transformers_class(folder, config)
            model = cls(transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False))
            processor = _processor(folder)
        resize_modules(model, spec["widths"])
        model.load_state_dict(load_file(str(folder / "model.safetensors")), strict=True)
    except (RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise WeightsUnavailableError(f"cannot build the compacted model in {folder}: {one_line(e)[:300]}") from e
    return model, processor
