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
import shlex
import sys
from pathlib import Path

from sparsezoo.cli._options import add_data_options, add_model_options, data_spec, load_models
from sparsezoo.cli.finetune import positive_int

HELP = "show what sparse features respond to: top examples and captum attributions; write an HTML report"


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
    from sparsezoo.io import atomic_dir, atomic_write_json, atomic_write_text, check_output_folder

    out = Path(args.out or Path("reports") / f"{Path(args.model.removeprefix('hf-hub:')).name}-explain")
    check_output_folder(out, args.force)
    class_method = None if args.class_method == "none" else args.class_method

    import torch

    from analysis.interpret import explain, to_json
    from analysis.interpret.attribute import check_methods
    from analysis.interpret.render import render_page
    from sparsezoo.inputs import class_names, sample_loader  # the same models and samples as sparsezoo analyze

    check_methods(args.method, class_method)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    names = [args.model] + ([args.compare] if args.compare else [])
    built = load_models(args, device)
    loader = sample_loader(built[0], data_spec(args), args.samples, args.batch_size).loader
    tokenizer = built[0].preprocessor if built[0].task == "text-classification" else None
    results = []
    for name, loaded in zip(names, built, strict=True):
        model = loaded.model
        res = explain(model, loader, site=args.site, features=args.features or args.top_k, method=args.method,
                      class_method=class_method, examples=args.examples, n_steps=args.n_steps,
                      internal_batch_size=args.internal_batch_size, max_samples=args.samples, tokenizer=tokenizer,
                      class_names=class_names(model), class_layer=args.class_layer, device=device,
                      progress=sys.stderr.isatty())
        results.append((Path(name).name if Path(name).exists() else name, res))
    command = "sparsezoo " + shlex.join(getattr(args, "argv", None) or sys.argv[1:])
    page = render_page(results, command)
    doc = {"command": command, "models": [{"label": label, "explain": to_json(res)} for label, res in results]}
    if len(results) == 2:
        from analysis.interpret import compare

        doc["deltas_subject_minus_baseline"] = {"subject": results[0][0], "baseline": results[1][0],
                                                "summary": compare(results[0][1]["summary"], results[1][1]["summary"])}

    def fill(tmp: Path) -> None:
        atomic_write_json(tmp / "report.json", doc)
        atomic_write_text(tmp / "report.html", page)

    atomic_dir(out, fill)
    for label, res in results:
        s = res["summary"]
        line = (f"{label}: {s['features']} features of {res['site']} ({res['channels']}), {res['samples']} samples; "
                f"feature attribution Gini {_num(s['feature_attr_gini_mean'])}, "
                f"top-5% mass {_num(s['feature_attr_top5_mass_mean'])}")
        if s["feature_delta_rel_median"] is not None:
            line += f"; IG completeness delta (relative, median) {_num(s['feature_delta_rel_median'])}"
        print(line)
    print(f"report: {out / 'report.html'}")
    return 0


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}"
