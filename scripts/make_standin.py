"""Writes the stand-in "recordings" of issue 12: (mid, wav) pairs that sound like a piano recorded
in a room, made without any internet and by no code path of ``render.py``.

For each ASAP performance of the same selection as the FluidR3 cache
(``pianosynth prepare ASAP --max-hours 8``: ``dataset.find_sources`` + ``dataset.select_subset``):

1. Render the performance's events (as ``midi.read_midi`` parses them, the events the features are
   computed from) with FluidSynth and the MuseScore General grand (preset 0), reverb and chorus off,
   at 44.1 kHz. FluidSynth loads only the samples it plays (``synth.dynamic-sample-loading``),
   which saves decoding the whole SF3 for every file.
2. Pass the dry render through a simulated room: a pyroomacoustics image-source shoebox room with a
   piano source and a spaced pair of microphones (stereo). Per file a room size, an RT60 target
   and a microphone distance are drawn (see ``draw_file``); the RT60 that pyroomacoustics measures
   on the impulse response is recorded.
3. Scale to a drawn peak level (-12 to -1 dBFS: recordings come at many levels), add a pink noise
   floor at -72 dBFS RMS, shift the whole recording by a drawn offset of -0.3 to +0.3 s (positive:
   the audio starts later than the MIDI says, the head filled with the noise floor; negative: the
   recording's first part is cut off), and write 16-bit stereo WAV at 44.1 kHz.

Output folder::

    OUT/<ASAP path>.mid        a copy of the performance MIDI
    OUT/<ASAP path>.wav        the stand-in recording
    OUT/<ASAP path>.truth.json what was drawn for it: offset, room, RT60, level (the true offset
                               lets docs/recordings.md measure the aligner's error)
    OUT/splits.csv             the selected rows of ASAP's splits.csv, so that prepare keeps the
                               same train/valid/test split
    OUT/standin.json           every file's truth, written last

Every draw is a pure function of ``--seed`` and the file's path, so a file is the same whenever it
is made; finished files are kept on a rerun (resume). Usage::

    OMP_NUM_THREADS=1 nice -n 10 python scripts/make_standin.py ../shared/data/asap /work/standin --max-hours 8 --jobs 2
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MUSESCORE = "/usr/share/sounds/sf3/MuseScore_General.sf3"
SAMPLE_RATE = 44100
TAIL_SECONDS = 3.0  # rendered (and kept) after the MIDI's last event: the recording runs on a little
MAX_OFFSET_S = 0.3
RT60_TARGET_RANGE = (0.45, 0.75)  # Sabine targets; the image-source RIRs measure ~0.6 to ~1.0 s
PEAK_DBFS_RANGE = (-12.0, -1.0)
NOISE_DBFS = -72.0  # RMS of the pink noise floor
SPEED_OF_SOUND = 343.0
VERSION = 1  # bump when a draw or a step changes


def draw_file(rel: str, seed: int) -> dict:
    """Everything random about one file, from ``seed`` and its path alone."""
    key = int(hashlib.sha1(f"standin:{seed}:{rel}".encode()).hexdigest()[:16], 16)
    rng = np.random.default_rng(key)
    room = [float(rng.uniform(8, 14)), float(rng.uniform(6, 10)), float(rng.uniform(3.5, 6))]
    source = [0.3 * room[0], 0.5 * room[1], 1.0]  # the piano's soundboard
    distance = float(rng.uniform(2.0, 4.0))  # microphones in front of the piano
    spacing = 0.4  # spaced pair (A-B stereo)
    mics = [[source[0] + distance, source[1] + s * spacing / 2, 1.6] for s in (-1, 1)]
    return {
        "offset_s": float(rng.uniform(-MAX_OFFSET_S, MAX_OFFSET_S)),
        "room_m": room,
        "source_m": source,
        "mics_m": mics,
        "rt60_target_s": float(rng.uniform(*RT60_TARGET_RANGE)),
        "peak_dbfs": float(rng.uniform(*PEAK_DBFS_RANGE)),
        "noise_dbfs": NOISE_DBFS,
        "noise_seed": int(rng.integers(2**31)),
    }


def render_dry(midi_path: Path, n_samples: int) -> np.ndarray:
    """The MuseScore grand's dry render of the file's parsed events -> (n_samples,) float32 mono."""
    import soundfile as sf

    from pianosynth.midi import read_midi, write_midi
    from pianosynth.render import run_bounded

    perf = read_midi(midi_path)
    with tempfile.TemporaryDirectory(prefix="standin-") as tmp:
        events, wav = Path(tmp) / "events.mid", Path(tmp) / "dry.wav"
        write_midi(perf, events, program=0, bank=0)
        cmd = [
            shutil.which("fluidsynth"), "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", "0.2",
            "-o", "synth.dynamic-sample-loading=1",
            "-r", str(SAMPLE_RATE), "-O", "float", "-T", "wav", "-F", str(wav), MUSESCORE, str(events),
        ]  # fmt: skip
        rc = run_bounded(cmd, wav, Path(tmp) / "log.txt", max_bytes=16 * (n_samples + 120 * SAMPLE_RATE), max_seconds=3600)
        if rc != 0 or not wav.is_file():
            raise RuntimeError(f"{midi_path}: fluidsynth failed ({(Path(tmp) / 'log.txt').read_text()[-300:]})")
        audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    assert sr == SAMPLE_RATE
    out = np.zeros(n_samples, np.float32)
    mono = audio.mean(axis=1)[:n_samples]
    out[: len(mono)] = mono
    return out


def room_impulse_responses(draw: dict) -> tuple[np.ndarray, float, float]:
    """-> (2, taps) float RIRs, the RT60 pyroomacoustics measures on them, and the time of the
    direct sound in them (propagation plus the image-source method's fractional-delay filter)."""
    import pyroomacoustics as pra

    e_abs, max_order = pra.inverse_sabine(draw["rt60_target_s"], draw["room_m"])
    room = pra.ShoeBox(draw["room_m"], fs=SAMPLE_RATE, materials=pra.Material(e_abs), max_order=max_order)
    room.add_source(draw["source_m"])
    room.add_microphone_array(np.array(draw["mics_m"]).T)
    room.compute_rir()
    taps = max(len(room.rir[m][0]) for m in range(2))
    rir = np.zeros((2, taps))
    for m in range(2):
        rir[m, : len(room.rir[m][0])] = room.rir[m][0]
    rt60 = float(np.mean(room.measure_rt60()))
    direct_s = float(np.mean([np.argmax(np.abs(r)) for r in rir])) / SAMPLE_RATE
    return rir, rt60, direct_s


def pink_noise(n: int, channels: int, rms: float, seed: int) -> np.ndarray:
    """(channels, n) float32 noise with a roughly 1/f power spectrum, scaled to ``rms``: white noise
    through the three-pole pinking filter of J. O. Smith's "Spectral Audio Signal Processing"
    (its pink-noise example); measured -3.0 to -3.5 dB per octave from 50 Hz to 13 kHz."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    white = rng.standard_normal((channels, n), dtype=np.float32)
    b = np.array([0.049922035, -0.095993537, 0.050612699, -0.004408786])
    a = np.array([1, -2.494956002, 2.017265875, -0.522189400])
    noise = lfilter(b, a, white, axis=1).astype(np.float32)
    return noise * np.float32(rms / np.sqrt(np.mean(np.square(noise, dtype=np.float64))))


def make_one(src_path: Path, rel: str, out_dir: Path, seed: int) -> dict:
    import soundfile as sf
    from scipy.signal import oaconvolve

    from pianosynth.fileio import atomic_write
    from pianosynth.midi import read_midi

    wav_path = (out_dir / rel).with_suffix(".wav")
    truth_path = (out_dir / rel).with_suffix(".truth.json")
    if truth_path.is_file() and wav_path.is_file():
        return json.loads(truth_path.read_text())
    t0 = time.perf_counter()
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    draw = draw_file(rel, seed)
    perf = read_midi(src_path)
    n = int(round((perf.end_s + TAIL_SECONDS) * SAMPLE_RATE))
    dry = render_dry(src_path, n)
    rir, rt60, direct_s = room_impulse_responses(draw)
    wet = np.stack([oaconvolve(dry, r.astype(np.float32))[:n] for r in rir])  # (2, n) float32: the room's tail past n is cut
    shift = int(round(draw["offset_s"] * SAMPLE_RATE))
    if shift >= 0:  # the recording starts late: its head is room tone only
        wet = np.concatenate([np.zeros((2, shift), np.float32), wet], axis=1)
    else:  # the recording started after the performance did: its first part is lost
        wet = wet[:, -shift:]
    fade = min(wet.shape[1], SAMPLE_RATE // 2)
    wet[:, -fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    wet *= np.float32(10 ** (draw["peak_dbfs"] / 20) / max(float(np.abs(wet).max()), 1e-9))
    wet += pink_noise(wet.shape[1], 2, 10 ** (NOISE_DBFS / 20), draw["noise_seed"])
    atomic_write(wav_path, lambda tmp: sf.write(str(tmp), wet.T, SAMPLE_RATE, subtype="PCM_16", format="WAV"))
    shutil.copyfile(src_path, (out_dir / rel).with_suffix(src_path.suffix))
    truth = {
        "file": rel,
        "version": VERSION,
        "seed": seed,
        **draw,
        "rt60_measured_s": rt60,
        "direct_sound_s": direct_s,
        # where the MIDI's time 0 falls in the recording: the drawn offset plus the direct sound's
        # arrival (what an aligner should find, up to the samples' own attack)
        "true_offset_s": draw["offset_s"] + direct_s,
        "midi_end_s": perf.end_s,
        "seconds": wet.shape[1] / SAMPLE_RATE,
        "sample_rate": SAMPLE_RATE,
        "channels": 2,
        "make_seconds": time.perf_counter() - t0,
    }
    atomic_write(truth_path, lambda tmp: tmp.write_text(json.dumps(truth, indent=1)))
    return truth


def _worker(args: tuple) -> dict:
    return make_one(*args)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("asap", help="the ASAP folder (with its splits.csv)")
    p.add_argument("out", help="folder for the (mid, wav) pairs")
    p.add_argument("--max-hours", type=float, default=8.0, help="the selection of prepare --max-hours")
    p.add_argument("--limit", type=int, default=None, help="the selection of prepare --limit")
    p.add_argument("--seed", type=int, default=0, help="seed of every draw")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    args = p.parse_args(argv)

    from pianosynth.dataset import find_sources, select_subset
    from pianosynth.fileio import atomic_write

    asap, out = Path(args.asap), Path(args.out)
    if shutil.which("fluidsynth") is None or not Path(MUSESCORE).is_file():
        print(f"error: needs fluidsynth and {MUSESCORE}", file=sys.stderr)
        return 1
    try:
        sources = select_subset(find_sources(asap), limit=args.limit, max_hours=args.max_hours)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    chosen = {s.rel for s in sources}
    with open(asap / "splits.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if r["performance_midi"] in chosen]
        fields = reader.fieldnames

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(out / "splits.csv", write_csv)
    print(f"{len(sources)} file(s), {sum(s.seconds or 0 for s in sources) / 3600:.2f} h -> {out}", file=sys.stderr)
    todo = [(s.path, s.rel, out, args.seed) for s in sources]
    truths = []
    if args.jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(args.jobs) as pool:
            for i, t in enumerate(pool.imap_unordered(_worker, todo)):
                truths.append(t)
                print(f"[{i + 1}/{len(todo)}] {t['file']} offset {t['offset_s']:+.3f} s, RT60 {t['rt60_measured_s']:.2f} s", file=sys.stderr)
    else:
        for i, job in enumerate(todo):
            t = make_one(*job)
            truths.append(t)
            print(f"[{i + 1}/{len(todo)}] {t['file']} offset {t['offset_s']:+.3f} s, RT60 {t['rt60_measured_s']:.2f} s", file=sys.stderr)
    truths.sort(key=lambda t: t["file"])
    summary = {"version": VERSION, "seed": args.seed, "source": str(asap.resolve()), "max_hours": args.max_hours, "files": truths}
    atomic_write(out / "standin.json", lambda tmp: tmp.write_text(json.dumps(summary, indent=1)))
    print(out / "standin.json")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
