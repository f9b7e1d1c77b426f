"""Sparsity statistics inside one compiled graph of the model's forward.

:class:`~analysis.sparsity.SparsityMeter` computes each site's statistics in a hook, after the activation is in
memory: one more read of every activation, plus Python per hook. :class:`GraphSparsityMeter` instead compiles the
model's forward *together with* every site's reductions (the hooks are traced into the graph, ``fullgraph=True``),
so Inductor can fuse each site's sums into the kernel that produces the activation, and the per-hook Python runs
once, at tracing time. The statistics, their definitions and their exactness are those of :mod:`analysis.sparsity`:
the same running sums (integers in int64, real sums in float64), the same Gini subsample, padding excluded by
weights instead of by indexing (no data-dependent shapes in the graph). Results equal the per-site path's.

Cost: compiling takes tens of seconds on a CPU (reported by :attr:`GraphSparsityMeter.compile_s`); it pays off
after a number of batches that ``benchmarks/bench_analysis.py`` measures (``graph_break_even_batches``). Where
compilation is unavailable the meter warns once and falls back to the per-site path with the same numbers; other
errors propagate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from analysis.collect import batch_size, call_model, compile_with_hook_guards, fitting_mask
from analysis.definitions import DEFAULT_TAU_ABS, DEFAULT_TAU_REL, GINI_EVERY
from analysis.runtime import compile_failure, compile_failure_reason
from analysis.sites import Site
from analysis.sparsity.kernels import (
    COUNTS,
    GINI,
    GINI_BINS,
    SORT_FREE,
    SparsityState,
    bin01,
    code_view,
    combine,
    gini_offset,
    gini_values,
    reductions,
    run_compiled,
)
from analysis.sparsity.meter import SparsityMeter, SparsityStats

log = logging.getLogger(__name__)

_STATE_KEYS = (*SORT_FREE, *COUNTS)  # the SparsityState fields summed inside the graph; GINI outside


def gini_subsample(x: Tensor, sample_idx: Tensor, valid: Tensor | None, every: int) -> tuple[Tensor, Tensor]:
    """The Gini subsample of :func:`analysis.sparsity.gini_selection` as a fixed-size gather: codes ``[B, K, C]``
    (K = ⌈S / every⌉) and which of them count ``[B, K]`` (beyond the last position, or padding: not)."""
    b, c, s = x.shape
    off = gini_offset(sample_idx, every)
    first = (every - off) % every  # the smallest p with (p + off) mod every = 0
    pos = first[:, None] + every * torch.arange(-(-s // every), device=x.device, dtype=torch.int64)[None, :]
    ok = pos < s
    pos = pos.clamp(max=s - 1)
    codes = x.gather(2, pos[:, None, :].expand(b, c, pos.shape[1])).transpose(1, 2)
    if valid is not None:
        ok = ok & valid.gather(1, pos)
    return codes, ok


def gini_by_site(gathers: list[tuple[Tensor, Tensor]], compiled: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Gini sum (float64), count and histogram (``[sites, GINI_BINS]``) of each site's selected codes
    (:func:`gini_subsample`'s ``(codes, ok)`` per site), with one sort per distinct channel count, not per site
    (``compiled``: each in one ``torch.compile``d function, as the per-site path).

    The same numbers as :func:`analysis.sparsity.kernels.accumulate_gini` site by site. Runs outside the graph: which codes are
    selected depends on the data (their number too), and Inductor cannot fuse a sort anyway.
    """
    n = len(gathers)
    groups: dict[int, list[int]] = {}
    for i, (codes, _) in enumerate(gathers):
        groups.setdefault(codes.shape[-1], []).append(i)
    values, owners = [], []
    for members in groups.values():
        rows = torch.cat([gathers[i][0][gathers[i][1]] for i in members])
        owners.append(torch.cat([torch.full_like(gathers[i][1], i, dtype=torch.int64)[gathers[i][1]] for i in members]))
        values.append(run_compiled(gini_values, rows) if compiled else gini_values(rows))
    g, site = torch.cat(values), torch.cat(owners)
    ok = ~g.isnan()
    g_ok, site_ok = g[ok], site[ok]
    total = torch.zeros(n, dtype=torch.float64, device=g.device).index_add_(0, site_ok, g_ok.double())
    idx = bin01(g_ok, GINI_BINS)
    inside = idx >= 0
    bins = idx[inside].to(torch.int64)
    hist = torch.bincount(site_ok[inside] * GINI_BINS + bins, minlength=n * GINI_BINS).view(n, GINI_BINS)
    return total, torch.bincount(site_ok, minlength=n), hist


