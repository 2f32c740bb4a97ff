"""Freed memory goes back to the system while a long piece renders (issue 21, docs/speed.md).

glibc's ``malloc`` serves a large block from ``mmap`` and unmaps it when it is freed, but after each
such free it raises its mmap threshold to that block's size (up to 32 MiB), so that from then on
blocks of that size come from its heaps and stay resident when freed. The encoder's batches over a
long piece are tens of MiB each, made and freed on several threads: with the dynamic threshold a
59-minute render kept about 180 MB that it no longer used (``benchmarks/render_memory.py``).
``mallopt(M_MMAP_THRESHOLD, …)`` fixes the threshold, which also turns the raising off.

A threshold of 1 MiB everywhere has its own cost: the voices render block after block, each with
temporaries of 1 to 16 MiB, and each one mapped afresh is faulted in page by page again. A
59-minute piece spent 60 s of system time on it, and a 5-minute one 7.5 s (docs/speed.md). So a
render has two stages (``Synth.blocks``): the conditioning's batches (``for_batches``: 1 MiB, each
freed batch goes back) and the voices' blocks (``for_blocks``: under 16 MiB from the heaps, kept
for the next block).

This changes the whole process's allocator, so only pianosynth's own processes call it (the
command line, the page): a program that imports pianosynth keeps its allocator as it is, and can
start Python with ``MALLOC_MMAP_THRESHOLD_=1048576`` in the environment for the batches' effect,
or call ``return_freed_memory`` itself to have both stages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD_BYTES = 1 << 20  # batches: blocks of 1 MiB and more mapped, and unmapped when freed
TRIM_THRESHOLD_BYTES = 128 << 10  # glibc's default: the heap's free top beyond this goes back
BLOCKS_MMAP_THRESHOLD_BYTES = 16 << 20  # blocks: under 16 MiB from the heaps, and reused
BLOCKS_TRIM_THRESHOLD_BYTES = 64 << 20  # and up to 64 MiB of free top kept for the next block

_opted_in = False  # whether this process asked for it (return_freed_memory); stages change nothing otherwise


@functools.cache
def _libc():
    """The C library's ``mallopt`` and ``malloc_trim``, or None off Linux or where it has none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def _thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    """Fixes glibc's mmap and trim thresholds; whether it took both."""
    libc = _libc()
    return libc is not None and libc.mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1 and libc.mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1


def return_freed_memory() -> bool:
    """Puts this process in the batches' stage (``for_batches``) and lets ``for_batches`` and
    ``for_blocks`` change the allocator from then on. Returns whether the allocator took it (False
    off Linux, or where the C library has no ``mallopt``)."""
    global _opted_in
    _opted_in = _thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    return _opted_in


def for_batches() -> bool:
    """Where a render makes large batches, each freed once (the encoder's conditioning of a whole
    piece): blocks of 1 MiB and more are mapped, and unmapped when freed, and what the heaps hold
    free beyond 128 KiB goes back (``malloc_trim``). Nothing unless the process asked
    (``return_freed_memory``). Returns whether it changed the allocator."""
    if not _opted_in:
        return False
    ok = _thresholds(MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES)
    _libc().malloc_trim(0)  # the blocks' free memory, in every arena
    return ok


def for_blocks() -> bool:
    """Where a render makes blocks of a few sizes over and over (the voices, block after block):
    blocks under 16 MiB come from the heaps and are reused, since each block mapped afresh is
    touched page by page again (page faults: 60 s of system time for a 59-minute piece,
    docs/speed.md). Nothing unless the process asked (``return_freed_memory``). Returns whether
    it changed the allocator."""
    return _opted_in and _thresholds(BLOCKS_MMAP_THRESHOLD_BYTES, BLOCKS_TRIM_THRESHOLD_BYTES)


@contextlib.contextmanager
def streaming():
    """``for_blocks`` inside, ``for_batches`` after: for the passes over the mix once the model is
    done (the parts' resampling and sum, the gain applied as the file is written), which read
    and write blocks of one size over and over. In the batches' stage each of their blocks of
    1 MiB and more was mapped afresh and faulted in: the second pass of a 59-minute piece to a
    16-bit WAV took 8.6 s instead of 4.8 s (docs/speed.md, "The second pass paid the batches'
    page faults")."""
    for_blocks()
    try:
        yield
    finally:
        for_batches()
