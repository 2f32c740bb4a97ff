"""Where the model's synthesis spends its time, operator by operator: ``torch.profiler`` over the
shipped grand's ``synthesize_voices`` (conditioning and voices) of a generated piece, 1 torch
thread, after one warm-up pass.

    python benchmarks/synthesis_profile.py [--bars 24] [--rows 25]

Prints the operators by their own CPU time. ``aten::gru`` is the encoder (its total includes
the ``aten::addmm`` of each recurrent step); the rest is the voices. Not a test: on a shared
machine only the shares within one run mean much.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from pianosynth.checkpoint import model_from_checkpoint
from pianosynth.examples import generate_piece
from pianosynth.features import compute_features, compute_notes
from pianosynth.synthesize import shipped_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bars", type=int, default=24, help="of the generated piece, at 96 bpm (24: a minute)")
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    model, cfg = model_from_checkpoint(shipped_models()["grand"])
    fc = cfg.features
    perf = generate_piece(seed=0, bars=args.bars, bpm=96.0)
    x = torch.from_numpy(compute_features(perf, fc))
    notes = np.asarray(compute_notes(perf, fc, len(x) * fc.hop_samples))
    list(model.synthesize_voices(x, notes, 1875, 125, 15))  # warm-up: the kept tables and kernels
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        list(model.synthesize_voices(x, notes, 1875, 125, 15))
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gru = next((e.cpu_time_total for e in events if e.key == "aten::gru"), 0.0)
    print(f"generated piece of {len(x) / fc.frame_rate:.1f} s, 1 thread: {total / 1e6:.3f} s of operator CPU time; "
          f"aten::gru (the encoder) {gru / total:.0%} of it")  # fmt: skip
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
