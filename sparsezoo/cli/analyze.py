"""Analyze a model's features and weights: sparsity, dictionary coherence, theory margins, layerwise
convergence; writes report.json (every number, with definitions) and a self-contained report.html.

MODEL is a timm name, hf-hub:org/name, or a local folder (a sparsezoo run folder). Samples come from the
validation split of --data first, then from its training split. With --compare, both models see the same
images (preprocessed with the first model's data config) and the report shows them side by side with deltas.

examples:
  sparsezoo analyze mobilenetv2_100 --weights offline --data digits --img-size 64 --samples 256 --out reports/mnv2
  sparsezoo analyze runs/r50-l1 --data digits --compare resnet50 --out reports/cmp
  sparsezoo analyze resnet50 --no-pretrained --weights-only --out reports/r50-w
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from sparsezoo.cli._options import add_data_options, add_model_options, data_spec, load_models
from sparsezoo.cli.finetune import nonneg_float, positive_int

HELP = "measure sparsity, coherence, theory margins and convergence; write an HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="timm name, hf-hub:org/name, or a folder (e.g. a run folder)")
    add_model_options(p, "a second model to analyze side by side (e.g. the dense original)")
    p.add_argument("--activation", metavar="NAME", help="replace the activations first: relu|relu2|gelu|silu|topk:K")
    p.add_argument("--threshold", type=nonneg_float, metavar="TAU",
                   help="thresholded activations: y = f(x)·1[|f(x)| > TAU] (turns near-zeros into zeros)")
    add_data_options(p, required=False)
    p.add_argument("--samples", type=positive_int, default=512, help="samples to measure (default 512)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="batch size (CKA uses each batch; >= 4)")
    p.add_argument("--weights-only", action="store_true", help="coherence of the weights only; no data needed")
    p.add_argument("--sites", nargs="+", metavar="REGEX", help="activation sites to measure (default: all)")
    p.add_argument("--no-cka", action="store_true", help="skip CKA between sites")
    p.add_argument("--no-ista", action="store_true", help="skip ISTA agreement")
    p.add_argument("--ista-steps", type=positive_int, default=16)
    p.add_argument("--ista-samples", type=positive_int, default=16)
    p.add_argument("--no-fused", action="store_true", help="eager statistics instead of the compiled fused ones")
    p.add_argument("--explain", action="store_true", help="add feature explanations: top examples, captum attributions")
    p.add_argument("--explain-site", metavar="REGEX", help="site for --explain (default: the last activation site)")
    p.add_argument("--explain-top-k", type=positive_int, default=8, metavar="K", help="features for --explain (default 8)")
    p.add_argument("--out", help="report folder (default: reports/<model>)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report folder")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.errors import DataError
    from sparsezoo.io import atomic_dir, atomic_write_json, atomic_write_text, check_output_folder

    out = Path(args.out or Path("reports") / Path(args.model.removeprefix("hf-hub:")).name)
    check_output_folder(out, args.force)
    if not args.weights_only and not args.data:
        raise DataError("--data is required (or pass --weights-only to analyze the weights alone)")
    if args.batch_size < 4 and not args.no_cka:
        raise DataError("--batch-size must be >= 4 for CKA (or pass --no-cka)")

    import torch

    from analysis.pipeline import analyze
    from analysis.report import build_report, render_html
    from analysis.sites import find_sites
    from sparsezoo.inputs import class_names, sample_loader

    device = "cuda" if torch.cuda.is_available() else "cpu"
    progress = sys.stderr.isatty()
    names = [args.model] + ([args.compare] if args.compare else [])
    built = load_models(args, device)
    if args.activation or args.threshold is not None:  # variants apply to the first model only
        from sparsezoo.activations import replace_activations, threshold_activations

        acts = find_sites(built[0].model)
        if args.activation:
            acts = replace_activations(built[0].model, acts, args.activation)
        if args.threshold is not None:
            threshold_activations(acts, args.threshold)
    loader = labels = None
    if not args.weights_only:
        loader, _, desc, labels = sample_loader(built[0], data_spec(args), args.samples, args.batch_size)
    results = []
    for name, loaded in zip(names, built, strict=True):
        res = analyze(loaded.model, loader, sites=args.sites, max_samples=args.samples, cka=not args.no_cka,
                      ista=not args.no_ista, ista_samples=args.ista_samples, ista_steps=args.ista_steps,
                      fused=not args.no_fused, num_classes=len(labels) if labels else None, device=device,
                      progress=progress)
        if loader is not None:
            res["data"] = desc
        results.append((Path(name).name if Path(name).exists() else name, name, res))
    extra = []
    if args.explain and loader is not None:
        from analysis.interpret import explain, to_json
        from analysis.interpret.render import render_section

        explained = []
        for (label, _, res), loaded in zip(results, built, strict=True):
            text = loaded.task == "text-classification"
            ex = explain(loaded.model, loader, site=args.explain_site or "", features=args.explain_top_k,
                         max_samples=args.samples, tokenizer=loaded.preprocessor if text else None,
                         class_names=class_names(loaded.model), device=device, progress=progress)
            res["explain"] = to_json(ex)
            explained.append((label, ex))
        extra.append(("explain", "Feature explanations", render_section(explained)))
    command = "sparsezoo " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    rep = build_report(results, command)
    page = render_html(rep, extra_sections=extra)

    def fill(tmp: Path) -> None:
        atomic_write_json(tmp / "report.json", rep)
        atomic_write_text(tmp / "report.html", page)

    atomic_dir(out, fill)
    for m in rep["models"]:
        h = m["headline"]
        mu = "n/a" if h["mu_local_mean"] is None else f"{h['mu_local_mean']:.3f}"
        line = f"{m['label']}: {h['layers']} layers, mean local coherence {mu}"
        if "top1" in h:
            line += f"; top-1 {100 * h['top1']:.1f} %, loss {h['loss']:.4f}"
        if "zero_frac_mean_sites" in h:
            near = next((k for k in h if k.startswith("near_zero_frac(abs")), None)
            line += f"; {m['analysis']['samples']} samples, zero_frac {h['zero_frac_mean_sites']:.4f}"
            if near:
                line += f", {near.removesuffix('_mean_sites')} {h[near]:.4f}"
            line += (f" (means over {h['sites']} sites), {h['layers_inside_theorem']}/{h['layers_measured']} layers "
                     "inside the theorem's regime")
        print(line)
    print(f"report: {out / 'report.html'}")
    return 0
