"""Where a long render's memory goes: resident memory sampled every 50 ms through one
``render_to_file``, and its highest value in each stage of the render.

    python benchmarks/render_memory.py --minutes 59
    python benchmarks/render_memory.py --minutes 59 --model fluidr3           # a shipped model by name
    python benchmarks/render_memory.py --minutes 59 --batch-frames 32768   # the encoder's batch, forced
    python benchmarks/render_memory.py --minutes 59 --glibc-default        # glibc's own mmap threshold
    python benchmarks/render_memory.py --minutes 59 --one-stage            # 1 MiB for the whole render
    python benchmarks/render_memory.py --minutes 59 --block-frames 256     # the voices' blocks, forced
    python benchmarks/render_memory.py --minutes 5 --blas-pool             # numpy's BLAS on its own pool
    python benchmarks/render_memory.py --minutes 59 --mix-in-batches       # the passes over the mix in the batches' stage
    python benchmarks/render_memory.py --minutes 59 --wav16                # a 16-bit WAV (the command line's default) instead of 24-bit FLAC

The process fixes glibc's mmap threshold first, as the command line does (``allocator.py``), unless
``--glibc-default``, and the render switches it from the batches' stage to the blocks' stage when
the voices start, unless ``--one-stage`` (the batches' threshold throughout, as before the
stages). A render holds numpy's BLAS to one thread (``synthesize.one_blas_thread``) unless
``--blas-pool``, which leaves OpenBLAS's pool as the process has it (as before that change). The
passes over the mix after the model (resampling, summing parts, the gain as the file is written)
run in the blocks' stage (``allocator.streaming``) unless ``--mix-in-batches`` (as before). It
prints the render's CPU time, user and system (the system time is mostly page faults), and the
synthesis's and the second pass's own wall, user and system seconds.

Stages: importing torch, loading the model, reading the MIDI, the features, the note table, the
voices decoder's conditioning (the encoder over the whole piece), the synthesis (the model's
blocks into the mix), and the second pass (gain, resampling, writing). A stage's figure is the
highest resident size seen while it ran; ``ru_maxrss`` is the process's peak. Resident memory,
not allocations: freed memory that the allocator keeps counts, as it does for a user.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path


def resident_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=59.0)
    parser.add_argument("--batch-frames", type=int, default=None, help="the encoder's batch for every piece (default: synthesize's choice)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sample-rate", type=int, default=None)
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--glibc-default", action="store_true", help="leave glibc's dynamic mmap threshold as it is")
    parser.add_argument("--one-stage", action="store_true", help="keep the batches' 1 MiB threshold for the whole render")
    parser.add_argument("--block-frames", type=int, default=None, help="the voices' block for every piece (default: synthesize's choice)")
    parser.add_argument("--blas-pool", action="store_true", help="leave numpy's BLAS on its own thread pool during the render")
    parser.add_argument("--mix-in-batches", action="store_true", help="run the passes over the mix in the batches' stage (as before)")
    parser.add_argument("--wav16", action="store_true", help="write a 16-bit WAV instead of a 24-bit FLAC")
    parser.add_argument("--model", default=None, help="a shipped model's name or a checkpoint (default: the shipped default, routed)")
    args = parser.parse_args()
    stage, samples = ["start"], []

    def poll() -> None:
        while True:
            samples.append((resident_mb(), stage[0]))
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True).start()
    if not args.glibc_default:
        from pianosynth.allocator import return_freed_memory

        return_freed_memory()
    import torch  # noqa: F401

    stage[0] = "import torch"
    from pianosynth import allocator, synthesize
    from pianosynth import model as model_module
    from pianosynth.examples import generate_piece
    from pianosynth.midi import write_midi

    if args.batch_frames:
        synthesize.MAX_BATCH_FRAMES = synthesize.LONG_PIECE_BATCH_FRAMES = args.batch_frames
    if args.block_frames:
        synthesize.BLOCK_FRAMES = synthesize.LONG_PIECE_BLOCK_FRAMES = args.block_frames
    if args.one_stage:
        allocator.for_blocks = lambda: False
    if args.mix_in_batches:
        allocator.streaming = contextlib.nullcontext
    if args.blas_pool:
        synthesize.one_blas_thread = contextlib.nullcontext
    tmp = Path(tempfile.mkdtemp())
    write_midi(generate_piece(seed=0, bars=max(1, round(args.minutes * 60 / 2.5)), bpm=96.0), tmp / "piece.mid")
    stage[0] = "load"
    synth = synthesize.load(args.model, threads=args.threads)

    def labelled(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def run(*a, **k):
            before, stage[0] = stage[0], label
            try:
                return fn(*a, **k)
            finally:
                stage[0] = before

        setattr(owner, name, run)

    stage[0] = "render"
    labelled(synthesize, "read_performance", "read MIDI")
    labelled(synthesize, "compute_features", "features")
    labelled(synthesize, "compute_notes", "note table")
    labelled(model_module.PianoSynth, "conditioning", "conditioning")
    blocks = synthesize.Synth.blocks

    marks: dict[str, tuple[float, resource.struct_rusage]] = {}  # when each timed stage began

    def staged_blocks(self, *a, **k):
        stage[0] = "synthesis"
        marks["synthesis"] = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF))
        yield from blocks(self, *a, **k)
        stage[0] = "second pass"
        marks["second pass"] = (time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF))

    synthesize.Synth.blocks = staged_blocks
    t, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    out, bits = (tmp / "out.wav", "16") if args.wav16 else (tmp / "out.flac", "24")
    try:
        result = synth.render_to_file(tmp / "piece.mid", out, sample_rate=args.sample_rate, channels=args.channels, bits=bits)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the piece and its audio (hundreds of MB for an hour)
    elapsed, done = time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF)
    marks["done"] = (time.perf_counter(), done)
    stage[0] = "done"
    time.sleep(0.2)
    highest: dict[str, float] = collections.OrderedDict()
    for mb, name in samples:
        highest[name] = max(highest.get(name, 0.0), mb)
    print(f"{result.seconds / 60:.1f} min at {result.sample_rate} Hz, {result.channels} channel(s), {'16-bit WAV' if args.wav16 else '24-bit FLAC'}, "
          f"rendered in {elapsed:.1f} s ({done.ru_utime - cpu.ru_utime:.1f} s user, {done.ru_stime - cpu.ru_stime:.1f} s system); "
          f"encoder batch {args.batch_frames or 'default'}; voices' block {args.block_frames or 'default'}; mmap threshold "
          f"{'glibc default' if args.glibc_default else 'fixed, one stage' if args.one_stage else 'fixed, two stages (allocator.py)'}; "
          f"numpy's BLAS {'on its own pool' if args.blas_pool else 'on one thread'}; passes over the mix in the "
          f"{'batches' if args.mix_in_batches else 'blocks'}' stage")  # fmt: skip
    for name, mb in highest.items():
        print(f"  {name:14s} {mb:6.0f} MB")
    for name, following in (("synthesis", "second pass"), ("second pass", "done")):
        if name in marks and following in marks:
            (t0, r0), (t1, r1) = marks[name], marks[following]
            print(f"  {name}: {t1 - t0:.2f} s wall, {r1.ru_utime - r0.ru_utime:.2f} s user, {r1.ru_stime - r0.ru_stime:.2f} s system")
    print(f"peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
