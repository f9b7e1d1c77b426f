"""The model zoo: sparse checkpoints of real models on real data, each next to its dense baseline, by short name.

The zoo is data (``sparsezoo/zoo.yaml``, SAELens/timm style): every *entry* names a base model with real weights
that install offline, a real data set (:mod:`sparsezoo.named_data`), the recipe its runs share, a dense
*baseline* variant and sparse *variants*, each a small override of the shared recipe. A variant is addressed as
``ENTRY:VARIANT`` and published as the Hub repo ``<org>/<ENTRY>-<VARIANT>``.

Three jobs (``sparsezoo zoo list | build | publish``):

- :func:`build` fine-tunes the baseline and every variant into ``ROOT/ENTRY/VARIANT`` (resumable: finished runs
  are kept, interrupted ones resumed), measures each (:func:`measure`), and writes ``ROOT/ENTRY/results.json``,
  one model card per variant and the entry's accuracy-vs-sparsity plot.
- :func:`publish` pushes every variant with its card (the baseline's numbers beside its own).
- :func:`list_entries` reads the registry and the results recorded so far.

Per variant (:func:`measure`): top-1 on the validation split and its *recovery* (variant / baseline top-1, with
SparseZoo's classes: ``conservative`` ≥ 100 %, ``moderate`` ≥ 99 %, ``aggressive`` < 99 %); the sparsity of the
whole validation split from ``metrics.json`` (``zero_frac``, ``near_zero_frac(abs, τ = 0.01)``,
``l0_per_position`` as a fraction of the channels, dead units; site means); and on the first ``samples``
validation samples: the theory margin (median factor by which a layer's output code is outside the uniqueness
regime, :mod:`analysis.margins`), the median local coherence μ over layers, the linear CKA to the baseline
(mean over sites, :func:`analysis.layerwise.cka_between`), and the class selectivity of the 16 most selective
features of the last activation site (:mod:`analysis.interpret.select`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from sparsezoo.errors import SparsezooError
from sparsezoo.named_data import NAMED
from sparsezoo.recipe import Recipe

RESULTS = "results.json"
MARKER = "zoo-entry.json"
ZOO_RESULTS = "zoo-results.json"  # the whole zoo's results, beside the cards (model_cards/)
SHORT_NAME = re.compile(r"^(?:(?P<org>[\w.-]+)/)?(?P<entry>[a-z0-9][a-z0-9.-]*):(?P<variant>[a-z0-9][a-z0-9.-]*)$")


class ZooError(SparsezooError):
    """Unknown entry or variant, a build folder of another entry, an entry that is not built."""


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
    base_model: str
    weights_note: str
    baseline: str
    recipe: dict
    variants: dict[str, dict]

    def variant_names(self) -> list[str]:
        """The baseline first, then the sparse variants in registry order."""
        return [self.baseline] + [v for v in self.variants if v != self.baseline]

    def recipe_for(self, variant: str, overrides: dict | None = None) -> Recipe:
        """The variant's full recipe: the shared one, the variant's override, then ``overrides`` (reduced builds)."""
        if variant not in self.variants:
            raise ZooError(f"{self.name} has no variant {variant!r} (variants: {', '.join(self.variants)})")
        d = _merge(copy.deepcopy(self.recipe), self.variants[variant])
        return Recipe.from_dict(_merge(d, overrides or {}))

    def repo_id(self, variant: str, org: str) -> str:
        return f"{org}/{self.name}-{variant}"


def _merge(base: dict, over: dict) -> dict:
    for k, v in over.items():
        base[k] = _merge(base.get(k) or {}, v) if isinstance(v, dict) and isinstance(base.get(k), dict | None) else v
    return base


@dataclass(frozen=True)
class Registry:
    org: str
    entries: dict[str, Entry]

    def entry(self, name: str) -> Entry:
        if name not in self.entries:
            import difflib

            close = difflib.get_close_matches(name, list(self.entries), n=2)
            hint = f"did you mean {' or '.join(close)}?" if close else f"entries: {', '.join(self.entries)}"
            raise ZooError(f"unknown zoo entry {name!r}; {hint}")
        return self.entries[name]

    def resolve(self, short: str) -> str | None:
        """The Hub repo of ``[ORG/]ENTRY:VARIANT`` (None if ``short`` is not of that form)."""
        m = SHORT_NAME.match(short)
        if m is None:
            return None
        entry = self.entry(m["entry"])
        entry.recipe_for(m["variant"])  # validates the variant
        return entry.repo_id(m["variant"], m["org"] or self.org)


def registry() -> Registry:
    """The zoo registry shipped with the package (``sparsezoo/zoo.yaml``)."""
    import yaml

    raw = yaml.safe_load((resources.files("sparsezoo") / "zoo.yaml").read_text(encoding="utf-8"))
    entries = {}
    for name, e in raw["entries"].items():
        entries[name] = Entry(name, e["title"], e["base_model"], e.get("weights_note", ""), e["baseline"],
                              e["recipe"], e["variants"])
    return Registry(raw["org"], entries)


# ------------------------------------------------------------------------------------------------ build


@dataclass
class VariantResult:
    """The zoo's numbers for one variant (see module docstring); JSON via :func:`dataclasses.asdict`."""

    variant: str
    recipe_hash: str
    penalties: dict[str, float]
    activation: str | None
    top1: float
    recovery: float
    recovery_class: str
    zero_frac: float
    near_zero_frac: float
    l0_frac: float
    dead_units: int
    sites: int
    margin_median_factor: float | None
    layers_inside_theorem: int
    layers_measured: int
    mu_local_median: float | None
    cka_to_baseline: float | None
    class_selectivity_top16: float | None
    wall_seconds: float | None = None
    analysis_samples: int = 0


