"""List the published checkpoints: repos on the Hugging Face Hub tagged `sparsezoo` (anyone's, not only the zoo's
entries: `sparsezoo zoo list` lists those, from the registry), with headline numbers from their cards.

top1: top-1 accuracy on the run's validation data. zero_frac: fraction of exact zeros after the activations,
mean over feature sites (dense: the same for the dense baseline, when the card has one).

examples:
  sparsezoo list
  sparsezoo list --author myorg --json
"""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "list checkpoints published on the Hugging Face Hub with the sparsezoo tag (the registry: zoo list)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--author", help="only repos of this user or organization")
    p.add_argument("--limit", type=int, help="at most this many repos")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def _num(v) -> str:
    return "-" if v is None else f"{v:.4f}"


def format_table(entries) -> str:
    rows = [("repo", "library", "top1", "zero_frac", "dense", "base model")]
    rows += [(e.repo_id, e.library or "-", _num(e.top1), _num(e.sparsity), _num(e.dense_sparsity), e.base_model or "-")
             for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    from sparsezoo.hub.listing import list_published

    entries = list_published(args.author, limit=args.limit)
    if args.json:
        print(json.dumps([dataclasses.asdict(e) for e in entries], indent=2))
    elif entries:
        print(format_table(entries))
    else:
        print("no sparsezoo checkpoints found" + (f" for {args.author}" if args.author else ""))
    return 0
