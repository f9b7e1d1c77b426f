"""Sparse FFN execution for relufied transformers: the down-projection reads only the intermediate neurons that fire.

In a BERT-style FFN ``y = W_down · ReLU(W_up x + b_up) + b_down`` most entries of the ReLU code are exact zeros
(91–93 % in the zoo's relufied MiniLM), and a zero entry contributes nothing to ``W_down``'s product. At inference
:func:`enable_sparse_ffn` swaps each FFN's down-projection ``Linear`` for a :class:`SparseDownProjection` that
shares its weights and skips the zeros of its input. Methods (``method=``):

``union``  per batch: the neurons active on *any* token of the batch, ``idx``; then
           ``y = b + h[:, idx] · W_downᵀ[idx]`` (one ``index_select`` of the weight's rows, kept transposed so the
           rows are contiguous, and one smaller GEMM). Exact: a neuron outside ``idx`` is zero on every token.
``gather`` per token: the non-zeros of each token's code, ``y_t = b + Σ_i h_ti W_downᵀ[i]`` (``embedding_bag`` with
           per-sample weights: a CSR-times-dense product).
``dense``  the plain ``F.linear`` (the reference; also what training and autograd get).
``auto``   ``union`` when the batch's union density (active neurons / all) is at most :data:`AUTO_UNION_MAX_DENSITY`,
           else ``gather`` when at most :data:`AUTO_GATHER_MAX_DENSITY` of the codes' entries are non-zero, else
           ``dense`` (a batch of more than :data:`AUTO_PROBE_TOKENS` tokens is first judged on its first tokens, so a
           dense batch pays one small probe). The thresholds are where each method broke even against the dense
           ``F.linear`` in a micro-benchmark of one down-projection at MiniLM-L6's shapes (1536 → 384, 64 and 128
           tokens, one thread) on this 2-core Xeon: ``union`` costs about 1.7× the dense time × the union density
           (the copy of the weight's active rows is not free), ``gather`` about 0.3 + 7 × the non-zero fraction.

Where it loses (``benchmarks/bench_sparse_inference.py``, ``benchmarks/results/sparse_inference.json``: real MiniLM-L6
weights relufied at 50–99 % FFN zeros, one thread): the union of 64 tokens' codes is 66–85 % of the neurons at
50–95 % zeros per token (~95 % at batch 32), so ``auto`` falls back to dense and its probe makes the FFN 1.1–1.2×
slower (whole model 0.88–0.97×). Only at 99 % zeros (union 25 % at 64 tokens, 36 % at 128) does it win: FFN time
0.83–0.89× dense, whole model 1.07–1.13× at batch 1; at batch 32 it is even (1.01×). ``gather`` pays only at ≤ 5 %
non-zeros, and building its per-token index (a ``nonzero`` over the codes) costs about as much as the GEMM it saves.

Outputs equal the dense path up to float summation order: ``max |Δ| ≤ 1e-5·(1 + max |y|)`` on the tests' inputs
(:data:`TOLERANCE`). Only the down-projection is sparse: the up-projection must be computed to know which neurons
fire, so the FFN's time cannot fall below the up-projection's (half the FFN's FLOPs) — unless neurons that are
dead on all data are removed statically (``dead=``: the up-projection's rows and the down-projection's columns are
dropped; exact only on inputs where they stay dead).

    >>> names = enable_sparse_ffn(model)          # model.eval(); under torch.no_grad() the zeros are skipped
    >>> disable_sparse_ffn(model)                 # the original modules back
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from analysis.sites import pursuit_layers

METHODS = ("auto", "union", "gather", "dense")
AUTO_UNION_MAX_DENSITY = 0.5  # auto takes ``union`` when at most this fraction of the neurons fire in the batch
AUTO_GATHER_MAX_DENSITY = 0.05  # else ``gather`` when at most this fraction of the codes' entries is non-zero
AUTO_PROBE_TOKENS = 256  # in a batch of more tokens, auto first looks at this many: a dense union there ends the search
TOLERANCE = 1e-5  # max |sparse − dense| ≤ TOLERANCE·(1 + max |dense|), float32


@dataclass(frozen=True)
class FFNSite:
    """One FFN: the up-projection ``Linear``, its ReLU activation module and the down-projection ``Linear`` reading
    the activation's output (module paths, e.g. ``bert.encoder.layer.0.intermediate.dense``)."""

    up: str
    act: str
    down: str


