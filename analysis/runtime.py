"""Process-wide settings for running models on a CPU, and which failures of ``torch.compile`` mean that compiling is
unavailable here (:func:`compile_failure`).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves big blocks (an activation of a batch)
with ``mmap`` and gives them back to the kernel on ``free`` when they sit above a threshold, and trims the top of
its heap the same way; the thresholds move with the process's history of allocations (glibc raises the mmap
threshold to the size of the largest freed mapped block, up to 32 MiB). A forward pass that allocates and frees the
same activations every batch then page-faults them in again every batch, or not, depending on what the process
ran before. :func:`retain_freed_memory` fixes the thresholds so that freed activation memory stays in the process
and every batch after the first reuses it: ``mobilenetv2_100``'s eval forward (batch 64, 64×64, median of 15
batches, three fresh processes each) took 70-101 ms with 18,400-31,400 page faults per batch by default and
50-51 ms with none retained on this project's 2-core CPU (``python benchmarks/bench_malloc.py``,
``benchmarks/results/malloc-cpu.json``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# the largest mmap threshold glibc accepts on 64-bit hosts (DEFAULT_MMAP_THRESHOLD_MAX): blocks above it are still
# mapped and unmapped per allocation; smaller ones come from the heap
_MMAP_THRESHOLD = 32 * 1024 * 1024
_TRIM_THRESHOLD = 2**31 - 1  # (mallopt takes a C int) 2 GiB: in practice the heap's top is never given back


@functools.cache
def retain_freed_memory() -> bool:
    """Keep memory freed by tensors in the process (glibc's ``mallopt``): blocks up to 32 MiB come from the heap,
    and the heap is not trimmed. Returns whether the settings took (False off glibc, e.g. on macOS or musl).

    A process-wide, one-way setting for processes that run models batch after batch (the CLI's analysis and
    training commands, the benchmarks); never applied at import. The cost is that the process keeps its peak heap
    until it exits.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                          _TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def compile_failure(e: BaseException) -> bool:
    """Whether ``e`` says that ``torch.compile`` cannot compile the code here, so that running it eagerly gives the
    same numbers, only slower: no working C++ compiler (Inductor's ``InvalidCxxCompiler``, ``CppCompileError``; Dynamo
    raises them wrapped in ``BackendCompilerFailed``), an unknown backend (``InvalidBackend``), code Dynamo cannot
    trace as one graph (``Unsupported``, e.g. a graph break under ``fullgraph=True``), or a dimension marked dynamic
    that the code specializes (``ConstraintViolationError``).

    Everything else is an error of the computation itself and must propagate: out of memory (also while compiling:
    ``BackendCompilerFailed`` around a ``MemoryError`` or ``torch.cuda.OutOfMemoryError``), a shape mismatch that eager
    would raise too (``TorchRuntimeError``), an error raised while the compiled code runs, a bug. (An exception the
    traced code itself raises reaches us as ``Unsupported`` under ``fullgraph=True``; a caller falling back runs
    the same code eagerly at once, where it is raised again.)
    """
    import torch
    from torch._dynamo import exc as dynamo_exc
    from torch._inductor import exc as inductor_exc
    from torch.fx.experimental.symbolic_shapes import ConstraintViolationError

    if isinstance(e, dynamo_exc.BackendCompilerFailed):
        return not isinstance(e.inner_exception, (MemoryError, torch.cuda.OutOfMemoryError))
    return isinstance(e, (dynamo_exc.Unsupported, dynamo_exc.InvalidBackend, ConstraintViolationError,
                          inductor_exc.InvalidCxxCompiler, inductor_exc.CppCompileError))


def compile_failure_reason(e: BaseException) -> str:
    """What went wrong, on one short line: the first line of ``e``'s message (of the error it wraps, for a
    ``BackendCompilerFailed``, whose own first line only names the backend) after its type's name."""
    inner = getattr(e, "inner_exception", None)
    err = inner if isinstance(inner, BaseException) else e
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200]}" if text else type(err).__name__
