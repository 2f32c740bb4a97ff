"""The voices decoder's conditioning (the encoder over a whole piece) against the encoder's batch
size, side by side in one process, alternating, medians of ``--repeats``: the speed that
``synthesize.LONG_PIECE_BATCH_FRAMES`` trades for memory (docs/speed.md).

    python benchmarks/conditioning_batch.py --minutes 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from pianosynth.examples import generate_piece
from pianosynth.features import compute_features
from pianosynth.midi import write_midi
from pianosynth.synthesize import load, read_performance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--batch-frames", type=int, nargs="+", default=[32768, 16384, 8192])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    midi = Path(tempfile.mkdtemp()) / "piece.mid"
    write_midi(generate_piece(seed=0, bars=max(1, round(args.minutes * 60 / 2.5)), bpm=96.0), midi)
    synth = load("default", threads=args.threads)
    fc = synth.config.features
    x = torch.from_numpy(compute_features(read_performance(midi), fc, quantized=True))
    fr = fc.frame_rate
    seconds: dict[int, list[float]] = {m: [] for m in args.batch_frames}
    for _ in range(args.repeats):
        for m in seconds:
            t = time.perf_counter()
            synth.model.conditioning(x, round(30 * fr), round(2 * fr), round(0.25 * fr), max_batch_frames=m, workers=args.threads)
            seconds[m].append(time.perf_counter() - t)
    print(f"conditioning of a {len(x) / fr / 60:.1f}-minute piece, {args.threads} threads, medians of {args.repeats}")
    for m, v in seconds.items():
        print(f"  batch {m:6d} frames: {statistics.median(v):6.2f} s  {[round(a, 2) for a in v]}")


if __name__ == "__main__":
    main()
