"""What ``estimate_voices`` reads off a stereo cache's train pieces: each key's partials above the
floor, its tuning and inharmonicity, and the levels of its first partials in each channel
(issue 19: partials up to where the reference holds energy within 80 dB of the key's strongest).

    python benchmarks/grand_partials.py CACHE_DIR [--pieces N]

Reads ``pieces/*.audio.npy`` and ``*.notes.npy`` of the train split (from each piece's json), so
it also runs on a cache still being prepared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pianosynth.decoders.common import LOWEST_KEY
from pianosynth.decoders.grand import estimate_voices

NAMES = ("A", "A#", "B", "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--pieces", type=int, default=0, help="at most this many train pieces (0: all)")
    parser.add_argument("--sample-rate", type=int, default=48000)
    args = parser.parse_args()
    records = [json.loads(p.read_text()) for p in sorted((args.cache / "pieces").glob("*.json"))]
    stems = [p.stem for p, r in zip(sorted((args.cache / "pieces").glob("*.json")), records) if r.get("split") == "train"]
    if args.pieces:
        stems = stems[: args.pieces]

    def pieces():
        for stem in stems:
            audio = np.load(args.cache / "pieces" / f"{stem}.audio.npy", mmap_mode="r")
            notes = np.load(args.cache / "pieces" / f"{stem}.notes.npy")
            audio = audio.T if audio.ndim == 2 else audio  # (samples, 2) on disk -> (2, samples)
            yield np.asarray(audio, dtype=np.float32) / 32767.0, notes

    est = estimate_voices(pieces(), args.sample_rate, partials=192)
    print(f"{len(stems)} train pieces of {args.cache.name}; keys with 3+ clean notes: {int((est.used >= 3).sum())} of 88")
    print("key   notes  partials  f0 cents off ET   log10 B   level of partial 1, L/R (dB re full scale at velocity 127)")
    for key in range(88):
        if est.used[key] < 3:
            continue
        midi = key + LOWEST_KEY
        name = f"{NAMES[key % 12]}{(midi - 12) // 12}"
        cents = 1200 * np.log2(est.f0_hz[key] / (440.0 * 2 ** ((midi - 69) / 12)))
        lvl = 20 * np.log10(np.maximum(est.level[key, :, 0], 1e-12))
        print(f"{name:5s} {est.used[key]:5d} {est.count[key]:9d} {cents:16.1f} {np.log10(est.b[key]):9.2f}   "
              f"{lvl[0]:6.1f} / {lvl[-1]:6.1f}")


if __name__ == "__main__":
    main()
