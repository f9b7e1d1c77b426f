"""sparsezoo: sparse-feature fine-tuning, analysis and a model zoo for deep networks.

Importing the package is cheap (no torch); the public API is loaded on first use::

    from sparsezoo import SparsityPenalty
    from sparsezoo import finetune
    from sparsezoo import load_recipe
"""

from typing import TYPE_CHECKING

from analysis._lazy import lazy_exports

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name is imported on first use
    from sparsezoo.models.factory import create_model
    from sparsezoo.recipe import Recipe, load_recipe
    from sparsezoo.train.hf_trainer import SparsityTrainer
    from sparsezoo.train.loop import finetune
    from sparsezoo.train.penalties import SparsityPenalty
    from sparsezoo.zoo.loading import load

__version__ = "0.1.0"
__all__ = ["SparsityPenalty", "SparsityTrainer", "finetune", "load", "load_recipe", "Recipe", "create_model",
           "__version__"]

_LAZY = {
    "SparsityPenalty": "sparsezoo.train.penalties",
    "finetune": "sparsezoo.train.loop",
    "load_recipe": "sparsezoo.recipe",
    "Recipe": "sparsezoo.recipe",
    "create_model": "sparsezoo.models.factory",
    "load": "sparsezoo.zoo.loading",
    "SparsityTrainer": "sparsezoo.train.hf_trainer",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