def recovery_class(recovery: float) -> str:
    """SparseZoo's classes: conservative (no loss: ≥ 100 %), moderate (≥ 99 %), aggressive (< 99 %)."""
    return "conservative" if recovery >= 1.0 else "moderate" if recovery >= 0.99 else "aggressive"


def _check_folder(folder: Path, entry: str) -> None:
    marker = folder / MARKER
    if marker.is_file():
        other = json.loads(marker.read_text()).get("entry")
        if other != entry:
            raise ZooError(f"{folder} holds a build of zoo entry {other!r}, not {entry!r}; use another --root")
    elif folder.exists() and any(folder.iterdir()):
        raise ZooError(f"{folder} exists and is not a zoo build folder; use another --root")


def _run_variant(recipe: Recipe, run_dir: Path, progress: bool) -> float | None:
    """Fine-tune one variant unless it is finished; resume it if interrupted. Returns the wall time (None: kept)."""
    from sparsezoo.checkpoint import latest_checkpoint
    from sparsezoo.train import finetune

    metrics = run_dir / "metrics.json"
    if metrics.is_file():
        done = json.loads(metrics.read_text())
        if done.get("complete") is True and done.get("recipe_hash") == recipe.hash():
            return None
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    t = time.perf_counter()
    finetune(recipe, run_dir, resume=resume, force=run_dir.exists() and not resume, progress=progress)
    return time.perf_counter() - t


