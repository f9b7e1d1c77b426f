"""The model zoo: sparse checkpoints of real models on real data, each next to its dense baseline, by short name.

The zoo is data (``sparsezoo/zoo/zoo.yaml``, SAELens/timm style): every *entry* names a base model with real weights
that install offline, a real data set (:mod:`sparsezoo.data.named`), the recipe its runs share, a dense
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
from typing import TYPE_CHECKING

from sparsezoo.data.named import NAMED
from sparsezoo.errors import SparsezooError
from sparsezoo.hub.cards import ZOO_MARKER
from sparsezoo.recipe import Recipe

if TYPE_CHECKING:
    from sparsezoo.hub.licenses import Combined
    from sparsezoo.hub.loading import ZooModel

RESULTS = "results.json"
MARKER = ZOO_MARKER
ZOO_RESULTS = "zoo-results.json"  # the whole zoo's results, beside the cards (model_cards/)
# The recorded zoo lives in the source tree's model_cards/; the package ships a copy of its results (package data,
# kept equal by the build and by a test), so `sparsezoo zoo list` shows the numbers wherever sparsezoo is installed.
RECORDED_CARDS_DIR = Path(__file__).resolve().parents[2] / "model_cards"


def _packaged_results_path() -> Path:
    return Path(__file__).resolve().parent / ZOO_RESULTS
SHORT_NAME = re.compile(r"^(?:(?P<org>[\w.-]+)/)?(?P<entry>[a-z0-9][a-z0-9.-]*):(?P<variant>[a-z0-9][a-z0-9.-]*)$")


class ZooError(SparsezooError):
    """Unknown entry or variant, a build folder of another entry, an entry that is not built."""


@dataclass(frozen=True)
class Entry:
    name: str
    title: str
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

    def provenance(self, variant: str) -> tuple[str | None, Combined]:
        """(``base_model``, license) that a card of ``variant`` carries, from the recipe alone (no build needed):
        the Hub repo holding the exact starting weights, if one is known, and the most restrictive of the
        weights' and the data's licenses (:func:`sparsezoo.hub.cards.model_license`)."""
        from sparsezoo.hub.cards import Library, Run, base_model, model_license
        from sparsezoo.models.offline_weights import packaged_model

        recipe = self.recipe_for(variant)
        library: Library = "transformers" if packaged_model(recipe.model.name) else "timm"
        run = Run(Path(self.name) / variant, library, {"architecture": recipe.model.name}, recipe, {})
        return base_model(run), model_license(run)


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
    """The zoo registry shipped with the package (``sparsezoo/zoo/zoo.yaml``)."""
    import yaml

    raw = yaml.safe_load((resources.files("sparsezoo.zoo") / "zoo.yaml").read_text(encoding="utf-8"))
    entries = {}
    for name, e in raw["entries"].items():
        entries[name] = Entry(name, e["title"], e["baseline"], e["recipe"], e["variants"])
    return Registry(raw["org"], entries)


def variant_of(path: str | Path) -> tuple[Entry, str] | None:
    """The zoo entry and variant of a run folder inside a zoo build (``ROOT/ENTRY/VARIANT``), else None."""
    from sparsezoo.hub.cards import zoo_short_name

    short = zoo_short_name(Path(path))
    if short is None:
        return None
    entry_name, _, variant = short.partition(":")
    entry = registry().entries.get(entry_name)
    return (entry, variant) if entry is not None and variant in entry.variants else None


def load(name: str, *, revision: str | None = None, token: str | None = None, root: str | Path = "zoo") -> ZooModel:
    """Load a zoo checkpoint (:class:`sparsezoo.hub.loading.ZooModel`) by its short name ``[ORG/]ENTRY:VARIANT``, or any
    checkpoint by Hub id (``org/name``, ``hf-hub:org/name``, ``org/name@rev``) or run folder.

    A short name is looked up in a local build first (``root/ENTRY/VARIANT``, default ``zoo/``: what
    ``sparsezoo zoo build ENTRY`` writes, used when its run is complete), then in the Hugging Face cache, then on
    the Hub (``ORG/ENTRY-VARIANT``, default org of the registry), and the error names every place it looked.

    Example:
        >>> sparsezoo.load("effnet-lite0-mnist:dense").model      # after `sparsezoo zoo build effnet-lite0-mnist`
        >>> sparsezoo.load("myorg/minilm-l1").processor

    Raises:
        ZooError: an unknown entry or variant.
        HubError subclasses (:func:`sparsezoo.hub.loading.load`): not found in any of the places, or not loadable.
    """
    from sparsezoo import hub

    reg = registry()
    repo = reg.resolve(name)
    if repo is None:
        return hub.load(name, revision=revision, token=token)
    m = SHORT_NAME.match(name)
    assert m is not None
    local = Path(root) / m["entry"] / m["variant"]
    if _complete(local):
        return hub.load(str(local))
    try:
        return hub.load(repo, revision=revision, token=token)
    except hub.HubError as e:
        raise type(e)(f"{m['entry']}:{m['variant']} is not built locally ({local} has no complete run; "
                      f"`sparsezoo zoo build {m['entry']} --root {root}` builds it), and {repo}: {e}") from e


def _complete(run_dir: Path) -> bool:
    """A finished run folder (``metrics.json`` says ``complete: true``)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False


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
    from sparsezoo.train.checkpoint import latest_checkpoint
    from sparsezoo.train.loop import finetune

    if _complete(run_dir) and json.loads((run_dir / "metrics.json").read_text()).get("recipe_hash") == recipe.hash():
        return None
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    t = time.perf_counter()
    finetune(recipe, run_dir, resume=resume, force=run_dir.exists() and not resume, progress=progress)
    return time.perf_counter() - t


