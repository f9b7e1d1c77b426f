"""Cost of the analysis measurements, against a plain evaluation forward in the same process.

Per model (64×64 inputs, batch 64, ``--batches`` batches), interleaved batch by batch (A B C D, then rotated):

- ``plain``: ``model(x)`` under ``torch.no_grad`` (the baseline);
- ``stats_fused``: the same forward with every sort-free per-site statistic (zero_frac, near_zero_frac abs/rel,
  l0_per_position, Hoyer and its histogram, firing counts) in one ``torch.compile``d function per site;
- ``stats_fused_gini``: the same plus the Gini subsample (1 code vector in 64, ``GINI_EVERY``);
- ``stats_eager``: the sort-free statistics without compilation (for reference).

Ratios are medians of per-batch times over the plain forward. The one-off compilation is timed separately
(``compile_warmup_s``). CKA (all site pairs, per batch) and ISTA agreement (16 samples, 16 steps, all layers) are
timed separately, as is the coherence of every layer of resnet50 (weights only). Targets (issue 3): fused
sort-free ≤ 1.25× for resnet18 and resnet50; Gini adds ≤ 0.25×; resnet50 coherence < 10 s.

    python benchmarks/bench_analysis.py            # writes benchmarks/results/analysis-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import timm
import torch

from analysis.collect import run_pass
from analysis.dictionary import coherence
from analysis.layerwise import CKACollector, ista_agreement
from analysis.sites import find_sites
from analysis.sparsity import SparsityMeter


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_model(name: str, batches: int, batch: int, img: int, device: str) -> dict:
    torch.manual_seed(0)
    model = timm.create_model(name).to(device).eval()
    sites = find_sites(model)
    data = [torch.randn(batch, 3, img, img, device=device) for _ in range(batches)]
    meters = {
        "stats_fused": SparsityMeter(model, sites, fused=True, gini_every=0),
        "stats_fused_gini": SparsityMeter(model, sites, fused=True),
        "stats_eager": SparsityMeter(model, sites, fused=False, gini_every=0),
    }

    def forward(x, meter=None):
        if meter is not None:
            meter.attach()
        with torch.no_grad():
            model(x)
        if meter is not None:
            meter.detach()

    warm = {k: timed(lambda m=m: forward(data[0], m)) for k, m in meters.items()}  # includes compilation
    forward(data[0])
    variants = ["plain", *meters]
    times: dict[str, list[float]] = {k: [] for k in variants}
    for i, x in enumerate(data):
        order = variants[i % len(variants):] + variants[: i % len(variants)]
        for k in order:
            times[k].append(timed(lambda k=k, x=x: forward(x, meters.get(k))))
    med = {k: statistics.median(v) for k, v in times.items()}
    cka = CKACollector(model, sites)
    t_cka = timed(lambda: run_pass(model, [(x, None) for x in data[:4]], [cka]))
    t_plain4 = sum(med["plain"] for _ in range(4))
    t_ista = timed(lambda: ista_agreement(model, data[0][:16], sites, steps=16))
    return {
        "model": name, "img_size": img, "batch": batch, "batches": batches, "sites": len(sites),
        "median_batch_s": med,
        "ratio_vs_plain": {k: med[k] / med["plain"] for k in meters},
        "gini_extra_vs_plain": (med["stats_fused_gini"] - med["stats_fused"]) / med["plain"],
        "compile_warmup_s": warm["stats_fused"],
        "cka_all_pairs_4_batches_s": t_cka, "cka_ratio_vs_plain": t_cka / t_plain4,
        "ista_16_samples_16_steps_s": t_ista,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet18", "resnet50", "mobilenetv2_100"])
    p.add_argument("--batches", type=int, default=24)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--img", type=int, default=64)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = []
    for name in a.models:
        r = bench_model(name, a.batches, a.batch, a.img, device)
        results.append(r)
        print(f"{name:>16}  plain {r['median_batch_s']['plain'] * 1e3:7.1f} ms/batch  "
              f"fused {r['ratio_vs_plain']['stats_fused']:.3f}x"
              f"  +gini {r['ratio_vs_plain']['stats_fused_gini']:.3f}x  eager {r['ratio_vs_plain']['stats_eager']:.3f}x"
              f"  CKA {r['cka_ratio_vs_plain']:.2f}x  ISTA {r['ista_16_samples_16_steps_s']:.1f} s", file=sys.stderr)
    r50 = timm.create_model("resnet50").eval()
    coherence(timm.create_model("resnet18").eval())  # warm up kernels
    t_coh = timed(lambda: coherence(r50))
    print(f"resnet50 coherence of all {len(coherence(r50))} layers: {t_coh:.2f} s", file=sys.stderr)
    doc = {"benchmark": "analysis_overhead", "device": device if device == "cuda" else platform.machine(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "targets": {"fused_sort_free_ratio_resnet": 1.25, "gini_extra": 0.25, "resnet50_coherence_s": 10},
           "results": results, "resnet50_coherence_s": t_coh}
    out = Path(a.out or Path(__file__).parent / "results" / f"analysis-{'gpu' if device == 'cuda' else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