def build(name: str, root: str | Path = "zoo", *, variants: list[str] | None = None, overrides: dict | None = None,
          samples: int = 512, cards_dir: str | Path | None = "model_cards", org: str | None = None,
          progress: bool = False, on_step: Callable[[str], None] | None = None) -> dict:
    """Build zoo entry ``name``: its baseline and variants into ``root/name/VARIANT``, their measurements into
    ``root/name/results.json``, and (with ``cards_dir``) one card per variant plus the entry's plot there and its
    results merged into ``cards_dir/zoo-results.json``. Resumable; ``overrides`` (recipe keys) make a reduced
    build (e.g. ``{"data": {"max_train_samples": 64}}``), recorded in the results.

    Raises:
        ZooError: unknown entry or variant, or ``root/name`` holds something else.
    """
    from sparsezoo.io import atomic_write_json, check_output_folder

    reg = registry()
    entry = reg.entry(name)
    names = entry.variant_names() if not variants else [entry.baseline] + [v for v in variants if v != entry.baseline]
    recipes = {v: entry.recipe_for(v, overrides) for v in names}  # every recipe validated before any work
    folder = Path(root) / name
    _check_folder(folder, name)
    check_output_folder(folder, force=True)
    if cards_dir is not None:
        check_output_folder(cards_dir, force=True)
    for source in {r.data.source for r in recipes.values()}:
        if source in NAMED:
            NAMED[source].require()  # a missing data package: one line naming the pip command, nothing written
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / MARKER, {"entry": name})
    walls = {}
    try:
        for v in names:
            if on_step:
                on_step(f"{name}:{v}: fine-tuning")
            walls[v] = _run_variant(recipes[v], folder / v, progress)
    except BaseException:
        if created and not any(p.is_dir() for p in folder.iterdir()):  # nothing built: leave nothing behind
            shutil.rmtree(folder, ignore_errors=True)
        raise
    earlier = _read_results(folder)
    previous = earlier.get("variants", {})
    if on_step:
        on_step(f"{name}: measuring {len(names)} variants")
    results = measure(entry, folder, names, samples)
    for v, r in results.items():
        r.wall_seconds = walls[v] if walls[v] is not None else (previous.get(v) or {}).get("wall_seconds")
    measured = {v: dataclasses.asdict(r) for v, r in results.items()}
    if variants and earlier.get("overrides", {}) == (overrides or {}) and earlier.get("analysis_samples") == samples:
        # a build of some variants keeps the numbers of the others (same baseline, overrides and samples)
        measured = {v: measured.get(v) or previous[v] for v in entry.variant_names() if v in measured or v in previous}
    out = {"entry": name, "title": entry.title, "base_model": entry.base_model, "overrides": overrides or {},
           "analysis_samples": samples, "variants": measured}
    atomic_write_json(folder / RESULTS, out)
    if cards_dir is not None:
        write_cards(entry, folder, names, Path(cards_dir), org or reg.org)
        plot_entry(out, Path(cards_dir) / f"{name}.png")
        merged = _read_json(Path(cards_dir) / ZOO_RESULTS) or {"zoo": 1, "entries": {}}
        merged["entries"][name] = out
        atomic_write_json(Path(cards_dir) / ZOO_RESULTS, merged)
    return out


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read_results(folder: Path) -> dict:
    return _read_json(folder / RESULTS) or {}


def measure(entry: Entry, folder: Path, names: list[str], samples: int) -> dict[str, VariantResult]:
    """The zoo's numbers of every built variant (the baseline first); see the module docstring."""
    import torch

    from analysis.layerwise import cka_between
    from analysis.pipeline import analyze, headline
    from analysis.sites import find_sites
    from analysis.sparsity import SparsitySummary
    from sparsezoo.cards import read_run
    from sparsezoo.inputs import load_model, sample_loader

    runs = {v: read_run(folder / v) for v in names}
    base_top1 = runs[entry.baseline].final["top1"]
    loaded = {v: load_model(str(folder / v)) for v in names}
    data = runs[entry.baseline].recipe.data
    loader, n, *_ = sample_loader(loaded[entry.baseline], data, samples, 32)
    base_sites = {s.name for s in find_sites(loaded[entry.baseline].model)}
    out = {}
    for v in names:
        run, model = runs[v], loaded[v].model
        summary = SparsitySummary.from_json(run.final["sparsity"])
        res = analyze(model, loader, max_samples=samples, cka=False, ista=False, attention_stats=False)
        head = headline(res)  # margins as the analysis report states them: layers followed by an activation
        sites = [s for s in find_sites(model) if s.name in base_sites]
        cka = None
        if v != entry.baseline and sites:
            per_site = cka_between(loaded[entry.baseline].model, model, loader, [s.name for s in sites],
                                   max_samples=samples)
            finite = [x for x in per_site.values() if x is not None and math.isfinite(x)]
            cka = sum(finite) / len(finite) if finite else None
        elif v == entry.baseline:
            cka = 1.0
        near = summary.near_zero_of("abs")
        if near is None:
            raise ZooError(f"{folder / v}/metrics.json has no absolute near-zero fraction")
        top1 = run.final["top1"]
        recovery = top1 / base_top1 if base_top1 else float("nan")
        with torch.no_grad():
            selectivity = _class_selectivity(model, loader, samples)
        out[v] = VariantResult(
            variant=v, recipe_hash=run.recipe.hash(), penalties={p.kind: p.lam for p in run.recipe.penalties},
            activation=run.recipe.model.activation, top1=top1, recovery=recovery,
            recovery_class=recovery_class(recovery), zero_frac=summary.zero_frac_mean_sites,
            near_zero_frac=near[1], l0_frac=summary.l0_per_position_frac_mean_sites,
            dead_units=summary.dead_units, sites=summary.sites,
            margin_median_factor=head["median_factor_outside"], layers_inside_theorem=head["layers_inside_theorem"],
            layers_measured=head["layers_measured"], mu_local_median=head["mu_local_median"],
            cka_to_baseline=cka, class_selectivity_top16=selectivity, analysis_samples=n)
    return out