def _is_relu(module: nn.Module | None) -> bool:
    """ReLU and the thresholded ReLUs whose zeros are exact (FATReLU), by class name, so no import is needed."""
    return module is not None and type(module).__name__ in ("ReLU", "FATReLU")


def find_relu_ffns(model: nn.Module) -> list[FFNSite]:
    """Every FFN of ``model``: a ``Linear`` up-projection followed (in module order) by a ReLU activation and then a
    ``Linear`` whose input width is the up-projection's output width. BERT's ``intermediate.dense`` →
    ``intermediate.intermediate_act_fn`` → ``output.dense``; GELU FFNs are not listed (their codes have few zeros)."""
    layers = pursuit_layers(model)
    out = []
    for i, pl in enumerate(layers[:-1]):
        nxt = layers[i + 1]
        if (isinstance(pl.layer, nn.Linear) and _is_relu(pl.act) and pl.act_name is not None
                and isinstance(nxt.layer, nn.Linear) and nxt.layer.in_features == pl.layer.out_features):
            out.append(FFNSite(pl.name, pl.act_name, nxt.name))
    return out


def active(h: Tensor) -> Tensor:
    """Indices of the columns of ``h`` (2-D) with a non-zero entry (NaN counts: its |·| max is NaN, not 0): one
    float reduction over the tokens, about 10× cheaper on this CPU than ``h.ne(0).any(0)`` or ``aminmax``."""
    return h.abs().amax(0).ne(0).nonzero().squeeze(1)


def union_linear(h: Tensor, weight_t: Tensor, bias: Tensor | None, idx: Tensor) -> Tensor:
    """``h · weight_tᵀ[idx] + bias`` reading only the columns ``idx`` of ``h`` (2-D ``[M, K]``) and the rows ``idx`` of
    ``weight_t`` (``[K, N]``, the down-projection's weight transposed)."""
    hs, ws = h.index_select(1, idx), weight_t.index_select(0, idx)
    return torch.addmm(bias, hs, ws) if bias is not None else hs @ ws


def gather_linear(h: Tensor, weight_t: Tensor, bias: Tensor | None) -> Tensor:
    """``h · weight_t + bias`` token by token over each token's non-zeros only (CSR × dense by ``embedding_bag``)."""
    m, k = h.shape
    flat = h.reshape(-1)
    pos = flat.nonzero().squeeze(1)
    rows = torch.div(pos, k, rounding_mode="floor")
    offsets = torch.searchsorted(rows, torch.arange(m + 1, device=h.device))
    y = F.embedding_bag(pos - rows * k, weight_t, offsets, mode="sum", per_sample_weights=flat.index_select(0, pos),
                        include_last_offset=True)
    return y + bias if bias is not None else y