@dataclass(frozen=True)
class SiteSettings:
    """The meter's fixed settings that :func:`site_update` reads: the near-zero thresholds and the Gini subsampling
    stride (0: no Gini)."""

    tau_abs: float
    tau_rel: float
    gini_every: int


def site_update(a: Tensor, channel_dim: int, valid: Tensor | None, sample_idx: Tensor, state: tuple[Tensor, ...],
                settings: SiteSettings) -> tuple[tuple[Tensor, ...], tuple[Tensor, Tensor] | None]:
    """One site's running sums (``_STATE_KEYS`` order) updated with the batch ``a``, and its Gini subsample
    (``(codes, ok)``, None when ``settings.gini_every`` is 0) for :func:`gini_by_site`; traceable as one graph."""
    tau_abs, tau_rel, gini_every = settings.tau_abs, settings.tau_rel, settings.gini_every
    x = code_view(a, channel_dim)
    if valid is not None:
        valid = valid.reshape(x.shape[0], -1)
    positions = valid.sum(dtype=torch.int64) if valid is not None else \
        torch.full((), x.shape[0] * x.shape[2], dtype=torch.int64, device=x.device)
    new = (*reductions(x, tau_abs, tau_rel, valid), positions * x.shape[1], positions)
    return combine(_STATE_KEYS, state, new), gini_subsample(x, sample_idx, valid, gini_every) if gini_every > 0 else None


