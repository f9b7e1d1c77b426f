"""The recipe's threshold step at the end of a run (:class:`~sparsezoo.recipe.ThresholdSpec`): search each site's
threshold on the validation split, re-measure the thresholded model on it, and save it so that loading reproduces
it (the folded shift is plain weights; hard FATReLU thresholds go to ``thresholds.safetensors`` beside them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sparsezoo.train.distributed import dist_reduce
from sparsezoo.train.evaluation import EvalContext, evaluate, top1

if TYPE_CHECKING:
    from sparsezoo.train.state import Training


def apply_thresholds(training: Training, budget: float | None = None) -> dict[str, Any] | None:
    """Run the recipe's threshold search on the raw model (every process, the same validation shard as the epochs'
    evaluation); returns what metrics.json records (``thresholds``, ``val`` after the search and, for hard
    thresholds, ``plain_loading``: what loading the weights without them changes), or None without thresholds.
    ``budget``: an absolute budget that replaces the recipe's (the recovery target's margin)."""
    spec = training.recipe.thresholds
    if spec is None:
        return None
    from analysis.sites import find_sites
    from sparsezoo.models.thresholds import plain_loading_gap
    from sparsezoo.train.threshold_search import search_thresholds

    model, task, acc = training.raw_model, training.task, training.accelerator
    sites = [s for s in find_sites(model, spec.include, spec.exclude)
             if type(s.module).__name__ in ("ReLU", "ReLU6", "FATReLU")]
    ctx = EvalContext(task, acc.device, acc.autocast, training.channels_last)

    def validation_top1(m: Any) -> float:
        return top1(m, training.eval_loader, ctx)

    relative = spec.relative and budget is None
    budget = spec.budget if budget is None else budget
    result = search_thresholds(model, sites, validation_top1, budget=budget, relative=relative,
                               realization=spec.realization, reduce=lambda t: dist_reduce(t, "sum"))
    measured = {s.name for s in task.sites}  # hard thresholds replaced their modules: find the sites again
    kinds = sorted({s.kind for s in task.sites})
    sites_now = [s for s in find_sites(model, kinds=kinds) if s.name in measured]
    val = evaluate(model, training.eval_loader, ctx, sites_now, training.stages, training.fused_eval)
    out: dict[str, Any] = {"thresholds": result.to_json(), "val": val}
    if spec.realization == "hard":
        def logits(m: Any, batch: Any) -> Any:
            return task.logits(m, task.split_batch(batch, acc.device, training.channels_last)[0])

        out["plain_loading"] = plain_loading_gap(model, training.eval_loader, logits).to_json()
    return out


def save_thresholded(training: Training, metadata: dict[str, str]) -> None:
    """Save the model so that plain loading reads it: hard thresholds are swapped for plain activations while the
    weights are written and saved beside them (``thresholds.safetensors``); a folded shift is plain already."""
    from sparsezoo.models.thresholds import plain_activations, save_thresholds

    out: Path = training.out
    with plain_activations(training.raw_model):
        training.task.save(out, training.raw_model, metadata)
    save_thresholds(out, training.raw_model)
