"""Note and pedal events -> the report's pitch-encoding matrix ``(frames, channels)``.

The one frame clock: frame ``f`` covers audio samples ``[f * hop_samples, (f + 1) * hop_samples)``
and ``frame_rate = sample_rate / hop_samples``. Event times are rounded to the nearest audio sample
first, so features and the rendered audio agree on every boundary.

Channel layout (``FeatureConfig.n_channels``):
    0..87     onset: 1 in the frame where a key goes down
    88..175   held: 1 in every frame while the key is physically down (the sustain pedal does
              not extend it; the pedal channels carry that)
    176..263  velocity (performance preset): velocity/127 while the key is held
    264..266  pedals (performance preset): sustain, sostenuto, soft, 0..1

Every value is a multiple of 1/127 (MIDI's resolution), so the cache stores features as uint8
``round(value * 127)`` and the round trip is exact.
"""

from __future__ import annotations

import math

import numpy as np

from .config import FeatureConfig
from .midi import LOWEST_KEY, N_KEYS, PEDAL_CONTROLLERS, Performance

ONSET = slice(0, N_KEYS)
HELD = slice(N_KEYS, 2 * N_KEYS)
VELOCITY = slice(2 * N_KEYS, 3 * N_KEYS)
QUANT = 127  # features are stored as uint8 multiples of 1/QUANT


class AlignmentError(AssertionError):
    """Features and audio disagree in length: n_frames * hop_samples != n_samples."""


def n_frames_for(perf: Performance, cfg: FeatureConfig) -> int:
    """Frames covering the whole performance plus ``tail_seconds`` of release."""
    total_samples = round((perf.end_s + cfg.tail_seconds) * cfg.sample_rate)
    return max(1, math.ceil(total_samples / cfg.hop_samples))


def compute_features(perf: Performance, cfg: FeatureConfig, n_frames: int | None = None) -> np.ndarray:
    """Builds the pitch-encoding matrix.

    Args:
        perf: notes and pedals, as read by ``midi.read_midi``.
        cfg: the frame clock and the channel preset.
        n_frames: length to produce; defaults to ``n_frames_for(perf, cfg)``. Events past the end
            are cut off.

    Returns:
        x: (frames, cfg.n_channels) float32, values in 0..1.
    """
    if n_frames is None:
        n_frames = n_frames_for(perf, cfg)
    sr, hop = cfg.sample_rate, cfg.hop_samples
    x = np.zeros((n_frames, cfg.n_channels), dtype=np.float32)
    for note in perf.notes:  # sorted by start time, so a re-struck key's latest velocity wins
        key = note.pitch - LOWEST_KEY
        on = round(note.start_s * sr) // hop
        if on >= n_frames:
            continue
        off = max(on + 1, math.ceil(round(note.end_s * sr) / hop))
        x[on, ONSET.start + key] = 1.0
        x[on:off, HELD.start + key] = 1.0
        if cfg.velocity:
            x[on:off, VELOCITY.start + key] = note.velocity / QUANT
    if cfg.pedals:
        frame_start_s = np.arange(n_frames) * hop / sr
        base = 3 * N_KEYS if cfg.velocity else 2 * N_KEYS
        for i, name in enumerate(PEDAL_CONTROLLERS):
            curve = perf.pedals.get(name)
            if curve is not None:
                x[:, base + i] = curve.at(frame_start_s)
    return x


def quantize(x: np.ndarray) -> np.ndarray:
    """float features in 0..1 -> uint8 multiples of 1/127 (exact for MIDI-derived values)."""
    return np.clip(np.rint(x * QUANT), 0, QUANT).astype(np.uint8)


def dequantize(q: np.ndarray) -> np.ndarray:
    """uint8 stored features -> float32 in 0..1."""
    return q.astype(np.float32) / QUANT


def check_alignment(n_frames: int, n_samples: int, hop_samples: int) -> None:
    """Raises AlignmentError unless ``n_frames * hop_samples == n_samples``."""
    if n_frames * hop_samples != n_samples:
        raise AlignmentError(
            f"features and audio are misaligned: {n_frames} frames * {hop_samples} hop "
            f"= {n_frames * hop_samples} samples, but the audio has {n_samples}"
        )
