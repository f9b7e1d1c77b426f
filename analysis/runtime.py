"""Process-wide settings for running models on a CPU.

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
