"""The report's plots, each drawn on its own :class:`matplotlib.figure.Figure` and returned as an ``<img>`` tag with
the PNG inline. No pyplot and no backend selection, so a caller's matplotlib state (a notebook's backend) is left as
it was. Each ``plot_…`` takes the models of the report (or one of them) and draws one figure."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from analysis.report.types import ModelEntry, measured

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _num(v: float | None) -> float:
    """A plottable number: None (not applicable) becomes NaN, which matplotlib leaves out."""
    return float("nan") if v is None else v


def _png(fig: Figure) -> str:
    """``fig`` as an ``<img>`` tag with the PNG inline (90 dpi, tight bounding box)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    """A new figure with ``ncols`` axes in a row (one axes, or an array of them). A plain
    :class:`matplotlib.figure.Figure`: no pyplot, so no backend is selected and the caller's matplotlib state
    (a notebook's backend, pyplot's figures) is left as it was; ``savefig`` renders PNG with Agg regardless."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    return fig, fig.subplots(1, ncols)


def plot_per_site(models: Sequence[ModelEntry]) -> str:
    """zero_frac, mean Hoyer and mean l0 / C of every site in forward order, one line per model."""
    fig, axes = _figure(15, 3.6, 3)
    for m in models:
        per = measured(m.analysis.sparsity)["per_site"]
        names = list(per)
        for ax, key, title in zip(axes, ("zero_frac", "hoyer_mean", "l0_per_position_frac"),
                                  ("zero_frac", "Hoyer (mean)", "l0 / C (mean)"), strict=True):
            ax.plot(range(len(names)), [per[n][key] if per[n][key] is not None else float("nan") for n in names],
                    marker=".", label=m.label)
            ax.set_title(title)
            ax.set_xlabel("site (forward order)")
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_density(m: ModelEntry) -> str:
    """The firing-density histogram of every site of one model, as a heat map (fraction of channels per bin)."""
    per = measured(m.analysis.sparsity)["per_site"]
    names = list(per)
    rows = []
    for n in names:
        c = per[n]["log10_firing_density_hist"]["counts"]
        tot = sum(c) or 1
        rows.append([v / tot for v in c])
    edges = per[names[0]]["log10_firing_density_hist"]["edges"]
    fig, ax = _figure(7, max(2.5, 0.16 * len(names)))
    im = ax.imshow(rows, aspect="auto", cmap="magma", extent=(edges[0], edges[-1], len(names) - 0.5, -0.5))
    ax.set_xlabel("log10 firing density (live channels)")
    ax.set_ylabel("site")
    ax.set_title(f"{m.label}: fraction of channels per density bin")
    fig.colorbar(im, ax=ax, fraction=0.03)
    return _png(fig)


def plot_coherence(models: Sequence[ModelEntry]) -> str:
    """Local and shift-aware mutual coherence per layer, and every layer's Babel curve."""
    fig, axes = _figure(13, 3.6, 2)
    for m in models:
        coh = measured(m.analysis.coherence)
        names = list(coh)
        axes[0].plot([_num(coh[n]["local"]["mu"]) for n in names], marker=".", label=f"{m.label} local μ")
        axes[0].plot([_num(coh[n]["mu_shift"]) for n in names],
                     marker="x", linestyle=":", label=f"{m.label} shift-aware μ")
        for n in names:
            babel = coh[n]["local"]["babel"]
            axes[1].plot(range(1, len(babel) + 1), babel, alpha=0.35, linewidth=0.8,
                         color="C0" if m is models[0] else "C1")
    axes[0].set_title("mutual coherence per layer")
    axes[0].set_xlabel("layer (module order)")
    axes[0].legend(fontsize=8)
    axes[1].set_title("Babel curves μ₁(k), one line per layer")
    axes[1].set_xlabel("k")
    return _png(fig)


