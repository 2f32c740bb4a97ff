"""Close-ups of the shipped `grand` against the sampler it learned (the Salamander grand through
sfizz), in both channels: a note's attack, its release, and a chord held by the sustain pedal
(docs/grand.md, issue 19). Needs pysfizz and the grand's samples (``pianosynth fetch-grand``).

    python scripts/grand_closeups.py --out docs/grand-closeups.png

One 10-second MIDI file, rendered by both: C4 at velocity 80 from 0.5 s to 2.5 s; the sustain
pedal down from 4.0 s to 7.0 s, and C3, E4, G4 at velocity 70 from 4.5 s to 5.0 s (their keys up
long before the pedal). The model's render is scaled by one gain to the reference's level over
the whole file (as ``evaluate`` matches levels), then each panel shows the level in dB of full
scale (RMS over short frames) of both, left and right channel. Printed: each panel's mean level
difference in dB over its frames where the reference is above -80 dBFS.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pretty_midi

import pianosynth
from pianosynth.config import load_config
from pianosynth.grand import GRAND_OVERRIDES
from pianosynth.midi import read_midi
from pianosynth.render import close_sfizz, render

SECONDS = 10.0
PANELS = [  # title, start s, end s, frame ms
    ("attack: C4, velocity 80, struck at 0.5 s", 0.49, 0.65, 2.0),
    ("release: C4's key up at 2.5 s", 2.2, 4.0, 10.0),
    ("sustain pedal: down 4.0-7.0 s; C3 E4 G4 keys 4.5-5.0 s", 4.3, 9.5, 20.0),
]


def write_piece(path: Path) -> None:
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    piano = pretty_midi.Instrument(program=0)
    piano.notes.append(pretty_midi.Note(velocity=80, pitch=60, start=0.5, end=2.5))
    for pitch in (48, 64, 67):
        piano.notes.append(pretty_midi.Note(velocity=70, pitch=pitch, start=4.5, end=5.0))
    piano.control_changes += [pretty_midi.ControlChange(64, 127, 4.0), pretty_midi.ControlChange(64, 0, 7.0)]
    pm.instruments.append(piano)
    pm.write(str(path))


def level_db(y: np.ndarray, sr: int, start: float, end: float, frame_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """y: (samples,) -> frame times (s) and RMS level in dBFS of each frame in [start, end)."""
    n = max(1, round(frame_ms / 1000 * sr))
    lo, hi = round(start * sr), round(end * sr)
    frames = y[lo : lo + (hi - lo) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    return start + (np.arange(len(frames)) + 0.5) * n / sr, 20 * np.log10(np.maximum(rms, 1e-8))


def pre_onset_levels(y: np.ndarray, sr: int) -> str:
    """The level of y (both channels, (2, samples)) just before and after C4's onset at 0.5 s."""
    levels = []
    for a, b in ((0.45, 0.48), (0.48, 0.49), (0.495, 0.5), (0.5, 0.505)):
        seg = y[:, round(a * sr) : round(b * sr)].astype(np.float64)
        levels.append(f"{a:.3f}-{b:.3f} s: {20 * np.log10(max(float(np.sqrt(np.mean(seg**2))), 1e-12)):.1f} dBFS")
    return "; ".join(levels)


def without_noise(midi: Path) -> np.ndarray:
    """The model's render with the voices' noise left out (``GrandDecoder._noise`` giving zeros)."""
    import torch

    synth = pianosynth.load("grand", threads=2)
    dec = synth.model.decoder
    dec._noise = lambda c, noise, vb, f, offset, b, t: torch.zeros(b, dec.channels, t * dec.hop)
    return synth.render(midi, loudness=None)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/grand-closeups.png"))
    args = parser.parse_args()
    cfg = load_config(None, GRAND_OVERRIDES)
    sr = cfg.features.sample_rate
    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "closeups.mid"
        write_piece(midi)
        n = round(SECONDS * sr)
        try:
            ref = render(read_midi(midi), cfg.render, cfg.features, n).T  # (2, samples)
        finally:
            close_sfizz()
        model, model_sr = pianosynth.load("grand", threads=2).render(midi, loudness=None)  # (2, samples)
        quiet = without_noise(midi)
    # the model's own level (before any gain) just before the onset, as shipped and without noise
    print(f"before C4's onset at 0.5 s, as shipped: {pre_onset_levels(model, sr)}")
    print(f"before C4's onset at 0.5 s, noise left out: {pre_onset_levels(quiet, sr)}")
    assert model_sr == sr
    model = np.pad(model, ((0, 0), (0, max(0, n - model.shape[1]))))[:, :n]
    gain = np.sqrt(np.sum(ref.astype(np.float64) ** 2) / np.sum(model.astype(np.float64) ** 2))
    model = model * gain
    print(f"one gain for the model: {20 * np.log10(gain):+.1f} dB")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(PANELS), 2, figsize=(11, 8.5), constrained_layout=True)
    for row, (title, start, end, frame_ms) in enumerate(PANELS):
        for ch, name in enumerate(("left", "right")):
            t, r = level_db(ref[ch], sr, start, end, frame_ms)
            _, m = level_db(model[ch], sr, start, end, frame_ms)
            heard = r > -80
            diff = float(np.mean(m[heard] - r[heard])) if heard.any() else float("nan")
            gap = float(np.mean(np.abs(m[heard] - r[heard]))) if heard.any() else float("nan")
            print(f"{title} | {name}: model - sampler {diff:+.1f} dB on average, {gap:.1f} dB apart on average ({frame_ms:g} ms frames)")
            ax = axes[row, ch]
            ax.plot(t, r, label="sampler (sfizz, Salamander)", color="0.3")
            ax.plot(t, m, label="learned grand", color="tab:red", alpha=0.85)
            ax.set_ylim(-100, max(-10, float(max(r.max(), m.max())) + 5))
            ax.set_title(f"{title} ({name})", fontsize=9)
            ax.set_xlabel("s")
            ax.set_ylabel(f"dBFS, {frame_ms:g} ms RMS")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
