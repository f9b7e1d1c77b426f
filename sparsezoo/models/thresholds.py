"""Activation thresholds: FATReLU (a hard threshold, kept as a module) and the soft shift folded into the bias.

Two ways to raise a ReLU site's threshold from 0 to ``t ≥ 0`` (activation units):

``hard`` — **FATReLU** (Kurtz et al., ICML 2020; ProSparse, arXiv 2402.13516): ``f(x) = x if x ≥ t else 0``
    (``min(f(x), 6)`` in place of ReLU6). Values above ``t`` pass **unchanged**; the jump at ``t`` is what plain
    ReLU cannot express, so a checkpoint needs this module (or ``sparsezoo.load``) to reproduce it. The threshold
    is a buffer (a scalar per layer, or one value per channel), so the model's state dict (and a resume
    checkpoint) holds it; :func:`plain_state_dict` / :func:`plain_activations` give the weights without it (what
    plain timm loads strictly; transformers would warn and drop it) and :func:`save_thresholds` /
    :func:`restore_thresholds` carry it beside them. :func:`plain_loading_gap` measures
    what plain loading loses.

``shift`` — the **soft threshold** ``ReLU(y − t)``: every value above ``t`` is lowered by ``t``. This is the seed
    paper's own reading of a ReLU layer (``Γ = ReLU(Wᵀx + b)`` is a non-negative soft-thresholding step: the bias
    is the threshold), and it folds exactly into the preceding layer's bias (:func:`fold_shift`: BatchNorm's
    ``bias`` for conv-BN, else the conv / Linear ``bias``), so plain timm / transformers loading reproduces it with
    no custom module and no extra key.

FATReLU and the shift zero the same entries for the same pre-activations; they differ above ``t`` (hard keeps
``x``, soft gives ``x − t``), so their accuracies differ and each is searched in its own realization
(:mod:`sparsezoo.train.threshold_search`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from analysis.sites import Site, find_sites, pursuit_layers
from sparsezoo.errors import RecipeError

THRESHOLDS_FILE = "thresholds.safetensors"  # written beside model.safetensors when a hard threshold is kept
FATRELU_DEFINITION = "FATReLU: f(x) = x if x >= t else 0 (min(f(x), 6) in place of ReLU6), t >= 0 per site or channel"
SHIFT_DEFINITION = "shift: ReLU(y - t), t folded into the preceding bias (BatchNorm bias, else conv/Linear bias)"

Threshold = float | Sequence[float] | Tensor  # one value per layer, or one per channel


def as_threshold(t: Threshold, what: str = "threshold") -> Tensor:
    """``t`` as a float32 tensor of 0 dims (per layer) or 1 dim (per channel); every value finite and ``≥ 0``.

    Raises:
        RecipeError: a value is negative, not finite, or the shape has more than one dimension.
    """
    x = torch.as_tensor(t, dtype=torch.float32).detach().clone().cpu()
    if x.dim() > 1 or x.numel() == 0:
        raise RecipeError(f"a {what} is one number or one per channel, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or bool((x < 0).any()):
        raise RecipeError(f"a {what} must be finite and >= 0, got {x.tolist()}")
    return x


class FATReLU(nn.Module):
    """Forced-activation-threshold ReLU: ``f(x) = x if x ≥ t else 0``, then ``min(·, cap)`` when ``cap`` is set.

    Args:
        threshold: ``t ≥ 0``, one value for the layer or one per channel (broadcast over axis 1 of ``[B, C, H, W]``
            and over the last axis of ``[B, T, C]``, ``[B, C]`` and channels-last ``[B, H, W, C]``). ``t = 0`` is
            ReLU. Stored as the persistent buffer ``threshold``, so checkpoints hold it.
        cap: 6.0 in place of ReLU6, else None.
        channels_last: 4-D inputs are ``[B, H, W, C]`` (as :attr:`analysis.sites.Site.channels_last`).
    """

    threshold: Tensor

    def __init__(self, threshold: Threshold = 0.0, cap: float | None = None, channels_last: bool = False):
        super().__init__()
        self.register_buffer("threshold", as_threshold(threshold))
        self.cap, self.channels_last = cap, channels_last

    def forward(self, x: Tensor) -> Tensor:
        t = self.threshold
        if t.dim() == 1:
            dim = 1 if x.dim() == 4 and not self.channels_last else x.dim() - 1
            if x.shape[dim] != t.numel():
                raise ValueError(f"FATReLU has {t.numel()} channel thresholds, its input {x.shape[dim]} channels")
            shape = [1] * x.dim()
            shape[dim] = -1
            t = t.view(shape)
        y = x.masked_fill(x < t, 0)
        return y.clamp(max=self.cap) if self.cap is not None else y

    def plain(self) -> nn.Module:
        """The activation plain loading builds at this site (ReLU, or ReLU6 when capped at 6)."""
        return nn.ReLU6() if self.cap == 6.0 else nn.ReLU()

    def extra_repr(self) -> str:
        t = self.threshold
        shown = f"{float(t):g}" if t.dim() == 0 else f"per-channel[{t.numel()}]"
        return f"threshold={shown}" + (f", cap={self.cap:g}" if self.cap is not None else "")


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attr, new)


def install_fatrelu(model: nn.Module, thresholds: Mapping[str, Threshold]) -> list[Site]:
    """Put a FATReLU with the given threshold at each site (module path, as :func:`analysis.sites.find_sites` names
    it) in place of its ReLU / ReLU6 (ReLU6 keeps its cap of 6); a site that already holds a FATReLU gets the new
    threshold. Returns the new sites, in the order given.

    Relufied transformer FFNs (``--activation relu``) hold ``nn.ReLU`` at ``…intermediate.intermediate_act_fn``;
    ``config.hidden_act`` stays ``relu``, which is what plain loading builds (see :func:`plain_loading_gap`).

    Raises:
        RecipeError: a name is not an activation site of ``model``, its activation is not ReLU / ReLU6 / FATReLU,
            or a threshold is negative or not finite.
    """
    if not thresholds:
        return []
    known = {s.name: s for s in find_sites(model)}
    new_sites = []
    for name, t in thresholds.items():
        site = known.get(name)
        if site is None:
            raise RecipeError(f"{name!r} is not an activation site of this model (e.g. {', '.join(list(known)[:3])})")
        old = site.module
        if isinstance(old, FATReLU):
            old.threshold = as_threshold(t).to(old.threshold.device)
            new = old
        elif isinstance(old, (nn.ReLU, nn.ReLU6)):
            cap = 6.0 if isinstance(old, nn.ReLU6) else None
            new = FATReLU(t, cap=cap, channels_last=site.channels_last).to(_device_of(model))
            _set_module(model, name, new)
        else:
            raise RecipeError(f"FATReLU replaces ReLU or ReLU6; site {name!r} holds {type(old).__name__} "
                              "(relufy it first: --activation relu)")
        new_sites.append(Site(name, new, channels_last=site.channels_last, nonnegative=True))
    return new_sites


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def read_thresholds(model: nn.Module) -> dict[str, Tensor]:
    """Every FATReLU's threshold by site name (copies on the CPU; 0-dim per layer, 1-dim per channel)."""
    return {n: m.threshold.detach().cpu().clone() for n, m in model.named_modules() if isinstance(m, FATReLU)}


