"""Sparsity-regularized fine-tuning of a timm or Hugging Face transformers model (image or text classification).

Flags build a recipe (see ``--print-recipe``); ``--recipe`` starts from a file or a built-in recipe and
flags override it. The recipe is saved in the output folder, so ``--recipe OUT/recipe.yaml`` reproduces a
run and ``--resume`` continues one.

examples:
  sparsezoo finetune resnet50 --l1 1e-4 --data digits --img-size 64 --epochs 3 --out runs/r50-l1
  sparsezoo finetune resnet18 --no-pretrained --img-size 32 --data digits --l1 1e-3
  sparsezoo finetune bert-base-uncased --task text-classification --data glue --l1 1e-4
  sparsezoo finetune --recipe runs/r50-l1/recipe.yaml --out runs/r50-l1-again
  sparsezoo finetune --resume --out runs/r50-l1
  torchrun --nproc_per_node=2 -m sparsezoo finetune resnet18 --data digits --out runs/ddp
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sparsezoo.cli._options import (
    fraction,
    lam_stage,
    nonneg_float,
    penalty_setting,
    positive_float,
    positive_int,
    recovery_fraction,
    site_kind,
    unit_interval,
)
from sparsezoo.errors import RecipeError

HELP = "fine-tune a timm or Hugging Face transformers model with sparsity penalties on its features"
RUNS_MODELS = True  # batch after batch: keep freed activation memory (analysis.runtime)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", nargs="?", help="timm name (resnet50, resnet50.a1_in1k), transformers Hub id, "
                                            "hf-hub:org/name, or a folder")
    p.add_argument("--recipe", help="recipe YAML file or built-in recipe name to start from")
    p.add_argument("--out", help="run folder (default: runs/<model>-<penalties>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.add_argument("--print-recipe", action="store_true", help="print the resulting recipe and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_model_arguments(p.add_argument_group("model"))
    _add_data_arguments(p.add_argument_group("data"))
    _add_sparsity_arguments(p.add_argument_group("sparsity"))
    _add_optimization_arguments(p.add_argument_group("optimization"))
    _add_recovery_arguments(p.add_argument_group("recovery"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any recipe field, e.g. --set optim.warmup_epochs=0.5 (repeatable)")


def _add_model_arguments(g) -> None:
    g.add_argument("--no-pretrained", dest="pretrained", action="store_false", default=None,
                   help="random initialization")
    g.add_argument("--weights", help="FILE.safetensors, or 'offline' for weights shipped in an installed package")
    g.add_argument("--task", choices=["auto", "image-classification", "text-classification"],
                   help="for transformers models (default: detected from the architecture)")
    g.add_argument("--activation", metavar="NAME",
                   help="replace the (FFN) activations first: relu | relu2 | gelu | silu | topk:K "
                        "(sparsezoo.models.activations)")


def _add_data_arguments(g) -> None:
    g.add_argument("--data", help="digits | image folder | saved dataset | .csv/.jsonl file | Hub dataset id")
    g.add_argument("--text-column", help="text column of a text dataset (default: detected)")
    g.add_argument("--text-pair-column", help="second text column for sentence-pair tasks")
    g.add_argument("--max-length", type=positive_int, help="tokens per text (truncation; default 128)")
    g.add_argument("--image-column")
    g.add_argument("--label-column")
    g.add_argument("--val-split", help="validation split name (default: detected, else 20%% held out)")
    g.add_argument("--img-size", type=positive_int)
    g.add_argument("--augment", choices=["auto", "none", "light", "standard"])
    g.add_argument("--workers", type=int, help="data loader worker processes")


def _add_sparsity_arguments(g) -> None:
    g.add_argument("--l1", type=nonneg_float, help="λ of the l1 penalty (per-position l1, averaged over sites)")
    g.add_argument("--hoyer", type=nonneg_float, help="λ of the Hoyer-square penalty")
    g.add_argument("--penalty", type=penalty_setting, action="append", default=[], metavar="KIND=λ",
                   help="λ of any registered penalty kind (sparsezoo.train.penalties.register_penalty; repeatable)")
    g.add_argument("--target-zero-frac", type=fraction,
                   help="adapt λ (of --l1, else --hoyer, else the first --penalty) until the mean zero_frac reaches "
                        "this value")
    g.add_argument("--warmup-epochs", type=nonneg_float, help="epochs with λ = 0 before the ramp")
    g.add_argument("--ramp-epochs", type=nonneg_float, help="epochs over which λ rises to its value")
    g.add_argument("--lam-stages", nargs="+", type=lam_stage, metavar="EPOCHS:LAM",
                   help="ProSparse's staged λ: λ stays at its value for --warmup-epochs, then each stage rises to its "
                        "own λ along a half sine, e.g. --l1 1e-5 --warmup-epochs 1 --lam-stages 1:3e-5 1:1e-4")
    g.add_argument("--sites", nargs="+", metavar="REGEX", help="penalize/measure only matching activation sites")
    g.add_argument("--exclude-sites", nargs="+", metavar="REGEX")
    g.add_argument("--site-kinds", nargs="+", type=site_kind, metavar="KIND",
                   help="kinds of sites (analysis.sites.SITE_KINDS): activation (default), block, attention "
                        "(= attention probabilities)")


def _add_recovery_arguments(g) -> None:
    g.add_argument("--distill", metavar="TEACHER",
                   help="distil from a dense teacher of the same classes: a run folder, a zoo ENTRY:VARIANT or a Hub "
                        "id; loss (1 - h)·CE + h·T²·KL(teacher ‖ student)")
    g.add_argument("--distill-weight", type=unit_interval, metavar="H", help="h, the soft term's weight (default 0.5)")
    g.add_argument("--distill-temperature", type=positive_float, metavar="T", help="T (default 2)")
    g.add_argument("--thresholds", choices=["shift", "hard"],
                   help="after training, raise each ReLU/ReLU6 site's threshold as far as validation top-1 allows: "
                        "shift = ReLU(y - t) folded into the bias (plain loading reproduces it), hard = FATReLU")
    g.add_argument("--threshold-budget", type=nonneg_float, metavar="B",
                   help="validation top-1 the threshold search may spend (default 0.005 = half a point)")
    g.add_argument("--threshold-budget-relative", action="store_true",
                   help="--threshold-budget is a fraction of the starting validation top-1")
    g.add_argument("--threshold-sites", nargs="+", metavar="REGEX", help="only these sites (default: every ReLU)")
    g.add_argument("--min-recovery", type=recovery_fraction, metavar="R",
                   help="instead of a guessed λ: keep validation top-1 >= R x the dense reference's (e.g. 0.99) while "
                        "a controller raises the penalty's λ (the given λ is the starting pressure) and backs off "
                        "when it falls below; the sparsest checkpoint that met it is kept")
    g.add_argument("--reference", metavar="RUN",
                   help="the dense reference of --min-recovery: a run folder, zoo ENTRY:VARIANT or Hub id "
                        "(default: the --distill teacher)")


def _add_optimization_arguments(g) -> None:
    g.add_argument("--optimizer", choices=["adamw", "sgd"])
    g.add_argument("--lr", type=nonneg_float)
    g.add_argument("--weight-decay", type=nonneg_float)
    g.add_argument("--grad-clip", type=nonneg_float)
    g.add_argument("--grad-accum", type=positive_int)
    g.add_argument("--epochs", type=positive_int)
    g.add_argument("--batch-size", type=positive_int)
    g.add_argument("--seed", type=int)
    g.add_argument("--precision", choices=["auto", "bf16", "fp32"])
    g.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    g.add_argument("--max-steps-per-epoch", type=positive_int, help="cap each epoch (smoke runs)")


# recipe section -> {recipe key: argparse dest}: a flag that is given (not None) sets the key
_FLAGS = {
    "model": {"pretrained": "pretrained", "weights": "weights", "task": "task", "activation": "activation"},
    "data": {"source": "data", "image_column": "image_column", "label_column": "label_column",
             "val_split": "val_split", "img_size": "img_size", "augment": "augment", "num_workers": "workers",
             "text_column": "text_column", "text_pair_column": "text_pair_column", "max_length": "max_length"},
    "sites": {"include": "sites", "exclude": "exclude_sites", "kinds": "site_kinds"},
    "optim": {"name": "optimizer", "lr": "lr", "weight_decay": "weight_decay", "grad_clip": "grad_clip",
              "grad_accum": "grad_accum"},
    "train": {"epochs": "epochs", "batch_size": "batch_size", "seed": "seed", "precision": "precision",
              "compile": "compile", "max_steps_per_epoch": "max_steps_per_epoch"},
}


def recipe_from_args(args: argparse.Namespace):
    """The recipe these flags describe (validated)."""
    from sparsezoo.recipe import Recipe

    d = _starting_recipe(args)
    if args.model:
        d["model"]["name"] = args.model
    if not d["model"]["name"]:
        raise RecipeError("no model given: name one (e.g. resnet50) or pass --recipe")
    for section, flags in _FLAGS.items():
        for key, dest in flags.items():
            value = getattr(args, dest)
            if value is not None:
                d[section][key] = value
    _apply_penalty_flags(d, args)
    _apply_distill_flags(d, args)
    _apply_threshold_flags(d, args)
    _apply_recovery_flags(d, args)
    _apply_set_flags(d, args.set)
    return Recipe.from_dict(d)


def _starting_recipe(args: argparse.Namespace) -> dict:
    """The recipe dict the flags modify: ``--recipe``, the run's own recipe for a bare ``--resume``, or the defaults."""
    from sparsezoo.recipe import Recipe, load_recipe

    if args.recipe:
        return load_recipe(args.recipe).to_dict()
    if args.resume and not args.model:
        saved = Path(args.out) / "recipe.yaml" if args.out else None
        if saved is None or not saved.is_file():
            from sparsezoo.errors import ResumeError

            raise ResumeError(f"nothing to resume: {saved or '--out'} not found (--resume continues the run in --out)")
        return load_recipe(str(saved)).to_dict()
    return Recipe().to_dict()


