"""The analysis entry points: :func:`measure` (sparsity), :func:`analyze` (everything, one pass over data).

Both work on any ``nn.Module`` and a data loader yielding tensors, ``(input, label)`` pairs or dicts of
keyword inputs, and return plain, JSON-ready dicts. Their settings are typed options (:class:`MeasureOptions`,
:class:`AnalyzeOptions`), passed as an object or as keyword arguments (``analysis.analyze(model, loader,
max_samples=256)``), each keyword a field of the options. Dictionary coherence needs no data
(:func:`analysis.coherence`); convergence alone is :func:`analysis.convergence`.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypedDict, TypeVar

import torch
from torch import nn

from analysis.collect import AccuracyMeter, run_pass, to_device
from analysis.jsonform import Codec, JsonForm, json_meta
from analysis.sites import Site, find_sites, site_stages
from analysis.sparsity import (
    DEFAULT_TAU_ABS,
    DEFAULT_TAU_REL,
    GINI_EVERY,
    SiteSparsity,
    SparsityMeter,
    near_zero_stats,
    summarize,
)

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only type checkers read it

    from analysis.attention import AttentionCollector
    from analysis.layerwise import CKACollector, RelChangeCollector
    from analysis.margins import StripeCollector

SiteSpec = str | Sequence[str] | Sequence[Site] | None
class Settings(Protocol):
    """A dataclass of settings (every field with a default), as :func:`with_settings` takes it."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


Options = TypeVar("Options", bound=Settings)


