"""What the voices decoder relies on, measured on the reference renderer (docs/voices.md):

    python benchmarks/note_clock.py [--cache cache/asap-e630115312]

1. The note clock: single notes rendered by FluidSynth through ``render.py`` at odd times; the
   first non-zero sample against ``features.note_samples`` (which says where the voice starts; its
   first sample is 0).
2. Bit-identical renders: the same key and velocity rendered at two onsets on the block grid give
   the same samples from their onsets on.
3. The sustain pedal: a note released under CC64 values around the threshold, level in 50 ms
   frames (FluidSynth holds at 64 and above).
4. With ``--cache``: the tuning and inharmonicity ``decoders.voices.estimate_partials`` reads off
   the train split, in groups of keys (the SoundFont's sample zones show as runs of equal B).
"""

from __future__ import annotations

import argparse

import numpy as np

from pianosynth.config import FeatureConfig, RenderConfig
from pianosynth.features import event_ticks, note_samples
from pianosynth.midi import Note, PedalCurve, Performance
from pianosynth.render import render

FC, RC = FeatureConfig(sample_rate=16000), RenderConfig()


def levels(perf: Performance, seconds: float = 1.5) -> list[int]:
    y = render(perf, RC, FC, int(seconds * 16000))
    frames = y.reshape(-1, 800)  # 50 ms
    return np.round(20 * np.log10(np.sqrt((frames**2).mean(1)) + 1e-9)).astype(int).tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=None)
    args = parser.parse_args()

    print("1. note clock (16 kHz): t_s, first non-zero sample, note_samples + 1")
    for t in (0.1, 0.1003, 0.1041, 0.2345, 0.5, 0.77777, 1.01, 2.3456):
        y = render(Performance([Note(60, t, t + 0.3, 100)], {}, t + 0.3), RC, FC, int((t + 1) * 16000))
        first = int(np.argmax(np.abs(y) > 0))
        print(f"   {t:<8} {first:>6} {int(note_samples(event_ticks([t]), 16000)[0]) + 1:>6}")

    a, b = 0.1, 0.1 + 64 * 37 / 16000
    ya = render(Performance([Note(60, a, a + 0.5, 90)], {}, a + 0.5), RC, FC, 48000)
    yb = render(Performance([Note(60, b, b + 0.5, 90)], {}, b + 0.5), RC, FC, 48000)
    sa, sb = (int(note_samples(event_ticks([t]), 16000)[0]) for t in (a, b))
    same = np.array_equal(ya[sa : sa + 20000], yb[sb : sb + 20000])
    print(f"2. one note in two renders, starting at samples {sa} and {sb}: 20000 samples bit-identical: {same}")

    print("3. note 0.1-0.3 s, CC64 at 0.2 s then at 0.6 s; level (dB) every 50 ms from 0.2 s")
    plain = levels(Performance([Note(72, 0.1, 0.3, 80)], {}, 1.0))
    print(f"   no pedal       {plain[4:16]}")
    for v1, v2 in ((127, 0), (64, 63), (63, 0)):
        pedal = {"sustain": PedalCurve(np.array([0.2, 0.6]), np.array([v1 / 127, v2 / 127]))}
        print(f"   CC64 {v1:>3} -> {v2:>3} {levels(Performance([Note(72, 0.1, 0.3, 80)], pedal, 1.0))[4:16]}")

    if args.cache:
        from pianosynth.dataset import Cache
        from pianosynth.train import partials_from_cache

        cache = Cache(args.cache)
        pieces = cache.split("train")
        f0, b, _, used = partials_from_cache(cache)
        nominal = 440.0 * 2.0 ** ((np.arange(88) + 21 - 69) / 12.0)
        cents = 1200 * np.log2(f0 / nominal)
        print(f"4. estimate_partials on {len(pieces)} train pieces: {int((used >= 3).sum())} of 88 keys with 3+ notes")
        for lo in range(0, 88, 8):
            keys = range(lo, min(88, lo + 8))
            print(f"   keys {lo:>2}-{lo + 7:<2} cents " + " ".join(f"{cents[k]:+5.1f}" for k in keys)
                  + " | log10 B " + " ".join(f"{np.log10(b[k]):5.2f}" for k in keys))  # fmt: skip


if __name__ == "__main__":
    main()
