"""``sparsezoo zoo build``: plan a build and check it before any training (:func:`plan_build`), fine-tune the
variants (resumable), measure them, and write the results, cards and plot (:func:`build`)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sparsezoo.data.named import NAMED
from sparsezoo.recipe import Recipe
from sparsezoo.zoo.entries import Entry, ZooError, registry
from sparsezoo.zoo.measuring import measure
from sparsezoo.zoo.results import (
    MARKER,
    RECORDED_CARDS_DIR,
    RESULTS,
    ZOO_RESULTS,
    VariantResult,
    packaged_results_path,
    read_results,
    run_complete,
)


def _check_folder(folder: Path, entry: str) -> None:
    marker = folder / MARKER
    if marker.is_file():
        other = json.loads(marker.read_text()).get("entry")
        if other != entry:
            raise ZooError(f"{folder} holds a build of zoo entry {other!r}, not {entry!r}; use another --root")
    elif folder.exists() and any(folder.iterdir()):
        raise ZooError(f"{folder} exists and is not a zoo build folder; use another --root")


def _run_variant(recipe: Recipe, run_dir: Path, progress: bool) -> float | None:
    """Fine-tune one variant unless it is finished; resume it if interrupted. Returns the wall time (None: kept).
    A distillation teacher or recovery reference named ``ENTRY:VARIANT`` is the build's own variant
    (``ROOT/ENTRY/VARIANT``, built first when it is the baseline), else the cache or the Hub."""
    from sparsezoo.train.checkpoint import latest_checkpoint
    from sparsezoo.train.loop import finetune
    from sparsezoo.zoo.loading import load

    if run_complete(run_dir) and json.loads((run_dir / "metrics.json").read_text()).get("recipe_hash") == recipe.hash():
        return None
    resume = run_dir.is_dir() and latest_checkpoint(run_dir) is not None
    root = run_dir.parent.parent
    teacher = load(recipe.distill.teacher, root=root) if recipe.distill else None
    reference = load(recipe.recovery.reference, root=root) if recipe.recovery and recipe.recovery.reference else None
    t = time.perf_counter()
    finetune(recipe, run_dir, resume=resume, force=run_dir.exists() and not resume, progress=progress, teacher=teacher,
             reference=reference)
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


@dataclass(frozen=True)
class BuildOptions:
    """What to build of an entry and where its cards go: ``variants`` (None: all; the baseline is always built),
    ``overrides`` (recipe keys; a reduced build, e.g. ``{"data": {"max_train_samples": 64}}``), the analysis
    ``samples``, the ``cards_dir`` (None: no cards) and the Hub ``org`` of the cards' repo ids (None: the
    registry's)."""

    variants: list[str] | None = None
    overrides: dict | None = None
    samples: int = 512
    cards_dir: str | Path | None = "model_cards"
    org: str | None = None


def plan_build(name: str, root: str | Path = "zoo", options: BuildOptions | None = None) -> BuildPlan:
    """Check a build before anything is written or trained: the entry and variants exist, their recipes are
    valid, the folders are ours, the named data sets are installed, and the results it would replace were made
    under the same recipes (:func:`check_cards_dir`).

    Raises:
        ZooError: unknown entry or variant, ``root/name`` holds something else, or recorded results are at stake.
        ZooResultsError: the recorded results cannot be read.
    """
    from sparsezoo.io import check_output_folder

    o = options or BuildOptions()
    reg = registry()
    entry = reg.entry(name)
    names = (entry.variant_names() if not o.variants
             else [entry.baseline] + [v for v in o.variants if v != entry.baseline])
    plan = BuildPlan(entry, names, {v: entry.recipe_for(v, o.overrides) for v in names}, Path(root) / name,
                     o.overrides or {}, o.samples, Path(o.cards_dir) if o.cards_dir is not None else None,
                     o.org or reg.org)
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


def build(name: str, root: str | Path = "zoo", options: BuildOptions | None = None, *, progress: bool = False,
          on_step: Callable[[str], None] | None = None) -> dict:
    """Build zoo entry ``name``: its baseline and variants into ``root/name/VARIANT``, their measurements into
    ``root/name/results.json``, and (with ``options.cards_dir``) one card per variant plus the entry's plot there
    and its results merged into ``cards_dir/zoo-results.json``. Resumable; ``options.overrides`` (recipe keys) make
    a reduced build (e.g. ``{"data": {"max_train_samples": 64}}``), recorded in the results. Every check of
    :func:`plan_build` runs before any training.

    Raises:
        ZooError: unknown entry or variant, ``root/name`` holds something else, or recorded results are at stake.
        ZooResultsError: recorded results cannot be read.
    """
    plan = plan_build(name, root, options)
    walls = _train_variants(plan, progress, on_step)
    if on_step:
        on_step(f"{name}: measuring {len(plan.names)} variants")
    out = _entry_results(plan, measure(plan.entry, plan.folder, plan.names, plan.samples), walls)
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
        atomic_write_json(packaged_results_path(), merged)


def _plain_l1(name: str, result: dict) -> bool:
    """A dense baseline or a variant whose only change is a constant l1 λ (the comparison line of the plot)."""
    return set(result.get("penalties") or {}) <= {"l1"} and re.fullmatch(r"(\w+-)?(dense|l1-[\d.e-]+)", name) is not None


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
    """Top-1 against zero_frac for the entry's variants (PNG), on the split the results report (test under the
    protocol): the dense baseline and plain l1 variants as one line, every other recipe (distillation, thresholds,
    staged λ, a recovery target) as its own points, so the frontier each recipe reaches is visible."""
    from matplotlib.figure import Figure  # no pyplot: the caller's backend and figures are left alone

    from sparsezoo.io import atomic_write

    fig = Figure(figsize=(5.6, 3.8))
    ax = fig.subplots()
    variants = results["variants"]
    plain = sorted((r for v, r in variants.items() if _plain_l1(v, r)), key=lambda r: r["zero_frac"])
    ax.plot([r["zero_frac"] for r in plain], [r["top1"] for r in plain], "o-", color="0.5", label="dense and plain l1")
    others = [r for v, r in variants.items() if not _plain_l1(v, r)]
    if others:
        ax.scatter([r["zero_frac"] for r in others], [r["top1"] for r in others], s=46, color="C3", marker="D",
                   label="new recipes", zorder=3)
    for v, r in variants.items():
        ax.annotate(v, (r["zero_frac"], r["top1"]), textcoords="offset points", xytext=(5, 4), fontsize=7)
    split = next((r.get("eval_split") for r in variants.values() if r.get("eval_split")), None) or "validation"
    ax.set_xlabel(f"zero_frac (mean over sites, {split} split)")
    ax.set_ylabel(f"top-1 ({split} split)")
    ax.set_title(results["entry"], fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110))
