"""Freed memory goes back to the system while a long piece renders (issue 21, docs/speed.md).

glibc's ``malloc`` serves a large block from ``mmap`` and unmaps it when it is freed, but after each
such free it raises its mmap threshold to that block's size (up to 32 MiB), so that from then on
blocks of that size come from its heaps and stay resident when freed. The encoder's batches over a
long piece are tens of MiB each, made and freed on several threads: with the dynamic threshold a
59-minute render kept about 180 MB that it no longer used (``benchmarks/render_memory.py``).
``mallopt(M_MMAP_THRESHOLD, …)`` fixes the threshold, which also turns the raising off.

This changes the whole process's allocator, so only pianosynth's own processes call it (the
command line, the page): a program that imports pianosynth keeps its allocator as it is, and can
start Python with ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment for the same effect.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20  # blocks of 1 MiB and more: mapped, and unmapped when freed


def return_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Fixes glibc's mmap threshold at ``threshold`` bytes for this process. Returns whether the
    allocator took it (False off Linux, or where the C library has no ``mallopt``)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
