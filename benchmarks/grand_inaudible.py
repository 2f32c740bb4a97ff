"""What leaving out the grand's inaudible partials saves (``GrandDecoder.inaudible``, issue 19):
the model's synthesis (conditioning and voices, ``PianoSynth.synthesize_voices``) of a generated
piece with every partial and with those below each threshold left out (``--thresholds-db``, dB of
full scale; the default's first), alternating in one process after one warm-up pass each, 1 torch
thread; the share of items left out, and the largest difference from the output with every
partial, relative to its peak.

    python benchmarks/grand_inaudible.py --repeats 4 --thresholds-db -120 -140
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from pianosynth.checkpoint import model_from_checkpoint
from pianosynth.decoders.grand import INAUDIBLE
from pianosynth.examples import generate_piece
from pianosynth.features import compute_features, compute_notes
from pianosynth.synthesize import shipped_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=24, help="of the generated piece, at 96 bpm (24: a minute)")
    parser.add_argument("--repeats", type=int, default=4)
    default_db = 20 * math.log10(INAUDIBLE)
    parser.add_argument("--thresholds-db", type=float, nargs="+", default=[default_db], help=f"(default: the decoder's, {default_db:g})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, cfg = model_from_checkpoint(shipped_models()["grand"])
    dec, fc = model.decoder, cfg.features
    perf = generate_piece(seed=0, bars=args.bars, bpm=96.0)
    x = torch.from_numpy(compute_features(perf, fc))
    notes = np.asarray(compute_notes(perf, fc, len(x) * fc.hop_samples))
    thresholds = [0.0] + [10 ** (db / 20) for db in args.thresholds_db]
    items = dict.fromkeys(thresholds, 0)
    partials = dec._partials

    def counted(tables, amp, *rest):
        items[dec.inaudible] += len(amp)
        return partials(tables, amp, *rest)

    seconds: dict[float, list[float]] = {t: [] for t in thresholds}
    out = {}
    for threshold in thresholds:  # warm-up: the kept tables and kernels, the allocator's pools
        dec.inaudible = threshold
        torch.cat(list(model.synthesize_voices(x, notes, 1875, 125, 15)), dim=-1)
    dec._partials = counted
    for _ in range(args.repeats):
        for threshold in thresholds:
            dec.inaudible = threshold
            start = time.perf_counter()
            out[threshold] = torch.cat(list(model.synthesize_voices(x, notes, 1875, 125, 15)), dim=-1)
            seconds[threshold].append(time.perf_counter() - start)
    every = out[0.0]
    print(f"generated piece of {len(x) / fc.frame_rate:.1f} s, 1 thread, {args.repeats} alternating runs each")
    for threshold, v in seconds.items():
        line = f"  inaudible {threshold:g}" + (f" ({20 * math.log10(threshold):.0f} dB)" if threshold else "")
        line += f": {min(v):.3f} s best, {np.median(v):.3f} s median  {[round(a, 3) for a in v]}"
        if threshold:
            diff = float((out[threshold] - every).abs().max()) / float(every.abs().max())
            line += f"; items left out: {1 - items[threshold] / items[0.0]:.1%}; largest difference {20 * math.log10(max(diff, 1e-30)):.1f} dB of the peak"
        print(line)

if __name__ == "__main__":
    main()
