"""Exact compaction: remove the units that never fire, so the network is smaller and computes the same logits.

A *unit* is one channel of an activation site (a CNN channel, a transformer FFN neuron). It is **dead** on some data
when its activation output is exactly 0 at every position of every sample (:func:`find_dead_units`; padding tokens
are left out, they reach no logit). A dead channel contributes nothing downstream, so removing it is exact for that
data: the producer's output channel goes (conv / Linear rows, their bias, the BatchNorm entries in between, a
per-channel activation threshold) together with the consumer's input channel (conv / Linear columns).
:func:`compact` does that surgery where the block's structure makes it exact; the rules are data
(:data:`CHAINS`), one per block type:

- timm ``InvertedResidual`` (MobileNetV2, EfficientNet): a channel dead after the depthwise conv's activation goes
  from the expansion conv, its BatchNorm, the depthwise conv and its BatchNorm, the squeeze-excite convs (a zero
  channel adds 0 to its mean and is gated to 0) and the projection conv's input;
  a channel dead after the expansion only (not after the depthwise) feeds the depthwise a zero, so the depthwise
  block outputs a constant there: it is folded into the projection's BatchNorm and the channel removed the same way
  (:data:`FOLDS`; not with squeeze-excite, whose gate would see the constant);
- the MobileNetV2 / EfficientNet stem and the first depthwise-separable block: a stem channel goes with its
  depthwise channel (removed, or folded into that block's BatchNorm);
- timm ``EdgeResidual`` (EfficientNetV2's fused blocks): the expansion conv's channels, the same way;
- timm ``EfficientNet`` head: ``conv_head`` / ``bn2`` rows and the classifier's columns (the pool is per channel);
- timm ResNet ``BasicBlock`` / ``Bottleneck``: the inner convs (conv1 → conv2, conv2 → conv3);
- transformer FFNs (BERT-style ``*Layer``): ``intermediate.dense`` rows and ``output.dense`` columns;
- timm ``Mlp`` (ViT, ConvNeXt): ``fc1`` rows and ``fc2`` columns (only without a norm in between);
- a plain ``nn.Sequential`` of ``conv/Linear [BatchNorm] activation conv/Linear``.

Dead units that cannot be removed exactly stay and are counted as **dead but kept**, by reason
(:data:`KEPT_REASONS`): a channel that feeds a residual add, one that feeds a depthwise conv whose own output is
not dead, a squeeze-excite hidden unit, or a site no rule covers. A unit dead on training data may fire on other
data: :func:`verify` runs both models side by side and counts the removed units that fire there.

:func:`compact` returns the compacted copy and a :class:`CompactionReport` whose ``widths`` record the new shape of
every resized module; :func:`resize_modules` applies them to a freshly built model of the base architecture, so a
saved compacted state dict loads (``sparsezoo.load`` does this for folders with ``compaction.json``).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from analysis.sites import Site, find_sites

COMPACTION_FILE = "compaction.json"  # beside the weights of a compacted model: widths and the report
FORMAT = "sparsezoo-compaction/1"
DEAD_DEFINITION = ("dead: the activation output is exactly 0 at every position of every sample (padding tokens "
                   "excluded)")
KEPT_REASONS = {
    "residual": "feeds a residual add (the skip path needs the channel)",
    "depthwise": "feeds a depthwise conv whose output is not dead and cannot be folded (producer and consumer "
                 "channels are coupled)",
    "se": "a squeeze-excite hidden unit",
    "last-unit": "every unit of the chain is dead; one is kept so no layer has zero width",
    "unsupported": "no exact removal rule for this site's producer and consumer",
}
REL_TOLERANCE = 1e-5  # max |Δlogit| / max |logit| for a verification to count as exact


@dataclass(frozen=True)
class Chain:
    """One exact-removal rule: in a module whose class name matches ``block``, the dead channels of activation
    ``site`` are cut from the ``outputs`` (conv / Linear rows, BatchNorm entries, depthwise convs, per-channel
    thresholds) and the ``inputs`` (conv / Linear columns). Paths are relative to the block; a path ending in ``?``
    is optional (absent, or inside an ``nn.Identity``); ``identity`` modules must be no-ops; ``check`` returns a
    kept-reason when the block's configuration breaks exactness (else None)."""

    block: str
    site: str
    outputs: tuple[str, ...]
    inputs: tuple[str, ...]
    identity: tuple[str, ...] = ()
    check: Callable[[nn.Module], str | None] | None = None