def _class_selectivity(model, loader, samples: int, top: int = 16) -> float | None:
    """Mean class selectivity (Morcos et al. 2018) of the ``top`` most selective features of the last
    activation site, over the first ``samples`` samples of ``loader``."""
    from analysis.collect import batch_labels, call_model, split_batch, to_device
    from analysis.interpret.select import FeatureStats, select_features
    from analysis.sites import find_sites

    site = find_sites(model)[-1]
    device = next(model.parameters()).device
    stats = FeatureStats(model, site, k=4)
    seen = 0
    model.eval()
    with stats:
        for batch in loader:
            inputs, mask = split_batch(batch)
            labels = batch_labels(batch)
            if labels is None:
                return None  # no labels: class selectivity is undefined
            stats.position_mask = mask.to(device).bool() if mask is not None else None
            stats.labels = labels
            call_model(model, to_device(inputs, device))
            seen += len(labels)
            if seen >= samples:
                break
    r = stats.results()
    if r["class_selectivity"] is None:
        return None
    chosen = select_features(r, min(top, len(r["selectivity"])), examples=1)
    return float(r["class_selectivity"][chosen].mean())


def write_cards(entry: Entry, folder: Path, names: list[str], cards_dir: Path, org: str) -> None:
    """One model card per variant (``cards_dir/ENTRY-VARIANT.md``), each with the baseline's numbers beside it."""
    from sparsezoo.cards import read_run, render_card
    from sparsezoo.io import atomic_write_text

    base = read_run(folder / entry.baseline, check_weights=False)
    for v in names:
        run = read_run(folder / v)
        card = render_card(run, entry.repo_id(v, org), baseline=base if v != entry.baseline else None)
        atomic_write_text(cards_dir / f"{entry.name}-{v}.md", str(card))