def _set_penalty(d: dict, kind: str, lam: float) -> dict:
    for pen in d["penalties"]:
        if pen["kind"] == kind:
            pen["lam"] = lam
            return pen
    import dataclasses

    from sparsezoo.recipe import PenaltySpec

    pen = dataclasses.asdict(PenaltySpec(kind=kind, lam=lam))
    d["penalties"].append(pen)
    return pen


def _target_kind(args: argparse.Namespace) -> str:
    """The penalty ``--target-zero-frac`` adapts: that of --l1, else of --hoyer, else of the first --penalty, else l1."""
    if args.l1 is not None or (args.hoyer is None and not args.penalty):
        return "l1"
    return "hoyer_square" if args.hoyer is not None else args.penalty[0][0]


def _apply_penalty_flags(d: dict, args: argparse.Namespace) -> None:
    if args.l1 is not None:
        _set_penalty(d, "l1", args.l1)
    if args.hoyer is not None:
        _set_penalty(d, "hoyer_square", args.hoyer)
    for kind, lam in args.penalty:
        _set_penalty(d, kind, lam)
    if args.target_zero_frac is not None:
        kind = _target_kind(args)
        pen = next((p for p in d["penalties"] if p["kind"] == kind), None) or _set_penalty(d, kind, 1e-5)
        if pen["lam"] == 0:
            pen["lam"] = 1e-5
        pen["target_zero_frac"] = args.target_zero_frac
    for pen in d["penalties"]:
        if args.warmup_epochs is not None:
            pen["schedule"]["warmup_epochs"] = args.warmup_epochs
        if args.ramp_epochs is not None:
            pen["schedule"]["ramp_epochs"] = args.ramp_epochs
        if args.lam_stages:
            pen["schedule"]["shape"] = "staged"
            pen["schedule"]["stages"] = [{"epochs": e, "lam": lam} for e, lam in args.lam_stages]