@dataclass
class Stopwatch:
    """The seconds a ``with stopwatch()`` block took (set when the block ends)."""

    seconds: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time the block: ``with stopwatch() as took: …``, then ``took.seconds``."""
    watch = Stopwatch()
    start = time.perf_counter()
    yield watch
    watch.seconds = time.perf_counter() - start


def with_settings(options: Options | None, kind: type[Options], settings: Mapping[str, Any]) -> Options:
    """``options`` (or ``kind``'s defaults) with the keyword ``settings`` replacing those fields; an unknown keyword
    raises TypeError, as an unknown keyword argument does."""
    base = options if options is not None else kind()
    return dataclasses.replace(base, **settings) if settings else base


def resolve_sites(model: nn.Module, sites: SiteSpec) -> list[Site]:
    """Sites from regex(es) over activation names, an explicit list of :class:`Site`, or None (all)."""
    if sites and not isinstance(sites, str):
        items = list(sites)
        if all(isinstance(s, Site) for s in items):
            return [s for s in items if isinstance(s, Site)]
        return find_sites(model, include=[str(s) for s in items])
    return find_sites(model, include=sites if isinstance(sites, str) and sites else None)


def _stages(model: nn.Module, keys: Iterable[str]) -> dict[str, str]:
    names = list(dict.fromkeys(k.split("@")[0] for k in keys))
    return site_stages(model, names)


@dataclass(frozen=True)
class MeasureOptions:
    """The settings of :func:`measure`: at most ``max_samples`` samples (None: all), the compiled ``fused``
    statistics (False: eager), the near-zero thresholds ``tau_abs`` / ``tau_rel`` and the Gini subsampling
    ``gini_every`` (:mod:`analysis.sparsity`), the ``device`` (default: the model's), a ``progress`` bar, and
    ``whole_graph`` (the model's forward compiled together with the statistics)."""

    max_samples: int | None = None
    fused: bool = True
    tau_abs: float = DEFAULT_TAU_ABS
    tau_rel: float = DEFAULT_TAU_REL
    gini_every: int = GINI_EVERY
    device: torch.device | str | None = None
    progress: bool = False
    whole_graph: bool = False


class MeasureSettings(TypedDict, total=False):
    """The fields of :class:`MeasureOptions` as keyword arguments of :func:`measure`."""

    max_samples: int | None
    fused: bool
    tau_abs: float
    tau_rel: float
    gini_every: int
    device: torch.device | str | None
    progress: bool
    whole_graph: bool


def measure(model: nn.Module, loader: Iterable, sites: SiteSpec = None, options: MeasureOptions | None = None,
            **settings: Unpack[MeasureSettings]) -> dict:
    """Feature sparsity of ``model`` at ``sites`` over ``loader`` (see :mod:`analysis.sparsity`), with the settings of
    ``options`` and/or keyword arguments (:class:`MeasureOptions`).

    Returns ``{"samples", "per_site": {site: {...}}, "summary": {...}, "stages": {site: stage}}``. With
    ``whole_graph`` the model's forward is compiled together with the statistics
    (:class:`analysis.graph.GraphSparsityMeter`: same numbers, less time per batch, a compilation of tens of
    seconds first; worth it for long passes, README "Performance"), and ``"graph": {"compile_s", "fallback"}``
    says what it cost and, where it could not compile, why it measured per site instead.

    Example:
        >>> res = analysis.measure(model, loader, sites=r"layer4")
        >>> res["summary"]["zero_frac_mean_sites"]
    """
    opts = with_settings(options, MeasureOptions, settings)
    site_list = resolve_sites(model, sites)
    graph = None
    if opts.whole_graph:
        from analysis.graph import GraphSparsityMeter

        graph = GraphSparsityMeter(model, site_list, opts.tau_abs, opts.tau_rel, opts.gini_every)
    meter = graph or SparsityMeter(model, site_list, opts.tau_abs, opts.tau_rel, opts.fused, opts.gini_every)
    n = run_pass(model, loader, [meter], device=opts.device, max_samples=opts.max_samples, progress=opts.progress,
                 desc="sparsity")
    per_site = meter.results()
    stages = _stages(model, per_site)
    out = {"samples": n, "per_site": per_site, "summary": summarize(per_site, stages), "stages": stages}
    if graph is not None:
        out["graph"] = {"compile_s": graph.compile_s, "fallback": graph.fallback_reason}
    return out


def model_info(model: nn.Module) -> dict:
    """``{"class", "architecture", "parameters"}`` of ``model`` (the architecture from timm's or transformers'
    config, None without one)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    hf = getattr(getattr(model, "config", None), "to_dict", None)
    return {
        "class": type(model).__name__,
        "architecture": cfg.get("architecture") or (hf()["model_type"] if hf else None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


@dataclass(frozen=True)
class AnalyzeOptions:
    """The settings of :func:`analyze`: the activation ``sites`` (regexes, :class:`Site` objects or None: all), at
    most ``max_samples`` samples, ``cka`` between sites, ``ista`` agreement on the first ``ista_samples`` samples
    with ``ista_steps`` steps, the compiled ``fused`` sparsity statistics, ``attention_stats`` (per head; switches
    Hugging Face models to eager attention), ``num_classes`` (the logits' columns that make the model a classifier
    of the data, for ``accuracy``), the ``device`` (default: the model's) and a ``progress`` bar."""

    sites: SiteSpec = None
    max_samples: int | None = 512
    cka: bool = True
    ista: bool = True
    ista_samples: int = 16
    ista_steps: int = 16
    fused: bool = True
    attention_stats: bool = True
    num_classes: int | None = None
    device: torch.device | str | None = None
    progress: bool = False


class AnalyzeSettings(TypedDict, total=False):
    """The fields of :class:`AnalyzeOptions` as keyword arguments of :func:`analyze`."""

    sites: SiteSpec
    max_samples: int | None
    cka: bool
    ista: bool
    ista_samples: int
    ista_steps: int
    fused: bool
    attention_stats: bool
    num_classes: int | None
    device: torch.device | str | None
    progress: bool


@dataclass(frozen=True)
class Collectors:
    """The measurements that share :func:`analyze`'s pass over the data."""

    meter: SparsityMeter
    stripes: StripeCollector
    attention: AttentionCollector | None  # None: switched off, or the model has no attention sites
    relative_change: RelChangeCollector
    cka: CKACollector | None

    @classmethod
    def of(cls, model: nn.Module, site_list: list[Site], opts: AnalyzeOptions) -> Collectors:
        """Every collector ``opts`` asks for, on ``model`` (hooks are attached by the pass)."""
        from analysis.attention import AttentionCollector
        from analysis.layerwise import CKACollector, RelChangeCollector, find_blocks
        from analysis.margins import StripeCollector
        from analysis.sites import find_attention

        meter = SparsityMeter(model, site_list, fused=opts.fused)
        stripes = StripeCollector(model)
        attention = AttentionCollector(model, find_attention(model)) if opts.attention_stats else None
        rel = RelChangeCollector(model, find_blocks(model))
        cka = CKACollector(model, site_list) if opts.cka else None
        return cls(meter, stripes, attention if attention is not None and attention.sites else None, rel, cka)

    def all(self) -> list[Any]:
        """The collectors in the order they run on each batch."""
        return [c for c in (self.meter, self.stripes, self.attention, self.relative_change, self.cka) if c is not None]


@dataclass(frozen=True)
class DataPass:
    """What :func:`analyze`'s one pass over the data measured (plain data, as the result holds it)."""

    samples: int
    accuracy: dict
    sparsity: dict
    margins: dict
    attention: dict | None
    relative_change: list
    cka: dict | None
    seconds: float


def data_pass(model: nn.Module, loader: Iterable, site_list: list[Site], coh: dict, opts: AnalyzeOptions) -> DataPass:
    """Sparsity, stripes (for the theory margins, with the coherence ``coh``), attention, relative change, CKA and
    accuracy over at most ``opts.max_samples`` samples of ``loader``, in one pass."""
    from analysis.margins import theory_margins

    collectors = Collectors.of(model, site_list, opts)
    accuracy = AccuracyMeter(opts.num_classes)
    with stopwatch() as took:
        n = run_pass(model, loader, collectors.all(), device=opts.device, max_samples=opts.max_samples,
                     progress=opts.progress, desc="analyzing", accuracy=accuracy)
    per_site = collectors.meter.results()
    stages = _stages(model, per_site)
    acc = accuracy.result()
    sparsity = {"per_site": per_site, "summary": summarize(per_site, stages), "stages": stages}
    margins = theory_margins(collectors.stripes.results(), coh)
    attention = collectors.attention.results() if collectors.attention is not None else None
    cka = collectors.cka
    return DataPass(n, acc, sparsity, margins, attention, collectors.relative_change.result(),
                    cka.result() if cka else None, took.seconds)


def ista_pass(model: nn.Module, loader: Iterable, site_list: list[Site], coh: dict, opts: AnalyzeOptions) -> dict:
    """ISTA agreement (:func:`analysis.layerwise.ista_agreement`) on the first ``opts.ista_samples`` samples of
    ``loader``'s first batch."""
    from analysis.layerwise import first_batch, ista_agreement

    dev = opts.device or next((p.device for p in model.parameters()), "cpu")
    x: Any = first_batch(loader)
    x = {k: v[:opts.ista_samples] for k, v in x.items()} if isinstance(x, dict) else x[:opts.ista_samples]
    return ista_agreement(model, to_device(x, dev), site_list, opts.ista_steps, coh)


def analyze(model: nn.Module, loader: Iterable | None = None, options: AnalyzeOptions | None = None,
            **settings: Unpack[AnalyzeSettings]) -> dict:
    """Every analysis of ``model``, with the settings of ``options`` and/or keyword arguments
    (:class:`AnalyzeOptions`): coherence (weights), and with ``loader`` sparsity, theory margins, layerwise
    convergence (relative change, CKA) in one pass over at most ``max_samples`` samples, plus ISTA agreement on the
    first ``ista_samples`` of them; for models with attention also the entropy and sparsity of every head (this
    switches Hugging Face models to eager attention). The same pass scores the predictions (``accuracy``: top-1 and
    cross-entropy) where the batches have labels and the model's logits have ``num_classes`` columns
    (:class:`analysis.collect.AccuracyMeter`). Plain data; timings in ``timing``."""
    from analysis.dictionary import coherence

    opts = with_settings(options, AnalyzeOptions, settings)
    with stopwatch() as took:
        coh = coherence(model, progress=opts.progress)
    info = model_info(model)
    if loader is None:
        return {"model": info, "coherence": coh, "timing": {"coherence_s": took.seconds}}
    site_list = [s for s in resolve_sites(model, opts.sites) if s.kind != "attention"]
    measured = data_pass(model, loader, site_list, coh, opts)
    timing = {"coherence_s": took.seconds, "data_pass_s": measured.seconds}
    ista = None
    if opts.ista:
        with stopwatch() as took_ista:
            ista = ista_pass(model, loader, site_list, coh, opts)
        timing["ista_s"] = took_ista.seconds
    out: dict = {"model": info, "coherence": coh, "timing": timing, "samples": measured.samples,
                 "accuracy": measured.accuracy, "sparsity": measured.sparsity, "margins": measured.margins}
    if measured.attention is not None:
        out["attention"] = measured.attention
    out["convergence"] = {"relative_change": measured.relative_change, "cka": measured.cka, "ista": ista}
    return out


@dataclass(frozen=True)
class AccuracyFigures(JsonForm):
    """Top-1 (a fraction) and mean cross-entropy (nats per sample) of the model's predictions on the data."""

    top1: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class WeightFigures(JsonForm):
    """What the weights alone say: the ``layers`` measured, the mean and median local mutual coherence μ over the
    ``mu_local_layers`` layers that have one (depthwise layers do not), and the largest shift-aware μ."""

    layers: int | None = None
    mu_local_mean: float | None = None
    mu_local_median: float | None = None
    mu_local_layers: int | None = None
    mu_shift_max: float | None = None


def _near_zero_figures() -> Codec:
    """Near-zero means over sites, stored under their summary keys (``near_zero_frac(abs,tau=0.01)_mean_sites``)."""
    return Codec(dump=lambda owner, values: dict(values), load=lambda d: {k: d[k] for _, k in near_zero_stats(d)})


@dataclass(frozen=True)
class SparsityFigures(JsonForm):
    """The sparsity summary's headline numbers (:class:`~analysis.sparsity.SparsitySummary`): ``sites``, the mean
    and all-entries ``zero_frac``, the mean l0 / C, dead and dense units, the ``near_zero`` means (summary key →
    fraction) and the mean Hoyer index over the sites that have one."""

    sites: int | None = None
    zero_frac_mean_sites: float | None = None
    zero_frac_all_entries: float | None = None
    l0_per_position_frac_mean_sites: float | None = None
    dead_units: int | None = None
    dense_units: int | None = None
    near_zero: dict[str, float | None] = field(default_factory=dict, metadata=json_meta(codec=_near_zero_figures()))
    hoyer_mean_sites: float | None = None


@dataclass(frozen=True)
class MarginFigures(JsonForm):
    """The theory margins in brief: of the ``layers_measured`` pursuit layers (followed by an activation, margin
    defined), how many are inside the uniqueness theorem's regime, and the median factor by which they are outside."""

    layers_inside_theorem: int | None = None
    layers_measured: int | None = None
    median_factor_outside: float | None = None


def _beside(kind: type[JsonForm], marker: str) -> Codec:
    """A group of figures stored with its keys beside the others' (one flat headline); read back where ``marker``
    is stored, else None (the group was not measured)."""
    return Codec(dump=lambda owner, group: {} if group is None else group.to_json(),
                 load=lambda d: kind.from_json(d) if marker in d else None)


@dataclass(frozen=True)
class Headline(JsonForm):
    """The few numbers a summary shows (:func:`headline`), in groups that are there when they were measured:
    ``accuracy`` (labelled data), ``weights`` (always), ``sparsity`` and ``margins`` (with data). The JSON form is one
    flat dict, the groups' keys side by side in this order; a stored headline missing a figure reads it as None."""

    accuracy: AccuracyFigures | None = field(default=None, metadata=json_meta(codec=_beside(AccuracyFigures, "top1")))
    weights: WeightFigures | None = field(default=None, metadata=json_meta(codec=_beside(WeightFigures, "layers")))
    sparsity: SparsityFigures | None = field(default=None, metadata=json_meta(codec=_beside(SparsityFigures, "sites")))
    margins: MarginFigures | None = field(default=None,
                                          metadata=json_meta(codec=_beside(MarginFigures, "layers_measured")))

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> Headline:
        """The headline of an :func:`analyze` result (or a stored one; NaN-free: missing values are None)."""
        acc = result.get("accuracy") or {}
        return cls(accuracy=AccuracyFigures(acc["top1"], acc["loss"]) if "top1" in acc else None,
                   weights=_weight_figures(list(result.get("coherence", {}).values())),
                   sparsity=_sparsity_figures(result["sparsity"]) if "sparsity" in result else None,
                   margins=_margin_figures(result["margins"]) if "margins" in result else None)


def _weight_figures(coh: list[Mapping[str, Any]]) -> WeightFigures:
    mus = [c["local"]["mu"] for c in coh if c["local"]["mu"] is not None]  # depthwise layers: not applicable
    return WeightFigures(layers=len(coh), mu_local_mean=sum(mus) / len(mus) if mus else None,
                         mu_local_median=statistics.median(mus) if mus else None, mu_local_layers=len(mus),
                         mu_shift_max=max((c["mu_shift"] for c in coh if c.get("mu_shift") is not None), default=None))


def _sparsity_figures(sparsity: Mapping[str, Any]) -> SparsityFigures:
    s = sparsity["summary"]
    per = [SiteSparsity.from_json(v) for v in sparsity["per_site"].values()]
    hoyers = [v.hoyer_mean for v in per if not math.isnan(v.hoyer_mean)]
    return SparsityFigures(sites=s["sites"], zero_frac_mean_sites=s["zero_frac_mean_sites"],
                           zero_frac_all_entries=s["zero_frac_all_entries"],
                           l0_per_position_frac_mean_sites=s["l0_per_position_frac_mean_sites"],
                           dead_units=s["dead_units"], dense_units=s["dense_units"],
                           near_zero={k: s[k] for _, k in near_zero_stats(s)},  # the summary may be a stored, partial one
                           hoyer_mean_sites=sum(hoyers) / len(hoyers) if hoyers else None)


def _margin_figures(margins: Mapping[str, Any]) -> MarginFigures:
    # pursuit layers only: a layer with no activation after it does not threshold, its code is its output
    m = [v for v in margins.values() if v["margin"] is not None and v["code"] == "activation"]
    factors = sorted(v["factor"] for v in m)
    return MarginFigures(layers_inside_theorem=sum(1 for v in m if v["inside"]), layers_measured=len(m),
                         median_factor_outside=statistics.median(factors) if factors else None)


def headline(result: dict) -> dict:
    """The few numbers a summary shows (NaN-free: missing values are None), as one flat dict
    (:meth:`Headline.to_json` of :meth:`Headline.of`)."""
    return Headline.of(result).to_json()