class GraphSparsityMeter(SparsityMeter):
    """:class:`~analysis.sparsity.SparsityMeter` whose statistics are computed inside one compiled graph of the
    model's forward. Use it through :func:`analysis.collect.run_pass` (which calls :meth:`forward` instead of the
    model) or call :meth:`forward` yourself under ``torch.no_grad``; results come from :meth:`results` as usual.

    Args:
        compile: compile the forward with the statistics (``fullgraph=True``); False runs the same graph eagerly.
        Other arguments as :class:`~analysis.sparsity.SparsityMeter`.

    The first batch runs eagerly (it fixes which sites run, in which order, and allocates the sums); every
    later one runs the compiled graph. If it cannot be compiled (:func:`analysis.runtime.compile_failure`: no C++
    toolchain, a graph break in the model), one warning line names the reason and the meter goes on per site, in
    hooks, with the same numbers; any other error (out of memory, a bug) propagates, and the meter stays on its graph.
    """

    def __init__(self, model: nn.Module, sites: Iterable[Site], tau_abs: float = DEFAULT_TAU_ABS,
                 tau_rel: float = DEFAULT_TAU_REL, gini_every: int = GINI_EVERY, compile: bool = True):
        super().__init__(model, sites, tau_abs, tau_rel, fused=True, gini_every=gini_every)
        self.owns_forward = True
        self.settings = SiteSettings(self.tau_abs, self.tau_rel, self.gini_every)  # what the graph reads
        self.compile = compile
        self.compile_s: float | None = None  # seconds of the first compiled call (tracing + Inductor)
        self.fallback_reason: str | None = None
        self._acts: list[tuple[int, Tensor]] | None = None
        self._keys: list[tuple[str, Site]] = []
        self._graph: Callable | None = None

    # hooks: while the graph runs they hand each site's output to it; in fallback they measure per site
    def _register(self) -> list:
        return [self.model.register_forward_pre_hook(self._start_batch, with_kwargs=True),
                *(s.hook(self._record(i)) for i, s in enumerate(self.sites))]

    def _record(self, i: int) -> Callable[[Tensor], None]:
        per_site = self._hook(self.sites[i])

        def hook(out: Tensor) -> None:
            if self._acts is not None:
                self._acts.append((i, out))
            elif self.fallback_reason is not None:
                per_site(out)

        return hook

    def _start_batch(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._acts is None:  # the graph passes sample indices in itself
            super()._start_batch(module, args, kwargs)

    def _step(self, inputs: Any, valid: Tensor | None, sample_idx: Tensor, state: list[tuple[Tensor, ...]]):
        """The model's forward and every site's statistics: ``(output, new state)``; the graph that is compiled."""
        out, acts = self._forward_recording(inputs)
        return (out, *self._update_sites(acts, valid, sample_idx, state))

    def _forward_recording(self, inputs: Any) -> tuple[Any, list[tuple[int, Tensor]]]:
        self._acts = []
        out = call_model(self.model, inputs)
        acts, self._acts = self._acts, None
        return out, acts

    def _update_sites(self, acts: list[tuple[int, Tensor]], valid: Tensor | None, sample_idx: Tensor,
                      state: list[tuple[Tensor, ...]]) -> tuple[list[tuple[Tensor, ...]], list[tuple[Tensor, Tensor]]]:
        new, gathers = [], []
        for (i, a), st in zip(acts, state, strict=True):
            site = self.sites[i]
            summed, gather = site_update(a.detach(), site.channel_dim(a.dim()), fitting_mask(valid, a), sample_idx, st,
                                         self.settings)
            new.append(summed)
            if gather is not None:
                gathers.append(gather)
        return new, gathers

    def forward(self, inputs: Any) -> Any:
        """``model(inputs)`` with the statistics of this batch added (under ``torch.no_grad``)."""
        if self.fallback_reason is not None:
            return call_model(self.model, inputs)
        b = batch_size(inputs)
        dev = next((p.device for p in self.model.parameters()), torch.device("cpu"))
        sample_idx = torch.arange(self._seen, self._seen + b, device=dev)
        valid = self.position_mask
        if not self._keys:
            return self._first(inputs, valid, sample_idx)
        try:
            out, new, gathers = self._run_graph(inputs, valid, sample_idx, self._state())
        except Exception as e:
            self._acts = None  # the hooks stop recording whatever happened
            if not compile_failure(e):  # out of memory, a bug: not a reason to measure differently
                raise
            self.fallback_reason = compile_failure_reason(e)
            log.warning("whole-graph sparsity statistics unavailable (%s); measuring per site", self.fallback_reason)
            return call_model(self.model, inputs)
        self._store(new, gathers, b)
        return out

    def _run_graph(self, inputs: Any, valid: Tensor | None, sample_idx: Tensor,
                   state: list[tuple[Tensor, ...]]) -> tuple[Any, list, list]:
        if self._graph is None:
            self._graph = compile_with_hook_guards(self._step, fullgraph=True) if self.compile else self._step
            for tensor in [*_tensors(inputs), valid, sample_idx]:  # one graph for every batch size (the last one too)
                if tensor is not None and self.compile:
                    torch._dynamo.mark_dynamic(tensor, 0)
            start = time.perf_counter()
            result = self._graph(inputs, valid, sample_idx, state)
            self.compile_s = time.perf_counter() - start
            return result
        return self._graph(inputs, valid, sample_idx, state)

    def _first(self, inputs: Any, valid: Tensor | None, sample_idx: Tensor) -> Any:
        """Eager first batch: records which sites run in which order (``name``, ``name@1``, …) and their sums."""
        out, acts = self._forward_recording(inputs)
        calls: dict[str, int] = {}
        for i, a in acts:
            site = self.sites[i]
            k = calls.get(site.name, 0)
            calls[site.name] = k + 1
            key = site.name if k == 0 else f"{site.name}@{k}"
            self._keys.append((key, site))
            channels = code_view(a, site.channel_dim(a.dim())).shape[1]
            self.stats[key] = SparsityStats(self.tau_abs, self.tau_rel, True, self.gini_every,
                                            SparsityState.zeros(channels, a.device, tensor_counts=True))
        self._store(*self._update_sites(acts, valid, sample_idx, self._state()), len(sample_idx))
        return out

    def _site_state(self, key: str) -> SparsityState:
        state = self.stats[key].state
        assert state is not None  # allocated by _first
        return state

    def _state(self) -> list[tuple[Tensor, ...]]:
        return [self._site_state(k).take(_STATE_KEYS) for k, _ in self._keys]

    def _store(self, new: list[tuple[Tensor, ...]], gathers: list[tuple[Tensor, Tensor]], b: int) -> None:
        for (key, _), values in zip(self._keys, new, strict=True):
            self._site_state(key).put(_STATE_KEYS, values)
        if gathers:
            for (key, _), *gini in zip(self._keys, *gini_by_site(gathers, self.compile), strict=True):
                self._site_state(key).add(GINI, gini)
        self._seen += b


def _tensors(inputs: Any) -> list[Tensor]:
    values = inputs.values() if isinstance(inputs, dict) else [inputs]
    return [v for v in values if isinstance(v, Tensor)]
