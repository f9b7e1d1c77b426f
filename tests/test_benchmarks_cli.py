"""The benchmark scripts never replace the recorded figures (benchmarks/results/*.json) unless asked with --record:
by default they print their JSON to stdout, or write it to --out. Checked on each script's argument parsing (no
benchmark runs), plus one tiny real run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
RESULTS = BENCH / "results"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.name.startswith("_"))
# the committed file each script's --record replaces (on a machine without CUDA, default preset)
RECORDED = {"bench_analysis": "analysis-cpu.json", "bench_explain": "explain-cpu.json",
            "bench_malloc": "malloc-cpu.json", "bench_penalty": "penalty-cpu.json",
            "margins_offline": "margins-offline.json", "bench_sparse_inference": "sparse_inference.json"}


def load(name: str, monkeypatch):
    """Import benchmarks/NAME.py as the scripts see it (benchmarks/ on sys.path), without running it."""
    monkeypatch.syspath_prepend(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def snapshot() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(RESULTS.iterdir())}


def test_every_script_has_a_recorded_file():
    assert SCRIPTS and set(SCRIPTS) == set(RECORDED), "a new benchmark script: add its recorded file to RECORDED"


@pytest.mark.parametrize("name", SCRIPTS)
def test_by_default_a_benchmark_prints_and_writes_nothing_under_results(name, monkeypatch):
    import torch

    if torch.cuda.is_available():
        pytest.skip("the recorded names checked here are the CPU ones")
    mod = load(name, monkeypatch)
    assert mod.target(mod.parse_args([])) is None  # stdout
    assert mod.target(mod.parse_args(["--out", "mine.json"])) == Path("mine.json")
    recorded = mod.target(mod.parse_args(["--record"]))
    assert recorded == RESULTS / RECORDED[name] and recorded.is_file()


@pytest.mark.parametrize("name", SCRIPTS)
def test_out_and_record_exclude_each_other(name, monkeypatch, capsys):
    mod = load(name, monkeypatch)
    with pytest.raises(SystemExit) as e:
        mod.parse_args(["--record", "--out", "x.json"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_the_penalty_presets_record_their_own_files(monkeypatch):
    mod = load("bench_penalty", monkeypatch)
    assert mod.target(mod.parse_args(["--preset", "text", "--record"])) == RESULTS / "penalty-text.json"


def test_emit_prints_json_or_writes_it_whole(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCH))
    from _common import emit

    emit({"a": 1}, None)
    assert json.loads(capsys.readouterr().out) == {"a": 1}
    emit({"b": [1.5]}, tmp_path / "sub" / "r.json")
    assert json.loads((tmp_path / "sub" / "r.json").read_text()) == {"b": [1.5]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["r.json"]  # no temporary file left
    assert "wrote" in capsys.readouterr().err


def test_a_tiny_real_run_prints_its_json_and_leaves_the_results_alone(monkeypatch, capsys):
    import torch

    mod = load("bench_explain", monkeypatch)
    before = snapshot()
    threads = torch.get_num_threads()
    try:
        code = mod.main(["--model", "test_resnet", "--depths", "0.5", "--features", "2", "--examples", "1",
                         "--img-size", "32", "--n-steps", "2", "--internal-batch-size", "2", "--repeats", "1",
                         "--no-text", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["model"] for c in doc["cases"]] == ["test_resnet"] and "record" not in doc["settings"]
    assert snapshot() == before


def test_the_sparse_inference_demo_measures_every_path_and_leaves_the_results_alone(monkeypatch, capsys):
    import torch

    mod = load("bench_sparse_inference", monkeypatch)
    before = snapshot()
    threads = torch.get_num_threads()
    try:
        code = mod.main(["--demo", "--seq-lens", "16", "--batch", "4", "--repeats", "1", "--iters", "1",
                         "--threads", "1", "--no-onnx"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (case,) = doc["results"]
    assert set(case["settings"]) == {"b1_seq16", "b4_seq16"} and doc["threads"] == 1 and doc["cpu"]
    b1 = case["settings"]["b1_seq16"]
    assert {"entry_baseline", "original", "sparse_ffn", "sparse_ffn_union"} <= set(b1["paths"])
    assert b1["max_abs_diff_logits"]["sparse_ffn"] <= 1e-4 * case["max_abs_logit"]
    assert b1["flops"]["ffn"]["nonzero"] < b1["flops"]["ffn"]["dense"] and "sparse_ffn" in b1["ffn_time"]
    assert case["unavailable"]["original_onnx"].startswith("unavailable: ")
    assert case["speedup"] > 0 and snapshot() == before


def test_the_sparse_inference_benchmark_measures_a_run_folder(l1_run, monkeypatch, capsys):
    import torch

    mod = load("bench_sparse_inference", monkeypatch)
    _, folder, _ = l1_run
    threads = torch.get_num_threads()
    try:
        code = mod.main(["--runs", str(folder), "--batch", "4", "--calibration", "8", "--repeats", "1", "--iters", "1",
                         "--threads", "1", "--no-onnx"])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    (case,) = json.loads(capsys.readouterr().out)["results"]
    assert case["run"] == str(folder) and set(case["settings"]) == {"b1", "b4"}
    b4 = case["settings"]["b4"]
    assert b4["batch"] == 4 and b4["flops"]["original"] > 0 and b4["ffn_codes"] is None  # a CNN: no ReLU FFN
    assert "sparse_ffn" not in b4["paths"] and case["fastest_exact_path"] in b4["paths"]
