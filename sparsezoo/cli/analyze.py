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

from sparsezoo.cli.finetune import positive_int

HELP = "measure sparsity, coherence, theory margins and convergence; write an HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("model", help="timm name, hf-hub:org/name, or a folder (e.g. a run folder)")
    p.add_argument("--weights", help="FILE.safetensors, or 'offline' (weights shipped in an installed package)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="random initialization")
    p.add_argument("--compare", metavar="MODEL", help="a second model to analyze side by side (e.g. the dense original)")
    p.add_argument("--compare-weights", help="--weights for the --compare model")
    p.add_argument("--task", choices=["auto", "image-classification", "text-classification"], default="auto",
                   help="for transformers models (default: detected)")
    p.add_argument("--activation", metavar="NAME", help="replace the activations first: relu|relu2|gelu|silu|topk:K")
    p.add_argument("--threshold", type=float, metavar="TAU",
                   help="thresholded activations: y = f(x)·1[|f(x)| > TAU] (turns near-zeros into zeros)")
    p.add_argument("--data", default=None, help="digits | image folder | saved dataset | .csv/.jsonl | Hub dataset id")
    p.add_argument("--image-column")
    p.add_argument("--label-column")
    p.add_argument("--text-column")
    p.add_argument("--text-pair-column")
    p.add_argument("--max-length", type=positive_int, default=128, help="tokens per text (default 128)")
    p.add_argument("--img-size", type=positive_int, help="input size (default: the model's data config)")
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


def _loader(model, args, family: str, task: str, preprocessor):
    """Samples of --data (validation split first, then training), preprocessed for the first model."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader, Subset

    from sparsezoo.recipe import DataSpec

    spec = DataSpec(source=args.data, image_column=args.image_column, label_column=args.label_column,
                    img_size=args.img_size, text_column=args.text_column, text_pair_column=args.text_pair_column,
                    max_length=args.max_length)
    pin = torch.cuda.is_available()
    if task == "text-classification":
        from datasets import concatenate_datasets

        from sparsezoo.text_data import TextCollator, load_text_data

        data = load_text_data(spec)
        both = concatenate_datasets([data.val, data.train])
        n = min(args.samples, len(both))
        return DataLoader(both.select(range(n)), batch_size=args.batch_size, shuffle=False, pin_memory=pin,
                          collate_fn=TextCollator(preprocessor, args.max_length)), n, data.description
    from sparsezoo.data import Transformed, build_transforms, load_image_data

    data = load_image_data(spec)
    collate = None
    if family == "transformers":
        from sparsezoo.tasks import _hf_image_transforms

        _, eval_tf, hw = _hf_image_transforms(preprocessor, args.img_size, "none")
        native = getattr(model.config, "image_size", None)
        extra = {"interpolate_pos_encoding": True} if native and tuple(hw) != (native, native) else {}

        def collate(rows):
            return {"pixel_values": torch.stack([r[0] for r in rows]), **extra}
    else:
        _, eval_tf, _ = build_transforms(model, spec, data)
    both = ConcatDataset([Transformed(data.val, eval_tf), Transformed(data.train, eval_tf)])
    n = min(args.samples, len(both))
    return DataLoader(Subset(both, range(n)), batch_size=args.batch_size, shuffle=False, num_workers=0,
                      pin_memory=pin, collate_fn=collate), n, data.description


def _build(name: str, weights: str | None, args: argparse.Namespace, device: str):
    """(model in eval mode, family, task, tokenizer/processor or None) for one model name."""
    from sparsezoo.hf_models import load_hf_model, model_family, resolve_task
    from sparsezoo.models import create_model, local_model_dir
    from sparsezoo.recipe import ModelSpec

    family = model_family(name)
    if family == "transformers":
        task = resolve_task(name, args.task)
        model, pre = load_hf_model(name, task, None, pretrained=args.pretrained or Path(name).is_dir())
    else:
        # --no-pretrained applies to timm architecture names; a folder or Hub repo *is* its weights
        pretrained = args.pretrained or name.startswith("hf-hub:") or local_model_dir(name) is not None
        model = create_model(ModelSpec(name=name, pretrained=pretrained, weights=weights))
        task, pre = "image-classification", None
    return model.to(device).eval(), family, task, pre


def run(args: argparse.Namespace) -> int:
    from sparsezoo.errors import DataError, OutputExistsError
    from sparsezoo.io import atomic_dir, atomic_write_json, atomic_write_text

    out = Path(args.out or Path("reports") / Path(args.model.removeprefix("hf-hub:")).name)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise OutputExistsError(f"output folder {out} exists; pass --force to overwrite it")
    if not args.weights_only and not args.data:
        raise DataError("--data is required (or pass --weights-only to analyze the weights alone)")
    if args.batch_size < 4 and not args.no_cka:
        raise DataError("--batch-size must be >= 4 for CKA (or pass --no-cka)")

    import torch

    from analysis.analyze import analyze
    from analysis.report import build_report, render_html
    from analysis.sites import find_sites

    device = "cuda" if torch.cuda.is_available() else "cpu"
    progress = sys.stderr.isatty()
    specs = [(args.model, args.weights)] + ([(args.compare, args.compare_weights)] if args.compare else [])
    built = [_build(n, w, args, device) for n, w in specs]
    if args.activation or args.threshold is not None:  # variants apply to the first model only
        from sparsezoo.activations import replace_activations, threshold_activations

        acts = find_sites(built[0][0])
        if args.activation:
            acts = replace_activations(built[0][0], acts, args.activation)
        if args.threshold is not None:
            threshold_activations(acts, args.threshold)
    loader = None
    if not args.weights_only:
        model, family, task, pre = built[0]
        loader, n, desc = _loader(model, args, family, task, pre)
    results = []
    for (name, _), (model, *_rest) in zip(specs, built, strict=True):
        res = analyze(model, loader, sites=args.sites, max_samples=args.samples, cka=not args.no_cka,
                      ista=not args.no_ista, ista_samples=args.ista_samples, ista_steps=args.ista_steps,
                      fused=not args.no_fused, device=device, progress=progress)
        if loader is not None:
            res["data"] = desc
        results.append((Path(name).name if Path(name).exists() else name, name, res))
    extra = []
    if args.explain and loader is not None:
        from analysis.interpret import explain, to_json
        from analysis.interpret.render import render_section

        explained = []
        for (label, _, res), (model, _family, task, pre) in zip(results, built, strict=True):
            ex = explain(model, loader, site=args.explain_site or "", features=args.explain_top_k,
                         max_samples=args.samples, tokenizer=pre if task == "text-classification" else None,
                         device=device, progress=progress)
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
        line = f"{m['label']}: {h['layers']} layers, mean local coherence {h['mu_local_mean']:.3f}"
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
