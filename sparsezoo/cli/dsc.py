"""The deep-sparse-coding theorem, reproduced on synthetic signals x = D₁…D_J Γ_J + e with known codes.

Runs the estimators (layered thresholding = the CNN forward pass, unrolled ISTA with fixed and decaying
thresholds, a learned unrolled network, a plain MLP, other activations, a self-attention variant) over the
config's sweeps (depth K, coherence μ, sparsity s, noise σ, contrast, dictionary family, J = 1 and 2) and
writes into --out:

  results.json   every number (deterministic: the same command gives the same file)
  summary.md     the theorem's claims checked, error vs depth, rates / floors / support per problem
  plots/         error vs depth per sweep, fitted vs predicted rate, support vs sparsity, floor vs noise
  run.json       command line, wall time, versions

examples:
  sparsezoo dsc --config quick --out reports/dsc
  sparsezoo dsc --config full --out reports/dsc-full
  sparsezoo dsc --config quick --sweeps noise,sparsity --set n_test=512 --out reports/dsc-noise
  sparsezoo dsc --config quick --set sweeps.mu.vary.values=[16,64,256,1024] --out reports/dsc-mu
  sparsezoo dsc --config quick --print-config
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HELP = "deep sparse coding lab: error vs depth of unrolled networks against the theory's rate (synthetic data)"
RUNS_MODELS = True  # batch after batch: keep freed activation memory (analysis.runtime)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--config", default="quick", help="named config: quick (< 5 min on a 2-core CPU) or full")
    p.add_argument("--out", default="reports/dsc", help="output folder (default: reports/dsc)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (dotted path, JSON value), e.g. n_test=512; repeatable")
    p.add_argument("--sweeps", help="comma-separated subset of the config's sweeps (default: all)")
    p.add_argument("--seed", type=int, help="base seed (default: the config's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: the config's (quick: cpu, full: auto)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from analysis.dsc.configs import apply_override, get_config
    from analysis.dsc.experiments import run_experiments
    from analysis.dsc.plots import save_plots
    from analysis.dsc.report import summary_markdown
    from sparsezoo.io import atomic_dir, check_output_folder

    config = get_config(args.config)
    for assignment in args.overrides:
        apply_override(config, assignment)
    if args.seed is not None:
        config["seed"] = args.seed
    if args.device is not None:
        config["device"] = args.device
    sweeps = [s.strip() for s in args.sweeps.split(",") if s.strip()] if args.sweeps else None
    if args.print_config:
        print(json.dumps(config, indent=2, ensure_ascii=False))
        return 0
    out = Path(args.out)
    check_output_folder(out, args.force)

    start = time.perf_counter()
    results = run_experiments(config, sweeps, progress=sys.stderr.isatty() and not args.no_progress)
    summary = summary_markdown(results)
    wall = time.perf_counter() - start

    def fill(tmp: Path) -> None:
        import torch

        (tmp / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "summary.md").write_text(summary, encoding="utf-8")
        save_plots(results, tmp / "plots")
        run_info = {"argv": sys.argv[1:], "config": args.config, "overrides": args.overrides, "wall_s": wall,
                    "device": results["device"], "torch": torch.__version__}
        (tmp / "run.json").write_text(json.dumps(run_info, indent=1) + "\n", encoding="utf-8")

    atomic_dir(out, fill)
    for c in results["checks"]:
        print(f"{'ok  ' if c['holds'] else 'FAIL'} {c['claim']}")
    print(f"{len(results['sweeps'])} sweeps in {wall:.1f} s on {results['device']}; saved {out}/results.json, "
          f"{out}/summary.md and {out}/plots/")
    return 0
