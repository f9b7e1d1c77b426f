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

from torch import Tensor, nn

from analysis.errors import SiteSelectionError

# Leaf modules whose class name matches this are activations; gates and normalizers are not.
_ACTIVATION_NAME = re.compile(
    r"relu|gelu|silu|swish|mish|elu|softplus|hardswish|threshold|activation|squared", re.I
)
_NOT_ACTIVATION = re.compile(r"sigmoid|softmax|softmin|^tanh$|^glu$|gate|identity|attention", re.I)
# Activations whose output is >= 0 by construction (so the l1 norm is the plain sum).
_NONNEGATIVE = {"relu", "relu6", "squaredrelu", "relusquared", "relu2", "relusquaredactivation", "fatrelu"}
_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

Patterns = str | Sequence[str] | None


SITE_KINDS = ("activation", "block", "attention")


@dataclass(frozen=True, eq=False)
class Site:
    """One feature site.

    Attributes:
        name: module path inside the model (``""`` is never a site).
        module: the module whose forward output (or input) is the feature map.
        channels_last: for 4-D outputs, whether channels are on the last axis (``[B, H, W, C]``; attention
            probabilities ``[B, heads, queries, keys]`` are "codes" over keys, so also last).
        nonnegative: the output is >= 0 by construction (ReLU family, attention probabilities).
        kind: ``activation`` (default), ``block`` (a block's output: the residual stream) or ``attention``.
        output_index: which element of a tuple output is the feature map (1 for HF self-attention's probs).
        capture: ``output`` (forward hook) or ``input`` (pre-hook: timm attention probs enter ``attn_drop``).
    """

    name: str
    module: nn.Module
    channels_last: bool = False
    nonnegative: bool = False
    kind: str = "activation"
    output_index: int = 0
    capture: str = "output"

    def channel_dim(self, ndim: int) -> int:
        """Axis of the channels for an output with ``ndim`` dimensions (1 for NCHW, else -1)."""
        return 1 if ndim == 4 and not self.channels_last else -1

    def hook(self, fn):
        """Call ``fn(tensor)`` with this site's feature map at every forward; returns the hook handle."""
        idx = self.output_index

        def pick(x):
            if isinstance(x, (tuple, list)):
                x = x[idx] if len(x) > idx else None
            if isinstance(x, Tensor):
                return fn(x)
            return None

        if self.capture == "input":
            return self.module.register_forward_pre_hook(lambda m, args: pick(args[0] if args else None))
        return self.module.register_forward_hook(lambda m, args, out: pick(out))


def is_activation(module: nn.Module) -> bool:
    """True for leaf modules that are activation functions (not gates, softmax or identity)."""
    if any(True for _ in module.children()):
        return False
    name = type(module).__name__
    return bool(_ACTIVATION_NAME.search(name)) and not _NOT_ACTIVATION.search(name)


def _as_list(patterns: Patterns) -> list[str]:
    return [patterns] if isinstance(patterns, str) else list(patterns or [])


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
            raise SiteSelectionError(f"invalid {what} site pattern {p!r}: {e}") from e
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


@dataclass(frozen=True, eq=False)
class PursuitLayer:
    """A conv/linear layer seen as one pursuit step ``Γ = φ(D_iᵀ Γ_{i−1} + b)``: the layer, the BatchNorm folded into
    it (or None) and the activation module φ that produces its code (None: no activation follows it, its code is
    its own output). Paired by registration order: the layer, an optional BatchNorm (timm's ``BatchNormAct2d``
    owns its activation), optional Dropout/Identity modules, then an activation."""

    name: str
    layer: nn.Module
    bn: nn.Module | None
    act_name: str | None
    act: nn.Module | None


def pursuit_layers(model: nn.Module) -> list[PursuitLayer]:
    """Every ``Conv1d``/``Conv2d``/``Linear`` of ``model`` in module order, with its BatchNorm and activation."""
    seq = [(n, m) for n, m in model.named_modules() if n and (not any(True for _ in m.children())
                                                             or isinstance(m, nn.modules.batchnorm._BatchNorm))]
    out = []
    for i, (n, m) in enumerate(seq):
        if not isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            continue
        j, bn, act = i + 1, None, None
        if j < len(seq) and isinstance(seq[j][1], nn.modules.batchnorm._BatchNorm):
            bn = seq[j][1]
            j += 1
            owned = getattr(bn, "act", None)
            if isinstance(owned, nn.Module) and is_activation(owned):
                act = (f"{seq[j - 1][0]}.act", owned)
        while act is None and j < len(seq) and isinstance(seq[j][1], (nn.Dropout, nn.Identity)):
            j += 1
        if act is None and j < len(seq) and is_activation(seq[j][1]):
            act = seq[j]
        out.append(PursuitLayer(n, m, bn, *(act or (None, None))))
    return out


def find_blocks(model: nn.Module) -> list[Site]:
    """Block sites: the innermost numbered sub-modules with parameters (``layer1.0``, ``blocks.2.1``,
    ``encoder.layer.3``), whose outputs are the residual stream."""
    mods = dict(model.named_modules())
    numbered = [n for n, m in mods.items() if n and n.rsplit(".", 1)[-1].isdigit() and any(True for _ in m.children())
                and any(True for _ in m.parameters())]
    names = [n for n in numbered if not any(o != n and o.startswith(n + ".") for o in numbered)]
    return [Site(n, mods[n], kind="block") for n in names]


