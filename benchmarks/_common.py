"""What every benchmark script shares: where its JSON goes, and how it is written.

The figures under ``benchmarks/results/`` are the recorded ones the README quotes; a run writes there only when
asked (``--record``), so running a benchmark on another machine never replaces them. By default the JSON goes to
stdout (progress lines go to stderr), or to ``--out PATH``; files are written atomically (complete or not at all).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def add_output_options(p: argparse.ArgumentParser, record_name: str) -> None:
    """``--out PATH`` and ``--record`` (exclusive); ``record_name`` is the committed file's name, for the help."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--out", default=None, help="write the JSON to this file (default: print it to stdout)")
    g.add_argument("--record", action="store_true",
                   help=f"write the recorded figures, benchmarks/results/{record_name} (replaces the committed file)")


def output_path(args: argparse.Namespace, record_name: str) -> Path | None:
    """Where the JSON goes: ``benchmarks/results/<record_name>`` with ``--record``, ``--out``, or None (stdout)."""
    if args.record:
        return RESULTS / record_name
    return Path(args.out) if args.out else None


def emit(doc: Any, path: Path | None) -> None:
    """Print ``doc`` as JSON to stdout (``path`` None), or write it to ``path`` atomically and say so on stderr."""
    from sparsezoo.io import atomic_write_json

    if path is None:
        print(json.dumps(doc, indent=2))
        return
    atomic_write_json(path, doc)
    print(f"wrote {path}", file=sys.stderr)


def cold_compile_cache() -> None:
    """A fresh Inductor cache for this process (unless one is set): a warm on-disk cache would make a second run's
    compilation times meaningless. Call before anything is compiled."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-inductor-")
