"""The zoo's recorded numbers: one :class:`VariantResult` per variant, the results files (``ENTRY/results.json``
of a build, ``zoo-results.json`` of the whole zoo, shipped with the package) read strictly, and the tables
``sparsezoo zoo list`` prints from them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from sparsezoo.hub.cards import ZOO_MARKER
from sparsezoo.zoo.entries import ZooError, registry

RESULTS = "results.json"
MARKER = ZOO_MARKER
ZOO_RESULTS = "zoo-results.json"  # the whole zoo's results, beside the cards (model_cards/)
# The recorded zoo lives in the source tree's model_cards/; the package ships a copy of its results (package data,
# kept equal by the build and by a test), so `sparsezoo zoo list` shows the numbers wherever sparsezoo is installed.
RECORDED_CARDS_DIR = Path(__file__).resolve().parents[2] / "model_cards"


def packaged_results_path() -> Path:
    return Path(__file__).resolve().parent / ZOO_RESULTS

def run_complete(run_dir: Path) -> bool:
    """A finished run folder (``metrics.json`` says ``complete: true``)."""
    try:
        return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8")).get("complete") is True
    except (OSError, ValueError, AttributeError):
        return False



@dataclass
class VariantResult:
    """The zoo's numbers for one variant (see module docstring); JSON via :func:`dataclasses.asdict`, read back with
    :meth:`from_json`.

    ``top1``, ``recovery`` and the sparsity are measured on ``eval_split`` (the test split under the split protocol),
    ``val_top1`` / ``val_recovery`` on ``selection_split`` (validation, where everything was selected), the analysis
    numbers on ``analysis_samples`` samples of ``analysis_split`` (:mod:`sparsezoo.zoo.measuring`).
    ``decision_features`` is the median count of :data:`analysis.definitions.METRICS` ``decision_features``;
    ``speedup`` (dense time / variant time) is filled in by a benchmark. The fields after ``analysis_samples`` are
    None in results recorded before they existed.
    """

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
    decision_features: float | None = None
    eval_split: str | None = None
    selection_split: str | None = None
    val_top1: float | None = None
    val_recovery: float | None = None
    analysis_split: str | None = None
    speedup: float | None = None

    @classmethod
    def from_json(cls, data: Any, where: str = "results") -> VariantResult:
        """A variant's recorded numbers (a mapping as :func:`dataclasses.asdict` wrote it); fields added since it was
        recorded read as their defaults (None), keys this version does not know are left out.

        Raises:
            ZooResultsError: ``data`` is not a mapping, or lacks a field every recorded result has (``where`` names
                the file and variant in the message).
        """
        if not isinstance(data, Mapping):
            raise ZooResultsError(f"{where}: a variant's results are not a JSON object")
        known = fields(cls)
        missing = [f.name for f in known if f.name not in data and f.default is MISSING]
        if missing:
            raise ZooResultsError(f"{where}: recorded results lack {', '.join(missing)}")
        return cls(**{f.name: data[f.name] for f in known if f.name in data})

    def to_json(self) -> dict[str, Any]:
        """Every field under its name (:func:`dataclasses.asdict`)."""
        return asdict(self)


def recovery_class(recovery: float) -> str:
    """SparseZoo's classes: conservative (no loss: ≥ 100 %), moderate (≥ 99 %), aggressive (< 99 %)."""
    return "conservative" if recovery >= 1.0 else "moderate" if recovery >= 0.99 else "aggressive"


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
    recorded_path = Path(cards_dir) / ZOO_RESULTS if cards_dir is not None else packaged_results_path()
    recorded = read_results(recorded_path).get("entries", {})
    out = []
    for name, e in reg.entries.items():
        build = Path(root) / name / RESULTS
        local = read_results(build).get("variants")
        where = build if local else recorded_path
        variants = local or recorded.get(name, {}).get("variants") or {}
        if not isinstance(variants, Mapping):
            raise ZooResultsError(f"{where}: the variants of {name} are not a JSON object")
        results = {v: VariantResult.from_json(r, f"{where} ({name}:{v})").to_json() for v, r in variants.items()}
        out.append(Listing(name, e.title, e.variant_names(), results))
    return out


