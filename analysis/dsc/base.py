"""The estimator interface shared by every code estimator of the DSC lab.

Like captum's attribution methods, every estimator is a small class with the same verbs and argument names:

``fit(model, train, depths)``  calibrate or train on samples with known codes (``train``: a :class:`DSCBatch`);
                               returns ``self``
``estimate(x, depths)``        ``{K: [Γ̂_1, …, Γ̂_J]}``: the codes of every layer estimated by the network of depth
                               K (K unrolled steps per layer), for each requested K it supports; an entry is
                               ``None`` for a layer the estimator does not output
``supports(K)``                whether the estimator defines a network of depth K
``describe()``                 JSON-ready parameters and calibrated / learned values
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from analysis.dsc.generator import DSCBatch, DSCModel


class Estimator:
    """Base class; subclasses set ``name`` and implement :meth:`fit`, :meth:`estimate` and :meth:`describe`."""

    name = ""

    def supports(self, depth: int) -> bool:
        return depth >= 1

    def fit(self, model: DSCModel, train: DSCBatch, depths: Sequence[int]) -> Estimator:
        raise NotImplementedError

    def estimate(self, x: Tensor, depths: Sequence[int]) -> dict[int, list[Tensor | None]]:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError
