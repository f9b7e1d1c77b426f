"""Eager forward time and page faults per batch with glibc's default malloc settings and with
``analysis.runtime.retain_freed_memory``, each in fresh processes (the settings are process-wide).

    python benchmarks/bench_malloc.py              # prints the JSON (--out PATH: writes it there)
    python benchmarks/bench_malloc.py --record     # replaces the recorded benchmarks/results/malloc-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

from _common import add_output_options, emit, output_path

RECORD = "malloc-cpu.json"  # the recorded figures (--record)

_CHILD = """
import resource, statistics, sys, time, json, torch, timm
from analysis.runtime import retain_freed_memory
retained = retain_freed_memory() if sys.argv[1] == "retained" else False
torch.manual_seed(0)
model = timm.create_model(sys.argv[2]).eval()
x = torch.randn(64, 3, 64, 64)
with torch.no_grad():
    for _ in range(3):
        model(x)
    times, start = [], resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(15):
        t = time.perf_counter(); model(x); times.append(time.perf_counter() - t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
print(json.dumps({"retained": retained, "median_s": statistics.median(times), "faults_per_batch": faults / 15}))
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenetv2_100")
    p.add_argument("--processes", type=int, default=3, help="fresh processes per setting, alternated")
    add_output_options(p, RECORD)
    return p.parse_args(argv)


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout)."""
    return output_path(args, RECORD)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out_path = target(a)
    runs: dict[str, list[dict]] = {"default": [], "retained": []}
    root = str(Path(__file__).resolve().parent.parent)
    for _ in range(a.processes):
        for mode in runs:
            out = subprocess.run([sys.executable, "-c", _CHILD, mode, a.model], capture_output=True, text=True,
                                 check=True, cwd=root).stdout
            runs[mode].append(json.loads(out.splitlines()[-1]))
            print(mode, runs[mode][-1], file=sys.stderr)
    doc = {"benchmark": "malloc_eager_forward", "device": platform.machine(), "model": a.model, "batch": 64,
           "img_size": 64, "runs": runs,
           "median_s_range": {m: [min(r["median_s"] for r in v), max(r["median_s"] for r in v)] for m, v in runs.items()},
           "faults_per_batch_range": {m: [min(r["faults_per_batch"] for r in v), max(r["faults_per_batch"] for r in v)]
                                      for m, v in runs.items()},
           "median_of_medians_s": {m: statistics.median(r["median_s"] for r in v) for m, v in runs.items()}}
    print(json.dumps(doc["median_s_range"]), json.dumps(doc["faults_per_batch_range"]), file=sys.stderr)
    emit(doc, out_path)
    return 0

if __name__ == "__main__":
    sys.exit(main())
