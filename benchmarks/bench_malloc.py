"""Eager forward time and page faults per batch with glibc's default malloc settings and with
``analysis.runtime.retain_freed_memory``, each in fresh processes (the settings are process-wide).

    python benchmarks/bench_malloc.py      # writes benchmarks/results/malloc-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenetv2_100")
    p.add_argument("--processes", type=int, default=3, help="fresh processes per setting, alternated")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "malloc-cpu.json"))
    a = p.parse_args(argv)
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
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    print(json.dumps(doc["median_s_range"]), json.dumps(doc["faults_per_batch_range"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
