"""How far above its loudness a piano piece peaks: what a default loudness target can promise.

    python benchmarks/loudness.py --cache cache/asap-e630115312 [--pieces 16]

For every 4th piece of the cache (up to ``--pieces``), the reference render's integrated loudness
(ITU-R BS.1770 with pyloudnorm) and sample peak, and the gap between them. A loudness target T
under a peak ceiling C is reached, without a limiter, by the pieces whose gap is at most C - T:
this chose synthesize's default (-23 LUFS under -1 dBFS).
"""

from __future__ import annotations

import argparse

import numpy as np
import pyloudnorm

from pianosynth.dataset import Cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--pieces", type=int, default=16)
    args = parser.parse_args()
    cache = Cache(args.cache)
    meter = pyloudnorm.Meter(cache.features.sample_rate)
    gaps = []
    for piece in cache.pieces[::4][: args.pieces]:
        _, y = cache.load(piece)
        audio = np.asarray(y, dtype=np.float64) / 32767
        lufs = meter.integrated_loudness(audio)
        peak = 20 * np.log10(np.abs(audio).max())
        gaps.append(peak - lufs)
        print(f"{piece['file'][:48]:<48} {lufs:6.1f} LUFS  peak {peak:6.1f} dBFS  gap {peak - lufs:5.1f} dB")
    gaps = np.array(gaps)
    print(f"gap over {len(gaps)} pieces: median {np.median(gaps):.1f} dB, min {gaps.min():.1f}, max {gaps.max():.1f}")
    for target in (-16.0, -20.0, -23.0):
        print(f"{target:g} LUFS under -1 dBFS: reached by {np.mean(gaps <= -1 - target) * 100:.0f} % of them")


if __name__ == "__main__":
    main()
