"""Named experiment configs (data, not code) and ``key=value`` overrides.

A config is a dict:

``seed``         base seed: training samples use ``seed``, test samples ``seed + 1``, bootstraps ``seed + 2``
``device``       ``"auto"`` (``cuda`` when available, else ``cpu``), ``"cpu"`` or ``"cuda"``
``depths``       unrolled depths K (sorted; the deepest is where the floor is read)
``n_train``      samples per problem for calibration / training; ``n_test`` samples for every metric
``bootstrap``    resamples for the rate interval
``estimators``   default parameters per estimator name (see :mod:`analysis.dsc.estimators`)
``sweeps``       ``{name: {"description", "problem", "vary", "estimators"}}``: ``problem`` is a
                 :meth:`DSCModel.from_spec` dict; ``vary`` is ``{"path": "s", "values": [...]}`` (a dotted path
                 into the problem, list indices allowed: ``layers.0.n``) or null for a single run.

``quick`` finishes in well under 5 minutes on a 2-core CPU; ``full`` is the whole sweep (larger frames, more
samples, more values; a GPU is used when available).
"""

from __future__ import annotations

import copy
import json

from analysis.errors import AnalysisError

DEPTHS = [1, 2, 4, 8, 16, 32, 64]
HADAMARD_64 = [{"dictionary": "hadamard", "n": 64}]
BASE = {"layers": HADAMARD_64, "s": 2, "amplitude": [0.5, 1.0], "sigma": 0.0}


def _sweep(description: str, estimators: list, vary: dict | None = None, **problem) -> dict:
    return {"description": description, "problem": {**copy.deepcopy(BASE), **problem}, "vary": vary,
            "estimators": estimators}


QUICK = {
    "seed": 0,
    "device": "cpu",
    "depths": DEPTHS,
    "n_train": 1024,
    "n_test": 512,
    "bootstrap": 200,
    "estimators": {
        "ista": {"lam": 0.05},
        "alista": {"steps": 60, "lr": 0.005, "train_samples": 256},
        "mlp": {"depths": [1, 2, 4], "steps": 600, "lr": 1e-3, "batch_size": 256},
        "attention": {"beta": 5.0, "seq_len": 8},
    },
    "sweeps": {
        "depth": _sweep("error vs depth on the in-theory configuration ([I, H/√64], s = 2, σ = 0), every estimator",
                        ["thresholding", "ista", "ista_decay", "alista", "mlp"]),
        "mu": _sweep("coherence: frame size n (μ = 1/√n), s = 2", ["ista_decay", "ista"],
                     {"path": "layers.0.n", "values": [16, 64, 256]}),
        "sparsity": _sweep("sparsity s on [I, H/√64] (s* = 4.5), noiseless", ["thresholding", "ista_decay", "ista"],
                           {"path": "s", "values": [1, 2, 3, 4, 5, 6, 8, 12, 16]}),
        "noise": _sweep("noise level σ (per signal entry), s = 2", ["ista_decay", "ista"],
                        {"path": "sigma", "values": [0.0, 0.005, 0.01, 0.02, 0.04]}),
        "contrast": _sweep("contrast a_min/a_max (a_max = 1), s = 2, noiseless", ["thresholding", "ista_decay"],
                           {"path": "amplitude.0", "values": [0.1, 0.25, 0.5, 0.75, 1.0]}),
        "dictionaries": _sweep("dictionary families at s = 2 (Gaussian is out of theory)", ["thresholding", "ista_decay", "ista"],
                               {"path": "layers", "values": [
                                   [{"dictionary": "design", "p": 31, "d": 8}],
                                   [{"dictionary": "gaussian", "n": 64}],
                                   [{"dictionary": "conv1d", "n": 64, "k": 13}],
                                   [{"dictionary": "conv2d", "size": 16, "k": 5}]]}),
        "layers": _sweep("J = 1 vs J = 2 (x = D₁D₂Γ₂: D₁ = [I, H/√256], D₂ = design p=127, d=4, 254 atoms)",
                         ["thresholding", "ista_decay", "ista"],
                         {"path": "layers", "values": [
                             [{"dictionary": "hadamard", "n": 256}],
                             [{"dictionary": "hadamard", "n": 256},
                              {"dictionary": "design", "p": 127, "d": 4, "slopes": 2, "rows": 512}]]}),
        "activations": _sweep("shrinkage activations in the decaying-threshold network (T = 1e-3), noiseless",
                              [{"name": "ista_decay", "activation": a} for a in ("relu", "soft", "silu", "gelu")]
                              + [{"name": "alista", "activation": "silu"}]),
        "attention": _sweep("self-attention steps over sequences of 8 tokens in groups of 4 sharing a code, σ = 0.02",
                            ["ista_decay", "attention", {"name": "attention", "beta": 50.0}], sigma=0.02, repeat=4),
    },
}

FULL = copy.deepcopy(QUICK)
FULL.update({"device": "auto", "n_train": 2048, "n_test": 1024, "bootstrap": 1000})
FULL["estimators"].update({"alista": {"steps": 200, "lr": 0.005, "train_samples": 512},
                           "mlp": {"depths": [1, 2, 4, 8, 16], "steps": 2000, "lr": 1e-3, "batch_size": 256}})
FULL["sweeps"]["mu"]["vary"]["values"] = [16, 64, 256, 1024]
FULL["sweeps"]["noise"]["vary"]["values"] = [0.0, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08]
FULL["sweeps"]["sparsity"]["vary"]["values"] = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24]
FULL["sweeps"]["attention"]["estimators"] += [{"name": "attention", "beta": 1.0}, {"name": "attention", "beta": 20.0}]
FULL["sweeps"]["depth_s3"] = _sweep("error vs depth at s = 3 ((2s−1)μ = 0.625), every estimator",
                                    ["thresholding", "ista", "ista_decay", "alista", "mlp"], s=3)

CONFIGS = {"quick": QUICK, "full": FULL}


def get_config(name: str) -> dict:
    """A deep copy of the named config."""
    if name not in CONFIGS:
        raise AnalysisError(f"unknown config {name!r} (choose from {', '.join(CONFIGS)})")
    return copy.deepcopy(CONFIGS[name])


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_override(config: dict, assignment: str) -> dict:
    """Set ``key.path=value`` in ``config`` (in place; returned). The value is JSON, else a string.

    Every path component must exist already (list indices are integers), so a typo fails loudly; under
    ``estimators`` new names and parameters may be added (the estimator registry validates them before a run).
    """
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise AnalysisError(f"override {assignment!r}: expected KEY=VALUE (e.g. n_test=128)")
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the config"
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise AnalysisError(f"override {key!r}: {where} is a list of {len(node)}; {part!r} is not an index in it")
            index = int(part)
        elif isinstance(node, dict):
            if part not in node and parts[0] == "estimators" and 0 < i <= 2:
                node.setdefault(part, {} if i < len(parts) - 1 else None)
            if part not in node:
                raise AnalysisError(f"override {key!r}: unknown key {part!r} in {where} (known: {', '.join(map(str, node))})")
            index = part
        else:
            raise AnalysisError(f"override {key!r}: {where} is a value, not a section")
        if i == len(parts) - 1:
            node[index] = _parse_value(raw)
        else:
            node = node[index]
    return config
