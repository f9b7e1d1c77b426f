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

Per variant (:func:`measure`): top-1 on the test split (runs that record one; the validation split for results
recorded before the protocol, as ``eval_split`` says), with the validation top-1 everything was chosen on beside
it, and its *recovery* (variant / baseline top-1, with SparseZoo's classes: ``conservative`` ≥ 100 %, ``moderate``
≥ 99 %, ``aggressive`` < 99 %); the sparsity of the whole evaluated split from ``metrics.json`` (``zero_frac``,
``near_zero_frac(abs, τ = 0.01)``, ``l0_per_position`` as a fraction of the channels, dead units; site means);
``decision_features`` (:mod:`analysis.interpret.decision`); a ``speedup`` once a benchmark has measured one; and
on the first ``samples`` samples of that split: the theory margin (median factor by which a layer's output code is
outside the uniqueness regime, :mod:`analysis.margins`), the median local coherence μ over layers, the linear CKA to the baseline
(mean over sites, :func:`analysis.layerwise.cka_between`), and the class selectivity of the 16 most selective
features of the last activation site (:mod:`analysis.interpret.select`).
"""

from typing import TYPE_CHECKING

from analysis._lazy import lazy_exports

if TYPE_CHECKING:
    from sparsezoo.zoo.building import (
        BuildOptions,
        BuildPlan,
        build,
        check_cards_dir,
        plan_build,
        plot_entry,
        write_cards,
    )
    from sparsezoo.zoo.entries import SHORT_NAME, Entry, Registry, ZooError, registry, variant_of
    from sparsezoo.zoo.loading import load
    from sparsezoo.zoo.measuring import measure
    from sparsezoo.zoo.publishing import publish
    from sparsezoo.zoo.results import (
        MARKER,
        RESULTS,
        ZOO_RESULTS,
        Listing,
        VariantResult,
        ZooResultsError,
        lambda_table,
        list_entries,
        read_results,
        recovery_class,
        results_table,
        seeds_table,
    )

_MODULES = {
    "sparsezoo.zoo.building": ("BuildOptions", "BuildPlan", "build", "check_cards_dir", "plan_build", "plot_entry",
                               "write_cards"),
    "sparsezoo.zoo.entries": ("SHORT_NAME", "Entry", "Registry", "ZooError", "registry", "variant_of"),
    "sparsezoo.zoo.loading": ("load",),
    "sparsezoo.zoo.measuring": ("measure",),
    "sparsezoo.zoo.publishing": ("publish",),
    "sparsezoo.zoo.results": ("MARKER", "RESULTS", "ZOO_RESULTS", "Listing", "VariantResult", "ZooResultsError",
                              "lambda_table", "list_entries", "read_results", "recovery_class", "results_table",
                              "seeds_table"),
}
__all__ = ["MARKER", "RESULTS", "SHORT_NAME", "ZOO_RESULTS", "BuildOptions", "BuildPlan", "Entry", "Listing",
           "Registry", "VariantResult", "ZooError", "ZooResultsError", "build", "check_cards_dir", "lambda_table",
           "list_entries", "load", "measure", "plan_build", "plot_entry", "publish", "read_results", "recovery_class",
           "seeds_table",
           "registry", "results_table", "variant_of", "write_cards"]
__getattr__, __dir__ = lazy_exports(__name__, {name: module for module, names in _MODULES.items() for name in names})
