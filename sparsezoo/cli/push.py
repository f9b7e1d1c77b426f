"""Publish a finished run folder on the Hugging Face Hub, with its model card, in one commit.

Uploads only the weights (model.safetensors), config.json, tokenizer/processor files, recipe.yaml,
metrics.json and the rendered card (README.md); never checkpoints/ or logs. The commit message names the
recipe. Needs a token with write access (`hf auth login`, or HF_TOKEN). Pushing the same run again only
refreshes the card; a revision that holds another model needs --revision NAME (a new branch) or --force.

examples:
  sparsezoo push runs/r50-l1 --repo myorg/resnet50-l1e-4
  sparsezoo push runs/r50-l1 --repo myorg/resnet50-l1e-4 --baseline runs/r50-dense --revision v2
  sparsezoo push runs/minilm-l1 --repo myorg/minilm-l1 --private
"""

from __future__ import annotations

import argparse

HELP = "publish a run folder on the Hugging Face Hub with its model card"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("run_dir", metavar="RUN", help="run folder (sparsezoo finetune --out)")
    p.add_argument("--repo", required=True, help="Hub repo id, org/name (created if needed)")
    p.add_argument("--revision", default="main", help="branch to commit to; created from main if new (default: main)")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--force", action="store_true", help="replace another model at --revision")
    p.add_argument("--baseline", metavar="RUN", help="dense run of the same model and data, for the card's comparison")
    p.add_argument("--license", help="license in the card (default: the base model's, else 'unknown')")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.hub import push

    r = push(args.run_dir, args.repo, revision=args.revision, private=args.private, force=args.force,
             baseline=args.baseline, license=args.license)
    if r.unchanged:
        print(f"{r.repo_id}@{r.revision} already holds this run (commit {r.commit[:12]}): {r.url}")
        return 0
    made = "created " if r.created_repo else "new branch " if r.created_branch else ""
    gone = f", deleted {', '.join(r.deleted)}" if r.deleted else ""
    print(f"pushed {len(r.files)} files + README.md to {made}{r.repo_id}@{r.revision} (commit {r.commit[:12]}{gone}): "
          f"{r.url}")
    return 0
