"""Explain what the features of one site respond to: the most selective features (or given ones), their
top-activating examples (receptive-field crops for images, tokens in context for text), captum attributions of
each feature on each example and of the predicted class; writes report.json and a self-contained report.html.

MODEL is a timm name, hf-hub:org/name, a timm run folder, or a transformers text model (Hub id or save_pretrained
folder). --site is a regex over activation-site names; when several match, the last one (in forward order) is
explained. With --compare, a second model (e.g. the dense original) is explained on the same data and the report
compares attribution concentration and class selectivity, as measured.

examples:
  sparsezoo explain mobilenetv2_100 --weights offline --data digits --img-size 64 --site 'blocks.5.*conv_pwl' --top-k 8
  sparsezoo explain runs/r50-l1 --data digits --site 'layer4.*act3' --top-k 16 --out reports/r50-explain
  sparsezoo explain runs/minilm-l1 --data reviews.csv --site 'encoder.layer.5.*' --top-k 16
"""

from __future__ import annotations

import argparse

from sparsezoo.cli._options import add_data_options, add_model_options, positive_int
from sparsezoo.cli._report import load_inputs, report_folder, save_report

HELP = "show what sparse features respond to: top examples and captum attributions; write an HTML report"
RUNS_MODELS = True  # batch after batch: keep freed activation memory (analysis.runtime)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="timm name, hf-hub:org/name, a run folder, or a transformers model")
    add_model_options(p, "a second model to explain on the same data (e.g. the dense one)")
    add_data_options(p, required=True)
    p.add_argument("--samples", type=positive_int, default=512, help="samples scanned for top examples (default 512)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--site", required=True, metavar="REGEX", help="the site whose features to explain")
    p.add_argument("--top-k", type=positive_int, default=16, metavar="K", help="explain the K most selective features")
    p.add_argument("--features", type=int, nargs="+", metavar="I", help="explain these feature indices instead")
    p.add_argument("--examples", type=positive_int, default=8, help="top examples per feature (default 8)")
    p.add_argument("--method", default="integrated_gradients",
                   help="feature attribution: integrated_gradients (default) | input_x_gradient")
    p.add_argument("--class-method", default="auto",
                   help="class attribution: auto (grad_cam for images, integrated_gradients for text) | grad_cam | "
                        "integrated_gradients | none")
    p.add_argument("--class-layer", help="module name of the Grad-CAM layer (default: the last spatial site)")
    p.add_argument("--n-steps", type=positive_int, default=32, help="integrated-gradients steps (default 32)")
    p.add_argument("--internal-batch-size", type=positive_int, default=64,
                   help="most rows (examples × steps) per forward pass; bounds memory (default 64)")
    p.add_argument("--out", help="report folder (default: reports/<model>-explain)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report folder")


def run(args: argparse.Namespace) -> int:
    out = report_folder(args, "-explain")
    class_method = None if args.class_method == "none" else args.class_method

    from analysis.interpret import ExplainOptions, compare, explain, to_json
    from analysis.interpret.attribute import check_methods
    from analysis.interpret.metrics import ExplainSummary
    from analysis.interpret.render import render_page
    from analysis.report import DELTA_KEY
    from sparsezoo.data.inputs import class_names

    check_methods(args.method, class_method)
    inputs = load_inputs(args)  # the same models and samples as sparsezoo analyze
    first = inputs.models[0]
    options = ExplainOptions(features=args.features or args.top_k, method=args.method, class_method=class_method,
                             examples=args.examples, n_steps=args.n_steps, internal_batch_size=args.internal_batch_size,
                             max_samples=args.samples,
                             tokenizer=first.preprocessor if first.task == "text-classification" else None,
                             class_layer=args.class_layer, device=inputs.device, progress=inputs.progress)
    results = []
    for label, loaded in zip(inputs.labels, inputs.models, strict=True):
        res = explain(loaded.model, inputs.samples.loader, options, site=args.site, class_names=class_names(loaded.model))
        results.append((label, res))
    doc = {"command": inputs.command, "models": [{"label": label, "explain": to_json(res)} for label, res in results]}
    if len(results) == 2:
        doc[DELTA_KEY] = {"subject": results[0][0], "baseline": results[1][0],
                          "summary": compare(results[0][1]["summary"], results[1][1]["summary"])}
    save_report(out, doc, render_page(results, inputs.command))
    for label, res in results:
        s = ExplainSummary.from_json(res["summary"])
        line = (f"{label}: {s.features} features of {res['site']} ({res['channels']}), {res['samples']} samples; "
                f"feature attribution Gini {_num(s.feature_attr_gini_mean)}, "
                f"top-5% mass {_num(s.feature_attr_top5_mass_mean)}")
        if s.feature_delta_rel_median is not None:
            line += f"; IG completeness delta (relative, median) {_num(s.feature_delta_rel_median)}"
        print(line)
    print(f"report: {out / 'report.html'}")
    return 0


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"
