"""The model zoo: list its entries, build one (dense baseline + sparse variants + analysis + cards), publish it.

examples:
  sparsezoo zoo list
  sparsezoo zoo build mnv2-elpv                          # resumable; writes zoo/mnv2-elpv and model_cards/
  sparsezoo zoo build mnv2-elpv --variants l1-1e-4 --set train.epochs=1 --set data.max_train_samples=256 \\
      --root /tmp/zoo --cards-dir /tmp/cards             # a reduced build, kept apart from the recorded one
  sparsezoo zoo publish mnv2-elpv --org myorg            # ORG/mnv2-elpv-dense, ORG/mnv2-elpv-l1-1e-4, …
"""

from __future__ import annotations

import argparse
import sys

from sparsezoo.cli._options import positive_int

HELP = "the model zoo's registry: list its entries and numbers, build one (baseline, variants, cards), publish it"


def RUNS_MODELS(args: argparse.Namespace) -> bool:  # noqa: N802 - the attribute sparsezoo.cli reads
    """Only ``build`` runs models batch after batch (keep freed activation memory: analysis.runtime)."""
    return args.zoo_command == "build"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = p.add_subparsers(dest="zoo_command", required=True, metavar="VERB")
    ls = sub.add_parser("list", help="entries and their numbers (where built)")
    ls.add_argument("--root", default="zoo", help="build folder to read results from (default: zoo)")
    ls.add_argument("--cards-dir", help="read the recorded results from this folder's zoo-results.json (default: the "
                    "recorded zoo shipped with sparsezoo)")
    ls.add_argument("--markdown", action="store_true", help="the zoo table as markdown (as in the README)")
    ls.add_argument("--lambda-table", action="store_true",
                    help="the λ scale table as markdown: the variants that differ from their baseline in l1 λ only")
    b = sub.add_parser("build", help="fine-tune, measure and write cards for one entry (resumable)")
    b.add_argument("entry", help="entry name (see `sparsezoo zoo list`)")
    b.add_argument("--variants", nargs="+", metavar="NAME", help="only these variants (the baseline always)")
    b.add_argument("--root", default="zoo", help="build folder (default: zoo)")
    b.add_argument("--cards-dir", default="model_cards",
                   help="where cards, plot and zoo-results.json go (default: model_cards); a reduced build (--set) "
                        "refuses a folder that records this entry under other settings")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe key for every variant (a reduced build), e.g. train.epochs=1")
    b.add_argument("--samples", type=positive_int, default=512, help="samples for the analysis (default 512)")
    pub = sub.add_parser("publish", help="push every variant of a built entry with its card")
    pub.add_argument("entry")
    pub.add_argument("--org", required=True, help="Hub user or organization")
    pub.add_argument("--variants", nargs="+", metavar="NAME")
    pub.add_argument("--root", default="zoo")
    pub.add_argument("--force", action="store_true",
                     help="replace other models at the repos, and publish variants built under another recipe than "
                          "the registry's")
    pub.add_argument("--dry-run", action="store_true", help="check and list what would be uploaded")


def run(args: argparse.Namespace) -> int:
    from sparsezoo import zoo
    from sparsezoo.recipe import overrides_from_sets

    if args.zoo_command == "list":
        items = zoo.list_entries(args.root, args.cards_dir)
        if args.markdown:
            print(zoo.results_table(items))
            seeds = zoo.seeds_table(items)
            if seeds:
                print("\n" + seeds)
            return 0
        if args.lambda_table:
            print(zoo.lambda_table(items))
            return 0
        for it in items:
            print(f"{it.entry}: {it.title}")
            for v in it.variants:
                r = it.results.get(v)
                nums = (f"top-1 {r['top1']:.4f} ({r['recovery_class']}), zero_frac {r['zero_frac']:.3f}" if r
                        else "not built")
                print(f"  {it.entry}:{v:<16} {nums}")
        return 0
    if args.zoo_command == "build":
        progress = sys.stderr.isatty()
        options = zoo.BuildOptions(variants=args.variants, overrides=overrides_from_sets(args.set),
                                   samples=args.samples, cards_dir=args.cards_dir)
        out = zoo.build(args.entry, args.root, options, progress=progress,
                        on_step=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(zoo.results_table([zoo.Listing(args.entry, out["title"], list(out["variants"]), out["variants"])]))
        print(f"results: {args.root}/{args.entry}/results.json; cards: {args.cards_dir}/{args.entry}-*.md")
        return 0
    done = zoo.publish(args.entry, args.org, args.root, variants=args.variants, force=args.force,
                       dry_run=args.dry_run)
    for r in done:
        if args.dry_run:
            print(f"{r.repo_id}: {len(r.files)} files, {sum(f.size for f in r.files):,} bytes")
        else:
            print(f"{r.repo_id}@{r.revision}: {'unchanged' if r.unchanged else 'commit ' + r.commit[:12]} {r.url}")
    return 0