def _apply_distill_flags(d: dict, args: argparse.Namespace) -> None:
    """``--distill`` and its weight and temperature (which need a teacher, from the flag or the recipe)."""
    if args.distill:
        d["distill"] = {**(d.get("distill") or {}), "teacher": args.distill}
    for key, value in (("weight", args.distill_weight), ("temperature", args.distill_temperature)):
        if value is None:
            continue
        if not d.get("distill"):
            raise RecipeError(f"--distill-{key} needs a teacher: pass --distill TEACHER")
        d["distill"][key] = value


def _apply_threshold_flags(d: dict, args: argparse.Namespace) -> None:
    """``--thresholds`` and its budget and sites (which need the search on, from the flag or the recipe)."""
    if args.thresholds:
        d["thresholds"] = {**(d.get("thresholds") or {}), "realization": args.thresholds}
    given = {"budget": args.threshold_budget, "relative": args.threshold_budget_relative or None,
             "include": args.threshold_sites}
    for key, value in given.items():
        if value is None:
            continue
        if not d.get("thresholds"):
            raise RecipeError("--threshold-budget/--threshold-sites need the search: pass --thresholds shift|hard")
        d["thresholds"][key] = value


def _apply_recovery_flags(d: dict, args: argparse.Namespace) -> None:
    """``--min-recovery R`` and ``--reference RUN`` (which needs a target, from the flag or the recipe)."""
    if args.min_recovery is not None:
        d["recovery"] = {**(d.get("recovery") or {}), "min": args.min_recovery}
    if args.reference is not None:
        if not d.get("recovery"):
            raise RecipeError("--reference is the dense reference of a recovery target: pass --min-recovery R")
        d["recovery"]["reference"] = args.reference