def _channelwise_pool(model: nn.Module) -> str | None:
    pool = getattr(model, "global_pool", None)
    return None if getattr(pool, "pool_type", None) in ("avg", "max", "avgmax") else "unsupported"


def _first_block_unshortcut(model: nn.Module) -> str | None:
    """The stem's channels feed ``blocks.0.0`` alone: a depthwise-separable block without a skip connection."""
    try:
        first = model.blocks[0][0]  # type: ignore[index]
    except (AttributeError, IndexError, TypeError):
        return "unsupported"
    if type(first).__name__ != "DepthwiseSeparableConv":
        return "unsupported"
    return "residual" if getattr(first, "has_skip", True) else None


_DS = "blocks.0.0"
CHAINS: tuple[Chain, ...] = (
    Chain(r"^InvertedResidual$", "bn2.act", ("conv_pw", "bn1", "bn1.act", "conv_dw", "bn2", "bn2.act",
                                             "se.conv_expand?"), ("se.conv_reduce?", "conv_pwl"), ("aa",)),
    Chain(r"^EdgeResidual$", "bn1.act", ("conv_exp", "bn1", "bn1.act", "se.conv_expand?"),
          ("se.conv_reduce?", "conv_pwl"), ("aa",)),
    Chain(r"^EfficientNet$", "bn2.act", ("conv_head", "bn2", "bn2.act"), ("classifier",), ("bn2.drop",),
          _channelwise_pool),
    Chain(r"^EfficientNet$", f"{_DS}.bn1.act", ("conv_stem", "bn1", "bn1.act", f"{_DS}.conv_dw", f"{_DS}.bn1",
                                                f"{_DS}.bn1.act", f"{_DS}.se.conv_expand?"),
          (f"{_DS}.se.conv_reduce?", f"{_DS}.conv_pw"), ("bn1.drop", f"{_DS}.aa"), _first_block_unshortcut),
    Chain(r"^BasicBlock$", "act1", ("conv1", "bn1", "act1"), ("conv2",), ("drop_block", "aa")),
    Chain(r"^Bottleneck$", "act1", ("conv1", "bn1", "act1"), ("conv2",)),
    Chain(r"^Bottleneck$", "act2", ("conv2", "bn2", "act2"), ("conv3",), ("drop_block", "aa")),
    Chain(r"Layer$", "intermediate.intermediate_act_fn", ("intermediate.dense", "intermediate.intermediate_act_fn"),
          ("output.dense",)),
    Chain(r"^Mlp$", "act", ("fc1", "act"), ("fc2",), ("norm",)),
)
# (block class regex, site path inside it regex, reason) for dead units that no chain removes
KEPT_RULES: tuple[tuple[str, str, str], ...] = (
    (r"^BasicBlock$", r"^act2$", "residual"),
    (r"^Bottleneck$", r"^act3$", "residual"),
    (r"^ResNet$", r"^act1$", "residual"),
    (r"^InvertedResidual$", r"^bn1\.act$", "depthwise"),
    (r"^DepthwiseSeparableConv$", r"^bn1\.act$", "depthwise"),
    (r"^EfficientNet$", r"^bn1\.act$", "depthwise"),
    (r"", r"(^|\.)se\.", "se"),
)


