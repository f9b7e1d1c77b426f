"""``sparsezoo zoo publish``: push every variant of a built entry with its card, refusing variants built under
another recipe than the registry's."""

from __future__ import annotations

from pathlib import Path

from sparsezoo.zoo.entries import Entry, ZooError, registry
from sparsezoo.zoo.results import RESULTS, read_results


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