@dataclass(frozen=True)
class BuildPlan:
    """What one ``zoo build`` does, fixed and checked before any work: the variants (baseline first), their
    recipes, where runs, cards and results go, and whether it may write the recorded results."""

    entry: Entry
    names: list[str]
    recipes: dict[str, Recipe]
    folder: Path
    overrides: dict
    samples: int
    cards_dir: Path | None
    org: str

    @property
    def reduced(self) -> bool:
        """The recipes differ from the registry's (``--set``): a smaller build, never the recorded one."""
        return bool(self.overrides)


def plan_build(name: str, root: str | Path = "zoo", *, variants: list[str] | None = None,
               overrides: dict | None = None, samples: int = 512, cards_dir: str | Path | None = "model_cards",
               org: str | None = None) -> BuildPlan:
    """Check a build before anything is written or trained: the entry and variants exist, their recipes are
    valid, the folders are ours, the named data sets are installed, and the results it would replace were made
    under the same recipes (:func:`check_cards_dir`).

    Raises:
        ZooError: unknown entry or variant, ``root/name`` holds something else, or recorded results are at stake.
        ZooResultsError: the recorded results cannot be read.
    """
    from sparsezoo.io import check_output_folder

    reg = registry()
    entry = reg.entry(name)
    names = entry.variant_names() if not variants else [entry.baseline] + [v for v in variants if v != entry.baseline]
    plan = BuildPlan(entry, names, {v: entry.recipe_for(v, overrides) for v in names}, Path(root) / name,
                     overrides or {}, samples, Path(cards_dir) if cards_dir is not None else None, org or reg.org)
    _check_folder(plan.folder, name)
    check_output_folder(plan.folder, force=True)
    read_results(plan.folder / RESULTS)  # unreadable: stop before training, file untouched
    if plan.cards_dir is not None:
        check_output_folder(plan.cards_dir, force=True)
        check_cards_dir(plan)
    for source in {r.data.source for r in plan.recipes.values()}:
        if source in NAMED:
            NAMED[source].require()  # a missing data package: one line naming the pip command, nothing written
    return plan


def check_cards_dir(plan: BuildPlan) -> None:
    """A build replaces the cards and results recorded in ``plan.cards_dir`` for its entry only when it was made
    under the same recipes: a reduced build (``--set``) never overwrites results recorded under the registry's
    recipes, and a build of some variants never drops the others' numbers measured under other settings.

    Raises:
        ZooError: one line naming ``--cards-dir``.
        ZooResultsError: ``zoo-results.json`` there cannot be read.
    """
    assert plan.cards_dir is not None
    recorded = read_results(plan.cards_dir / ZOO_RESULTS).get("entries", {}).get(plan.entry.name)
    cards = sorted(plan.cards_dir.glob(f"{plan.entry.name}-*.md"))
    partial = set(plan.names) != set(plan.entry.variant_names())
    if recorded is None:
        if cards and (plan.reduced or partial):
            raise ZooError(f"{plan.cards_dir} holds cards of {plan.entry.name} with no recorded results beside them; "
                           "write this build's cards elsewhere with --cards-dir DIR")
        return
    same = recorded.get("overrides", {}) == plan.overrides and recorded.get("analysis_samples") == plan.samples
    if same or not (plan.reduced or partial):
        return
    what = (f"a build with --set {_flat(plan.overrides)}" if plan.reduced
            else f"a build of {', '.join(plan.names)} with --samples {plan.samples}")
    raise ZooError(f"{plan.cards_dir} records {plan.entry.name} built under other settings (overrides "
                   f"{_flat(recorded.get('overrides', {})) or 'none'}, {recorded.get('analysis_samples')} analysis "
                   f"samples); {what} would overwrite them: write it elsewhere with --cards-dir DIR")


