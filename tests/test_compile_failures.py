"""The compiled statistics fall back to eager only when compiling is unavailable (analysis.runtime.compile_failure);
out of memory, a bug or any other error propagates, and the compiled path stays on."""

from __future__ import annotations

import logging

import pytest
import torch
from test_graph_stats import same_results
from torch import nn
from torch._dynamo.exc import BackendCompilerFailed, InvalidBackend, TorchRuntimeError, Unsupported
from torch._inductor.exc import CppCompileError, InductorError, InvalidCxxCompiler
from torch.fx.experimental.symbolic_shapes import ConstraintViolationError

import analysis.graph
from analysis.collect import run_pass
from analysis.graph import GraphSparsityMeter
from analysis.runtime import compile_failure, compile_failure_reason
from analysis.sites import find_sites
from analysis.sparsity import SparsityMeter, SparsityStats
from analysis.sparsity import kernels as sparsity

NO_COMPILER = InductorError(InvalidCxxCompiler(), None)  # what Dynamo raises where there is no C++ compiler
OUT_OF_MEMORY_COMPILING = BackendCompilerFailed(lambda *a: None, MemoryError(), None)


def test_only_failures_to_compile_count_as_such():
    for e in (NO_COMPILER, InvalidBackend("nope"), Unsupported("Call to `torch._dynamo.graph_break()`"),
              ConstraintViolationError("Constraints violated (L['x'].size()[0])!"), InvalidCxxCompiler(),
              CppCompileError(["c++", "x.cpp"], "error: x"),
              BackendCompilerFailed(lambda *a: None, InvalidCxxCompiler(), None)):
        assert compile_failure(e), e
    for e in (RuntimeError("boom"), MemoryError(), torch.cuda.OutOfMemoryError("CUDA out of memory"),
              OUT_OF_MEMORY_COMPILING, TorchRuntimeError("RuntimeError when making fake tensor call"),
              ValueError("a bug"), KeyboardInterrupt()):
        assert not compile_failure(e), e
    assert compile_failure_reason(NO_COMPILER).startswith("InvalidCxxCompiler: No working C++ compiler found")
    assert compile_failure_reason(RuntimeError()) == "RuntimeError"


def raising(error: BaseException):
    def compiled(*args):
        raise error

    return compiled


@pytest.fixture
def eager_compiled(monkeypatch):
    """``torch.compile`` of the fused statistics replaced by the eager functions (no seconds of compiling); each
    test puts its own in front of one of them."""
    for fn in (sparsity._accumulate, sparsity._gini_stats, sparsity.gini_values):
        monkeypatch.setitem(sparsity._COMPILED, fn.__name__, fn)
    return sparsity._COMPILED


def _update(st: SparsityStats, a: torch.Tensor) -> SparsityStats:
    st.update(a, 1)
    st.update(a * 0.5, 1, sample_idx=torch.arange(a.shape[0], 2 * a.shape[0]))
    return st


@pytest.mark.parametrize("error", [RuntimeError("boom"), MemoryError(), OUT_OF_MEMORY_COMPILING])
def test_an_error_in_the_fused_statistics_propagates_and_keeps_them_compiled(eager_compiled, monkeypatch, error):
    compiled = raising(error)
    monkeypatch.setitem(eager_compiled, "_accumulate", compiled)
    with pytest.raises(type(error)):
        SparsityStats(fused=True).update(torch.relu(torch.randn(4, 6, 5, 5)), 1)
    assert eager_compiled["_accumulate"] is compiled  # not switched off for the rest of the process


def test_a_failure_to_compile_the_fused_statistics_falls_back_with_the_same_numbers(eager_compiled, monkeypatch,
                                                                                     caplog):
    monkeypatch.setitem(eager_compiled, "_accumulate", raising(NO_COMPILER))
    torch.manual_seed(0)
    a = torch.relu(torch.randn(4, 6, 5, 5) - 0.2)
    with caplog.at_level(logging.WARNING, logger="analysis.sparsity"):
        fused = _update(SparsityStats(fused=True), a)
    assert eager_compiled["_accumulate"] is sparsity._accumulate  # eager from now on: one warning, not one per batch
    assert [r.getMessage() for r in caplog.records] == [
        f"compiled sparsity statistics unavailable ({compile_failure_reason(NO_COMPILER)}); using eager"]
    assert fused.result() == _update(SparsityStats(fused=False), a).result()


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.act1, self.lin2, self.act2 = nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.GELU()

    def forward(self, x):
        return self.act2(self.lin2(self.act1(self.lin1(x))))


def _graph_meter(monkeypatch, compiled) -> tuple[nn.Module, GraphSparsityMeter, list[torch.Tensor]]:
    """A whole-graph meter whose compiled graph is ``compiled`` (it raises), and three batches."""
    monkeypatch.setattr(analysis.graph, "compile_with_hook_guards", lambda fn, **options: compiled)
    torch.manual_seed(0)
    model = Tiny().eval()
    return model, GraphSparsityMeter(model, find_sites(model)), [torch.randn(4, 6) for _ in range(3)]


@pytest.mark.parametrize("error", [RuntimeError("boom"), MemoryError(), OUT_OF_MEMORY_COMPILING])
def test_an_error_in_the_whole_graph_statistics_propagates_and_keeps_the_graph(eager_compiled, monkeypatch, error):
    model, meter, loader = _graph_meter(monkeypatch, raising(error))
    with pytest.raises(type(error)):
        run_pass(model, loader, [meter])
    assert meter.fallback_reason is None and meter._acts is None


def test_a_failure_to_compile_the_whole_graph_falls_back_per_site_with_the_same_numbers(eager_compiled, monkeypatch):
    model, meter, loader = _graph_meter(monkeypatch, raising(NO_COMPILER))
    run_pass(model, loader, [meter])
    assert meter.fallback_reason == compile_failure_reason(NO_COMPILER)
    ref = SparsityMeter(model, find_sites(model), fused=False)
    run_pass(model, loader, [ref])
    same_results(ref.results(), meter.results(), rel=1e-6)  # as a graph break does (test_graph_stats)


@pytest.mark.slow  # Dynamo traces before Inductor looks for the compiler: a few seconds
@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")  # the on-disk caches off: Inductor must compile
def test_without_a_cpp_compiler_the_fused_statistics_fall_back_with_the_same_numbers(monkeypatch):
    import torch._dynamo
    import torch._inductor.config as inductor_config

    monkeypatch.delitem(sparsity._COMPILED, "_accumulate", raising=False)
    monkeypatch.setitem(sparsity._COMPILED, "_gini_stats", sparsity._gini_stats)
    torch._dynamo.reset()
    a = torch.relu(torch.randn(4, 6, 5, 5) - 0.2)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",), "force_disable_caches": True}):
        fused = _update(SparsityStats(fused=True), a)
    assert sparsity._COMPILED["_accumulate"] is sparsity._accumulate
    assert fused.result() == _update(SparsityStats(fused=False), a).result()
    torch._dynamo.reset()
