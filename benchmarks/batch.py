"""Batch rendering: N short files in one `pianosynth synthesize` call against N separate calls.

    python benchmarks/batch.py [--files 50] [--bars 2] [--threads 1]

Writes ``--files`` generated pieces of ``--bars`` bars, then times, wall-clock, one call
``pianosynth synthesize DIR --out-dir OUT`` (one process, the model loaded once) and ``--files``
calls ``pianosynth synthesize FILE -o OUT`` one after another (each pays Python, torch and model
start-up). Both use the shipped model and the same options, and the outputs are checked to be
identical. Not a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--bars", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "pianosynth", "synthesize", "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "in").mkdir()
        for i in range(args.files):
            write_midi(generate_piece(seed=i, bars=args.bars), root / "in" / f"p{i:03d}.mid")
        t = time.perf_counter()
        subprocess.run(cmd + [str(root / "in"), "--out-dir", str(root / "batch")], check=True, capture_output=True)
        one_call = time.perf_counter() - t
        t = time.perf_counter()
        for p in sorted((root / "in").glob("*.mid")):
            subprocess.run(cmd + [str(p), "-o", str(root / "single" / f"{p.stem}.wav")], check=True, capture_output=True)
        separate = time.perf_counter() - t
        outs = sorted((root / "batch").glob("*.wav"))
        assert len(outs) == args.files
        for p in outs:
            assert np.array_equal(sf.read(p, dtype="int16")[0], sf.read(root / "single" / p.name, dtype="int16")[0]), p
        audio_s = sum(sf.info(p).duration for p in outs)
    print(f"{args.files} files, {audio_s:.1f} s of audio in all, --threads {args.threads}")
    print(f"one call:        {one_call:7.1f} s ({one_call / args.files:.2f} s per file)")
    print(f"separate calls:  {separate:7.1f} s ({separate / args.files:.2f} s per file)")
    print(f"one call is {separate / one_call:.1f}x faster; the outputs are identical")


if __name__ == "__main__":
    main()