def _flat(d: dict, prefix: str = "") -> str:
    """``{"train": {"epochs": 1}}`` as ``train.epochs=1`` (comma-separated)."""
    return ", ".join(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else f"{prefix}{k}={v}" for k, v in d.items())


def build(name: str, root: str | Path = "zoo", *, variants: list[str] | None = None, overrides: dict | None = None,
          samples: int = 512, cards_dir: str | Path | None = "model_cards", org: str | None = None,
          progress: bool = False, on_step: Callable[[str], None] | None = None) -> dict:
    """Build zoo entry ``name``: its baseline and variants into ``root/name/VARIANT``, their measurements into
    ``root/name/results.json``, and (with ``cards_dir``) one card per variant plus the entry's plot there and its
    results merged into ``cards_dir/zoo-results.json``. Resumable; ``overrides`` (recipe keys) make a reduced
    build (e.g. ``{"data": {"max_train_samples": 64}}``), recorded in the results. Every check of
    :func:`plan_build` runs before any training.

    Raises:
        ZooError: unknown entry or variant, ``root/name`` holds something else, or recorded results are at stake.
        ZooResultsError: recorded results cannot be read.
    """
    plan = plan_build(name, root, variants=variants, overrides=overrides, samples=samples, cards_dir=cards_dir,
                      org=org)
    walls = _train_variants(plan, progress, on_step)
    if on_step:
        on_step(f"{name}: measuring {len(plan.names)} variants")
    out = _entry_results(plan, measure(plan.entry, plan.folder, plan.names, samples), walls)
    from sparsezoo.io import atomic_write_json

    atomic_write_json(plan.folder / RESULTS, out)
    if plan.cards_dir is not None:
        _write_recorded(plan, out)
    return out


def _train_variants(plan: BuildPlan, progress: bool, on_step: Callable[[str], None] | None) -> dict[str, float | None]:
    """Fine-tune every variant of the plan (kept if finished, resumed if interrupted); wall seconds per variant
    (None: kept). A build that trained nothing into a new folder leaves nothing behind."""
    from sparsezoo.io import atomic_write_json

    created = not plan.folder.exists()
    plan.folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(plan.folder / MARKER, {"entry": plan.entry.name})
    walls = {}
    try:
        for v in plan.names:
            if on_step:
                on_step(f"{plan.entry.name}:{v}: fine-tuning")
            walls[v] = _run_variant(plan.recipes[v], plan.folder / v, progress)
    except BaseException:
        if created and not any(p.is_dir() for p in plan.folder.iterdir()):
            shutil.rmtree(plan.folder, ignore_errors=True)
        raise
    return walls


def _entry_results(plan: BuildPlan, results: dict[str, VariantResult], walls: dict[str, float | None]) -> dict:
    """The entry's ``results.json``: this build's numbers, and those of variants it did not build when they were
    measured under the same overrides and samples."""
    from sparsezoo.hub.cards import base_model, read_run

    earlier = read_results(plan.folder / RESULTS)
    previous = earlier.get("variants", {})
    for v, r in results.items():
        r.wall_seconds = walls[v] if walls[v] is not None else (previous.get(v) or {}).get("wall_seconds")
    measured = {v: dataclasses.asdict(r) for v, r in results.items()}
    if earlier.get("overrides", {}) == plan.overrides and earlier.get("analysis_samples") == plan.samples:
        measured = {v: measured.get(v) or previous[v] for v in plan.entry.variant_names() if v in measured or v in previous}
    base = base_model(read_run(plan.folder / plan.entry.baseline, check_weights=False))
    return {"entry": plan.entry.name, "title": plan.entry.title, "base_model": base, "overrides": plan.overrides,
            "analysis_samples": plan.samples, "variants": measured}


def _write_recorded(plan: BuildPlan, out: dict) -> None:
    """Cards, plot and the merged ``zoo-results.json`` in the cards folder (and the package's copy of the
    recorded results when that folder is the source tree's ``model_cards``)."""
    from sparsezoo.io import atomic_write_json

    assert plan.cards_dir is not None
    write_cards(plan.entry, plan.folder, plan.names, plan.cards_dir, plan.org)
    plot_entry(out, plan.cards_dir / f"{plan.entry.name}.png")
    merged = read_results(plan.cards_dir / ZOO_RESULTS) or {"zoo": 1, "entries": {}}
    merged["entries"][plan.entry.name] = out
    atomic_write_json(plan.cards_dir / ZOO_RESULTS, merged)
    if plan.cards_dir.resolve() == RECORDED_CARDS_DIR.resolve():
        atomic_write_json(_packaged_results_path(), merged)


class ZooResultsError(ZooError):
    """Recorded zoo results (``zoo-results.json``, ``results.json``) exist but cannot be read."""


