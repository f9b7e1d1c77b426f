"""sparsezoo: sparse-feature fine-tuning, analysis and a model zoo for deep networks.

Importing the package is cheap (no torch); the public API is loaded on first use::

    from sparsezoo import SparsityPenalty, finetune, load_recipe
"""

from importlib import import_module

__version__ = "0.1.0"
__all__ = ["SparsityPenalty", "SparsityTrainer", "finetune", "load", "load_recipe", "Recipe", "create_model",
           "__version__"]

_LAZY = {
    "SparsityPenalty": "sparsezoo.penalties",
    "finetune": "sparsezoo.train",
    "load_recipe": "sparsezoo.recipe",
    "Recipe": "sparsezoo.recipe",
    "create_model": "sparsezoo.models",
    "load": "sparsezoo.hub",
    "SparsityTrainer": "sparsezoo.hf_trainer",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sparsezoo' has no attribute {name!r}")
