"""Render the model card of a run folder locally (the README.md that `sparsezoo push` uploads).

examples:
  sparsezoo card runs/r50-l1
  sparsezoo card runs/r50-l1 --repo myorg/resnet50-l1e-4 --baseline runs/r50-dense --out model_cards/r50-l1.md
"""

from __future__ import annotations

import argparse
import sys

HELP = "render the model card of a run folder"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("run_dir", metavar="RUN", help="run folder (sparsezoo finetune --out)")
    p.add_argument("--repo", help="Hub repo id the card is for (default: <org>/<run folder name>)")
    p.add_argument("--baseline", metavar="RUN", help="dense run of the same model and data, for the comparison")
    p.add_argument("--license", help="license in the card (default: the base model's, else 'unknown')")
    p.add_argument("--out", help="write the card to this file instead of printing it")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.cards import read_baseline, read_run, render_card
    from sparsezoo.io import atomic_write_text

    info = read_run(args.run_dir)
    baseline = read_baseline(args.baseline, info) if args.baseline else None
    card = render_card(info, args.repo, baseline=baseline, license=args.license)
    if args.out:
        atomic_write_text(args.out, str(card))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(str(card))
    return 0
