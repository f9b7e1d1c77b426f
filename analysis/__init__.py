"""Measurements of sparse features on any ``torch.nn.Module``: sparsity, coherence, convergence, theory.

This package never imports ``sparsezoo``; it works on plain modules and data loaders. Submodules are
imported on first use so that ``import analysis`` stays cheap.
"""

from typing import TYPE_CHECKING

from analysis._lazy import lazy_exports

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from analysis.dictionary import coherence
    from analysis.interpret import explain
    from analysis.layerwise import convergence
    from analysis.margins import theory_margins
    from analysis.pipeline import analyze, measure
    from analysis.sites import find_sites, site_stages
    from analysis.sparsity import SparsityMeter, SparsityStats, summarize

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

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
