"""The streaming reductions behind every sparsity statistic: one site's exact running sums (:class:`SparsityState`),
the sort-free statistics of a batch in one function (:func:`reductions`, fused when compiled), the Gini subsample
and its statistics, and how running sums merge (:func:`combine`). Both meters use them:
:class:`analysis.sparsity.SparsityStats` per site in hooks, :class:`analysis.graph.GraphSparsityMeter` inside one
compiled graph of the model's forward, so the two give the same numbers.

Codes are laid out ``[B, C, S]`` (:func:`code_view`): batch, channels, positions. Counts are int64 and real sums
float64, so a dataset-level result does not depend on how the data was batched.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from analysis.definitions import GINI_EVERY
from analysis.runtime import compile_failure, compile_failure_reason

HOYER_BINS = 20  # histogram of per-position Hoyer values on [0, 1]
GINI_BINS = 50  # histogram of per-position Gini values on [0, 1]
HIST_EDGES = [float(e) / 2 for e in range(-16, 1)]  # log10 firing density bins from 1e-8 to 1, half decades

log = logging.getLogger("analysis.sparsity")  # the name its warnings have always been printed under


# ----------------------------------------------------------------------------------------------------
# The running sums of one site.


def _sums(group: str, reduce: str = "sum") -> Any:
    """A field of :class:`SparsityState`: which computation fills it (``group``) and how partial sums merge."""
    return field(metadata={"group": group, "reduce": reduce})


@dataclass
class SparsityState:
    """The exact running sums of one site (int64 counts, float64 real sums; tensors on the activations' device, so
    no host sync per batch). Each field's metadata says how partial sums merge (:func:`combine`,
    :meth:`reduce_`): ``l0_max`` by maximum, every other field by sum.

    Sort-free (:func:`reductions`, in this order, :data:`SORT_FREE`): ``nnz`` non-zero entries, ``near_abs`` /
    ``near_rel`` entries within the absolute / relative τ, ``empty`` all-zero code vectors, ``l0_max`` the most
    non-zero channels of one code vector, ``hoyer_sum`` the sum of the Hoyer index over non-empty codes, ``l1_sum``
    the sum of ‖code‖₁ (activation units), ``fire`` ``[C]`` positions where each channel is non-zero,
    ``hoyer_hist`` ``[HOYER_BINS]`` counts of the Hoyer index on [0, 1]. Gini subsample (:data:`GINI`):
    ``gini_sum``, ``gini_count`` and ``gini_hist`` ``[GINI_BINS]``. Sizes (:data:`COUNTS`): ``entries`` and
    ``positions`` seen (Python ints on the per-site path, int64 tensors inside a compiled graph).
    """

    nnz: Tensor = _sums("sort_free")
    near_abs: Tensor = _sums("sort_free")
    near_rel: Tensor = _sums("sort_free")
    empty: Tensor = _sums("sort_free")
    l0_max: Tensor = _sums("sort_free", reduce="max")
    hoyer_sum: Tensor = _sums("sort_free")
    l1_sum: Tensor = _sums("sort_free")
    fire: Tensor = _sums("sort_free")
    hoyer_hist: Tensor = _sums("sort_free")
    gini_sum: Tensor = _sums("gini")
    gini_count: Tensor = _sums("gini")
    gini_hist: Tensor = _sums("gini")
    entries: int | Tensor = _sums("counts")
    positions: int | Tensor = _sums("counts")

    @classmethod
    def zeros(cls, channels: int, device: torch.device | str, tensor_counts: bool = False) -> SparsityState:
        """All sums zero for a site of ``channels`` C; ``tensor_counts``: entries and positions as int64 tensors."""
        z = lambda n=(), dtype=torch.int64: torch.zeros(n, dtype=dtype, device=device)  # noqa: E731
        return cls(nnz=z(), near_abs=z(), near_rel=z(), empty=z(), l0_max=z(), hoyer_sum=z(dtype=torch.float64),
                   l1_sum=z(dtype=torch.float64), fire=z(channels), hoyer_hist=z(HOYER_BINS),
                   gini_sum=z(dtype=torch.float64), gini_count=z(), gini_hist=z(GINI_BINS),
                   entries=z() if tensor_counts else 0, positions=z() if tensor_counts else 0)

    def take(self, names: Iterable[str]) -> tuple[Any, ...]:
        """The values of the fields ``names``, in that order (the arguments of a compiled kernel)."""
        return tuple(getattr(self, n) for n in names)

    def put(self, names: Iterable[str], values: Iterable[Any]) -> None:
        """Set the fields ``names`` to ``values`` (a kernel's results, in the same order)."""
        for n, v in zip(names, values, strict=True):
            setattr(self, n, v)

    def add(self, names: tuple[str, ...], values: Iterable[Tensor]) -> None:
        """Merge a batch's ``values`` of the fields ``names`` into the running sums (:func:`combine`)."""
        self.put(names, combine(names, self.take(names), tuple(values)))

    def reduce_(self, fn: Callable[[Tensor, str], Tensor]) -> None:
        """Merge partial sums in place, e.g. across processes: ``fn(tensor, op)`` with op 'sum' | 'max', field by
        field in name order (the same order on every process); Python-int counts stay ints."""
        dev = self.fire.device
        for f in sorted(fields(self), key=lambda f: f.name):
            v, op = getattr(self, f.name), f.metadata["reduce"]
            if isinstance(v, int):
                setattr(self, f.name, int(fn(torch.tensor(v, dtype=torch.int64, device=dev), op)))
            else:
                setattr(self, f.name, fn(v, op))

    def to_cpu(self) -> SparsityState:
        """A detached copy on the CPU (Python-int counts as they are)."""
        return SparsityState(**{f.name: _cpu(getattr(self, f.name)) for f in fields(self)})


def _cpu(v: Any) -> Any:
    return v.detach().cpu() if isinstance(v, Tensor) else v


def _group(name: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(SparsityState) if f.metadata["group"] == name)


SORT_FREE = _group("sort_free")  # the results of reductions(), in order
GINI = _group("gini")  # the results of gini_stats(), in order
COUNTS = _group("counts")  # entries, positions
_REDUCE = {f.name: f.metadata["reduce"] for f in fields(SparsityState)}


def combine(names: tuple[str, ...], old: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Running sums ``old`` of the fields ``names`` merged with a batch's ``new``: by maximum where the field's
    metadata says so (``l0_max``), else by sum. Traceable: it runs inside compiled kernels and graphs."""
    return tuple(torch.maximum(o, v) if _REDUCE[n] == "max" else o + v for n, o, v in zip(names, old, new, strict=True))


# ----------------------------------------------------------------------------------------------------
# The statistics of one batch.


def code_view(a: Tensor, channel_dim: int, mask: Tensor | None = None) -> Tensor:
    """``a`` as ``[B, C, S]`` codes (a view when possible); masked positions are dropped (B becomes 1)."""
    if mask is not None:
        return a.movedim(channel_dim, -1)[mask.to(torch.bool)].T.unsqueeze(0)
    cd = channel_dim % a.dim()
    if cd == 1:
        return a.reshape(a.shape[0], a.shape[1], -1)
    if cd == a.dim() - 1:
        return a.reshape(a.shape[0], -1, a.shape[-1]).transpose(1, 2)
    return a.movedim(cd, 1).reshape(a.shape[0], a.shape[cd], -1)


def gini_offset(sample_idx: Tensor, every: int) -> Tensor:
    """The Gini subsample's offset ``o_i`` of each sample, hashed from its index in the data (``[B]``, int64)."""
    return ((sample_idx.to(torch.int64) * 2654435761 + 12345) % 4294967296 >> 7) % every


def gini_selection(sample_idx: Tensor, positions: int, every: int = GINI_EVERY) -> Tensor:
    """Which code vectors enter the Gini statistics: ``[B, S]`` bool, one position in ``every``.

    Sample i contributes the positions p with ``(p + o_i) mod every = 0``, where the offset ``o_i`` is hashed from
    the sample's index in the data (:func:`gini_offset`). The choice depends only on that index and the position,
    never on batching, so the subsampled Gini statistics do not change with batch size; across samples every
    position is covered.
    """
    off = gini_offset(sample_idx, every)
    p = torch.arange(positions, device=sample_idx.device, dtype=torch.int64)
    return (p[None, :] + off[:, None]) % every == 0


def gini_values(codes: Tensor) -> Tensor:
    """The Gini index of each row of ``codes`` ``[n, C]`` (float32; NaN for an all-zero row).

    No data-dependent shapes inside, so ``torch.compile`` handles any number of rows with one compilation.
    """
    xs, _ = codes.abs().float().sort(dim=-1)
    n = codes.shape[-1]
    w = (n - torch.arange(1, n + 1, device=codes.device, dtype=xs.dtype) + 0.5) / n
    total = xs.sum(-1)
    return torch.where(total > 0, 1 - 2 * (xs * w).sum(-1) / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def bin01(v: Tensor, bins: int) -> Tensor:
    """The bin of each value of ``v`` among ``bins`` equal bins of [0, 1] (1.0 in the last one), as a float index;
    -1 for a value outside [0, 1] (or NaN)."""
    idx = (v * bins).floor().clamp(min=-1, max=bins - 1)
    return torch.where((v >= 0) & (v <= 1), idx, torch.full_like(idx, -1.0))


def _hist01(v: Tensor, bins: int) -> Tensor:
    """Counts of ``v`` in ``bins`` equal bins of [0, 1] (:func:`bin01`; values outside are dropped), int64.

    Written as one broadcast comparison with the bin indices and one sum, so that ``torch.compile`` makes it a
    single reduction kernel (``torch.histc`` would not fuse; one reduction per bin multiplies compile time).
    """
    idx = bin01(v, bins).reshape(-1, 1)
    return (idx == torch.arange(bins, device=v.device, dtype=idx.dtype)).sum(0, dtype=torch.int64)


def _gini_stats(codes: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sum, count and [0, 1] histogram of the Gini index of the rows of ``codes`` ``[n, C]`` (all-zero rows skipped),
    in :data:`GINI` order."""
    g = gini_values(codes)
    ok = ~g.isnan()
    return torch.where(ok, g, torch.zeros_like(g)).sum(dtype=torch.float64), ok.sum(dtype=torch.int64), \
        _hist01(g, GINI_BINS)


def reductions(x: Tensor, tau_abs: float, tau_rel: float, valid: Tensor | None = None) -> tuple[Tensor, ...]:
    """All sort-free statistics of codes ``x`` laid out ``[B, C, S]`` in one function (fused when compiled), in
    :data:`SORT_FREE` order, over the positions where ``valid`` ``[B, S]`` is True (all when None). Excluded
    positions are weighted out, not indexed out, so that the shapes do not depend on the data (one graph)."""
    c = x.shape[1]
    mag = x.abs()
    nz = mag > 0
    # per-position counts (≤ C, exact in float32 below 2**24) in float lanes: compiled, they join the kernel that
    # produces the activation at less cost than int64 lanes (near_abs had been a pass of its own); mobilenetv2_100's
    # whole graph went from 1.71-1.90x to 1.61-1.77x of its compiled forward (benchmarks/bench_analysis.py)
    lanes = torch.float32 if c < 2**24 else torch.int64
    l0 = nz.to(lanes).sum(1).to(torch.int64)
    peak = mag.amax(1, keepdim=True)
    l1 = mag.sum(1, dtype=torch.float32)
    l2 = x.float().square().sum(1).sqrt()
    nonempty = l0 > 0
    sqrt_c = math.sqrt(c)
    h = (sqrt_c - l1 / l2.clamp_min(1e-30)) / max(sqrt_c - 1, 1e-30)
    # empty codes fall outside the histogram; for n = 1 Hoyer is undefined (0/0): no code enters sum or histogram
    counted = nonempty if c > 1 else torch.zeros_like(nonempty)
    empty = ~nonempty
    near_abs, near_rel, fire = mag <= tau_abs, mag <= tau_rel * peak, nz
    if valid is not None:
        keep = valid[:, None, :]
        counted, empty = counted & valid, empty & valid
        near_abs, near_rel, fire = near_abs & keep, near_rel & keep, fire & keep
        l0, l1 = l0 * valid, l1 * valid
    h = torch.where(counted, h, torch.full_like(h, -1.0))
    return (
        l0.sum(dtype=torch.int64),
        near_abs.to(lanes).sum(1).to(torch.int64).sum(),
        near_rel.sum(dtype=torch.int64),
        empty.sum(dtype=torch.int64),
        l0.amax().to(torch.int64),
        torch.where(counted, h, torch.zeros_like(h)).sum(dtype=torch.float64),
        l1.sum(dtype=torch.float64),
        fire.sum((0, 2), dtype=torch.int64),
        _hist01(h, HOYER_BINS),
    )


def _accumulate(x: Tensor, tau_abs: float, tau_rel: float, *state: Tensor) -> tuple[Tensor, ...]:
    """The running sums ``state`` (in :data:`SORT_FREE` order) updated with the batch ``x`` (one fused call)."""
    return combine(SORT_FREE, state, reductions(x, tau_abs, tau_rel))


# ----------------------------------------------------------------------------------------------------
# Compiled or eager.

_COMPILED: dict[str, Callable] = {}  # function name -> its compiled form (or the function itself, once compiling failed)


def run_compiled(fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` through ``torch.compile`` (one compilation serves all shapes). Where compiling is unavailable
    (:func:`analysis.runtime.compile_failure`: no C++ toolchain, an unsupported backend, …) one warning, and ``fn``
    runs eagerly from then on, with the same numbers; any other error (out of memory, a bug) propagates and the
    compiled path stays."""
    compiled = _COMPILED.get(fn.__name__)
    if compiled is None:
        compiled = _COMPILED[fn.__name__] = torch.compile(fn, dynamic=True)
    try:
        return compiled(*args)
    except Exception as e:
        if not compile_failure(e):
            raise
        log.warning("compiled sparsity statistics unavailable (%s); using eager", compile_failure_reason(e))
        _COMPILED[fn.__name__] = fn
        return fn(*args)


def accumulate(state: SparsityState, x: Tensor, tau_abs: float, tau_rel: float, fused: bool) -> None:
    """Add the sort-free statistics of the codes ``x`` ``[B, C, S]`` to ``state`` (with ``fused``, in one compiled
    function, :func:`run_compiled`)."""
    args = (x, tau_abs, tau_rel, *state.take(SORT_FREE))
    state.put(SORT_FREE, run_compiled(_accumulate, *args) if fused else _accumulate(*args))


def accumulate_gini(state: SparsityState, codes: Tensor, fused: bool) -> None:
    """Add the Gini statistics of the selected code vectors ``codes`` ``[n, C]`` to ``state`` (the sort and sums
    compiled with ``fused``)."""
    state.add(GINI, run_compiled(_gini_stats, codes) if fused else _gini_stats(codes))
