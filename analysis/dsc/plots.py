"""Figures of a results dict, written as PNG files into a folder (matplotlib's object API; pyplot untouched).

``error_vs_depth_<sweep>.png``  relative ℓ2 error of the deepest code vs depth K, log scale, one line per
                                (value, estimator): colour = value of the swept parameter, line style = estimator
``rate_vs_predicted.png``       fitted ρ̂ (95 % bootstrap interval) vs the predicted (2s − 1)μ, with y = x
``support_vs_sparsity.png``     exact-support rate at the deepest K vs s, with the bound s* = ½(1 + 1/μ)
``floor_vs_noise.png``          error floor (relative ℓ2 error at the deepest K) vs σ
"""

from __future__ import annotations

from pathlib import Path

STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))]
PNG_METADATA = {"Software": None}  # no version stamp: the same results give the same bytes


def _figure(width: float = 6.4, height: float = 4.4):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)
    return path


def _label(value) -> str:
    if isinstance(value, list):
        return "∘".join(d["dictionary"] for d in value)
    return "" if value is None else str(value)


def error_vs_depth(results: dict, sweep: str, path: Path) -> Path:
    from matplotlib import colormaps

    data = results["sweeps"][sweep]
    fig, ax = _figure()
    runs = data["runs"]
    cmap = colormaps["viridis"]
    labels = list(dict.fromkeys(lab for r in runs for lab in r["estimators"]))  # first-seen order
    for i, run in enumerate(runs):
        color = cmap(i / max(1, len(runs) - 1)) if len(runs) > 1 else None
        for j, label in enumerate(labels):
            e = run["estimators"].get(label)
            if not e:
                continue
            ks = [r["K"] for r in e["depths"]]
            err = [max(r["rel_err"], 1e-18) for r in e["depths"]]
            name = f"{data['vary']}={_label(run['value'])} {label}" if data["vary"] else label
            ax.plot(ks, err, linestyle=STYLES[j % len(STYLES)], marker="o", markersize=3, color=color, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("depth K (unrolled steps per layer)")
    ax.set_ylabel("relative ℓ2 error ‖Γ̂ − Γ‖/‖Γ‖")
    ax.set_title(f"{sweep}: {data['description']}"[:90], fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=5, ncol=2)
    return _save(fig, path)


def rate_vs_predicted(results: dict, path: Path) -> Path:
    fig, ax = _figure(5.2, 5.0)
    top = 0.0
    for i, (name, data) in enumerate(results["sweeps"].items()):
        xs, ys, lo, hi = [], [], [], []
        for run in data["runs"]:
            for e in run["estimators"].values():
                rate = e["rate"]
                if rate["rho_hat"] is None or run["predicted_rate"] >= 1.5:
                    continue
                xs.append(run["predicted_rate"])
                ys.append(rate["rho_hat"])
                # a percentile interval need not contain the point estimate: draw only the part that does
                lo.append(max(0.0, rate["rho_hat"] - rate["ci95"][0]))
                hi.append(max(0.0, rate["ci95"][1] - rate["rho_hat"]))
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", markersize=4, capsize=2, label=name, color=f"C{i % 10}")
            top = max(top, *xs, *ys)
    top = max(top, 1.0) * 1.05
    ax.plot([0, top], [0, top], "k--", linewidth=1, label="ρ̂ = (2s−1)μ")
    ax.axvline(1.0, color="grey", linewidth=0.8, alpha=0.6)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("predicted rate (2s − 1)μ")
    ax.set_ylabel("fitted rate ρ̂ (error reduction per step)")
    ax.set_title("fitted vs predicted geometric rate", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def support_vs_sparsity(results: dict, path: Path) -> Path:
    runs = results["sweeps"]["sparsity"]["runs"]
    fig, ax = _figure()
    for j, label in enumerate(runs[0]["estimators"]):
        ss = [r["s"][-1] for r in runs if label in r["estimators"]]
        ex = [r["estimators"][label]["depths"][-1]["exact_support"] for r in runs if label in r["estimators"]]
        ax.plot(ss, ex, marker="o", linestyle=STYLES[j % len(STYLES)], label=label)
    star = runs[0]["s_star"][-1]
    ax.axvline(star, color="k", linestyle="--", linewidth=1, label=f"s* = ½(1 + 1/μ) = {star:.3g}")
    ax.set_xlabel("sparsity s (non-zeros per code)")
    ax.set_ylabel("exact-support rate at the deepest K")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def floor_vs_noise(results: dict, path: Path) -> Path:
    runs = results["sweeps"]["noise"]["runs"]
    fig, ax = _figure()
    for j, label in enumerate(runs[0]["estimators"]):
        sig = [r["sigma"] for r in runs if label in r["estimators"]]
        floor = [r["estimators"][label]["rate"]["floor_rel_err"] for r in runs if label in r["estimators"]]
        ax.plot(sig, floor, marker="o", linestyle=STYLES[j % len(STYLES)], label=label)
    ax.set_xlabel("noise σ (per signal entry)")
    ax.set_ylabel("floor: relative ℓ2 error at the deepest K")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def save_plots(results: dict, folder: str | Path) -> list[Path]:
    """Write every figure the results allow into ``folder``; returns the paths written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [error_vs_depth(results, name, folder / f"error_vs_depth_{name}.png") for name in results["sweeps"]]
    paths.append(rate_vs_predicted(results, folder / "rate_vs_predicted.png"))
    if "sparsity" in results["sweeps"]:
        paths.append(support_vs_sparsity(results, folder / "support_vs_sparsity.png"))
    if "noise" in results["sweeps"]:
        paths.append(floor_vs_noise(results, folder / "floor_vs_noise.png"))
    return paths
