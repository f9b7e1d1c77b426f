"""analysis.runtime.retain_freed_memory: freed tensor memory stays in the process (far fewer page faults per batch)."""

import platform
import subprocess
import sys
from importlib import import_module

import pytest

from sparsezoo.cli import COMMANDS, build_parser, runs_models

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# a forward pass's pattern of allocations: activations of 4-25 MB, each computed from the previous one and freed
_FAULTS = """
import resource, sys, torch
from analysis.runtime import retain_freed_memory
ok = retain_freed_memory() if sys.argv[1] == "retain" else None
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def batch():
    x = torch.ones(64, 32, 32, 32)
    for c in (96, 24, 144, 32, 96):
        x = torch.nn.functional.conv2d(x, torch.ones(c, x.shape[1], 1, 1)).relu_()
for _ in range(3):
    batch()
start = faults()
for _ in range(10):
    batch()
print(ok, faults() - start)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True).stdout
    ok, faults = out.split()
    return ok, int(faults)


@pytest.mark.slow  # an end-to-end subprocess or real-weights run; CI runs it (quick loop <= 120 s)
@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_activation_memory_is_reused_without_page_faults():
    ok, retained = _faults("retain")
    _, default = _faults("default")
    assert ok == "True"
    # glibc's default maps and unmaps each activation, faulting its pages in again every batch (measured here:
    # 583,070 faults over the 10 batches with the default, 92,170 retained)
    assert retained * 3 < default, (retained, default)


def test_only_commands_that_run_models_change_the_allocator():
    runs = {c for c, path in COMMANDS.items() if getattr(import_module(path), "RUNS_MODELS", False)}
    assert runs == {"finetune", "demo", "analyze", "explain", "dsc", "zoo", "compact"}
    parser = build_parser()  # what main() reads
    assert runs_models(parser.parse_args(["analyze", "resnet18"])) and not runs_models(parser.parse_args(["list"]))


def test_runs_models_may_depend_on_the_arguments(monkeypatch):
    import sparsezoo.cli.dsc

    monkeypatch.setattr(sparsezoo.cli.dsc, "RUNS_MODELS", lambda args: args.config == "full")
    parser = build_parser()
    assert runs_models(parser.parse_args(["dsc", "--config", "full"]))
    assert not runs_models(parser.parse_args(["dsc", "--config", "quick"]))


def test_zoo_runs_models_only_to_build():
    parser = build_parser()
    assert runs_models(parser.parse_args(["zoo", "build", "effnet-lite0-mnist"]))
    assert not runs_models(parser.parse_args(["zoo", "list"]))
    assert not runs_models(parser.parse_args(["zoo", "publish", "effnet-lite0-mnist", "--org", "myorg"]))


def test_a_command_called_from_python_leaves_the_allocator_alone(monkeypatch):
    """Only a process that is the command (``main()`` with its own command line) retains freed memory; a
    ``main([...])`` call from Python (tests, a notebook) does not."""
    import analysis.runtime
    import sparsezoo.cli.dsc
    from sparsezoo.cli import main

    calls = []
    monkeypatch.setattr(analysis.runtime, "retain_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(sparsezoo.cli.dsc, "run", lambda args: 0)
    monkeypatch.setenv("MPLBACKEND", "Agg")  # what main() would set; restored after the test
    assert main(["dsc"]) == 0 and calls == []
    monkeypatch.setattr(sys, "argv", ["sparsezoo", "dsc"])
    assert main() == 0 and calls == [1]
