"""The measurements behind docs/recordings.md (issue 12): the level recordings are brought to, and
how well the aligner recovers offsets.

    # the FluidR3 cache's loudness (chose recordings.LOUDNESS_LUFS)
    python benchmarks/recordings.py loudness --cache cache/asap-e630115312
    # the aligner on FluidR3 renders (offset 0 by construction) and on mismatched pairs
    python benchmarks/recordings.py fluidr3 --cache cache/asap-e630115312 [--pieces 12]
    # offsets found by prepare on the stand-in vs the offsets make_standin.py drew
    python benchmarks/recordings.py standin --cache cache/standin-XXXX --standin /work/standin

Each prints one line per piece and a summary.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pianosynth.dataset import Cache


def loudness(cache: Cache) -> None:
    from pianosynth.audio import LoudnessMeter

    values = []
    for piece in cache.pieces:
        _, y = cache.load(piece)
        meter = LoudnessMeter(cache.features.sample_rate)
        for a in range(0, len(y), 1 << 20):
            meter.add(np.asarray(y[a : a + (1 << 20)], np.float32) / 32767)
        values.append(meter.loudness())
        print(f"{piece['file'][:56]:<56} {values[-1]:6.1f} LUFS  peak {20 * np.log10(meter.peak):6.1f} dBFS")
    v = np.array(values)
    print(f"{len(v)} pieces: median {np.median(v):.1f} LUFS, min {v.min():.1f}, max {v.max():.1f}")


def fluidr3(cache: Cache, pieces: int) -> None:
    from pianosynth.recordings import estimate_offset

    chosen = cache.pieces[:: max(1, len(cache.pieces) // pieces)][:pieces]
    data = []
    for piece in chosen:
        _, y = cache.load(piece)
        data.append((piece["file"], np.asarray(y, np.float32) / 32767, cache.load_notes(piece)))
    found, own, other = [], [], []
    for i, (name, y, notes) in enumerate(data):
        al = estimate_offset(y, cache.features.sample_rate, notes[:, 2], notes[:, 1])
        _, y_other, _ = data[(i + 1) % len(data)]
        wrong = estimate_offset(y_other, cache.features.sample_rate, notes[:, 2], notes[:, 1])
        found.append(al.offset_s * 1000)
        own.append(al.score)
        other.append(wrong.score)
        print(f"{name[:56]:<56} offset {al.offset_s * 1000:+6.2f} ms  r {al.score:.3f}  with the next piece's audio: r {wrong.score:.3f}")
    f = np.array(found)
    print(f"{len(f)} FluidR3 renders (true offset 0): found {f.mean():+.2f} ms on average (min {f.min():+.2f}, max {f.max():+.2f});"
          f" r {min(own):.3f} to {max(own):.3f}; mismatched pairs r {min(other):.3f} to {max(other):.3f}")  # fmt: skip


def standin(cache: Cache, folder: Path) -> None:
    errors, drawn_errors, scores = [], [], []
    by_file = {p["file"]: p for p in cache.pieces}
    for truth_path in sorted(folder.rglob("*.truth.json")):
        truth = json.loads(truth_path.read_text())
        piece = by_file.get(truth["file"])
        if piece is None:
            print(f"{truth['file'][:56]:<56} not in the cache (skipped: see its manifest)")
            continue
        err = (piece["offset_s"] - truth["true_offset_s"]) * 1000
        errors.append(err)
        drawn_errors.append((piece["offset_s"] - truth["offset_s"]) * 1000)
        scores.append(piece["alignment"])
        print(f"{truth['file'][:56]:<56} drawn {truth['offset_s'] * 1000:+7.1f} ms  + direct sound {truth['direct_sound_s'] * 1000:4.1f} ms"
              f"  found {piece['offset_s'] * 1000:+7.1f} ms  error {err:+5.1f} ms  r {piece['alignment']:.3f}  gain {piece['gain_db']:+5.1f} dB")  # fmt: skip
    e, d = np.array(errors), np.array(drawn_errors)
    print(f"{len(e)} pieces: error against drawn offset + direct sound: mean {e.mean():+.2f} ms, sd {e.std():.2f}, "
          f"max |error| {np.abs(e).max():.2f} ms; against the drawn offset alone: mean {d.mean():+.2f} ms; "
          f"r {min(scores):.3f} to {max(scores):.3f}")  # fmt: skip
    print(f"skipped: {len(cache.skipped)}" + "".join(f"\n  {s['file']}: {s['reason']}" for s in cache.skipped))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["loudness", "fluidr3", "standin"])
    p.add_argument("--cache", required=True)
    p.add_argument("--pieces", type=int, default=12)
    p.add_argument("--standin", default="/work/standin", help="the stand-in folder (its *.truth.json)")
    args = p.parse_args()
    cache = Cache(args.cache)
    if args.what == "loudness":
        loudness(cache)
    elif args.what == "fluidr3":
        fluidr3(cache, args.pieces)
    else:
        standin(cache, Path(args.standin))


if __name__ == "__main__":
    main()