def read_results(path: Path) -> dict:
    """A zoo results file (``{}`` when there is none).

    Raises:
        ZooResultsError: the file exists but is not readable JSON of a mapping; it is left untouched.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ZooResultsError(f"cannot read the recorded zoo results {path} ({str(e).splitlines()[0]}); "
                              "restore it (git checkout) or move it away; it was left untouched") from e
    if not isinstance(data, dict):
        raise ZooResultsError(f"{path} is not a zoo results file (a JSON object); it was left untouched")
    return data


def measure(entry: Entry, folder: Path, names: list[str], samples: int) -> dict[str, VariantResult]:
    """The zoo's numbers of every built variant (the baseline first); see the module docstring."""
    import torch

    from analysis.layerwise import cka_between
    from analysis.pipeline import analyze, headline
    from analysis.sites import find_sites
    from analysis.sparsity import SparsitySummary
    from sparsezoo.data.inputs import load_model, sample_loader
    from sparsezoo.hub.cards import read_run

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
    from sparsezoo.hub.cards import read_run, render_card
    from sparsezoo.io import atomic_write_text

    base = read_run(folder / entry.baseline, check_weights=False)
    for v in names:
        run = read_run(folder / v)
        card = render_card(run, entry.repo_id(v, org), baseline=base if v != entry.baseline else None)
        atomic_write_text(cards_dir / f"{entry.name}-{v}.md", str(card))


def plot_entry(results: dict, path: Path) -> None:
    """Top-1 against zero_frac for the entry's variants (PNG)."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    from sparsezoo.io import atomic_write

    fig = Figure(figsize=(5.2, 3.6))
    ax = fig.subplots()
    for v, r in results["variants"].items():
        ax.scatter(r["zero_frac"], r["top1"], s=40)
        ax.annotate(v, (r["zero_frac"], r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("zero_frac (mean over sites, validation split)")
    ax.set_ylabel("top-1 (validation split)")
    ax.set_title(results["entry"], fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))


# ------------------------------------------------------------------------------------------------ list / publish


@dataclass
class Listing:
    entry: str
    title: str
    variants: list[str]
    results: dict = field(default_factory=dict)  # variant -> VariantResult dict, where built


def list_entries(root: str | Path = "zoo", cards_dir: str | Path | None = None) -> list[Listing]:
    """Every registry entry with the numbers recorded so far: a local build in ``root`` beats the results recorded
    in ``cards_dir`` (default: the recorded zoo shipped with the package).

    Raises:
        ZooResultsError: a results file exists but cannot be read.
    """
    reg = registry()
    recorded_path = Path(cards_dir) / ZOO_RESULTS if cards_dir is not None else _packaged_results_path()
    recorded = read_results(recorded_path).get("entries", {})
    out = []
    for name, e in reg.entries.items():
        local = read_results(Path(root) / name / RESULTS).get("variants") or recorded.get(name, {}).get("variants") or {}
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
        ZooError: unknown entry, the entry (or a variant) is not built in ``root``, or a variant was built under
            another recipe than the registry's (a reduced or older build; ``force`` publishes it all the same).
        HubError: ``org`` does not make valid Hub repo ids; the Hub's errors.
    """
    from sparsezoo import hub

    entry = registry().entry(name)
    folder = Path(root) / name
    names = entry.variant_names() if not variants else [entry.baseline] + [v for v in variants if v != entry.baseline]
    for v in names:
        entry.recipe_for(v)  # an unknown variant: one line
    repos = {v: hub.split_repo(entry.repo_id(v, org))[0] for v in names}  # a bad --org: one line, before anything
    built = read_results(folder / RESULTS).get("variants", {})
    missing = [v for v in names if v not in built or not (folder / v / "metrics.json").is_file()]
    if missing:
        raise ZooError(f"zoo entry {name} is not built in {folder} (missing: {', '.join(missing)}); run: sparsezoo zoo "
                       f"build {name} --root {root}")
    if not force:
        _check_registry_recipes(entry, folder, names)
    baseline = folder / entry.baseline
    done = []
    for v in names:
        base = baseline if v != entry.baseline else None
        if dry_run:
            done.append(hub.plan_push(folder / v, repos[v], baseline=base))
        else:
            done.append(hub.push(folder / v, repos[v], baseline=base, force=force))
    return done


def _check_registry_recipes(entry: Entry, folder: Path, names: list[str]) -> None:
    """Each built variant's ``recipe.yaml`` hashes to the registry's recipe of that variant.

    Raises:
        ZooError: one line naming the first variant that differs.
    """
    from sparsezoo.recipe import load_recipe

    for v in names:
        built = load_recipe(str(folder / v / "recipe.yaml")).hash()
        registered = entry.recipe_for(v).hash()
        if built != registered:
            raise ZooError(f"{entry.name}:{v} in {folder / v} was built under recipe {built}, the registry's is "
                           f"{registered} (a reduced or older build); rebuild it, or pass --force to publish it anyway")
