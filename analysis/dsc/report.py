"""The theorem's claims checked on a results dict, and the markdown summary.

:func:`checks` states each claim of the synthetic DSC check (arXiv:2408.05540, Thm. 1, rate) and whether the measured numbers
bear it out; :func:`summary_markdown` renders the checks and the main tables. Both read only the results dict.
"""

from __future__ import annotations

import math

RATE_TOLERANCE = 0.01  # ρ̂ may exceed (2s−1)μ by 1 %: the bound is attained (s ≤ 2) and the first steps are slower
FLOOR_ZERO = 1e-12  # a relative error below this is float64 round-off: "no floor"


def _runs(results: dict, sweep: str):
    return results["sweeps"].get(sweep, {}).get("runs", [])


def _est(run: dict, label: str) -> dict | None:
    return run["estimators"].get(label)


def _noiseless_in_theory(run: dict) -> bool:
    return run["sigma"] == 0 and run["predicted_rate"] < 1 and run["in_theory_frac"] == 1.0


def checks(results: dict, estimator: str = "ista_decay") -> list[dict]:
    """Each claim with ``holds`` (bool) and the numbers behind it; claims whose sweep was not run are left out."""
    out = []
    depth = [r for r in _runs(results, "depth") if _est(r, estimator)]
    if depth:
        r2 = _est(depth[0], estimator)["rate"]["r2"]
        out.append({"claim": "log-error vs depth is linear before the floor (R² ≥ 0.95)", "holds": r2 is not None and r2 >= 0.95,
                    "r2": r2})
    ratios = [(name, run["value"], e["rate"]["rho_hat"] / run["predicted_rate"])
              for name in results["sweeps"] for run in _runs(results, name)
              if _noiseless_in_theory(run) and (e := _est(run, estimator)) and e["rate"]["rho_hat"] is not None]
    if ratios:
        worst = max(ratios, key=lambda t: t[2])
        out.append({"claim": f"ρ̂ ≤ (2s−1)μ on every noiseless in-theory problem (fit tolerance {RATE_TOLERANCE:.0%})",
                    "holds": worst[2] <= 1 + RATE_TOLERANCE, "max_ratio": worst[2], "at": f"{worst[0]}={worst[1]}",
                    "runs": len(ratios)})
    for sweep, what in (("mu", "μ"), ("sparsity", "s")):
        pts = sorted((run["predicted_rate"], e["rate"]["rho_hat"]) for run in _runs(results, sweep)
                     if _noiseless_in_theory(run) and (e := _est(run, estimator)) and e["rate"]["rho_hat"] is not None)
        if len(pts) >= 2:
            rising = all(a[1] < b[1] for a, b in zip(pts, pts[1:], strict=False))
            out.append({"claim": f"ρ̂ increases with {what}", "holds": rising,
                        "predicted": [p for p, _ in pts], "rho_hat": [r for _, r in pts]})
    noise = _runs(results, "noise")
    if noise and all(_est(r, estimator) and _est(r, "ista") for r in noise):
        floors = [(r["sigma"], _est(r, estimator)["rate"]["floor_rel_err"], _est(r, "ista")["rate"]["floor_rel_err"])
                  for r in noise]
        pos = [(s, f) for s, f, _ in floors if s > 0]
        slope = _loglog_slope(pos) if len(pos) >= 2 else None
        zero = [f for s, f, _ in floors if s == 0]
        zero_fixed = [g for s, _, g in floors if s == 0]
        out.append({"claim": "the floor grows ∝ σ (log-log slope 1 ± 0.1)", "holds": slope is not None and abs(slope - 1) <= 0.1,
                    "loglog_slope": slope, "floor_over_sigma": [f / s for s, f in pos]})
        if zero:
            out.append({"claim": "σ = 0: no floor with decaying thresholds, a floor with a fixed threshold",
                        "holds": zero[0] < FLOOR_ZERO and zero_fixed[0] > 1e3 * FLOOR_ZERO,
                        "floor_decaying": zero[0], "floor_fixed": zero_fixed[0]})
    sparsity = [r for r in _runs(results, "sparsity") if _est(r, estimator)]
    if sparsity:
        rows = [(r["s"][-1], r["s_star"][-1], _est(r, estimator)["depths"][-1]["exact_support"]) for r in sparsity]
        below = [e for s, star, e in rows if s < star]
        above = [e for s, star, e in rows if s >= star]
        out.append({"claim": "exact support 100 % below s* = ½(1 + 1/μ), degrading above it",
                    "holds": bool(below) and min(below) == 1.0 and bool(above) and min(above) < 1.0,
                    "s": [s for s, _, _ in rows], "exact_support": [e for _, _, e in rows], "s_star": rows[0][1]})
    for run in _runs(results, "depth"):
        learned, plain = _est(run, "alista"), _est(run, "ista")
        if learned and plain:
            a = {row["K"]: row["rel_err"] for row in learned["depths"]}
            b = {row["K"]: row["rel_err"] for row in plain["depths"]}
            ks = sorted(set(a) & set(b))
            out.append({"claim": "the learned unrolled network beats plain ISTA at equal depth",
                        "holds": all(a[k] < b[k] for k in ks), "K": ks, "alista": [a[k] for k in ks], "ista": [b[k] for k in ks]})
    return out


