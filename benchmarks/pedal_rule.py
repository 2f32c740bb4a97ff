"""The grand's pedal rule (issue 19): sfizz holds the dampers off from a pedal value of 1/127, where
FluidSynth waits for 64; what that means for the note tables of a grand cache.

    python benchmarks/pedal_rule.py /work/caches/grand-train-3d65fead83 [--split train]

Prints three things:

- **sfizz's rule, heard.** One C4 (velocity 80, key down 0.5-1.5 s) rendered by sfizz with the
  Salamander grand (``render.render``, as ``prepare`` renders) with the sustain pedal at each of
  0, 1, 10, 30, 63, 64 and 127 from 1.0 s to 3.0 s: the level 2.0-2.5 s (after the key-up, before the
  pedal lifts). Needs pysfizz and the grand's samples (``pianosynth fetch-grand``).
- **How often a performance's pedal sits between the rules**: the share of the time, over the
  split's performances in the cache, that the sustain controller holds a value from 1 to 63.
- **What moves in the note tables**: each note's release under sfizz's rule (the cache's tables,
  ``features.PEDAL_DOWN_FROM``) against FluidSynth's rule on the same clock: the share of notes
  whose release moved, and by how much on average.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pianosynth import features
from pianosynth.dataset import Cache
from pianosynth.features import compute_notes
from pianosynth.midi import Note, PedalCurve, Performance, read_midi


def sfizz_levels(sample_rate: int = 48000) -> None:
    from pianosynth.config import load_config
    from pianosynth.grand import GRAND_OVERRIDES
    from pianosynth.render import close_sfizz, render

    cfg = load_config(None, GRAND_OVERRIDES)
    sr = cfg.features.sample_rate
    try:
        for value in (0, 1, 10, 30, 63, 64, 127):
            pedals = {"sustain": PedalCurve(np.array([1.0, 3.0]), np.array([value / 127, 0.0]))}
            perf = Performance(notes=[Note(pitch=60, start_s=0.5, end_s=1.5, velocity=80)], pedals=pedals, end_s=3.0)
            y = render(perf, cfg.render, cfg.features, 4 * sr).astype(np.float64)
            level = 10 * np.log10(np.mean(y[2 * sr : int(2.5 * sr)] ** 2) + 1e-20)
            print(f"  sustain at {value:3d}/127: {level:7.1f} dBFS at 2.0-2.5 s (key up at 1.5 s, pedal up at 3.0 s)")
    finally:
        close_sfizz()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cache", type=Path, help="a grand cache (prepare --reference grand)")
    parser.add_argument("--split", default="train")
    parser.add_argument("--no-sfizz", action="store_true", help="skip the sfizz renders")
    args = parser.parse_args()
    if not args.no_sfizz:
        print("sfizz, the Salamander grand:")
        sfizz_levels()
    cache = Cache(args.cache)
    fc = cache.features
    between = total = 0.0
    notes = moved = 0
    later_s = 0.0
    for piece in cache.split(args.split):
        perf = read_midi(piece["path"])
        curve = perf.pedals.get("sustain")
        if curve is not None and len(curve.times_s):
            ends = np.append(curve.times_s[1:], max(perf.end_s, curve.times_s[-1]))
            values = np.rint(np.asarray(curve.values) * 127)
            spans = ends - curve.times_s
            between += float(spans[(values >= 1) & (values < 64)].sum())
        total += perf.end_s
        new = cache.load_notes(piece)
        saved = dict(features.PEDAL_DOWN_FROM)
        try:
            features.PEDAL_DOWN_FROM[fc.note_clock] = features.PEDAL_DOWN_FROM["fluidsynth"]
            old = compute_notes(perf, fc, piece["frames"] * fc.hop_samples)
        finally:
            features.PEDAL_DOWN_FROM.update(saved)
        shift = new[:, 3] - old[:, 3]
        notes += len(new)
        moved += int(np.count_nonzero(shift))
        later_s += float(shift[shift > 0].sum()) / fc.sample_rate
    pieces = len(cache.split(args.split))
    print(f"{args.split} split of {args.cache.name}: {pieces} performances, {total / 3600:.2f} h")
    print(f"  sustain pedal between 1 and 63 of 127: {between / total:.1%} of the time")
    print(f"  notes whose release moves under sfizz's rule: {moved} of {notes} ({moved / max(notes, 1):.1%}), "
          f"{later_s / max(moved, 1):.2f} s later on average")  # fmt: skip


if __name__ == "__main__":
    main()