@dataclass(frozen=True)
class Fold:
    """An exact removal by folding: in a block matching ``block``, a channel dead at ``site`` (after the expansion)
    makes the depthwise conv's input zero there, so ``constant`` (depthwise BatchNorm + activation) outputs one
    constant per channel at every position; the 1×1 ``consumer`` turns it into a constant per output channel, which
    is folded into ``target``'s running mean (a BatchNorm). The channel then goes along the cuts of the chain at
    ``chain_site``. Needs the ``identity`` modules (squeeze-excite would gate on the constant) to be no-ops."""

    block: str
    site: str
    chain_site: str
    constant: str
    consumer: str
    target: str
    depthwise: str = "conv_dw"
    identity: tuple[str, ...] = ("aa", "se")


FOLDS: tuple[Fold, ...] = (
    Fold(r"^InvertedResidual$", "bn1.act", "bn2.act", "bn2", "conv_pwl", "bn3"),
    # the stem of MobileNetV2 / EfficientNet feeds the first (depthwise-separable) block's depthwise conv
    Fold(r"^EfficientNet$", "bn1.act", f"{_DS}.bn1.act", f"{_DS}.bn1", f"{_DS}.conv_pw", f"{_DS}.bn2",
         f"{_DS}.conv_dw", (f"{_DS}.aa", f"{_DS}.se")),
)


# ----------------------------------------------------------------------------- finding dead units


@dataclass
class DeadUnits:
    """Firing counts per site: ``fires[site]`` is a ``[C]`` int64 tensor, the number of positions where channel c is
    non-zero; ``positions[site]`` the positions seen; ``samples`` the samples run. Dead: ``fires == 0``."""

    fires: dict[str, Tensor]
    positions: dict[str, int]
    samples: int

    def dead(self, site: str) -> Tensor:
        """Indices of the dead channels of ``site``."""
        return (self.fires[site] == 0).nonzero().flatten()

    @property
    def dead_units(self) -> int:
        return sum(int((f == 0).sum()) for f in self.fires.values())


def split_batch(batch: Any) -> tuple[tuple, dict]:
    """A batch as the model's ``(args, kwargs)``: a tensor; a dict of model inputs (``labels`` dropped); or a
    ``(inputs, labels)`` tuple / list whose first element is one of those."""
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    if isinstance(batch, Mapping):
        return (), {k: v for k, v in batch.items() if k != "labels"}
    return (batch,), {}


def logits_of(model: nn.Module, batch: Any) -> Tensor:
    """The model's logits on ``batch`` (a transformers output's ``.logits``, else the output itself)."""
    args, kwargs = split_batch(batch)
    out = model(*args, **kwargs)
    return getattr(out, "logits", out) if not isinstance(out, Tensor) else out


class _FireCounter:
    """Forward hooks that add up, per site and channel, the positions where the output is non-zero (padding
    positions of token inputs are left out via ``mask``, ``[B, T]``)."""

    def __init__(self, sites: Iterable[Site]):
        self.sites = list(sites)
        self.fires: dict[str, Tensor] = {}
        self.positions: dict[str, int] = {s.name: 0 for s in self.sites}
        self.mask: Tensor | None = None
        self.handles = [s.hook(self._counter(s)) for s in self.sites]

    def _counter(self, site: Site) -> Callable[[Tensor], None]:
        def count(a: Tensor) -> None:
            a = a.detach().movedim(site.channel_dim(a.dim()), -1)
            if self.mask is not None and a.dim() == 3 and tuple(self.mask.shape) == tuple(a.shape[:2]):
                a = a[self.mask.to(a.device).bool()]
            a = a.reshape(-1, a.shape[-1])
            fired = (a != 0).sum(0).cpu()
            prev = self.fires.get(site.name)
            self.fires[site.name] = fired if prev is None else prev + fired
            self.positions[site.name] += a.shape[0]

        return count

    def run(self, model: nn.Module, batch: Any) -> Tensor:
        """Logits on ``batch``, counting as it goes."""
        _, kwargs = split_batch(batch)
        mask = kwargs.get("attention_mask")
        self.mask = mask if isinstance(mask, Tensor) and mask.dim() == 2 else None
        return logits_of(model, batch)

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _samples(batch: Any) -> int:
    args, kwargs = split_batch(batch)
    first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, Tensor))
    return int(first.shape[0])


