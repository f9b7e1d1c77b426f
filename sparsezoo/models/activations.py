"""Activation variants: swap a network's (FFN) activations before fine-tuning ("relufication").

``--activation`` takes a name from :data:`ACTIVATIONS`:

``relu``      max(0, x): exact zeros, the DSC soft-threshold.
``relu2``     max(0, x)²: squared ReLU (Primer); exact zeros and a smoother gradient.
``gelu``      the Gaussian error linear unit (BERT/ViT default): few exact zeros.
``silu``      x·σ(x): few exact zeros.
``topk:K``    keep the K largest values of each code vector (after a ReLU), zero the rest: exactly ≤ K non-zeros.

and ``--threshold τ`` (analysis / inference) thresholds whatever activation is there: ``y = φ(x)·1[|φ(x)| > τ]``
(a JumpReLU-style thresholded activation), which turns near-zeros into exact zeros.

For transformers models the config's ``hidden_act`` is updated for relu/relu2/gelu/silu, so a saved model
loads with plain ``transformers`` with the same activation; ``topk`` has no ``transformers`` equivalent and
is recorded in the recipe only (say so wherever the model is shared).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from analysis.sites import Site
from sparsezoo.errors import RecipeError


class ReLUSquared(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x).square()


class TopKReLU(nn.Module):
    """ReLU, then keep the ``k`` largest entries of each code vector (channel axis 1 for ``[B, C, H, W]``
    unless ``channels_last``, else the last axis); ties are broken by ``torch.topk``."""

    def __init__(self, k: int, channels_last: bool = False):
        super().__init__()
        self.k, self.channels_last = k, channels_last

    def forward(self, x: Tensor) -> Tensor:
        dim = 1 if x.dim() == 4 and not self.channels_last else -1
        x = torch.relu(x)
        k = min(self.k, x.shape[dim])
        idx = x.topk(k, dim=dim).indices
        return torch.zeros_like(x).scatter(dim, idx, x.gather(dim, idx))

    def extra_repr(self) -> str:
        return f"k={self.k}"


ACTIVATIONS = {
    "relu": lambda site, arg: nn.ReLU(),
    "relu2": lambda site, arg: ReLUSquared(),
    "gelu": lambda site, arg: nn.GELU(),
    "silu": lambda site, arg: nn.SiLU(),
    "topk": lambda site, arg: TopKReLU(arg, site.channels_last),
}
HF_NAMES = {"relu": "relu", "relu2": "relu2", "gelu": "gelu", "silu": "silu"}  # transformers ACT2FN keys


def parse_activation(spec: str) -> tuple[str, int | None]:
    """``"topk:32"`` → ("topk", 32); ``"relu"`` → ("relu", None). Raises RecipeError for unknown names."""
    name, _, arg = spec.partition(":")
    if name not in ACTIVATIONS:
        raise RecipeError(f"unknown activation {spec!r} (known: relu, relu2, gelu, silu, topk:K)")
    if name == "topk":
        if not arg.isdigit() or int(arg) < 1:
            raise RecipeError(f"topk needs a positive integer K, e.g. topk:32 (got {spec!r})")
        return name, int(arg)
    if arg:
        raise RecipeError(f"activation {name!r} takes no argument (got {spec!r})")
    return name, None


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def replace_activations(model: nn.Module, sites: list[Site], spec: str) -> list[Site]:
    """Replace every activation site's module by the variant ``spec``; returns the new sites.

    Also sets ``model.config.hidden_act`` for transformers models when the variant has a transformers name.
    """
    name, arg = parse_activation(spec)
    new_sites = []
    for s in sites:
        mod = ACTIVATIONS[name](s, arg)
        _set_module(model, s.name, mod)
        new_sites.append(Site(s.name, mod, channels_last=s.channels_last, nonnegative=name in ("relu", "relu2", "topk")))
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "hidden_act"):
        cfg.hidden_act = HF_NAMES.get(name, cfg.hidden_act)
    return new_sites


def threshold_activations(sites: list[Site], tau: float) -> list:
    """Threshold every site's output in place of the activation: ``y = φ(x)·1[|φ(x)| > τ]`` (inference option).

    Implemented as forward hooks that replace the output, registered before any measuring hook so that
    measurements see the thresholded codes; returns the hook handles (``.remove()`` undoes it).
    """
    if not math.isfinite(tau) or tau < 0:
        raise RecipeError(f"the activation threshold must be a finite number >= 0, got {tau:g}")
    return [s.module.register_forward_hook(lambda m, a, y: y * (y.abs() > tau), prepend=True) for s in sites]
