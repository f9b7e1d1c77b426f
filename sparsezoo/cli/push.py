"""Publish a finished run folder on the Hugging Face Hub, with its model card, in one commit.

Uploads only the weights (model.safetensors), config.json, tokenizer/processor files, recipe.yaml,
metrics.json and the rendered card (README.md); never checkpoints/ or logs. The commit message names the
recipe. Needs a token with write access (`hf auth login`, or HF_TOKEN). Pushing the same run again only
refreshes the card; a revision that holds another model needs --revision NAME (a new branch) or --force.
Nothing is uploaded unless the run is complete, its weights are intact safetensors holding only finite
numbers, and none of its files is a symbolic link. --dry-run runs these checks and lists each file that would
be uploaded, with its size and sha256, and the rendered card, without a token or the network.

examples:
  sparsezoo push runs/r50-l1 --repo myorg/resnet50-l1e-4 --dry-run
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
    p.add_argument("--dry-run", action="store_true",
                   help="check the run and list what would be uploaded (size, sha256); needs no token or network")


def run(args: argparse.Namespace) -> int:
    from sparsezoo.hub.upload import plan_push, push

    if args.dry_run:
        plan = plan_push(args.run_dir, args.repo, revision=args.revision, baseline=args.baseline,
                         license=args.license)
        print(f"dry run: would push {len(plan.files) - 1} files + README.md to {plan.repo_id}@{plan.revision} "
              "(nothing uploaded; files the Hub already holds unchanged are skipped on a real push)")
        width = max(len(f.name) for f in plan.files)
        for f in plan.files:
            what = f"  (the model card: sparsezoo card {args.run_dir} --repo {plan.repo_id})" if f.path is None else ""
            print(f"{f.name:<{width}}  {f.size:>12} bytes  sha256:{f.sha256}{what}")
        return 0
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