def find_dead_units(model: nn.Module, batches: Iterable[Any], sites: Iterable[Site] | None = None) -> DeadUnits:
    """Run ``model`` (eval mode, no grad) over ``batches`` and count, per activation site and channel, the positions
    where the output is non-zero. ``sites``: the sites to watch (default: every activation site,
    :func:`analysis.sites.find_sites`). The counts are sums over positions, so they do not depend on batch size."""
    sites = list(sites) if sites is not None else find_sites(model)
    counter = _FireCounter(sites)
    device, samples, was_training = _device(model), 0, model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = _to(batch, device)
                counter.run(model, batch)
                samples += _samples(batch)
    finally:
        counter.close()
        model.train(was_training)
    fires = {s.name: counter.fires.get(s.name, torch.zeros(0, dtype=torch.long)) for s in sites}
    return DeadUnits(fires, counter.positions, samples)


# ----------------------------------------------------------------------------- slicing modules


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _cuttable(m: nn.Module, side: str) -> bool:
    """Whether channel ``side`` ("out" / "in") of module ``m`` can be cut by :func:`_cut`."""
    if isinstance(m, nn.Linear):
        return True
    if isinstance(m, nn.Conv2d):
        return m.groups == 1 or (side == "out" and _is_depthwise(m))
    if side == "out" and isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.running_mean is not None
    if side == "out":  # an activation: parameter-free, or a per-channel threshold buffer
        return not any(True for _ in m.parameters(recurse=False)) and not any(True for _ in m.children())
    return False


def _set(m: nn.Module, name: str, value: Tensor) -> None:
    old = getattr(m, name)
    setattr(m, name, nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value)


def _cut(m: nn.Module, side: str, keep: Tensor) -> dict[str, int]:
    """Keep channels ``keep`` on ``side`` of ``m``, in place; returns the integer attributes changed.
    (The width attributes change last: the depthwise test reads the old ones.)"""
    n = len(keep)
    for name, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]:
        if t is None or t.dim() == 0 or (side == "in" and name != "weight"):
            continue
        _set(m, name, t.detach().index_select(0 if side == "out" else 1, keep.to(t.device)).clone())
    attrs = _width_attrs(m, side, n)
    for name, value in attrs.items():
        setattr(m, name, value)
    return attrs


def _width_attrs(m: nn.Module, side: str, n: int) -> dict[str, int]:
    if isinstance(m, nn.Linear):
        return {"out_features" if side == "out" else "in_features": n}
    if isinstance(m, nn.Conv2d):
        if _is_depthwise(m):
            return {"in_channels": n, "out_channels": n, "groups": n}
        return {"out_channels" if side == "out" else "in_channels": n}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return {"num_features": n}
    return {}


def _widths(m: nn.Module) -> dict[str, Any]:
    """The shapes of a module's own tensors and its width attributes (what :func:`resize_modules` restores)."""
    tensors = {k: list(t.shape) for k, t in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]
               if t is not None}
    attrs = {k: int(getattr(m, k)) for k in ("in_channels", "out_channels", "groups", "in_features", "out_features",
                                              "num_features") if isinstance(getattr(m, k, None), int)}
    return {"tensors": tensors, "attrs": attrs}


def resize_modules(model: nn.Module, widths: Mapping[str, Mapping[str, Any]]) -> nn.Module:
    """Give the modules named in ``widths`` (a :class:`CompactionReport`'s ``widths``) the recorded shapes, with
    uninitialized values, so that the compacted state dict loads into a freshly built base model. In place."""
    modules = dict(model.named_modules())
    for path, spec in widths.items():
        m = modules.get(path)
        if m is None:
            raise KeyError(f"the model has no module {path!r} to resize")
        for name, shape in spec.get("tensors", {}).items():
            old = getattr(m, name)
            _set(m, name, torch.empty(shape, dtype=old.dtype, device=old.device))
        for name, value in spec.get("attrs", {}).items():
            setattr(m, name, int(value))
    return model


