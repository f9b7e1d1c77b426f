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
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sparsezoo.cli._options import add_data_options, add_model_options, nonneg_float, positive_int
from sparsezoo.cli._report import ReportInputs, load_inputs, report_folder, save_report

if TYPE_CHECKING:
    from analysis.report import HeadlineFigure

HELP = "measure sparsity, coherence, theory margins and convergence; write an HTML report"
RUNS_MODELS = True  # batch after batch: keep freed activation memory (analysis.runtime)


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

    out = report_folder(args)
    if not args.weights_only and not args.data:
        raise DataError("--data is required (or pass --weights-only to analyze the weights alone)")
    if args.batch_size < 4 and not args.no_cka:
        raise DataError("--batch-size must be >= 4 for CKA (or pass --no-cka)")

    from analysis.report import Report, build_report, render_html

    inputs = load_inputs(args, with_data=not args.weights_only)
    _apply_variants(args, inputs.models[0].model)
    results = _analyze_models(args, inputs)
    extra = [_explain_section(args, inputs, results)] if args.explain and inputs.samples is not None else []
    rep = build_report(results, inputs.command)
    save_report(out, rep, render_html(rep, extra_sections=extra))
    report = Report.from_json(rep)
    for i, m in enumerate(report.models):
        print(f"{m.label}: {headline_line(report.figures, i)}")
    print(f"report: {out / 'report.html'}")
    return 0


def _apply_variants(args: argparse.Namespace, model) -> None:
    """``--activation`` / ``--threshold``: applied to the first model only."""
    if not args.activation and args.threshold is None:
        return
    from analysis.sites import find_sites
    from sparsezoo.models.activations import replace_activations, threshold_activations

    acts = find_sites(model)
    if args.activation:
        acts = replace_activations(model, acts, args.activation)
    if args.threshold is not None:
        threshold_activations(acts, args.threshold)


def _analyze_models(args: argparse.Namespace, inputs: ReportInputs) -> list[tuple[str, str, dict]]:
    """Every analysis of each model over the same samples: ``(label, source, result)`` for the report."""
    from analysis.pipeline import AnalyzeOptions, analyze

    samples = inputs.samples
    loader = samples.loader if samples is not None else None
    options = AnalyzeOptions(sites=args.sites, max_samples=args.samples, cka=not args.no_cka, ista=not args.no_ista,
                             ista_samples=args.ista_samples, ista_steps=args.ista_steps, fused=not args.no_fused,
                             num_classes=len(samples.label_names) if samples else None, device=inputs.device,
                             progress=inputs.progress)
    results = []
    sources = [args.model] + ([args.compare] if args.compare else [])
    for label, name, loaded in zip(inputs.labels, sources, inputs.models, strict=True):
        res = analyze(loaded.model, loader, options)
        if samples is not None:
            res["data"] = samples.description
        results.append((label, name, res))
    return results


def _explain_section(args: argparse.Namespace, inputs: ReportInputs, results: list) -> tuple[str, str, str]:
    """``--explain``: feature explanations of each model, into its analysis and one report section."""
    from analysis.interpret import ExplainOptions, explain, to_json
    from analysis.interpret.render import render_section
    from sparsezoo.data.inputs import class_names

    options = ExplainOptions(features=args.explain_top_k, max_samples=args.samples, device=inputs.device,
                             progress=inputs.progress)
    explained = []
    for (label, _, res), loaded in zip(results, inputs.models, strict=True):
        text = loaded.task == "text-classification"
        ex = explain(loaded.model, inputs.samples.loader, options, site=args.explain_site or "",
                     tokenizer=loaded.preprocessor if text else None, class_names=class_names(loaded.model))
        res["explain"] = to_json(ex)
        explained.append((label, ex))
    return "explain", "Feature explanations", render_section(explained)


def headline_line(figures: Sequence[HeadlineFigure], index: int) -> str:
    """The headline figures of model ``index`` of a report on one line, as the report's first block shows them."""
    from analysis.report import figure_text

    parts = []
    for f in figures:
        value = f.values[index]
        if value is not None:
            of = f" / {f.of[index]}" if f.of is not None else ""
            parts.append(f"{f.label} {figure_text(value, f.unit)}{of}")
    return ", ".join(parts)