def plot_margins(models: Sequence[ModelEntry]) -> str:
    """Each layer's max stripe sparsity against its bound s* (log scale), per model."""
    fig, ax = _figure(10, 3.6)
    for i, m in enumerate(models):
        mg = measured(m.analysis.margins)
        names = list(mg)
        ax.plot([mg[n]["stripe_max"] for n in names], marker=".", color=f"C{i}", label=f"{m.label} max stripe sparsity")
        ax.plot([_num(mg[n]["s_star"]) for n in names], linestyle="--", color=f"C{i}", label=f"{m.label} s* = ½(1+1/μ)")
    ax.set_yscale("log")
    ax.set_xlabel("layer (module order)")
    ax.set_ylabel("non-zeros")
    ax.legend(fontsize=8)
    ax.set_title("theory margin: the theorem applies where the solid line is below the dashed one")
    return _png(fig)


def plot_cka(m: ModelEntry) -> str:
    """The linear CKA matrix between the sites of one model."""
    cka = measured(m.analysis.convergence)["cka"]
    fig, ax = _figure(5.5, 4.6)
    im = ax.imshow(cka["matrix"], vmin=0, vmax=1, cmap="viridis")
    ax.set_title(f"{m.label}: linear CKA between sites ({cka['batches']} minibatches)")
    ax.set_xlabel("site")
    ax.set_ylabel("site")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)


def plot_ista(models: Sequence[ModelEntry]) -> str:
    """ISTA agreement per layer: relative error, support Jaccard and step size against the ISTA steps k."""
    fig, axes = _figure(15, 3.6, 3)
    for i, m in enumerate(models):
        for v in (measured(m.analysis.convergence).get("ista") or {}).values():
            if "skipped" in v:
                continue
            k = range(1, len(v["relative_error"]) + 1)
            axes[0].plot(k, v["relative_error"], color=f"C{i}", alpha=0.35, linewidth=0.8)
            axes[1].plot(k, v["support_jaccard"], color=f"C{i}", alpha=0.35, linewidth=0.8)
            if v["step_size"]:
                axes[2].semilogy(range(1, len(v["step_size"]) + 1), [max(s, 1e-12) for s in v["step_size"]],
                                 color=f"C{i}", alpha=0.35, linewidth=0.8)
        axes[0].plot([], [], color=f"C{i}", label=m.label)
    axes[0].set_title("‖Γᵏ − y‖/‖y‖ vs ISTA steps k")
    axes[1].set_title("support Jaccard with y")
    axes[2].set_title("step size ‖Γᵏ⁺¹ − Γᵏ‖/‖Γ¹‖ (log)")
    for ax in axes:
        ax.set_xlabel("k")
    axes[0].legend(fontsize=8)
    return _png(fig)


def plot_attention(m: ModelEntry) -> str:
    """Normalized entropy and Hoyer sparsity of every attention head of one model (layers × heads)."""
    att = measured(m.analysis.attention)
    names = list(att)
    fig, axes = _figure(12, max(2.6, 0.3 * len(names)), 2)
    for ax, key, title in zip(axes, ("entropy_norm", "hoyer"), ("normalized entropy (1 = uniform)",
                                                              "Hoyer of attention rows (1 = one key)"), strict=True):
        im = ax.imshow([att[n]["per_head"][key] for n in names], vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set_title(f"{m.label}: {title}")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return _png(fig)

def plot_relative_change(models: Sequence[ModelEntry]) -> str:
    """The relative change between consecutive equal-shape blocks, per model."""
    fig, ax = _figure(10, 3.2)
    for m in models:
        rc = measured(m.analysis.convergence)["relative_change"]
        ax.plot([r["relative_change"] for r in rc], marker="o", label=m.label)
    ax.set_xlabel("consecutive equal-shape block pair")
    ax.set_ylabel("‖F_{l+1} − F_l‖ / ‖F_l‖")
    ax.legend(fontsize=8)
    return _png(fig)
