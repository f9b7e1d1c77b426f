"""Cost of the analysis measurements, against a plain evaluation forward in the same process.

Per model (64×64 inputs, batch 64, ``--batches`` batches), interleaved batch by batch (A B C D, then rotated):

- ``plain``: ``model(x)`` under ``torch.no_grad`` (the baseline);
- ``stats_fused``: the same forward with every sort-free per-site statistic (zero_frac, near_zero_frac abs/rel,
  l0_per_position, Hoyer and its histogram, firing counts) in one ``torch.compile``d function per site;
- ``stats_fused_gini``: the same plus the Gini subsample (1 code vector in 64, ``GINI_EVERY``);
- ``stats_eager``: the sort-free statistics without compilation (for reference);
- ``plain_compiled``: ``torch.compile(model)``, no statistics;
- ``graph`` / ``graph_gini``: :class:`analysis.graph.GraphSparsityMeter`, the forward compiled together with every
  site's statistics (one graph, ``fullgraph=True``), without / with the Gini subsample.

Ratios are medians of per-batch times over the plain (eager) forward; their spread is the range of the ratio over
``--repeats`` passes over the same batches. ``graph_ratio_vs_plain_compiled`` prices the statistics against the
compiled forward instead. The one-off compilations are timed separately (``compile_s``), and
``graph_break_even_batches`` is the number of batches after which the whole graph's longer compilation is paid
back by its lower cost per batch (against the per-site fused path with every statistic). CKA (all site pairs, per
batch) and ISTA agreement (16 samples, 16 steps, all layers) are timed separately, as is the coherence of every
layer of resnet50 (weights only). Targets (issue 14): whole-graph sort-free ≤ 1.10× for resnet18 and resnet50,
≤ 1.30× for mobilenetv2_100; Gini adds ≤ 0.10 / 0.10 / 0.30; resnet50 coherence < 10 s.

    python benchmarks/bench_analysis.py              # prints the JSON (--out PATH: writes it there)
    python benchmarks/bench_analysis.py --record     # replaces the recorded benchmarks/results/analysis-cpu.json
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

from _common import add_output_options, cold_compile_cache, emit, output_path

if __name__ == "__main__":  # before torch is imported (its import fixes the cache folder)
    cold_compile_cache()

import timm  # noqa: E402
import torch  # noqa: E402

from analysis.collect import compile_with_hook_guards, run_pass
from analysis.dictionary import coherence
from analysis.graph import GraphSparsityMeter
from analysis.layerwise import CKACollector, ista_agreement
from analysis.runtime import retain_freed_memory
from analysis.sites import find_sites
from analysis.sparsity import SparsityMeter


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_model(name: str, batches: int, batch: int, img: int, device: str, repeats: int) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name).to(device).eval()
    data = [torch.randn(batch, 3, img, img, device=device) for _ in range(batches)]
    # one copy of the model per variant, hooks attached for the whole run: a compiled graph is traced with the
    # hooks present and never sees them change (attach/detach per batch would recompile it every time)
    copies = {k: copy.deepcopy(model) for k in ("plain_compiled", "stats_fused", "stats_fused_gini", "stats_eager",
                                                  "graph", "graph_gini")}
    sites = find_sites(model)
    on = lambda cls, k, **kw: cls(copies[k], find_sites(copies[k]), **kw)  # noqa: E731
    meters = {"stats_fused": on(SparsityMeter, "stats_fused", fused=True, gini_every=0),
              "stats_fused_gini": on(SparsityMeter, "stats_fused_gini", fused=True),
              "stats_eager": on(SparsityMeter, "stats_eager", fused=False, gini_every=0),
              "graph": on(GraphSparsityMeter, "graph", gini_every=0),
              "graph_gini": on(GraphSparsityMeter, "graph_gini")}
    compiled = compile_with_hook_guards(copies["plain_compiled"])
    runs = {"plain": lambda x: model(x), "plain_compiled": lambda x: compiled(x)}
    for k, m in meters.items():
        m.attach()
        runs[k] = (lambda x, m=m: m.forward(x)) if isinstance(m, GraphSparsityMeter) else (lambda x, k=k: copies[k](x))

    def forward(k, x):
        with torch.no_grad():
            runs[k](x)
        if device == "cuda":
            torch.cuda.synchronize()

    warm = {k: timed(lambda k=k: forward(k, data[0])) for k in runs}  # per-site compilation, graphs' eager batch
    warm.update({k: timed(lambda k=k: forward(k, data[0])) for k in ("graph", "graph_gini")})  # graph compilation
    times: dict[str, list[list[float]]] = {k: [[] for _ in range(repeats)] for k in runs}
    variants = list(runs)
    for r in range(repeats):  # interleaved batch by batch, the order rotated
        for i, x in enumerate(data):
            order = variants[i % len(variants):] + variants[: i % len(variants)]
            for k in order:
                times[k][r].append(timed(lambda k=k, x=x: forward(k, x)))
    med = {k: statistics.median(t for rep in v for t in rep) for k, v in times.items()}
    ratio = {k: med[k] / med["plain"] for k in runs if k != "plain"}
    spread = {k: [min(rs), max(rs)] for k in ratio
              for rs in [[statistics.median(times[k][r]) / statistics.median(times["plain"][r]) for r in range(repeats)]]}
    vs_compiled = {k: med[k] / med["plain_compiled"] for k in ("graph", "graph_gini")}
    saving = med["stats_fused_gini"] - med["graph_gini"]  # per batch, by the graph with every statistic
    compile_extra = warm["graph_gini"] - warm["stats_fused"] - warm["stats_fused_gini"]  # both per-site functions
    for m in meters.values():
        m.detach()
    cka = CKACollector(model, sites)
    t_cka = timed(lambda: run_pass(model, [(x, None) for x in data[:4]], [cka]))
    t_ista = timed(lambda: ista_agreement(model, data[0][:16], sites, steps=16))
    return {
        "model": name, "img_size": img, "batch": batch, "batches": batches, "repeats": repeats, "sites": len(sites),
        "median_batch_s": med, "ratio_vs_plain": ratio, "ratio_range_over_repeats": spread,
        "graph_ratio_vs_plain_compiled": vs_compiled,
        "gini_extra_vs_plain": {"sites": (med["stats_fused_gini"] - med["stats_fused"]) / med["plain"],
                                "graph": (med["graph_gini"] - med["graph"]) / med["plain"]},
        "compile_s": {"sites_fused": warm["stats_fused"], "sites_fused_gini": warm["stats_fused_gini"],
                      "plain_compiled": warm["plain_compiled"], "graph": warm["graph"],
                      "graph_gini": warm["graph_gini"]},
        # batches after which the whole graph has paid for its longer compilation (None: it never does)
        "graph_break_even_batches": compile_extra / saving if saving > 0 else None,
        "cka_all_pairs_4_batches_s": t_cka, "cka_ratio_vs_plain": t_cka / (4 * med["plain"]),
        "ista_16_samples_16_steps_s": t_ista,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenetv2_100"])
    p.add_argument("--batches", type=int, default=24)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--img", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3, help="timing blocks over the same batches (spread)")
    add_output_options(p, "analysis-{cpu,gpu}.json")
    return p.parse_args(argv)


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout); ``--record`` names the recorded file of this device."""
    return output_path(args, f"analysis-{'gpu' if torch.cuda.is_available() else 'cpu'}.json")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = target(a)
    retained = retain_freed_memory()  # no page faults per batch, whatever ran before (analysis.runtime)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    for name in a.models:
        r = bench_model(name, a.batches, a.batch, a.img, device, a.repeats)
        results.append(r)
        rr, sp = r["ratio_vs_plain"], r["ratio_range_over_repeats"]
        cell = lambda k, rr=rr, sp=sp: f"{rr[k]:.3f}x ({sp[k][0]:.2f}-{sp[k][1]:.2f})"  # noqa: E731
        print(f"{name:>16}  plain {r['median_batch_s']['plain'] * 1e3:7.1f} ms/batch  sites fused {cell('stats_fused')}"
              f"  +gini {cell('stats_fused_gini')}  eager {cell('stats_eager')}  graph {cell('graph')}"
              f"  +gini {cell('graph_gini')}  compiled plain {cell('plain_compiled')}"
              f"  graph/compiled plain {r['graph_ratio_vs_plain_compiled']['graph']:.3f}x"
              f"  compile {r['compile_s']['graph_gini']:.0f} s, break-even {r['graph_break_even_batches']} batches"
              f"  CKA {r['cka_ratio_vs_plain']:.2f}x  ISTA {r['ista_16_samples_16_steps_s']:.1f} s", file=sys.stderr)
    r50 = timm.create_model("resnet50").eval()
    coherence(timm.create_model("resnet18").eval())  # warm up kernels
    t_coh = timed(lambda: coherence(r50))
    print(f"resnet50 coherence of all {len(coherence(r50))} layers: {t_coh:.2f} s", file=sys.stderr)
    doc = {"benchmark": "analysis_overhead", "device": device if device == "cuda" else platform.machine(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "malloc_retains_freed_memory": retained,
           "targets": {"graph_sort_free_ratio_resnet": 1.10, "graph_sort_free_ratio_mobilenetv2": 1.30,
                       "gini_extra": {"resnet18": 0.10, "resnet50": 0.10, "mobilenetv2_100": 0.30},
                       "resnet50_coherence_s": 10},
           "results": results, "resnet50_coherence_s": t_coh}
    emit(doc, out)
    return 0

if __name__ == "__main__":
    sys.exit(main())
