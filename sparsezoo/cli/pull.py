"""Download a zoo checkpoint into the Hugging Face cache (or a folder) and verify every file.

Fetches only safetensors weights, configs, tokenizer/processor files, recipe.yaml, metrics.json and the
card; never pickles or code. Each file is checked against the hash the Hub lists for it. Works offline
(HF_HUB_OFFLINE=1) from an earlier pull. Prints the folder.

examples:
  sparsezoo pull myorg/resnet50-l1e-4
  sparsezoo pull myorg/resnet50-l1e-4 --revision v1 --out r50-l1
  HF_HUB_OFFLINE=1 sparsezoo pull myorg/resnet50-l1e-4
"""

from __future__ import annotations

import argparse

HELP = "download and verify a zoo checkpoint from the Hugging Face Hub"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("repo", help="org/name or hf-hub:org/name (org/name@REV also works)")
    p.add_argument("--revision", help="branch, tag or commit (default: main)")
    p.add_argument("--out", help="also copy the files into this folder")
    p.add_argument("--force", action="store_true", help="replace an existing --out folder")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.hub.download import pull

    snap = pull(args.repo, revision=args.revision, out=args.out, force=args.force)
    print(snap.path)
    return 0