class SparseDownProjection(nn.Linear):
    """A down-projection ``Linear`` that skips the zeros of its input at inference (``method``: see the module's
    docstring). Shares ``weight`` and ``bias`` with the ``Linear`` it replaces (same state-dict keys); keeps a
    transposed copy of the weight, refreshed when the weight changes. In training mode or with autograd on it is the
    plain ``F.linear``. ``last`` holds what the last forward did: the method used and the union's active count.
    A ``Linear`` subclass, so whatever looks for ``Linear`` layers (site finders, FLOP hooks) still sees it."""

    def __init__(self, dense: nn.Linear, method: str = "auto"):
        nn.Module.__init__(self)  # not Linear's: the weights are the replaced module's, not new ones
        if method not in METHODS:
            raise ValueError(f"unknown sparse FFN method {method!r} (known: {', '.join(METHODS)})")
        self.in_features, self.out_features, self.method = dense.in_features, dense.out_features, method
        self.weight, self.bias = dense.weight, dense.bias
        self.sparse_ffn_original = (dense,)  # a tuple, so the replaced module is not registered (state dict unchanged)
        self._weight_t: Tensor | None = None
        self._version = -1
        self.last: dict[str, Any] = {}
        self.train(dense.training)

    def weight_t(self) -> Tensor:
        """The weight transposed, ``[in_features, out_features]``, contiguous (rows = intermediate neurons)."""
        if self._weight_t is None or self._version != self.weight._version or self._weight_t.device != self.weight.device:
            self._weight_t = self.weight.detach().t().contiguous()
            self._version = self.weight._version
        return self._weight_t

    def forward(self, x: Tensor) -> Tensor:
        if self.method == "dense" or self.training or torch.is_grad_enabled():
            return F.linear(x, self.weight, self.bias)
        h = x.reshape(-1, self.in_features)
        if self.method == "gather":
            self.last = {"method": "gather"}
            return self._gather(h, x.shape)
        if self.method == "auto" and h.shape[0] > AUTO_PROBE_TOKENS:  # a long batch: decide on its first tokens
            probe = h[:AUTO_PROBE_TOKENS]
            if active(probe).numel() > AUTO_UNION_MAX_DENSITY * self.in_features:  # the whole union is denser still
                return self._gather_or_dense(probe, x)
        idx = active(h)
        self.last = {"method": "union", "active": int(idx.numel())}
        if self.method == "auto" and idx.numel() > AUTO_UNION_MAX_DENSITY * self.in_features:
            return self._gather_or_dense(h, x)
        bias = None if self.bias is None else self.bias.detach()
        return union_linear(h, self.weight_t(), bias, idx).reshape(*x.shape[:-1], self.out_features)

    def _gather_or_dense(self, sample: Tensor, x: Tensor) -> Tensor:
        """``auto`` when the union is too dense: ``gather`` if the non-zero fraction of ``sample`` (some or all of
        the batch's tokens) is at most :data:`AUTO_GATHER_MAX_DENSITY`, else the dense product."""
        density = float(sample.abs().sign().sum()) / max(sample.numel(), 1)
        self.last = {"method": "gather" if density <= AUTO_GATHER_MAX_DENSITY else "dense", "density": density}
        if self.last["method"] == "dense":
            return F.linear(x, self.weight, self.bias)
        return self._gather(x.reshape(-1, self.in_features), x.shape)

    def _gather(self, h: Tensor, shape: torch.Size) -> Tensor:
        bias = None if self.bias is None else self.bias.detach()
        return gather_linear(h, self.weight_t(), bias).reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, method={self.method}"


def _set_module(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_path, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent_path) if parent_path else model, attr, new)


def _drop_dead(model: nn.Module, site: FFNSite, dead: Tensor) -> nn.Linear:
    """Replace ``site``'s up-projection by one without the rows of the ``dead`` neurons; returns the down-projection
    without their columns (new modules: the model's own are kept for :func:`disable_sparse_ffn`)."""
    up, down = model.get_submodule(site.up), model.get_submodule(site.down)
    keep = (~dead.to(torch.bool).to(up.weight.device)).nonzero().squeeze(1)
    new_up = nn.Linear(up.in_features, keep.numel(), bias=up.bias is not None).to(up.weight)
    new_down = nn.Linear(keep.numel(), down.out_features, bias=down.bias is not None).to(down.weight)
    with torch.no_grad():
        new_up.weight.copy_(up.weight.index_select(0, keep))
        new_down.weight.copy_(down.weight.index_select(1, keep))
        if up.bias is not None:
            new_up.bias.copy_(up.bias.index_select(0, keep))
        if down.bias is not None:
            new_down.bias.copy_(down.bias)
    new_up.sparse_ffn_original = (up,)  # type: ignore[assignment]
    _set_module(model, site.up, new_up)
    return new_down


def enable_sparse_ffn(model: nn.Module, method: str = "auto", dead: Mapping[str, Tensor] | None = None) -> list[str]:
    """Swap the down-projection of every ReLU FFN of ``model`` (:func:`find_relu_ffns`) for a
    :class:`SparseDownProjection` using ``method`` (``auto``, ``union``, ``gather``, ``dense``); returns the swapped
    modules' paths. The zeros are skipped in eval mode under ``torch.no_grad()`` / ``inference_mode``.

    ``dead`` (optional) maps a down-projection's path to a bool mask over its input neurons that never fire (e.g.
    from :func:`dead_neurons` on training data): those neurons are removed statically, the up-projection's rows and
    the down-projection's columns. That is exact only on inputs where they stay at zero; check the outputs.

    Raises:
        ValueError: an unknown method, or ``dead`` names a module that is not an FFN's down-projection.
    """
    if method not in METHODS:
        raise ValueError(f"unknown sparse FFN method {method!r} (known: {', '.join(METHODS)})")
    disable_sparse_ffn(model)  # enabling twice (another method, other dead neurons) starts from the originals
    sites = find_relu_ffns(model)
    unknown = set(dead or {}) - {s.down for s in sites}
    if unknown:
        raise ValueError(f"not the down-projection of a ReLU FFN: {', '.join(sorted(unknown))}")
    names = []
    for s in sites:
        down = model.get_submodule(s.down)
        target = _drop_dead(model, s, dead[s.down]) if dead and s.down in dead else down
        wrapper = SparseDownProjection(target, method)
        wrapper.sparse_ffn_original = (down,)
        _set_module(model, s.down, wrapper)
        names.append(s.down)
    return names