def _loglog_slope(points: list[tuple[float, float]]) -> float:
    xs = [math.log(s) for s, _ in points]
    ys = [math.log(f) for _, f in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def _fmt(v, spec: str = ".3g") -> str:
    return "—" if v is None else format(v, spec)


def _value(v) -> str:
    if isinstance(v, list):  # a list of layer specs
        return " ∘ ".join(f"{d['dictionary']}({','.join(f'{k}={x}' for k, x in d.items() if k != 'dictionary')})" for d in v)
    return "—" if v is None else str(v)


def rate_table(results: dict) -> str:
    """Markdown: per run and estimator, the theory's numbers next to the fitted rate, floor and support."""
    lines = ["| sweep | value | estimator | μ | s | s* | (2s−1)μ | ρ̂ [95 % CI] | R² | floor (rel. ℓ2) | exact support @K max |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, sweep in results["sweeps"].items():
        for run in sweep["runs"]:
            mus = "/".join(_fmt(d["mu"], ".4g") for d in run["dictionaries"])
            stars = "/".join(_fmt(x, ".3g") for x in run["s_star"])
            for label, e in run["estimators"].items():
                rate = e["rate"]
                ci = f" [{rate['ci95'][0]:.4f}, {rate['ci95'][1]:.4f}]" if rate["ci95"] else ""
                lines.append(f"| {name} | {_value(run['value'])} | {label} | {mus} | {'/'.join(map(str, run['s']))} | {stars} | "
                             f"{run['predicted_rate']:.4g} | {_fmt(rate['rho_hat'], '.4f')}{ci} | {_fmt(rate['r2'], '.4f')} | "
                             f"{rate['floor_rel_err']:.3g} | {e['depths'][-1]['exact_support']:.3f} (K={e['depths'][-1]['K']}) |")
    return "\n".join(lines)


def depth_table(results: dict, sweep: str = "depth") -> str:
    """Markdown: relative ℓ2 error of every estimator at every depth K of one run of ``sweep``."""
    runs = _runs(results, sweep)
    if not runs:
        return ""
    depths = results["config"]["depths"]
    lines = ["| estimator | " + " | ".join(f"K={k}" for k in depths) + " |", "|---|" + "---|" * len(depths)]
    for label, e in runs[0]["estimators"].items():
        row = {r["K"]: r["rel_err"] for r in e["depths"]}
        lines.append(f"| {label} | " + " | ".join(_fmt(row.get(k), ".2e") for k in depths) + " |")
    return "\n".join(lines)


def summary_markdown(results: dict) -> str:
    """The whole summary: the checks, the depth table and the rate table."""
    cfg = results["config"]
    parts = [f"# Deep sparse coding lab — {len(results['sweeps'])} sweeps on {results['device']} ({results['dtype']})", "",
             f"depths K = {cfg['depths']}, {cfg['n_train']} training / {cfg['n_test']} test samples per problem, "
             f"seed {cfg['seed']}, {cfg['bootstrap']} bootstrap resamples. Errors are relative ℓ2 errors of the deepest "
             "code, ‖Γ̂ − Γ‖/‖Γ‖ pooled over test samples; ρ̂ is the fitted error reduction per unrolled step.", "",
             "## The theorem's claims", "", "| claim | holds | numbers |", "|---|---|---|"]
    for c in checks(results):
        nums = ", ".join(f"{k}={_short(v)}" for k, v in c.items() if k not in {"claim", "holds"})
        parts.append(f"| {c['claim']} | {'yes' if c['holds'] else '**no**'} | {nums} |")
    if _runs(results, "depth"):
        parts += ["", "## Error vs depth (in-theory configuration)", "", depth_table(results)]
    parts += ["", "## Rates, floors and support per problem", "", rate_table(results), ""]
    return "\n".join(parts)


def _short(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return str(v)
