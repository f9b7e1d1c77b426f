"""The zoo's entries (``zoo.yaml``): each entry's shared recipe and variants, their recipes, short names
(``[ORG/]ENTRY:VARIANT``) and Hub repos, and which variant a run folder of a build is."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sparsezoo.errors import SparsezooError
from sparsezoo.recipe import Recipe

if TYPE_CHECKING:
    from sparsezoo.hub.licenses import Combined

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