def _apply_set_flags(d: dict, items: list[str]) -> None:
    """``--set KEY=VALUE`` overrides, in order (after every other flag)."""
    from sparsezoo.recipe import set_value, split_set

    for item in items:
        set_value(d, *split_set(item))


def format_history(history: list[dict]) -> str:
    from analysis.sparsity import SparsitySummary

    summaries = [SparsitySummary.from_json(r["val"]["sparsity"]) for r in history]
    near = summaries[0].near_zero_of("abs") if summaries else None
    head = "epoch  top1    val_loss  zero_frac(mean sites)"
    if near:
        head += f"  {near[0].key}"
    rows = [head + "  l0/position(mean sites)  task_loss  penalty"]
    for r, s in zip(history, summaries, strict=True):
        v, t = r["val"], r["train"]
        pen = ", ".join(f"{k} {x:.4g}" for k, x in t["penalty"].items()) or "-"
        line = f"{r['epoch']:>5}  {v['top1']:.4f}  {v['loss']:8.4f}  {s.zero_frac_mean_sites:21.4f}"
        if near:
            line += f"  {dict(s.near_zero)[near[0]]:{len(near[0].key)}.4f}"
        rows.append(line + f"  {s.l0_per_position_mean_sites:23.1f}  {t['task_loss']:9.4f}  {pen}")
    return "\n".join(rows)


def run(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.print_recipe:
        sys.stdout.write(recipe.to_yaml())
        return 0
    from sparsezoo.train.loop import finetune

    out = Path(args.out) if args.out else Path("runs") / recipe.tag()
    progress = sys.stderr.isatty() and not args.no_progress
    from sparsezoo.zoo.loading import load  # a run folder, ENTRY:VARIANT (local build, cache, Hub) or Hub id

    teacher = load(recipe.distill.teacher) if recipe.distill is not None else None
    reference = load(recipe.recovery.reference) if recipe.recovery is not None and recipe.recovery.reference else None
    result = finetune(recipe, out, resume=args.resume, force=args.force, progress=progress, teacher=teacher,
                      reference=reference)
    if os.environ.get("RANK", "0") != "0":  # under torchrun/accelerate only the main process reports
        return 0
    from sparsezoo.models.hf import model_family

    print(format_history(result.history))
    if model_family(recipe.model.name) == "transformers":
        print(f"run folder: {out}  (load with transformers' Auto*.from_pretrained('{out}'))")
    else:
        print(f"run folder: {out}  (load with timm.create_model('local-dir:{out}', pretrained=True))")
    return 0
