"""The embedded default job: a λ sweep of sparse fine-tuning on a real pretrained CNN, fully offline.

:func:`run_demo` fine-tunes ImageNet MobileNetV2 (offline weights) on scikit-learn's digits once per λ of
the l1 penalty, with the built-in recipe ``mobilenetv2_100-digits-demo``, and tabulates validation
accuracy against feature sparsity (mean ``zero_frac`` over sites, and per stage).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from sparsezoo.errors import OutputExistsError
from sparsezoo.io import atomic_write_json, atomic_write_text
from sparsezoo.recipe import load_recipe

DEMO_RECIPE = "mobilenetv2_100-digits-demo"
DEFAULT_LAMS = (0.0, 1e-5, 1e-4, 1e-3)  # off, gentle, moderate, strong (penalties.py)


def run_demo(out: str | Path, lams: Sequence[float] = DEFAULT_LAMS, epochs: int | None = None,
             resume: bool = False, force: bool = False, progress: bool = False) -> list[dict]:
    """Run the sweep into ``out/l1_<λ>/`` and write ``out/summary.{json,md}``; returns the table rows."""
    from sparsezoo.train.loop import finetune

    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise OutputExistsError(f"output folder {out} exists; pass --resume to continue it or --force to overwrite it")
    base = load_recipe(DEMO_RECIPE)
    if epochs is not None:
        base.train.epochs = epochs
    rows = []
    for lam in lams:
        recipe = dataclasses.replace(base, penalties=[dataclasses.replace(base.penalties[0], lam=float(lam))])
        run_dir = out / f"l1_{lam:g}"
        res = finetune(recipe, run_dir, resume=resume and run_dir.exists(), force=force, progress=progress)
        s = res.final["sparsity"]
        rows.append({"lam": float(lam), "top1": res.final["top1"], "zero_frac_mean_sites": s["zero_frac_mean_sites"],
                     "l0_per_position_frac_mean_sites": s["l0_per_position_frac_mean_sites"],
                     "zero_frac_per_stage": s["zero_frac_per_stage"], "run": str(run_dir)})
    from analysis.definitions import definitions_of

    summary = {"recipe": DEMO_RECIPE, "epochs": base.train.epochs, "rows": rows,
               "definitions": definitions_of(("top1", "zero_frac_mean_sites", "zero_frac_per_stage"))}
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", format_table(rows) + "\n")
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table: λ, top-1, mean zero_frac, per-stage zero_frac."""
    stages = list(rows[0]["zero_frac_per_stage"]) if rows else []
    head = "| λ (l1) | val top-1 | zero_frac (mean over sites) | " + " | ".join(f"zero_frac {s}" for s in stages) + " |"
    sep = "|" + "---|" * (3 + len(stages))
    body = [f"| {r['lam']:g} | {r['top1']:.4f} | {r['zero_frac_mean_sites']:.4f} | "
            + " | ".join(f"{r['zero_frac_per_stage'][s]:.3f}" for s in stages) + " |" for r in rows]
    return "\n".join([head, sep, *body])
