"""Run a config: every sweep, every value, every estimator; return one JSON-ready dict with every number.

For each run (one problem): draw ``n_train`` training and ``n_test`` test samples, fit each estimator on the
training samples, estimate the test codes at every depth K, and record the metrics of
:mod:`analysis.dsc.metrics` per K, the fitted rate ``ρ̂`` with its bootstrap interval and the floor, next to the
theory's numbers for the problem: per-layer μ, the largest (stripe) sparsity s, ``s* = ½(1 + 1/μ)``, and the
predicted rate ``(2s − 1)μ`` (for J > 1, the slowest layer's, since layer j's input error decays at layer
j−1's rate).

Determinism: all samples come from seeded CPU generators, training is seeded, and on the CPU the run uses one
intra-op thread (the tensors are small: one thread is also the fastest here, and reductions then do not depend
on the machine's core count), so the same config gives identical numbers on the same device.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator, Sequence

import torch

from analysis.dsc.configs import get_config
from analysis.dsc.estimators import build_estimator, estimator_label
from analysis.dsc.generator import DSCBatch, DSCModel
from analysis.dsc.metrics import fit_rate, per_sample, summarize
from analysis.dsc.report import checks
from analysis.errors import AnalysisError

log = logging.getLogger(__name__)

SCHEMA = "sparsezoo.dsc/1"
CONFIG_KEYS = {"seed", "device", "depths", "n_train", "n_test", "bootstrap", "estimators", "sweeps"}
SWEEP_KEYS = {"description", "problem", "vary", "estimators"}


def resolve_device(name: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is an error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise AnalysisError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise AnalysisError("device cuda asked for, but torch sees no GPU")
    return name


@contextlib.contextmanager
def _one_thread(device: str) -> Iterator[None]:
    before = torch.get_num_threads()
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _set_path(spec: dict, path: str, value) -> dict:
    """A copy of problem ``spec`` with the field at dotted ``path`` (list indices allowed) set to ``value``."""
    spec = copy.deepcopy(spec)
    parts = path.split(".")
    node = spec
    try:
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(parts[-1])] = value
        else:
            node[parts[-1]] = value  # a key the problem does not know is rejected by DSCModel.from_spec
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise AnalysisError(f"vary path {path!r} does not name a field of the problem") from e
    return spec


def validate_config(config: dict) -> None:
    """Raise :class:`AnalysisError` for unknown keys or values out of range (before anything runs)."""
    unknown = set(config) - CONFIG_KEYS
    missing = CONFIG_KEYS - set(config)
    if unknown or missing:
        raise AnalysisError(f"config: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    depths = config["depths"]
    if not isinstance(depths, list) or not depths or any(not isinstance(k, int) or k < 1 for k in depths):
        raise AnalysisError(f"depths must be a non-empty list of positive integers, got {depths!r}")
    for key in ("n_train", "n_test", "bootstrap"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise AnalysisError(f"{key} must be a positive integer, got {config[key]!r}")
    for name, sweep in config["sweeps"].items():
        if not isinstance(sweep, dict) or set(sweep) - SWEEP_KEYS or "problem" not in sweep:
            raise AnalysisError(f"sweep {name!r}: expected keys {sorted(SWEEP_KEYS)}")
        for spec in sweep["estimators"]:
            build_estimator(spec, config["estimators"])  # unknown estimator / parameter → AnalysisError now


def run_problem(spec: dict, estimators: Sequence[str | dict], config: dict, device: str, bar=None) -> dict:
    """One problem: theory numbers, and per estimator the metrics per depth and the fitted rate."""
    depths = sorted(config["depths"])
    model = DSCModel.from_spec(spec)
    seed = config["seed"]
    train: DSCBatch = model.sample(config["n_train"], seed).to(device)
    test: DSCBatch = model.sample(config["n_test"], seed + 1).to(device)
    s = [int(v) for v in test.stripe_l0.max(0).values]
    predicted_layers = model.predicted_rates(test.stripe_l0)
    amp = [float(c.abs().max()) for c in test.codes]
    run = {"problem": spec, "dictionaries": [d.info() for d in model.dictionaries], "s": s,
           "s_star": [d.s_star for d in model.dictionaries], "contrast": model.contrast, "sigma": model.sigma,
           "predicted_rate_layers": predicted_layers, "predicted_rate": max(predicted_layers),
           "in_theory_frac": float(test.in_theory.double().mean()), "estimators": {}}
    for est_spec in estimators:
        label = estimator_label(est_spec)
        est = build_estimator(est_spec, config["estimators"]).fit(model, train, depths)
        out = est.estimate(test.x, depths)
        ks = sorted(out)
        if not ks:
            raise AnalysisError(f"estimator {label} defines none of the depths {depths}")
        rows, sq_err = [], []
        for k in ks:
            layers = [per_sample(c, t, a) if c is not None else None for c, t, a in zip(out[k], test.codes, amp, strict=True)]
            row = {"K": k, **summarize(layers[-1])}
            if len(layers) > 1:
                row["nmse_layers"] = [summarize(p)["nmse"] if p is not None else None for p in layers]
            rows.append(row)
            sq_err.append(layers[-1]["sq_err"])
            sq_norm = layers[-1]["sq_norm"]
        rate = fit_rate(ks, torch.stack(sq_err, 1), sq_norm, config["bootstrap"], seed + 2)
        run["estimators"][label] = {"name": est.name, "spec": est_spec, "depths": rows, "rate": rate,
                                    "fitted": est.describe()}
        log.debug("%s: rho_hat=%s floor=%.3g", label, rate["rho_hat"], rate["floor_rel_err"])
        if bar is not None:
            bar.update(1)
    return run


def run_experiments(config: dict | str = "quick", sweeps: Sequence[str] | None = None, progress: bool = False) -> dict:
    """Run the named (or given) config; ``sweeps`` selects a subset by name.

    Returns ``{"schema", "config" (as run), "device", "dtype", "sweeps": {name: {"description", "vary", "runs"}},
    "checks"}`` where each run holds the problem's theory numbers and, per estimator label, ``depths`` (metrics
    per K), ``rate`` (ρ̂, interval, R², floor) and ``fitted`` (calibrated / learned parameters).
    """
    from tqdm.auto import tqdm

    config = get_config(config) if isinstance(config, str) else copy.deepcopy(config)
    validate_config(config)
    names = list(config["sweeps"]) if sweeps is None else list(sweeps)
    unknown = [n for n in names if n not in config["sweeps"]]
    if unknown:
        raise AnalysisError(f"unknown sweep(s) {unknown} (choose from {', '.join(config['sweeps'])})")
    config["sweeps"] = {n: config["sweeps"][n] for n in names}
    device = resolve_device(config["device"])
    plan = []
    for name in names:
        sweep = config["sweeps"][name]
        vary = sweep.get("vary")
        values = vary["values"] if vary else [None]
        for value in values:
            spec = _set_path(sweep["problem"], vary["path"], value) if vary else copy.deepcopy(sweep["problem"])
            DSCModel.from_spec(spec)  # fail on a bad problem before any work
            plan.append((name, value, spec))
    results = {"schema": SCHEMA, "config": config, "device": device, "dtype": "float64",
               "sweeps": {n: {"description": config["sweeps"][n].get("description", ""),
                              "vary": (config["sweeps"][n].get("vary") or {}).get("path"), "runs": []} for n in names}}
    total = sum(len(config["sweeps"][name]["estimators"]) for name, _, _ in plan)
    with _one_thread(device), tqdm(total=total, desc="dsc", disable=not progress, leave=False) as bar:
        for name, value, spec in plan:
            bar.set_postfix_str(f"{name}={value}" if value is not None else name)
            run = run_problem(spec, config["sweeps"][name]["estimators"], config, device, bar)
            results["sweeps"][name]["runs"].append({"value": value, **run})
    results["checks"] = checks(results)
    return results