def to_plain(model: nn.Module) -> list[str]:
    """Replace every FATReLU by the activation plain loading builds there (ReLU / ReLU6), in place; returns the
    site names changed. The model then computes what ``timm`` / ``transformers`` compute from its weights alone."""
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, FATReLU)]
    for n, m in found:
        _set_module(model, n, m.plain())
    return [n for n, _ in found]


@contextmanager
def plain_activations(model: nn.Module) -> Iterator[list[str]]:
    """Within the block, ``model`` computes what plain timm / transformers build from its weights (every FATReLU
    swapped for ReLU / ReLU6); on leaving, the FATReLUs are put back. Yields the site names swapped. Save a model
    inside it (``task.save``, ``save_pretrained``) and its files hold no threshold key; write the thresholds
    beside them with :func:`save_thresholds`."""
    hard = [(n, m) for n, m in model.named_modules() if isinstance(m, FATReLU)]
    try:
        yield to_plain(model)
    finally:
        for n, m in hard:
            _set_module(model, n, m)


def plain_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict without the FATReLU thresholds: the keys a plain timm / transformers model of the same
    architecture has, so ``load_state_dict(..., strict=True)`` accepts it (write this as ``model.safetensors``)."""
    drop = {f"{n}.threshold" for n, m in model.named_modules() if isinstance(m, FATReLU)}
    return {k: v for k, v in model.state_dict().items() if k not in drop}


def save_thresholds(folder: str | Path, model: nn.Module) -> Path | None:
    """Write the model's FATReLU thresholds to ``folder/thresholds.safetensors`` (site name → tensor), atomically;
    None (nothing written) when the model has no FATReLU."""
    from sparsezoo.io import atomic_save_safetensors

    found = read_thresholds(model)
    if not found:
        return None
    return atomic_save_safetensors(Path(folder) / THRESHOLDS_FILE, found, metadata={"definition": FATRELU_DEFINITION})


def load_thresholds(folder: str | Path) -> dict[str, Tensor]:
    """The thresholds written by :func:`save_thresholds` (empty when ``folder`` has none)."""
    from safetensors.torch import load_file

    path = Path(folder) / THRESHOLDS_FILE
    return dict(load_file(str(path))) if path.is_file() else {}


def restore_thresholds(model: nn.Module, folder: str | Path) -> list[str]:
    """Re-install the FATReLUs saved beside a plainly loaded model (what ``sparsezoo.load`` does after building
    it); returns the site names restored (empty: the checkpoint keeps no hard threshold)."""
    found = load_thresholds(folder)
    install_fatrelu(model, found)
    return list(found)


# ----------------------------------------------------------------------------- the soft shift, folded


def shift_target(model: nn.Module, site: str) -> tuple[str, nn.Parameter]:
    """The bias that a shift at ``site`` folds into: ``(parameter name, parameter)``.

    The producer is the conv / Linear layer that :func:`analysis.sites.pursuit_layers` pairs with the site's
    activation (registration order: layer, optional BatchNorm, optional Dropout / Identity, activation). With a
    BatchNorm the shift goes into its ``bias`` (exact in train and eval mode: it is added after normalizing), else
    into the layer's ``bias``. Residual additions between the producer and the activation (ResNet's
    ``act(bn2(·) + shortcut)``) keep it exact; a non-linear consumer of the producer's output (e.g. a
    squeeze-excite gate) would not, so check new architectures with a known-answer comparison.

    Raises:
        RecipeError: no layer is paired with ``site``, or it has no bias to fold into (a conv without bias and
            without BatchNorm; a BatchNorm without affine parameters).
    """
    for p in pursuit_layers(model):
        if p.act_name != site:
            continue
        owner_name, owner = (_module_name(model, p.bn), p.bn) if p.bn is not None else (p.name, p.layer)
        bias = getattr(owner, "bias", None)
        if not isinstance(bias, nn.Parameter):
            raise RecipeError(f"cannot fold a shift at {site!r}: {owner_name or p.name} has no bias "
                              "(use the hard realization there)")
        return f"{owner_name}.bias", bias
    raise RecipeError(f"cannot fold a shift at {site!r}: no conv / Linear layer feeds it directly "
                      "(use the hard realization there)")


def _module_name(model: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def fold_shift(model: nn.Module, site: str, t: Threshold) -> str:
    """Fold the soft threshold ``ReLU(y − t)`` at ``site`` into the preceding bias, in place: ``bias ← bias − t``.

    ``t ≥ 0`` is one value (per layer) or one per output channel of the producer. The site's activation φ is then
    evaluated at ``y − t`` (ReLU6 gives ``min(ReLU(y − t), 6)``); the model keeps its modules and state-dict keys,
    so plain timm / transformers loading reproduces it exactly. This is the seed paper's reading of a ReLU layer
    (the bias is the threshold). Unlike FATReLU (hard: values above ``t`` unchanged), the shift lowers every value
    above ``t`` by ``t``. Returns the name of the parameter changed (``layer1.0.bn2.bias``).

    Raises:
        RecipeError: see :func:`shift_target`, or a threshold that is negative, not finite, or of the wrong length.
    """
    name, bias = shift_target(model, site)
    shift = as_threshold(t, "shift")
    if shift.dim() == 1 and shift.numel() != bias.numel():
        raise RecipeError(f"a per-channel shift at {site!r} needs {bias.numel()} values, got {shift.numel()}")
    with torch.no_grad():
        bias.sub_(shift.to(bias.device, bias.dtype))
    return name


# ----------------------------------------------------------------------------- what plain loading loses


@dataclass(frozen=True)
class PlainLoadingGap:
    """Logits of a model with FATReLUs against the same weights loaded plainly (ReLU / ReLU6 at those sites).

    Attributes:
        samples: rows of logits compared (inputs).
        max_abs_logit_diff: max over samples and classes of ``|logit_FATReLU − logit_plain|`` (logit units).
        mean_abs_logit_diff: mean of the same over all samples and classes.
        top1_agreement: fraction of samples whose arg-max class is the same under both (1.0 = plain loading
            predicts exactly what the thresholded model predicts).
    """

    samples: int
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    top1_agreement: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def default_logits(model: nn.Module, batch: Any) -> Tensor:
    """Logits of ``model`` on ``batch``: a dict of keyword inputs (transformers), an ``(x, y)`` pair or a tensor."""
    if isinstance(batch, Mapping):
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
    else:
        out = model(batch[0] if isinstance(batch, (tuple, list)) else batch)
    return getattr(out, "logits", out)


def plain_loading_gap(model: nn.Module, batches: Iterable[Any],
                      logits: Callable[[nn.Module, Any], Tensor] = default_logits) -> PlainLoadingGap:
    """Compare ``model`` (with its FATReLUs) with the same weights loaded plainly on ``batches`` (iterated twice:
    pass a list or a loader). The FATReLUs are swapped for ReLU / ReLU6 in place for the second pass and put back;
    the model runs in eval mode under ``no_grad`` and is left in the mode it was in."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        ours = [logits(model, b).float().cpu() for b in batches]
        with plain_activations(model):
            plain = [logits(model, b).float().cpu() for b in batches]
    model.train(was_training)
    a = torch.cat([x.reshape(-1, x.shape[-1]) for x in ours])
    b = torch.cat([x.reshape(-1, x.shape[-1]) for x in plain])
    diff = (a - b).abs()
    return PlainLoadingGap(samples=a.shape[0], max_abs_logit_diff=float(diff.max()) if diff.numel() else 0.0,
                           mean_abs_logit_diff=float(diff.mean()) if diff.numel() else 0.0,
                           top1_agreement=float((a.argmax(-1) == b.argmax(-1)).double().mean()) if len(a) else math.nan)
