"""Measurements of sparse features on any ``torch.nn.Module``: sparsity, coherence, convergence, theory.

This package never imports ``sparsezoo``; it works on plain modules and data loaders. Submodules are
imported on first use so that ``import analysis`` stays cheap.
"""

from importlib import import_module

__all__ = ["analyze", "coherence", "convergence", "measure", "theory_margins", "SparsityMeter", "SparsityStats",
           "find_sites", "site_stages", "summarize", "explain"]

_LAZY = {
    "analyze": "analysis.pipeline",
    "measure": "analysis.pipeline",
    "coherence": "analysis.dictionary",
    "convergence": "analysis.layerwise",
    "theory_margins": "analysis.margins",
    "SparsityMeter": "analysis.sparsity",
    "SparsityStats": "analysis.sparsity",
    "summarize": "analysis.sparsity",
    "find_sites": "analysis.sites",
    "site_stages": "analysis.sites",
    "explain": "analysis.interpret",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
