"""The embedded default: fine-tune ImageNet MobileNetV2 (offline weights) on digits for several λ of the
l1 penalty and print validation accuracy against feature sparsity. Offline, CPU, a few minutes.

example:
  sparsezoo demo --out runs/demo
"""

from __future__ import annotations

import argparse
import sys

HELP = "offline demo: λ sweep of sparse fine-tuning, accuracy vs sparsity table"
RUNS_MODELS = True  # batch after batch: keep freed activation memory (analysis.runtime)


def _lams(text: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from e
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"λ values must be >= 0, got {text!r}")
    return vals


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--out", default="runs/demo", help="folder for the runs and summary (default: runs/demo)")
    p.add_argument("--lams", type=_lams, default=None, help="comma-separated λ values (default: 0,1e-5,1e-4,1e-3)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the recipe's 5)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing demo in --out")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.train.demo import DEFAULT_LAMS, format_table, run_demo

    rows = run_demo(args.out, args.lams or DEFAULT_LAMS, args.epochs, resume=args.resume, force=args.force,
                    progress=sys.stderr.isatty())
    print(format_table(rows))
    print(f"saved {args.out}/summary.json and {args.out}/summary.md")
    return 0
