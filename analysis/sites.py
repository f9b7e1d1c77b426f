"""Feature sites: the modules whose outputs are the feature maps ("codes") we measure or penalize.

By default a site is every activation module (ReLU, GELU, SiLU, …): in the deep-sparse-coding view the
activation output ``Γ_i = ReLU(W_iᵀ Γ_{i-1} + b_i)`` is the layer's sparse code. Sites are named by their
module path (``layer1.0.act2``) and selected with regular expressions (``re.search`` semantics).

The *code at a position* is the channel vector at one (b, h, w) or (b, t). :meth:`Site.channel_dim`
says which axis holds the channels: axis 1 for conv feature maps ``[B, C, H, W]``, the last axis for
token features ``[B, T, C]`` and for channels-last MLPs inside conv nets (timm ConvNeXt runs its MLP
on ``[B, H, W, C]``; a site whose parent holds a ``Linear`` and no convolution is taken to be one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from torch import nn

from analysis.errors import SiteSelectionError

# Leaf modules whose class name matches this are activations; gates and normalizers are not.
_ACTIVATION_NAME = re.compile(
    r"relu|gelu|silu|swish|mish|elu|softplus|hardswish|threshold|activation|squared", re.I
)
_NOT_ACTIVATION = re.compile(r"sigmoid|softmax|softmin|^tanh$|^glu$|gate|identity|attention", re.I)
# Activations whose output is >= 0 by construction (so the l1 norm is the plain sum).
_NONNEGATIVE = {"relu", "relu6", "squaredrelu", "relusquared", "relu2", "relusquaredactivation"}
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Patterns = str | Sequence[str] | None


@dataclass(frozen=True, eq=False)
class Site:
    """One feature site.

    Attributes:
        name: module path inside the model (``""`` is never a site).
        module: the module whose forward output is the feature map.
        channels_last: for 4-D outputs, whether channels are on the last axis (``[B, H, W, C]``).
        nonnegative: the output is >= 0 by construction (ReLU family).
    """

    name: str
    module: nn.Module
    channels_last: bool = False
    nonnegative: bool = False

    def channel_dim(self, ndim: int) -> int:
        """Axis of the channels for an output with ``ndim`` dimensions (1 for NCHW, else -1)."""
        return 1 if ndim == 4 and not self.channels_last else -1


def is_activation(module: nn.Module) -> bool:
    """True for leaf modules that are activation functions (not gates, softmax or identity)."""
    if any(True for _ in module.children()):
        return False
    name = type(module).__name__
    return bool(_ACTIVATION_NAME.search(name)) and not _NOT_ACTIVATION.search(name)


def _compile(patterns: Patterns, what: str) -> list[re.Pattern]:
    if patterns is None:
        return []
    if isinstance(patterns, str):
        patterns = [patterns]
    out = []
    for p in patterns:
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise SiteSelectionError(f"invalid {what} site pattern {p!r}: {e}") from None
    return out


def _producer(module: nn.Module) -> nn.Module | None:
    """The last module with parameters inside ``module`` (itself if it has no children)."""
    found = None
    for m in module.modules():
        if any(True for _ in m.parameters(recurse=False)):
            found = m
    return found


def _channels_last(parent: nn.Module | None, name: str) -> bool:
    """Whether a site's 4-D output is ``[B, H, W, C]``: the layer that produced its input is a Linear
    (or a plain LayerNorm) rather than a convolution or a 2-D norm.

    The producer is the nearest earlier sibling (registration order) with parameters, else the parent
    itself (timm's ``BatchNormAct2d`` owns its activation).
    """
    if parent is None:
        return False
    producer = None
    for child_name, child in parent.named_children():
        if child_name == name:
            break
        producer = _producer(child) or producer
    if producer is None and any(True for _ in parent.parameters(recurse=False)):
        producer = parent
    if isinstance(producer, nn.Linear):
        return True
    return isinstance(producer, nn.LayerNorm) and "2d" not in type(producer).__name__.lower()


def find_sites(model: nn.Module, include: Patterns = None, exclude: Patterns = None) -> list[Site]:
    """Activation sites of ``model`` in module order, filtered by regexes on their names.

    Args:
        model: any ``nn.Module``.
        include: regex or regexes; a site is kept if any matches its name (``re.search``).
            ``None`` or empty keeps every activation.
        exclude: regex or regexes; a site is dropped if any matches.

    Raises:
        SiteSelectionError: a pattern is invalid, or the selection is empty.

    Example:
        >>> import timm; m = timm.create_model("resnet18")
        >>> [s.name for s in find_sites(m, include=r"layer4\\.1")]
        ['layer4.1.act1', 'layer4.1.act2']
    """
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")
    parents = {}
    for name, mod in model.named_modules():
        for child_name in dict(mod.named_children()):
            parents[f"{name}.{child_name}" if name else child_name] = mod
    candidates = [(n, m) for n, m in model.named_modules() if n and is_activation(m)]
    sites = [
        Site(
            name=n,
            module=m,
            channels_last=_channels_last(parents.get(n), n.rsplit(".", 1)[-1]),
            nonnegative=type(m).__name__.lower() in _NONNEGATIVE,
        )
        for n, m in candidates
        if (not inc or any(p.search(n) for p in inc)) and not any(p.search(n) for p in exc)
    ]
    if not sites:
        examples = ", ".join(n for n, _ in candidates[:4]) or "none"
        raise SiteSelectionError(
            f"no feature site matches include={list(include or [])!r} exclude={list(exclude or [])!r} "
            f"(the model has {len(candidates)} activation sites, e.g. {examples})"
        )
    return sites


def disable_inplace(sites: Iterable[Site]) -> list[str]:
    """Turn off ``inplace`` on site modules (needed before hooking them for a penalty).

    timm builds activations with ``inplace=True``; a penalty whose backward needs the output breaks
    autograd if a later op overwrites it. Returns the names of the modules that were changed.
    """
    changed = []
    for s in sites:
        if getattr(s.module, "inplace", False):
            s.module.inplace = False
            changed.append(s.name)
    return changed


def site_stages(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Group site names into network stages, labelled by their output stride (``r4``, ``r8``, …).

    Uses timm's ``feature_info`` (module path and reduction of each stage's last module) when the model
    has one: a site belongs to the first stage whose module it precedes or lies inside, in module order;
    sites after the last stage are ``head``. Without ``feature_info`` the stage is the site's top-level
    child (``encoder``, ``layer1``, …).
    """
    info = getattr(model, "feature_info", None)
    stage_list = None
    if info is not None:
        stage_list = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    if not stage_list:
        return {n: n.split(".")[0] for n in names}
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    ends = []  # (index of the last module inside the stage's module, label)
    for d in stage_list:
        mod = d["module"]
        last = max(i for n, i in order.items() if n == mod or n.startswith(mod + "."))
        ends.append((last, f"r{d['reduction']}"))
    out = {}
    for n in names:
        idx = order[n]
        out[n] = next((label for last, label in ends if idx <= last), "head")
    return out
