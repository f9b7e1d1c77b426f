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


def cpu_model() -> str:
    """The CPU's model name as ``lscpu`` prints it (``/proc/cpuinfo``'s ``model name``), else the platform's."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the platform has none): how quiet the machine was."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def interleaved_times(fns: dict[str, Any], repeats: int, iters: int, warmup: int = 2) -> dict[str, list[list[float]]]:
    """Seconds per call of each function in ``fns`` (name → zero-argument callable), run side by side: ``repeats``
    blocks, in each block every function ``iters`` times, the functions' order rotating from block to block, after
    ``warmup`` untimed calls of each. Returns name → one list of call times per block."""
    import time

    for f in fns.values():
        for _ in range(warmup):
            f()
    names = list(fns)
    out: dict[str, list[list[float]]] = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            block = []
            for _ in range(iters):
                t = time.perf_counter()
                fns[k]()
                block.append(time.perf_counter() - t)
            out[k].append(block)
    return out


def ratio_summary(times: dict[str, list[list[float]]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per function of :func:`interleaved_times`: median seconds per call (all blocks), the interquartile range, and
    ``speedup`` = baseline's median ÷ this one's (> 1: faster) with its range over the blocks (block medians); also
    the fastest call (``min_s``) and ``speedup_of_min`` (the baseline's fastest ÷ this one's), which a machine shared
    with other work disturbs least."""
    import statistics

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    base_all = med([t for b in times[baseline] for t in b])
    base_min = min(t for b in times[baseline] for t in b)
    out = {}
    for k, blocks in times.items():
        flat = [t for b in blocks for t in b]
        q = statistics.quantiles(flat, n=4) if len(flat) > 1 else [flat[0]] * 3
        per_block = [med(bb) / med(b) for b, bb in zip(blocks, times[baseline], strict=True)]
        out[k] = {"median_s": med(flat), "iqr_s": q[2] - q[0], "speedup": base_all / med(flat),
                  "speedup_range_over_repeats": [min(per_block), max(per_block)], "min_s": min(flat),
                  "speedup_of_min": base_min / min(flat)}
    return out
