"""The whole process, start-up included, against FluidSynth on the same MIDI file, side by side;
and the peak memory of ``pianosynth synthesize`` on a long piece.

    python benchmarks/whole_process.py --model src/pianosynth/models/default.pt --minutes 5 --repeats 3
    python benchmarks/whole_process.py --model src/pianosynth/models/default.pt --minutes 60 --repeats 1

Writes a generated piece of about ``--minutes`` minutes (``examples.generate_piece``), or takes
``--midi``, then times, alternately and best of ``--repeats``, the command a user runs,
``pianosynth synthesize piece.mid -o out.wav --model M --threads T``, and FluidSynth rendering
the same file to a WAV file the way ``render.py`` calls it (``fluidsynth -n -i -q -R 0 -C 0 -g 0.2
-r RATE -T wav -F out.wav SF2 piece.mid``). Each is a fresh process; its peak resident memory
comes from ``wait4``. Not a test: timings on a shared machine are noisy, so only numbers measured
in one run are compared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi
from pianosynth.synthesize import default_model_path
from pianosynth.checkpoint import model_from_checkpoint


def run(cmd: list[str]) -> tuple[float, float]:
    """Runs a command; returns (wall seconds, peak RSS in MB)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-500:]}")
    return elapsed, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--midi", default=None, help="a MIDI file instead of the generated piece")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    model_path = str(args.model or default_model_path())
    _, cfg = model_from_checkpoint(model_path)
    exe = shutil.which("pianosynth") or str(Path(sys.executable).parent / "pianosynth")
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(args.midi) if args.midi else Path(tmp) / "piece.mid"
        if not args.midi:
            bars = max(1, round(args.minutes * 60 / (4 * 60 / 96)))  # 96 bpm, 4 beats a bar
            write_midi(generate_piece(seed=0, bars=bars, bpm=96.0), midi)
        ours_cmd = [exe, "synthesize", str(midi), "-o", f"{tmp}/ours.wav", "--model", model_path,
                    "--threads", str(args.threads), "--force"]  # fmt: skip
        theirs_cmd = ["fluidsynth", "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(cfg.render.gain),
                      "-r", str(cfg.features.sample_rate), "-T", "wav", "-F", f"{tmp}/theirs.wav",
                      cfg.render.soundfont, str(midi)]  # fmt: skip
        ours, theirs = [], []
        for _ in range(args.repeats):
            ours.append(run(ours_cmd))
            theirs.append(run(theirs_cmd))
        import soundfile as sf

        seconds = sf.info(f"{tmp}/ours.wav").duration
    o, f = min(t for t, _ in ours), min(t for t, _ in theirs)
    print(f"piece: {midi.name if args.midi else 'generated'}, {seconds / 60:.2f} min at {cfg.features.sample_rate} Hz; "
          f"model {Path(model_path).name} ({cfg.model.decoder}); --threads {args.threads}; best of {args.repeats}")  # fmt: skip
    print(f"pianosynth synthesize (whole process): {o:.2f} s, peak RSS {max(r for _, r in ours):.0f} MB")
    print(f"fluidsynth (whole process):            {f:.2f} s, peak RSS {max(r for _, r in theirs):.0f} MB")
    print(f"time ratio pianosynth/fluidsynth: {o / f:.2f}")


if __name__ == "__main__":
    main()
