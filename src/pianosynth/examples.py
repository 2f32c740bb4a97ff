"""Piano music that the project writes itself, for the demo and for smoke tests.

No third-party music ships in the repository; these pieces are generated from a seed: a chord
progression with an arpeggiated left hand, a right-hand melody with a dynamic arc, and the sustain
pedal changed on every chord, so that every feature channel is exercised.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .midi import Note, Performance, PedalCurve, write_midi

# I-vi-IV-V-style progressions as (root offset from the key, minor?)
_PROGRESSIONS = [
    [(0, False), (9, True), (5, False), (7, False)],
    [(0, False), (5, False), (7, False), (0, False)],
    [(9, True), (5, False), (0, False), (7, False)],
]
_MAJOR_SCALE = [0, 2, 4, 5, 7, 9, 11]


def generate_piece(seed: int = 0, bars: int = 8, bpm: float = 96.0) -> Performance:
    """Generates a short piano piece as a Performance (notes + sustain pedal)."""
    rng = np.random.default_rng(seed)
    key = 48 + int(rng.integers(0, 12))  # tonic near C3
    progression = _PROGRESSIONS[int(rng.integers(0, len(_PROGRESSIONS)))]
    beat_s = 60.0 / bpm
    bar_s = 4 * beat_s
    notes: list[Note] = []
    pedal_t, pedal_v = [], []
    for bar in range(bars):
        t0 = bar * bar_s
        root, minor = progression[bar % len(progression)]
        chord = [key + root, key + root + (3 if minor else 4), key + root + 7]
        arc = np.sin(np.pi * (bar + 0.5) / bars)  # crescendo then diminuendo over the piece
        # left hand: bass note, then an arpeggio in eighths
        base_vel = int(40 + 45 * arc)
        notes.append(Note(chord[0] - 12, t0, t0 + bar_s * 0.95, base_vel + 5))
        for i in range(8):
            pitch = chord[[0, 1, 2, 1][i % 4]] + (12 if i >= 4 else 0)
            start = t0 + i * beat_s / 2
            vel = int(np.clip(base_vel + rng.integers(-8, 9), 1, 127))
            notes.append(Note(pitch, start, start + beat_s * 0.45, vel))
        # right hand: a melody on scale degrees, mostly quarters, sometimes repeated notes
        t = t0
        degree = int(rng.integers(0, 7))
        while t < t0 + bar_s - 1e-9:
            dur = beat_s * float(rng.choice([0.5, 1.0, 1.0, 2.0]))
            dur = min(dur, t0 + bar_s - t)
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, 13))
            pitch = key + 24 + 12 * (degree // 7) + _MAJOR_SCALE[degree % 7]
            vel = int(np.clip(55 + 50 * arc + rng.integers(-10, 11), 1, 127))
            notes.append(Note(pitch, t, t + dur * 0.9, vel))
            t += dur
        # sustain: lift just before each chord change, press again just after
        pedal_t += [t0 + 0.02, t0 + bar_s - 0.05]
        pedal_v += [1.0, 0.0]
    notes.sort(key=lambda n: (n.start_s, n.pitch))
    empty = PedalCurve(np.zeros(0), np.zeros(0))
    pedals = {
        "sustain": PedalCurve(np.array(pedal_t), np.array(pedal_v)),
        "sostenuto": empty,
        "soft": empty,
    }
    end_s = max(n.end_s for n in notes)
    return Performance(notes, pedals, end_s)


def write_demo_midi(folder: str | Path, count: int = 3, bars: int = 8) -> list[Path]:
    """Writes ``count`` generated pieces as ``demo_XX.mid`` in ``folder`` and returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"demo_{i:02d}.mid"
        write_midi(generate_piece(seed=i, bars=bars, bpm=84.0 + 12.0 * i), path)
        paths.append(path)
    return paths