def results_table(listings: list[Listing]) -> str:
    """The zoo table (markdown), one row per built variant; a number not recorded (results from before it was
    measured, a speedup no benchmark has filled in) shows as —."""
    rows = ["| entry | variant | top-1 % | recovery % (class) | zero_frac % | decision features (median) "
            "| near_zero_frac % | l0 / C % | dead units | margin factor (median) | μ local (median) | CKA to dense "
            "| class selectivity (top 16) | speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for item in listings:
        for v in item.variants:
            r = item.results.get(v)
            if r is not None:
                rows.append(_table_row(item.entry, v, r))
    return "\n".join(rows)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _num(x: float | None, f: str = "{:.2f}") -> str:
    return "—" if x is None else f.format(x)


def _table_row(entry: str, variant: str, r: dict) -> str:
    """One row of :func:`results_table` from a variant's recorded numbers (missing newer fields: —)."""
    cells = [entry, variant, _pct(r["top1"]), f"{_pct(r['recovery'])} ({r['recovery_class']})", _pct(r["zero_frac"]),
             _num(r.get("decision_features"), "{:g}"), _pct(r["near_zero_frac"]), _pct(r["l0_frac"]),
             str(r["dead_units"]), _num(r["margin_median_factor"], "{:.0f}"), _num(r["mu_local_median"]),
             _num(r["cka_to_baseline"]), _num(r["class_selectivity_top16"]), _num(r.get("speedup"), "{:.2f}×")]
    return "| " + " | ".join(cells) + " |"


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


SEED_SUFFIX = re.compile(r"^(?P<base>.+)-seed(?P<seed>\d+)$")  # VARIANT-seedN: VARIANT trained with train.seed N


def seed_groups(variants: list[str]) -> dict[str, list[str]]:
    """Variants run with several seeds: ``{VARIANT: [VARIANT, VARIANT-seed1, …]}`` for each VARIANT that has at least
    one ``VARIANT-seedN`` beside it (the registry's way of stating noise: issue 23 item 10)."""
    groups: dict[str, list[str]] = {}
    for v in variants:
        m = SEED_SUFFIX.match(v)
        if m and m["base"] in variants:
            groups.setdefault(m["base"], [m["base"]]).append(v)
    return groups


def seed_summary(results: dict[str, dict], group: list[str], baseline: list[str]) -> dict[str, float]:
    """Mean and range over a seed group's recorded runs: top-1, zero_frac and the recovery of the group's mean
    top-1 against the baseline group's mean top-1 ("≥ 99 %" is called on these means)."""
    import statistics

    def stats(key: str, names: list[str]) -> tuple[float, float, float]:
        xs = [results[v][key] for v in names if v in results]
        return statistics.fmean(xs), min(xs), max(xs)

    top1, base = stats("top1", group), stats("top1", baseline)
    zero = stats("zero_frac", group)
    return {"seeds": sum(v in results for v in group), "top1_mean": top1[0], "top1_min": top1[1],
            "top1_max": top1[2], "zero_frac_mean": zero[0], "zero_frac_min": zero[1], "zero_frac_max": zero[2],
            "recovery_of_means": top1[0] / base[0] if base[0] else float("nan")}


def seeds_table(listings: list[Listing]) -> str:
    """The seeds table (markdown): per variant run with several seeds, the mean and range of its numbers; empty
    when no entry has seed runs."""
    rows = ["| entry | variant | seeds | top-1 % mean (range) | zero_frac % mean (range) | recovery of means % |",
            "|---|---|---|---|---|---|"]
    for item in listings:
        groups = seed_groups(list(item.variants))
        baseline = groups.get(item.variants[0], [item.variants[0]])
        for v, group in groups.items():
            if not all(g in item.results for g in group):
                continue
            s = seed_summary(item.results, group, baseline)
            rows.append(f"| {item.entry} | {v} | {s['seeds']} | {_pct(s['top1_mean'])} ({_pct(s['top1_min'])}–"
                        f"{_pct(s['top1_max'])}) | {_pct(s['zero_frac_mean'])} ({_pct(s['zero_frac_min'])}–"
                        f"{_pct(s['zero_frac_max'])}) | {_pct(s['recovery_of_means'])} |")
    return "\n".join(rows) if len(rows) > 2 else ""
