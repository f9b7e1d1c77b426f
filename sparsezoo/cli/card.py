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
    p.add_argument("--repo", help="Hub repo id the card is for (default: <org>/<run folder name>; for a variant of a "
                                  "zoo build, the zoo's ORG/ENTRY-VARIANT)")
    p.add_argument("--baseline", metavar="RUN", help="dense run of the same model and data, for the comparison "
                                                     "(default for a zoo variant: its entry's baseline in the build)")
    p.add_argument("--license", help="license in the card, where the weights' and data's licenses leave it open "
                                     "(default: the most restrictive of the two)")
    p.add_argument("--out", help="write the card to this file instead of printing it")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sparsezoo.hub.cards import read_baseline, read_run, render_card
    from sparsezoo.hub.errors import split_repo
    from sparsezoo.io import atomic_write_text
    from sparsezoo.zoo.entries import registry, variant_of

    repo, baseline_dir = args.repo, args.baseline
    if repo is not None:
        split_repo(repo)  # a bad repo id: one line
    zoo_variant = variant_of(args.run_dir)
    if zoo_variant is not None:
        entry, variant = zoo_variant
        repo = repo or entry.repo_id(variant, registry().org)
        if baseline_dir is None and variant != entry.baseline:
            baseline_dir = str(Path(args.run_dir).parent / entry.baseline)
    info = read_run(args.run_dir)
    baseline = read_baseline(baseline_dir, info) if baseline_dir else None
    card = render_card(info, repo, baseline=baseline, license=args.license)
    if args.out:
        atomic_write_text(args.out, str(card))
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(str(card))
    return 0