# ----------------------------------------------------------------------------- the surgery


@dataclass
class ChainCut:
    """One chain of one block: ``site`` (full path) had ``channels`` units, ``removed_channels`` were cut."""

    block: str
    site: str
    channels: int
    removed_channels: list[int]
    modules: list[str]

    @property
    def removed(self) -> int:
        return len(self.removed_channels)


@dataclass
class SiteCompaction:
    """Per activation site: its ``channels``, the ``dead`` ones (on the data of :func:`find_dead_units`), how many
    of those were ``removed``, and the rest by reason (:data:`KEPT_REASONS`)."""

    name: str
    channels: int
    dead: int
    removed: int
    kept: dict[str, int] = field(default_factory=dict)


@dataclass
class CompactionReport:
    """What :func:`compact` did. ``widths``: module path → the shapes of its tensors and its width attributes after
    the cut (:func:`resize_modules`). ``removed_units`` counts each cut channel once (a channel cut from a whole
    inverted-residual chain is one unit); ``dead_units`` and ``kept`` add up per site."""

    chains: list[ChainCut]
    sites: list[SiteCompaction]
    widths: dict[str, dict[str, Any]]
    params_before: int
    params_after: int
    samples: int
    definition: str = DEAD_DEFINITION

    @property
    def removed_units(self) -> int:
        return sum(c.removed for c in self.chains)

    @property
    def dead_units(self) -> int:
        return sum(s.dead for s in self.sites)

    @property
    def kept(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sites:
            for reason, n in s.kept.items():
                out[reason] = out.get(reason, 0) + n
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {"definition": self.definition, "samples": self.samples, "removed_units": self.removed_units,
                "dead_units": self.dead_units, "dead_but_kept": self.kept, "kept_reasons": KEPT_REASONS,
                "params_before": self.params_before, "params_after": self.params_after,
                "chains": [{**asdict(c), "removed": c.removed} for c in self.chains],
                "sites": [asdict(s) for s in self.sites], "widths": self.widths}


def _enclosing(modules: Mapping[str, nn.Module], site: str) -> Iterable[tuple[str, str, nn.Module]]:
    """``(block path, site path inside it, block)`` for every module enclosing ``site``, innermost first."""
    parts = site.split(".")
    for i in range(len(parts) - 1, -1, -1):
        block = ".".join(parts[:i])
        if block in modules:
            yield block, ".".join(parts[i:]), modules[block]


_PASS = (nn.Identity, nn.Dropout)  # no-ops at inference between a producer and its consumer


def _sequential_chain(seq: nn.Sequential, rel: str) -> Chain | None:
    """In a plain ``nn.Sequential``: ``conv/Linear [BatchNorm] act conv/Linear`` around the activation ``rel`` (an
    index), no-ops (Identity, Dropout) allowed in between."""
    if not rel.isdigit():
        return None
    layers, i = list(seq), int(rel)
    before = [j for j in range(i - 1, -1, -1) if not isinstance(layers[j], _PASS)]
    after = [j for j in range(i + 1, len(layers)) if not isinstance(layers[j], _PASS)]
    linear = (nn.Conv2d, nn.Linear)
    if not before or not after or not isinstance(layers[after[0]], linear):
        return None
    producers = before[:2] if isinstance(layers[before[0]], nn.modules.batchnorm._BatchNorm) else before[:1]
    if not isinstance(layers[producers[-1]], linear):
        return None
    return Chain("", rel, (*(str(j) for j in reversed(producers)), rel), (str(after[0]),))


def _chain_for(modules: Mapping[str, nn.Module], site: str) -> tuple[str, Chain] | None:
    for block, rel, mod in _enclosing(modules, site):
        for rule in CHAINS:
            if rule.site == rel and re.search(rule.block, type(mod).__name__):
                return block, rule
        if type(mod) is nn.Sequential:
            found = _sequential_chain(mod, rel)
            if found is not None:
                return block, found
    return None


def _kept_reason(modules: Mapping[str, nn.Module], site: str) -> str:
    for _, rel, mod in _enclosing(modules, site):
        for block, where, reason in KEPT_RULES:
            if re.search(block, type(mod).__name__) and re.search(where, rel):
                return reason
    return "unsupported"


def _join(block: str, rel: str) -> str:
    return f"{block}.{rel}" if block else rel


def _plan(modules: Mapping[str, nn.Module], block: str, rule: Chain) -> tuple[list[tuple[str, str]], str | None]:
    """The ``(module path, side)`` cuts of ``rule`` in ``block``, or a kept-reason why it cannot be applied."""
    for rel in rule.identity:
        m = modules.get(_join(block, rel))
        if m is not None and not isinstance(m, (nn.Identity, nn.Dropout)):
            return [], "unsupported"
    reason = rule.check(modules[block]) if rule.check else None
    if reason:
        return [], reason
    cuts = []
    for side, paths in (("out", rule.outputs), ("in", rule.inputs)):
        for rel in paths:
            path, optional = _join(block, rel.rstrip("?")), rel.endswith("?")
            m = modules.get(path)
            if m is None and optional and isinstance(modules.get(path.rsplit(".", 1)[0]), (nn.Identity, type(None))):
                continue
            if m is None or not _cuttable(m, side):
                return [], "se" if ".se." in f".{rel}" else "unsupported"
            cuts.append((path, side))
    return cuts, None


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _apply(modules: Mapping[str, nn.Module], dead: DeadUnits) -> tuple[list[ChainCut], dict[str, str]]:
    """Cut every chain whose site has dead units, in place; returns the cuts and the kept-reason of the sites whose
    chain could not be applied."""
    cuts, refused = [], {}
    for site, fires in dead.fires.items():
        found = _chain_for(modules, site)
        if found is None or not bool((fires == 0).any()):
            continue
        block, rule = found
        plan, reason = _plan(modules, block, rule)
        if reason:
            refused[site] = reason
            continue
        keep = (fires != 0).nonzero().flatten()
        keep = keep if len(keep) else torch.zeros(1, dtype=torch.long)  # never a zero-width layer
        for path, side in plan:
            _cut(modules[path], side, keep)
        removed = sorted(set(range(len(fires))) - set(keep.tolist()))
        cuts.append(ChainCut(block, site, len(fires), removed, [p for p, _ in plan]))
    return cuts, refused


def _fold_for(modules: Mapping[str, nn.Module], site: str) -> tuple[str, Fold] | None:
    for block, rel, mod in _enclosing(modules, site):
        for rule in FOLDS:
            if rule.site == rel and re.search(rule.block, type(mod).__name__):
                return block, rule
    return None


def _foldable(modules: Mapping[str, nn.Module], block: str, rule: Fold) -> bool:
    consumer, target = modules.get(_join(block, rule.consumer)), modules.get(_join(block, rule.target))
    if _chain_for(modules, _join(block, rule.chain_site)) is None:
        return False
    return (all(isinstance(modules.get(_join(block, r)), (nn.Identity, type(None))) for r in rule.identity)
            and isinstance(consumer, nn.Conv2d) and consumer.kernel_size == (1, 1) and consumer.groups == 1
            and isinstance(target, nn.modules.batchnorm._BatchNorm) and target.running_mean is not None
            and isinstance(modules.get(_join(block, rule.constant)), nn.modules.batchnorm._BatchNorm)
            and rule.chain_site.startswith(f"{rule.constant}.") and _join(block, rule.chain_site) in modules)


def _fold_constant(modules: Mapping[str, nn.Module], block: str, rule: Fold, idx: Tensor) -> None:
    """Add the constant that channels ``idx`` (current indices) feed into the consumer to the target's running mean
    (in eval, BatchNorm subtracts it: the same output with those channels gone)."""
    constant = modules[_join(block, rule.constant)]
    consumer = cast(nn.Conv2d, modules[_join(block, rule.consumer)])
    target = cast(nn.modules.batchnorm._BatchNorm, modules[_join(block, rule.target)])
    dw = modules.get(_join(block, rule.depthwise))
    bias = getattr(dw, "bias", None) if dw is not None else None
    with torch.no_grad():
        z = torch.zeros(1, consumer.in_channels, 1, 1, device=consumer.weight.device)
        if isinstance(bias, Tensor):
            z = z + bias.view(1, -1, 1, 1)
        c = constant.eval()(z).flatten()[idx]
        d = consumer.weight[:, idx, 0, 0] @ c
        mean = cast(Tensor, target.running_mean)
        mean -= d.to(mean.dtype)


def _fold(modules: Mapping[str, nn.Module], dead: DeadUnits, cuts: list[ChainCut]) -> None:
    """Remove, by folding (:data:`FOLDS`), the channels dead after an expansion that the chain cut left; in place."""
    for site, fires in dead.fires.items():
        found = _fold_for(modules, site)
        if found is None or not bool((fires == 0).any()) or not _foldable(modules, *found):
            continue
        block, rule = found
        chain = _chain_for(modules, _join(block, rule.chain_site))
        plan, reason = _plan(modules, block, chain[1]) if chain and chain[0] == block else ([], "unsupported")
        if reason:
            continue
        gone = set(next((c.removed_channels for c in cuts if c.site == _join(block, rule.chain_site)), []))
        current = [i for i in range(len(fires)) if i not in gone]
        folded = [k for k in (fires == 0).nonzero().flatten().tolist() if k not in gone][: len(current) - 1]
        if not folded:
            continue
        at = {orig: i for i, orig in enumerate(current)}
        _fold_constant(modules, block, rule, torch.tensor([at[k] for k in folded]))
        keep = torch.tensor([at[k] for k in current if k not in set(folded)])
        for path, side in plan:
            _cut(modules[path], side, keep)
        cuts.append(ChainCut(block, site, len(fires), folded, [p for p, _ in plan] + [_join(block, rule.target)]))


def _site_rows(modules: Mapping[str, nn.Module], dead: DeadUnits, cuts: list[ChainCut],
               refused: Mapping[str, str]) -> list[SiteCompaction]:
    """Per site: dead units, those removed (by a chain that cuts this site's channels), the rest by reason."""
    removed_at: dict[str, set[int]] = {}
    for c in cuts:
        for path in c.modules:
            if path in dead.fires:
                removed_at.setdefault(path, set()).update(c.removed_channels)
    rows = []
    for site, fires in dead.fires.items():
        dead_idx = set((fires == 0).nonzero().flatten().tolist())
        removed = len(dead_idx & removed_at.get(site, set()))
        row = SiteCompaction(site, len(fires), len(dead_idx), removed)
        rest = len(dead_idx) - removed
        if rest:
            cut_here = any(c.site == site for c in cuts)
            reason = "last-unit" if cut_here else refused.get(site) or _kept_reason(modules, site)
            row.kept[reason] = rest
        rows.append(row)
    return rows


def compact(model: nn.Module, dead: DeadUnits) -> tuple[nn.Module, CompactionReport]:
    """A copy of ``model`` without the dead units that can be removed exactly (see the module docstring), and the
    report of what was removed and what was kept. ``model`` itself is left unchanged.

    Exact means: on any input where every removed unit is zero, the copy computes the same logits (up to float
    rounding from the shorter sums). On the data ``dead`` was measured on that holds by definition; elsewhere
    check with :func:`verify`.
    """
    new = copy.deepcopy(model).eval()
    modules = dict(new.named_modules())
    cuts, refused = _apply(modules, dead)
    _fold(modules, dead, cuts)
    touched = sorted({p for c in cuts for p in c.modules})
    widths = {p: _widths(modules[p]) for p in touched}
    report = CompactionReport(cuts, _site_rows(modules, dead, cuts, refused), widths, _params(model), _params(new),
                              dead.samples)
    return new, report


# ----------------------------------------------------------------------------- verification


@dataclass
class Verification:
    """The original and the compacted model on one data split: the largest logit difference, absolute and relative
    to the largest |logit|; whether it is within :data:`REL_TOLERANCE`; how often the top-1 class agrees; and how
    many removed units fire there (on the original model), per chain site."""

    split: str
    samples: int
    max_abs_diff: float
    max_abs_logit: float
    top1_agreement: float
    removed_fired: int
    fired_by_site: dict[str, int]
    tolerance: float = REL_TOLERANCE

    @property
    def rel_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_logit, 1e-30)

    @property
    def exact(self) -> bool:
        return self.rel_diff <= self.tolerance

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rel_diff": self.rel_diff, "exact": self.exact,
                "definition": "rel_diff = max |logit_compacted - logit_original| / max |logit_original|"}


