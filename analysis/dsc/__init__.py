"""Deep sparse coding, reproduced on synthetic data (the ``sparsezoo dsc`` lab).

Signals ``x = D₁…D_J Γ_J + e`` with known non-negative sparse codes and low-coherence dictionaries; code
estimators from the one-layer CNN forward pass to unrolled ISTA, learned unrolled networks, plain MLPs and a
self-attention variant; error vs depth against the theory's rate ``(2s − 1)μ``.

Modules, one job each: :mod:`~analysis.dsc.dictionaries` (frames and their coherence),
:mod:`~analysis.dsc.generator` (the signal model), :mod:`~analysis.dsc.activations`,
:mod:`~analysis.dsc.pursuit` and :mod:`~analysis.dsc.learned` (estimators, registered in
:mod:`~analysis.dsc.estimators`), :mod:`~analysis.dsc.metrics`, :mod:`~analysis.dsc.configs`,
:mod:`~analysis.dsc.experiments` (run a config), :mod:`~analysis.dsc.report` and :mod:`~analysis.dsc.plots`.

Example::

    from analysis.dsc import DSCModel, build_estimator
    model = DSCModel.from_spec({"layers": [{"dictionary": "hadamard", "n": 64}], "s": 2})
    train, test = model.sample(512, seed=0), model.sample(256, seed=1)
    est = build_estimator("ista_decay").fit(model, train, depths=[1, 2, 4, 8, 16])
    codes = est.estimate(test.x, depths=[16])[16][-1]      # Γ̂ at depth 16

    from analysis.dsc import run_experiments
    results = run_experiments("quick", sweeps=["noise"])  # JSON-ready dict
"""

from typing import TYPE_CHECKING

from analysis._lazy import lazy_exports

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from analysis.dsc.configs import CONFIGS, apply_override, get_config
    from analysis.dsc.dictionaries import DICTIONARIES, Dictionary, make_dictionary
    from analysis.dsc.estimators import ESTIMATORS, build_estimator
    from analysis.dsc.experiments import run_experiments
    from analysis.dsc.generator import DSCBatch, DSCModel
    from analysis.dsc.plots import save_plots
    from analysis.dsc.report import checks, summary_markdown

__all__ = ["DICTIONARIES", "ESTIMATORS", "CONFIGS", "DSCBatch", "DSCModel", "Dictionary", "apply_override",
           "build_estimator", "checks", "get_config", "make_dictionary", "run_experiments", "save_plots",
           "summary_markdown"]

_LAZY = {
    "DICTIONARIES": "analysis.dsc.dictionaries", "Dictionary": "analysis.dsc.dictionaries",
    "make_dictionary": "analysis.dsc.dictionaries", "DSCBatch": "analysis.dsc.generator",
    "DSCModel": "analysis.dsc.generator", "ESTIMATORS": "analysis.dsc.estimators",
    "build_estimator": "analysis.dsc.estimators", "CONFIGS": "analysis.dsc.configs",
    "get_config": "analysis.dsc.configs", "apply_override": "analysis.dsc.configs",
    "run_experiments": "analysis.dsc.experiments", "checks": "analysis.dsc.report",
    "summary_markdown": "analysis.dsc.report", "save_plots": "analysis.dsc.plots",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
