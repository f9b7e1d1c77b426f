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

from importlib import import_module

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


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis.dsc' has no attribute {name!r}")
