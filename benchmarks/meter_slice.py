"""The loudness meter's cost per minute of 48 kHz stereo against the size of the pieces it
K-weights at a time (``audio.LoudnessMeter.SLICE``), fed in the render's own block sizes: 256
frames of 768 samples (196,608 samples) for a piece under 20 minutes, 128 frames (98,304) for a
longer one (``synthesize.BLOCK_FRAMES``). numpy's BLAS on one thread, as a render holds it.

    python benchmarks/meter_slice.py [--repeats 5]

Each setting is run in turn within each repeat (medians printed), so a load on the machine falls
on all alike; the loudness read is printed too, which must not move with the slice. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from pianosynth.audio import LoudnessMeter

SLICES = (None, 1 << 14, 1 << 15, 1 << 16, 1 << 17)  # None: the whole block at once (before)
BLOCKS = (98_304, 196_608)


def meter_seconds(x: np.ndarray, block: int, slice_: int | None) -> tuple[float, float]:
    meter = LoudnessMeter(48000, channels=x.shape[0])
    meter.SLICE = slice_ if slice_ is not None else x.shape[0] * block
    t = time.perf_counter()
    for lo in range(0, x.shape[1], block):
        meter.add(x[:, lo : lo + block])
    return time.perf_counter() - t, meter.loudness()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 60 * 48000))).astype(np.float32)  # a minute of stereo noise
    times: dict[tuple[int, int | None], list[float]] = {}
    lufs: dict[tuple[int, int | None], float] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(args.repeats):
            for block in BLOCKS:
                for slice_ in SLICES:
                    seconds, lufs[block, slice_] = meter_seconds(x, block, slice_)
                    times.setdefault((block, slice_), []).append(seconds)
    print(f"a minute of 48 kHz stereo noise, medians of {args.repeats}")
    print(f"{'render block':>12s} {'slice (numbers)':>16s} {'s per minute':>13s} {'LUFS':>12s}")
    for block in BLOCKS:
        for slice_ in SLICES:
            name = "whole block" if slice_ is None else str(slice_)
            print(f"{block:12d} {name:>16s} {statistics.median(times[block, slice_]):13.3f} {lufs[block, slice_]:12.6f}")


if __name__ == "__main__":
    main()
