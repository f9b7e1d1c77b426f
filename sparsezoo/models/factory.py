"""Model loading: one entry point, :func:`create_model`, over timm names, the Hub and local folders.

Model names:

- a timm architecture, with or without a pretrained tag: ``resnet50``, ``resnet50.a1_in1k``;
- ``hf-hub:org/name``: a timm checkpoint on the Hugging Face Hub;
- a local folder with a timm ``config.json`` (a sparsezoo run folder is one).

Weights: timm's own pretrained weights (downloaded once into the Hugging Face cache), a
``.safetensors`` file, or ``offline`` (see :mod:`sparsezoo.models.offline_weights`). With no network and no cached
weights the error says how to proceed, instead of retrying for a minute.
The classifier head is sized to ``num_classes``; a pretrained head of another size is dropped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.errors import WeightsUnavailableError
from sparsezoo.models.names import check_architecture, hub_reachable, local_model_dir
from sparsezoo.recipe import ModelSpec

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


def _weights_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    repo, _, rev = repo_id.partition("@")
    for fname in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
        if isinstance(try_to_load_from_cache(repo, fname, revision=rev or None), str):
            return True
    return False


def _ensure_hub_available(name: str, pretrained: bool = True) -> None:
    """Fail fast, with a way forward, when timm would have to download files it cannot reach.

    For ``hf-hub:`` names the config always comes from the Hub; the weights only when ``pretrained``.
    """
    from timm.models import get_pretrained_cfg

    from sparsezoo.models import offline_weights

    repo: str | None
    where: str | tuple[str, ...] | None
    if name.startswith("hf-hub:"):
        repo, where = name.removeprefix("hf-hub:"), None
        if not pretrained:
            from huggingface_hub import try_to_load_from_cache

            rid, _, rev = repo.partition("@")
            if isinstance(try_to_load_from_cache(rid, "config.json", revision=rev or None), str):
                return
    else:
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            raise WeightsUnavailableError(f"timm has no pretrained weights for {name!r}; use --no-pretrained")
        if cfg.file and Path(cfg.file).is_file():
            return
        repo, where = cfg.hf_hub_id, cfg.url
    if repo and _weights_cached(repo):
        return
    url = where[0] if isinstance(where, tuple) else where  # timm's url may be (url, filename)
    if hub_reachable(None if repo else url):
        return
    arch = name.split(".")[0].removeprefix("hf-hub:")
    ways = ["--weights FILE.safetensors", "--no-pretrained"]
    if offline_weights.available(arch):
        ways.insert(0, f"--weights offline ({offline_weights.PROVIDERS[arch].description})")
    raise WeightsUnavailableError(
        f"{'pretrained weights' if pretrained else 'the config'} for {name} ({repo or where}) are not in the "
        f"Hugging Face cache and the Hub is not "
        f"reachable; use {', '.join(ways)}, or download them once with network access"
    )


def _classifier_keys(model) -> tuple[str, ...]:
    head = model.pretrained_cfg.get("classifier") if hasattr(model, "pretrained_cfg") else None
    return tuple([head] if isinstance(head, str) else head or ())


def load_weights_into(model: nn.Module, state_dict: dict, source: str) -> None:
    """Load ``state_dict`` into ``model``; a classifier of another size is dropped (re-initialized head).

    Raises WeightsUnavailableError naming the first missing / unexpected / mismatched keys otherwise.
    """
    own = model.state_dict()
    heads = _classifier_keys(model)
    sd = {}
    for k, v in state_dict.items():
        if k in own and own[k].shape != v.shape and any(k.startswith(h + ".") for h in heads):
            log.info("dropping %s %s from %s: the head is resized to %s", k, tuple(v.shape), source, tuple(own[k].shape))
            continue
        sd[k] = v
    missing = [k for k in own if k not in sd and not any(k.startswith(h + ".") for h in heads)]
    unexpected = [k for k in sd if k not in own]
    wrong = [k for k in sd if k in own and own[k].shape != sd[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{len(x)} {what} ({', '.join(x[:3])}{', …' if len(x) > 3 else ''})"
                 for x, what in ((missing, "missing"), (unexpected, "unexpected"), (wrong, "of another shape")) if x]
        raise WeightsUnavailableError(f"weights {source} do not fit this model: {'; '.join(parts)}")
    model.load_state_dict(sd, strict=False)


def read_weights_file(path: str | os.PathLike) -> dict:
    """Tensors of a ``.safetensors`` file, or of a third-party ``.pth``/``.bin`` (``weights_only`` load)."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsUnavailableError(f"weights file {p} not found")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        if p.suffix in (".pth", ".pt", ".bin"):
            sd = torch.load(p, map_location="cpu", weights_only=True)
            for key in ("state_dict", "model", "model_state_dict"):
                if isinstance(sd, dict) and isinstance(sd.get(key), dict):
                    sd = sd[key]
            return sd
    except Exception as e:  # corrupt or truncated file, pickled objects refused by weights_only
        raise WeightsUnavailableError(f"cannot read weights file {p}: {str(e).splitlines()[0]}") from e
    raise WeightsUnavailableError(f"weights file {p} must be .safetensors (or a third-party .pth/.bin)")


def create_model(spec: ModelSpec, num_classes: int | None = None, img_size: int | None = None) -> nn.Module:
    """Build the model a recipe asks for, with its head sized to ``num_classes``.

    Args:
        spec: name, ``pretrained`` and ``weights`` (see module docstring).
        num_classes: classes of the target dataset (None keeps the checkpoint's head).
        img_size: input size, passed to models with a fixed input size (ViTs).

    Raises:
        ModelNotFoundError: unknown name (with close-name suggestions) or missing folder.
        WeightsUnavailableError: pretrained weights cannot be obtained, or a weights file does not fit.
    """
    import timm
    from timm.models import get_pretrained_cfg

    name = spec.name
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    folder = local_model_dir(name)
    if folder is not None:
        timm_name, arch, pretrained = f"local-dir:{folder}", None, spec.pretrained and spec.weights is None
    elif name.startswith("hf-hub:"):
        timm_name, arch, pretrained = name, None, spec.pretrained and spec.weights is None
        _ensure_hub_available(name, pretrained)
    else:
        arch = check_architecture(name)
        timm_name = name
        pretrained = spec.pretrained and spec.weights is None
        if pretrained:
            _ensure_hub_available(name)
        cfg = get_pretrained_cfg(name)
        if img_size and cfg is not None and cfg.fixed_input_size:
            kwargs["img_size"] = img_size
    try:
        model = timm.create_model(timm_name, pretrained=pretrained, **kwargs)
    except Exception as e:  # RuntimeError, OSError, SafetensorError (truncated or random bytes), KeyError, …
        where = f"{folder / 'model.safetensors'}" if folder is not None else name
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsUnavailableError(f"cannot create {name} from {where}: {first}") from e
    if spec.weights == "offline":
        from sparsezoo.models import offline_weights

        pretrained_cfg: dict[str, Any] = getattr(model, "pretrained_cfg", None) or {}
        arch = arch or pretrained_cfg.get("architecture")
        if not arch:
            raise WeightsUnavailableError(f"{name}: no architecture to map offline weights onto")
        ref = timm.create_model(arch, pretrained=False)  # 1000-class reference for the key mapping
        load_weights_into(model, offline_weights.offline_state_dict(arch, ref), f"offline:{arch}")
    elif spec.weights:
        load_weights_into(model, read_weights_file(spec.weights), spec.weights)
    return model