def disable_sparse_ffn(model: nn.Module) -> list[str]:
    """Put back the modules :func:`enable_sparse_ffn` replaced (down-projections, and up-projections trimmed of dead
    neurons); returns the restored paths."""
    restored = []
    for name, m in list(model.named_modules()):
        original = getattr(m, "sparse_ffn_original", None)
        if name and isinstance(original, tuple) and original and isinstance(original[0], nn.Module):
            _set_module(model, name, original[0])
            restored.append(name)
    return restored


def dead_neurons(model: nn.Module, batches: Any, sites: list[FFNSite] | None = None) -> dict[str, Tensor]:
    """For each FFN (down-projection path → bool mask over its input neurons): the neurons that are zero on every
    token of every batch (dicts are passed as keyword arguments, other batches positionally)."""
    sites = find_relu_ffns(model) if sites is None else sites
    fired: dict[str, Tensor] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            any_ = args[0].reshape(-1, args[0].shape[-1]).ne(0).any(0)
            fired[name] = fired[name] | any_ if name in fired else any_
        return record

    handles = [model.get_submodule(s.down).register_forward_pre_hook(hook(s.down)) for s in sites]
    try:
        with torch.inference_mode():
            for b in batches:
                model(**b) if isinstance(b, dict) else model(b)
    finally:
        for h in handles:
            h.remove()
    return {k: ~v for k, v in fired.items()}


def flops(model: nn.Module, inputs: Any) -> int:
    """FLOPs of one forward of ``model`` on ``inputs`` (a dict: keyword arguments; else positional), as
    ``torch.utils.flop_counter.FlopCounterMode`` counts them: matrix products and convolutions, 2 per
    multiply-add, of the operations actually executed (a sparse FFN's smaller GEMMs count their active columns)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return int(counter.get_total_flops())


def ffn_flops(model: nn.Module, inputs: Any) -> dict[str, int]:
    """The FFNs' matrix-product FLOPs on ``inputs`` (2 per multiply-add, biases not counted), over all ReLU FFNs:

    ``dense``    up- and down-projections in full;
    ``union``    the up-projection in full, the down-projection over the batch's union of active neurons (what
                 ``method="union"`` runs);
    ``nonzero``  the up-projection in full, the down-projection over each token's non-zeros only (the most the zeros
                 allow without predicting them; what ``gather`` runs);
    ``up``       the up-projections alone (computed in full on every path: the floor of a down-only sparse FFN).
    """
    counts = {"dense": 0, "union": 0, "nonzero": 0, "up": 0}

    def hook(module: nn.Module, args: tuple) -> None:
        h = args[0].reshape(-1, args[0].shape[-1])
        m, k, n = h.shape[0], module.in_features, module.out_features
        up = 2 * m * k * up_in[module]
        counts["up"] += up
        counts["dense"] += up + 2 * m * k * n
        counts["union"] += up + 2 * m * int(h.ne(0).any(0).sum()) * n
        counts["nonzero"] += up + 2 * int(h.ne(0).sum()) * n

    sites = find_relu_ffns(model)
    up_in = {model.get_submodule(s.down): model.get_submodule(s.up).in_features for s in sites}
    handles = [model.get_submodule(s.down).register_forward_pre_hook(hook) for s in sites]
    try:
        with torch.inference_mode():
            model(**inputs) if isinstance(inputs, dict) else model(inputs)
    finally:
        for h in handles:
            h.remove()
    return counts
