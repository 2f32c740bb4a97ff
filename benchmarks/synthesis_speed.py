"""Synthesis speed of a checkpoint against FluidSynth on the same MIDI, measured side by side.

    python benchmarks/synthesis_speed.py [--model CKPT] [--minutes 5] [--repeats 3]

Writes a generated piece of about ``--minutes`` minutes, then times (best of ``--repeats``)
``pianosynth.synthesize.synthesize_file`` and FluidSynth rendering the same events at the same
sample rate. Prints both as multiples of real time and their ratio. Not a test: timings on a
shared machine are noisy, so only the ratio measured in one run is reported.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pianosynth.examples import generate_piece
from pianosynth.features import n_frames_for
from pianosynth.midi import write_midi
from pianosynth.render import render
from pianosynth.synthesize import default_model_path, synthesize_file
from pianosynth.checkpoint import model_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-seconds", type=float, default=None, help="default: synthesize's default")
    parser.add_argument("--context-seconds", type=float, default=None, help="default: synthesize's default")
    parser.add_argument("--sweep", action="store_true", help="also time the model alone under several chunkings and threadings")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_path = args.model or default_model_path()
    _, cfg = model_from_checkpoint(model_path)
    bars = max(1, round(args.minutes * 60 / (4 * 60 / 96)))  # 96 bpm, 4 beats a bar
    perf = generate_piece(seed=0, bars=bars, bpm=96.0)
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "piece.mid"
        write_midi(perf, midi)
        seconds = n_frames_for(perf, cfg.features) * cfg.features.hop_samples / cfg.features.sample_rate
        ours, theirs = [], []
        for i in range(args.repeats):
            t = time.perf_counter()
            chunking = {k: v for k, v in (("chunk_seconds", args.chunk_seconds), ("context_seconds", args.context_seconds)) if v}
            synthesize_file(midi, Path(tmp) / f"out{i}.wav", model_path=model_path, force=True, **chunking)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            render(perf, cfg.render, cfg.features, int(seconds * cfg.features.sample_rate))
            theirs.append(time.perf_counter() - t)
    o, f = seconds / min(ours), seconds / min(theirs)
    print(f"piece: {seconds / 60:.2f} min at {cfg.features.sample_rate} Hz; model {Path(model_path).name} "
          f"({cfg.model.cell} x{cfg.model.layers}, hidden {cfg.model.hidden}, {cfg.model.decoder}); "
          f"{args.threads} torch thread(s); chunks {args.chunk_seconds or 'default'} s, context "
          f"{args.context_seconds or 'default'} s; best of {args.repeats}")  # fmt: skip
    print(f"pianosynth synthesize: {o:.1f}x real time ({min(ours):.2f} s)")
    print(f"fluidsynth render:     {f:.1f}x real time ({min(theirs):.2f} s)")
    print(f"ratio pianosynth/fluidsynth speed: {o / f:.3f}")
    if args.sweep:
        sweep(model_path, perf, args.threads, seconds)


def sweep(model_path, perf, threads: int, seconds: float) -> None:
    """The model alone (no MIDI parsing, no file), best of 2, under chunkings and threadings:
    torch's own intra-op threads against Python threads that each run one torch thread."""
    from pianosynth.features import compute_features

    model, cfg = model_from_checkpoint(model_path)
    x = torch.from_numpy(compute_features(perf, cfg.features))
    fr = cfg.features.frame_rate
    for torch_threads, workers, chunk_s, context_s in [
        (threads, 1, 16, 4), (threads, 1, 30, 2), (1, threads, 16, 4), (1, threads, 30, 2), (1, 1, 30, 2)
    ]:  # fmt: skip
        torch.set_num_threads(torch_threads)
        times = []
        for _ in range(2):
            t = time.perf_counter()
            for _ in model.synthesize(x, round(chunk_s * fr), round(context_s * fr), 16, workers=workers):
                pass
            times.append(time.perf_counter() - t)
        print(f"model alone, chunks {chunk_s} s, context {context_s} s, {torch_threads} torch thread(s) x "
              f"{workers} worker(s): {min(times):.2f} s = {seconds / min(times):.1f}x real time")  # fmt: skip


if __name__ == "__main__":
    main()