def verify(original: nn.Module, compacted: nn.Module, batches: Iterable[Any], report: CompactionReport,
           split: str = "validation") -> Verification:
    """Run both models on ``batches`` (eval mode, no grad) and compare their logits; count the removed units that
    fire on this data (a unit dead on the training data may fire elsewhere, and then the logits differ)."""
    chain_sites = {c.site: c for c in report.chains}
    sites = [s for s in find_sites(original) if s.name in chain_sites] if chain_sites else []
    counter = _FireCounter(sites)
    device, samples, diff, scale, agree = _device(original), 0, 0.0, 0.0, 0
    original.eval(), compacted.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                batch = _to(batch, device)
                a, b = counter.run(original, batch).float(), logits_of(compacted, batch).float()
                diff = max(diff, float((a - b).abs().max()))
                scale = max(scale, float(a.abs().max()))
                agree += int((a.argmax(-1) == b.argmax(-1)).sum())
                samples += int(a.shape[0])
    finally:
        counter.close()
    fired = {name: int((counter.fires[name][c.removed_channels] > 0).sum()) if name in counter.fires else 0
             for name, c in chain_sites.items()}
    fired = {k: v for k, v in fired.items() if v}
    return Verification(split, samples, diff, scale, agree / max(samples, 1), sum(fired.values()), fired)