def find_attention(model: nn.Module) -> list[Site]:
    """Attention-probability sites, switching the model to attention that materializes probabilities.

    Hugging Face ``*SelfAttention`` modules return ``(output, probs)`` under eager attention (the model is set
    to eager); timm ``Attention`` modules pass their probabilities through ``attn_drop`` when ``fused_attn`` is
    off (it is turned off). Probabilities ``[B, heads, queries, keys]`` are codes over the keys.
    """
    sites = []
    hf = False
    for n, m in model.named_modules():
        if type(m).__name__.endswith("SelfAttention") and not hasattr(m, "attn_drop"):
            sites.append(Site(n, m, channels_last=True, nonnegative=True, kind="attention", output_index=1))
            hf = True
        elif hasattr(m, "fused_attn") and isinstance(getattr(m, "attn_drop", None), nn.Module):
            m.fused_attn = False
            sites.append(Site(f"{n}.attn_drop", m.attn_drop, channels_last=True, nonnegative=True, kind="attention",
                              capture="input"))
    if hf:
        set_implementation = getattr(model, "set_attn_implementation", None)
        if callable(set_implementation):
            set_implementation("eager")
        elif getattr(model, "config", None) is not None:
            model.config._attn_implementation = "eager"  # type: ignore[union-attr]  # older transformers
    return sites


def find_sites(model: nn.Module, include: Patterns = None, exclude: Patterns = None,
               kinds: Sequence[str] = ("activation",)) -> list[Site]:
    """Sites of ``model`` in module order, filtered by regexes on their names.

    Args:
        model: any ``nn.Module``.
        include: regex or regexes; a site is kept if any matches its name (``re.search``).
            ``None`` or empty keeps every site of the requested kinds.
        exclude: regex or regexes; a site is dropped if any matches.
        kinds: any of ``activation`` (every activation module; the default), ``block`` (block outputs, the
            residual stream) and ``attention`` (attention probabilities; see :func:`find_attention`).

    Raises:
        SiteSelectionError: a pattern is invalid, or the selection is empty.

    Example:
        >>> import timm; m = timm.create_model("resnet18")
        >>> [s.name for s in find_sites(m, include=r"layer4\\.1")]
        ['layer4.1.act1', 'layer4.1.act2']
    """
    inc, exc = _compile(include, "include"), _compile(exclude, "exclude")
    unknown = set(kinds) - set(SITE_KINDS)
    if unknown:
        raise SiteSelectionError(f"unknown site kind(s) {sorted(unknown)} (known: {', '.join(SITE_KINDS)})")
    candidates: list[Site] = []
    if "activation" in kinds:
        parents = {}
        for name, mod in model.named_modules():
            for child_name in dict(mod.named_children()):
                parents[f"{name}.{child_name}" if name else child_name] = mod
        candidates += [Site(name=n, module=m, channels_last=_channels_last(parents.get(n), n.rsplit(".", 1)[-1]),
                            nonnegative=type(m).__name__.lower() in _NONNEGATIVE)
                       for n, m in model.named_modules() if n and is_activation(m)]
    if "block" in kinds:
        candidates += find_blocks(model)
    if "attention" in kinds:
        candidates += find_attention(model)
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    candidates.sort(key=lambda s: order.get(s.name, order.get(s.name.rsplit(".", 1)[0], 0)))
    sites = [s for s in candidates
             if (not inc or any(p.search(s.name) for p in inc)) and not any(p.search(s.name) for p in exc)]
    if not sites:
        examples = ", ".join(s.name for s in candidates[:4]) or "none"
        raise SiteSelectionError(
            f"no feature site matches include={_as_list(include)!r} exclude={_as_list(exclude)!r} "
            f"(the model has {len(candidates)} {'/'.join(kinds)} sites, e.g. {examples})"
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
            setattr(s.module, "inplace", False)  # noqa: B010 - a flag of the activation module, not a tensor
            changed.append(s.name)
    return changed


def site_stages(model: nn.Module, names: Sequence[str]) -> dict[str, str]:
    """Group site names into network stages, labelled by their output stride (``r4``, ``r8``, …).

    Uses timm's ``feature_info`` (module path and reduction of each stage's last module) when the model
    has one: a site belongs to the first stage whose module it precedes or lies inside, in module order;
    sites after the last stage are ``head``. Without ``feature_info`` (transformers), or when all stages share
    one stride (ViTs), the stage is the block the site lies in (``layer.3``, ``blocks.7``).
    """
    info = getattr(model, "feature_info", None)
    stage_list = None
    if info is not None:
        stage_list = info.get_dicts() if hasattr(info, "get_dicts") else list(info)
    if not stage_list or len({d["reduction"] for d in stage_list}) < 2:
        # transformers (and ViTs, whose stages share one stride): the block a site lies in
        blocks = [b.name for b in find_blocks(model)]
        out = {}
        for n in names:
            owner = next((b for b in blocks if n == b or n.startswith(b + ".")), None)
            out[n] = ".".join(owner.split(".")[-2:]) if owner else n.split(".")[0]
        return out
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