def plot_entry(results: dict, path: Path) -> None:
    """Top-1 against zero_frac for the entry's variants (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsezoo.io import atomic_write

    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for v, r in results["variants"].items():
        ax.scatter(r["zero_frac"], r["top1"], s=40)
        ax.annotate(v, (r["zero_frac"], r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("zero_frac (mean over sites, validation split)")
    ax.set_ylabel("top-1 (validation split)")
    ax.set_title(results["entry"], fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ list / publish


@dataclass
class Listing:
    entry: str
    title: str
    variants: list[str]
    results: dict = field(default_factory=dict)  # variant -> VariantResult dict, where built


def list_entries(root: str | Path = "zoo", cards_dir: str | Path = "model_cards") -> list[Listing]:
    """Every registry entry with the numbers recorded so far (a local build beats the recorded results)."""
    reg = registry()
    recorded = (_read_json(Path(cards_dir) / ZOO_RESULTS) or {}).get("entries", {})
    out = []
    for name, e in reg.entries.items():
        local = _read_results(Path(root) / name).get("variants") or recorded.get(name, {}).get("variants") or {}
        out.append(Listing(name, e.title, e.variant_names(), local))
    return out


def results_table(listings: list[Listing]) -> str:
    """The zoo table (markdown), one row per built variant."""
    def pct(x):
        return "—" if x is None else f"{100 * x:.1f}"

    def num(x, f="{:.2f}"):
        return "—" if x is None else f.format(x)

    rows = ["| entry | variant | top-1 % | recovery % (class) | zero_frac % | near_zero_frac % | l0 / C % | dead units "
            "| margin factor (median) | μ local (median) | CKA to dense | class selectivity (top 16) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for item in listings:
        for v in item.variants:
            r = item.results.get(v)
            if r is None:
                continue
            rows.append(f"| {item.entry} | {v} | {pct(r['top1'])} | {pct(r['recovery'])} ({r['recovery_class']}) | "
                        f"{pct(r['zero_frac'])} | {pct(r['near_zero_frac'])} | {pct(r['l0_frac'])} | {r['dead_units']} | "
                        f"{num(r['margin_median_factor'], '{:.0f}')} | {num(r['mu_local_median'])} | "
                        f"{num(r['cka_to_baseline'])} | {num(r['class_selectivity_top16'])} |")
    return "\n".join(rows)


def lambda_table(listings: list[Listing]) -> str:
    """The λ scale table (markdown): every built variant whose only change from the baseline is the l1 λ, with its
    rise in ``zero_frac`` over the baseline in points (README, "The λ scale")."""
    rows = ["| entry | λ (l1) | top-1 % | recovery % | class | zero_frac % | Δ zero_frac (points) |",
            "|---|---|---|---|---|---|---|"]
    for item in listings:
        base = item.results.get(item.variants[0])
        for v in item.variants:
            r = item.results.get(v)
            if r is None or base is None or r["activation"] != base["activation"] or set(r["penalties"]) - {"l1"}:
                continue
            lam = _short_float(r["penalties"].get("l1", 0))
            rise = "—" if r is base else f"{100 * (r['zero_frac'] - base['zero_frac']):+.1f}"
            rows.append(f"| {item.entry} | {lam} | {100 * r['top1']:.1f} | {100 * r['recovery']:.1f} | "
                        f"{r['recovery_class']} | {100 * r['zero_frac']:.1f} | {rise} |")
    return "\n".join(rows)


def _short_float(x: float) -> str:
    """1e-4, 3e-5, 0 (as the variants are named)."""
    if x == 0:
        return "0"
    mantissa, exponent = f"{x:e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def publish(name: str, org: str, root: str | Path = "zoo", *, variants: list[str] | None = None,
            force: bool = False, dry_run: bool = False) -> list:
    """Push every variant of a built entry as ``ORG/ENTRY-VARIANT`` with its card (baseline beside it).

    Raises:
        ZooError: unknown entry, or the entry (or a variant) is not built in ``root``.
    """
    from sparsezoo import hub

    entry = registry().entry(name)
    folder = Path(root) / name
    names = entry.variant_names() if not variants else [entry.baseline] + [v for v in variants if v != entry.baseline]
    for v in names:
        entry.recipe_for(v)
    built = _read_results(folder).get("variants", {})
    missing = [v for v in names if v not in built or not (folder / v / "metrics.json").is_file()]
    if missing:
        raise ZooError(f"zoo entry {name} is not built in {folder} (missing: {', '.join(missing)}); run: sparsezoo zoo "
                       f"build {name} --root {root}")
    done = []
    base = folder / entry.baseline
    for v in names:
        repo = entry.repo_id(v, org)
        baseline = base if v != entry.baseline else None
        if dry_run:
            done.append(hub.plan_push(folder / v, repo, baseline=baseline))
        else:
            done.append(hub.push(folder / v, repo, baseline=baseline, force=force))
    return done