# ----------------------------------------------------------------------------- the widths-aware save

# files of the source folder that describe the architecture and its inputs (copied beside the compacted weights)
_COPIED = re.compile(r"^(config\.json|recipe\.yaml|preprocessor_config\.json|special_tokens_map\.json|added_tokens\.json|"
                     r"tokenizer.*|vocab.*|merges\.txt|spiece\.model|sentencepiece.*)$")


def save_compacted(folder: str | Path, model: nn.Module, report: CompactionReport, source: str | Path,
                   extra: Mapping[str, Any] | None = None) -> Path:
    """Write a compacted model into ``folder`` (call inside :func:`sparsezoo.io.atomic_dir`): ``model.safetensors``
    (the state dict at the new widths, without activation thresholds), ``thresholds.safetensors`` when it has
    hard thresholds, the architecture and preprocessing files of ``source`` (the run it was made from:
    ``config.json``, ``recipe.yaml``, tokenizer files) and ``compaction.json`` (format, widths, the report and
    ``extra``, e.g. the verification). ``sparsezoo.load(folder)`` builds it back."""
    import shutil

    from sparsezoo.io import atomic_save_safetensors, atomic_write_json
    from sparsezoo.models.thresholds import plain_state_dict, save_thresholds

    folder, source = Path(folder), Path(source)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in plain_state_dict(model).items()}
    atomic_save_safetensors(folder / "model.safetensors", state, metadata={"format": "pt", "compacted": "true"})
    save_thresholds(folder, model)
    for f in sorted(source.iterdir()):
        if f.is_file() and _COPIED.match(f.name):
            shutil.copyfile(f, folder / f.name)
    doc = report.to_json()
    widths = doc.pop("widths")
    atomic_write_json(folder / COMPACTION_FILE, {"format": FORMAT, "source": str(source), "widths": widths,
                                                 "compaction": doc, **dict(extra or {})})
    return folder
