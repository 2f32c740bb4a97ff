"""Speed of the shipped grand's in-process synthesis, 48 kHz stereo (issue 19's target: >= 200 x
real time with 2 threads), and where its time goes.

    python benchmarks/grand_speed.py [--model grand] [--seconds 60] [--midi FILE] [--threads 1 2] [--repeats 3]

Pieces: a generated one of about ``--seconds`` (``examples.generate_piece``, 96 bpm) and, with
``--midi``, the first ``--seconds`` of that performance (notes cut at that time), both written
to MIDI files first. For each piece and each ``--threads`` count (``torch.set_num_threads`` and
``pianosynth.load(model, threads=...)``), after one warm-up render, the best of ``--repeats``:

- **render**: ``Synth.render`` from the MIDI file to the (channels, samples) array at the
  default loudness: reading, features, note table, conditioning, voices, metering, the gain;
- **stages** of the same render: features and note table from the events, the encoder's
  conditioning (``PianoSynth.conditioning`` as ``Synth.blocks`` calls it) and ``Synth.blocks``
  whole (conditioning and voices: the model's synthesis itself), the voices being the difference.

Printed as seconds and multiples of real time (seconds of audio per second of wall clock), and
as CPU seconds of all the process's threads (``time.process_time``; on a shared machine the
1-thread CPU figures are the steadiest, and the wall clock of 2 threads needs 2 idle cores).
Interpreter start-up, ``import torch`` and loading the model are not timed. Not a test: timings
on a shared machine are noisy; compare rows of one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

import pianosynth
from pianosynth.examples import generate_piece
from pianosynth.features import compute_features, compute_notes
from pianosynth.midi import Note, PedalCurve, Performance, read_midi, write_midi
from pianosynth.synthesize import LONG_PIECE_BATCH_FRAMES, LONG_PIECE_SECONDS, MAX_BATCH_FRAMES


def best_of(fn, repeats: int) -> tuple[float, float]:
    """The least wall-clock seconds and the least CPU seconds (all the process's threads) of
    ``repeats`` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return min(wall), min(cpu)


def cropped(perf: Performance, seconds: float) -> Performance:
    """The notes that start before ``seconds``, released there at the latest, and the pedals' events
    before it."""
    notes = [Note(n.pitch, n.start_s, min(n.end_s, seconds), n.velocity) for n in perf.notes if n.start_s < seconds]
    pedals = {name: PedalCurve(c.times_s[c.times_s < seconds], c.values[c.times_s < seconds]) for name, c in perf.pedals.items()}
    return Performance(notes=notes, pedals=pedals, end_s=min(perf.end_s, seconds))


def measure(model: str, midi: Path, threads: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    synth = pianosynth.load(model, threads=threads)
    fc = synth.config.features
    perf = read_midi(midi)
    synth.render(midi)  # warm-up: first-call costs (allocator, lazy tables) are not the synthesis's
    features_s = best_of(lambda: compute_notes(perf, fc, len(compute_features(perf, fc, quantized=True)) * fc.hop_samples), repeats)
    x = torch.from_numpy(compute_features(perf, fc, quantized=True))
    notes = compute_notes(perf, fc, len(x) * fc.hop_samples) if synth.model.needs_notes else None
    seconds = len(x) * fc.hop_samples / fc.sample_rate
    fr = fc.frame_rate
    chunk, context = round(30.0 * fr), round(2.0 * fr)  # Synth.render's defaults, as Synth.blocks rounds them
    batch = MAX_BATCH_FRAMES if len(x) <= LONG_PIECE_SECONDS * fr else LONG_PIECE_BATCH_FRAMES

    def conditioning():
        torch.set_num_threads(1)  # as Synth.blocks runs it: `threads` workers of one torch thread
        try:
            synth.model.conditioning(x, chunk, context, min(context, max(1, round(0.25 * fr))), batch, threads)
        finally:
            torch.set_num_threads(threads)

    def blocks():
        for _ in synth.blocks(x, notes):
            pass

    cond_s = best_of(conditioning, repeats) if synth.model.needs_notes else (0.0, 0.0)
    blocks_s = best_of(blocks, repeats)
    render_s = best_of(lambda: synth.render(midi), repeats)

    def row(name: str, s: tuple[float, float]) -> None:
        print(f"  {name:44s} {s[0]:8.3f} s {seconds / s[0]:8.1f} x real time   CPU {s[1]:8.3f} s {seconds / s[1]:8.1f} x")

    print(f"{midi.name}: {seconds:.1f} s, {len(perf.notes)} notes; {threads} thread(s); best of {repeats} (wall clock, then CPU time)")
    row("render (MIDI file -> array, default loudness)", render_s)
    row("features and note table", features_s)
    row("conditioning (encoder)", cond_s)
    row("voices (Synth.blocks less the conditioning)", (blocks_s[0] - cond_s[0], blocks_s[1] - cond_s[1]))
    row("Synth.blocks (the model's synthesis)", blocks_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="grand", help="a shipped model's name or a checkpoint")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--midi", type=Path, default=None, help="also the first --seconds of this performance")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        generated = Path(tmp) / "generated.mid"
        write_midi(generate_piece(seed=0, bars=max(1, round(args.seconds / 2.5)), bpm=96.0), generated)  # 2.5 s a bar
        pieces.append(generated)
        if args.midi is not None:
            real = Path(tmp) / f"{args.midi.stem}-{args.seconds:g}s.mid"
            write_midi(cropped(read_midi(args.midi), args.seconds), real)
            pieces.append(real)
        for midi in pieces:
            for threads in args.threads:
                measure(args.model, midi, threads, args.repeats)


if __name__ == "__main__":
    main()
