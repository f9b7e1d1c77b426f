"""The registry of code estimators (one obvious entry point: :func:`build_estimator`).

======================  =================================================================================
``thresholding``        layered thresholding, the CNN forward pass ``ReLU(Dᵀh − θ)`` per layer (depth 1)
``ista``                textbook non-negative ISTA: step 1/L, fixed threshold (LASSO; biased floor)
``ista_decay``          non-negative ISTA, step 1, the theorem's decaying thresholds (calibrated)
``attention``           ``ista_decay`` whose dictionary step is self-attention-weighted over token sequences
``alista``              LISTA-type unrolled network, weights tied to D, learned steps and thresholds
``mlp``                 plain trained ReLU network of depth L
======================  =================================================================================

The unrolled ones take ``activation`` (``relu``, ``soft``, ``silu``, ``gelu``) and ``temperature``.
A config names an estimator as ``"ista_decay"`` or ``{"name": "ista_decay", "activation": "silu", …}``.
"""

from __future__ import annotations

import inspect

from analysis.dsc.base import Estimator
from analysis.dsc.learned import ALISTA, MLP
from analysis.dsc.pursuit import AttentionISTA, DecayingISTA, FixedISTA, Thresholding
from analysis.errors import AnalysisError

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls for cls in (Thresholding, FixedISTA, DecayingISTA, AttentionISTA, ALISTA, MLP)
}


def estimator_label(spec: str | dict) -> str:
    """``name`` or ``name[k=v,…]`` for a spec with parameters (or the spec's own ``label``)."""
    if isinstance(spec, str):
        return spec
    if "label" in spec:
        return str(spec["label"])
    params = {k: v for k, v in spec.items() if k != "name"}
    return spec["name"] + ("[" + ",".join(f"{k}={v}" for k, v in params.items()) + "]" if params else "")


def build_estimator(spec: str | dict, defaults: dict | None = None) -> Estimator:
    """An estimator from its spec; ``defaults`` (``{name: {param: value}}``) fill parameters the spec omits."""
    spec = {"name": spec} if isinstance(spec, str) else dict(spec)
    name = spec.pop("name", None)
    spec.pop("label", None)
    if name not in ESTIMATORS:
        raise AnalysisError(f"unknown estimator {name!r} (choose from {', '.join(ESTIMATORS)})")
    cls = ESTIMATORS[name]
    params = {**(defaults or {}).get(name, {}), **spec}
    allowed = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = set(params) - allowed
    if unknown:
        raise AnalysisError(f"estimator {name!r}: unknown parameter(s) {sorted(unknown)} (known: {sorted(allowed)})")
    return cls(**params)
