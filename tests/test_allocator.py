"""The render processes hand freed memory back to the system (allocator.py, issue 21)."""

import subprocess
import sys

import pytest

from pianosynth import allocator, cli

# a child that makes and frees 32 blocks of 8 MiB, each touched, with a smaller block kept after each
# them so that the freed ones cannot fall back to the heap's top; it prints its resident MiB after
CHILD = """
import sys
from pianosynth.allocator import return_freed_memory
if sys.argv[1] == "fixed":
    assert return_freed_memory()
import ctypes
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024
size = 8 << 20
for rounds in range(2):  # the first free raises glibc's threshold; the second round stays in the heap
    blocks, keep = [], []
    for _ in range(32):
        p = libc.malloc(size)
        ctypes.memset(p, 1, size)
        blocks.append(p)
        keep.append(libc.malloc(256 << 10))  # below both thresholds: from the heap, after the block
    for p in blocks:
        libc.free(p)
print(rss())
"""


def resident_after_frees(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=60, check=True)
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_fixed_threshold_returns_freed_blocks_to_the_system():
    default, fixed = resident_after_frees("default"), resident_after_frees("fixed")
    assert fixed < 64, fixed  # the 256 MiB freed is gone
    assert default > fixed + 128, (default, fixed)  # glibc's own threshold keeps most of it


def test_the_render_commands_are_commands_and_set_the_threshold(monkeypatch):
    names = set(cli.build_parser()._subparsers._group_actions[0].choices)
    assert set(cli.RENDER_COMMANDS) <= names
    calls = []
    monkeypatch.setattr(allocator, "return_freed_memory", lambda: calls.append(1) or True)
    cli.main(["synthesize", "no-such-file.mid", "-o", "x.wav"])  # fails on the input, after the threshold
    cli.main(["info", "no-such-cache"])  # not a render: left alone
    assert calls == [1]


# a child that makes, touches and frees a 4 MiB block 64 times in the stage given, and prints its
# minor page faults over the loop
STAGES = """
import resource, sys, ctypes
from pianosynth import allocator
if sys.argv[1] != "none":
    assert allocator.return_freed_memory()
    assert getattr(allocator, "for_" + sys.argv[1])()
else:
    assert not allocator.for_blocks() and not allocator.for_batches()  # not asked: nothing changes
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 4 << 20
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(64):
    p = libc.malloc(size)
    ctypes.memset(p, 1, size)
    libc.free(p)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_in_stage(stage: str) -> int:
    out = subprocess.run([sys.executable, "-c", STAGES, stage], capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_blocks_stage_reuses_what_the_batches_stage_gives_back():
    pages = 64 * (4 << 20) // 4096  # every block faulted in afresh
    batches, blocks = faults_in_stage("batches"), faults_in_stage("blocks")
    assert batches > pages // 2, batches  # each freed block went back, and the next one faulted in again
    assert blocks < pages // 8, blocks  # one block's pages, reused 64 times
    faults_in_stage("none")  # a process that did not ask: the stages are no-ops (asserted in the child)


def test_a_render_switches_from_batches_to_blocks_after_the_conditioning(monkeypatch):
    import torch

    from pianosynth import synthesize

    stages = []
    monkeypatch.setattr(allocator, "for_batches", lambda: stages.append("batches"))
    monkeypatch.setattr(allocator, "for_blocks", lambda: stages.append("blocks"))

    class Model:
        def synthesize(self, x, **kwargs):
            stages.append("conditioning")
            for _ in range(3):
                stages.append("block")
                yield torch.zeros(4)

    synth = synthesize.Synth.__new__(synthesize.Synth)
    synth.model, synth.threads = Model(), 1
    synth.config = type("C", (), {"features": type("F", (), {"frame_rate": 62.5})()})()
    assert len(list(synth.blocks(torch.zeros(10, 1)))) == 3
    assert stages == ["batches", "conditioning", "block", "blocks", "block", "block", "batches"]
