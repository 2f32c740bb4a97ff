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


def compute_features(
    perf: Performance, cfg: FeatureConfig, n_frames: int | None = None, quantized: bool = False
) -> np.ndarray:
    """Builds the pitch-encoding matrix.

    Args:
        perf: notes and pedals, as read by ``midi.read_midi``.
        cfg: the frame clock and the channel preset.
        n_frames: length to produce; defaults to ``n_frames_for(perf, cfg)``. Events past the end
            are cut off.
        quantized: return the stored form, uint8 ``round(value * 127)`` (``quantize``), built
            directly, so that a long piece never holds the float32 matrix (4x the memory).

    Returns:
        x: (frames, cfg.n_channels) float32, values in 0..1; or uint8 0..127 if ``quantized``.
    """
    if n_frames is None:
        n_frames = n_frames_for(perf, cfg)
    sr, hop = cfg.sample_rate, cfg.hop_samples
    one = QUANT if quantized else 1.0  # the value 1.0 in the output's units
    x = np.zeros((n_frames, cfg.n_channels), dtype=np.uint8 if quantized else np.float32)
    for note in perf.notes:  # sorted by start time, so a re-struck key's latest velocity wins
        key = note.pitch - LOWEST_KEY
        on = round(note.start_s * sr) // hop
        if on >= n_frames:
            continue
        off = max(on + 1, math.ceil(round(note.end_s * sr) / hop))
        x[on, ONSET.start + key] = one
        x[on:off, HELD.start + key] = one
        if cfg.velocity:
            x[on:off, VELOCITY.start + key] = note.velocity if quantized else note.velocity / QUANT
    if cfg.pedals:
        frame_start_s = np.arange(n_frames) * hop / sr
        base = 3 * N_KEYS if cfg.velocity else 2 * N_KEYS
        for i, name in enumerate(PEDAL_CONTROLLERS):
            curve = perf.pedals.get(name)
            if curve is not None:
                value = curve.at(frame_start_s)
                x[:, base + i] = quantize(value) if quantized else value
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


# ---------------------------------------------------------------------------------------------
# The note table: one row per note, on the reference's note clock
# ---------------------------------------------------------------------------------------------
#
# The reference is rendered from a MIDI file that midi.write_midi writes at 120 bpm with 960 ticks
# per beat, so every event time is first quantised to 1/1920 s. FluidSynth's file renderer then
# processes events once per 64-sample block: its player clock starts at the second block and
# rounds (milliseconds since then) * ticks-per-millisecond to a tick, and an event sounds from the
# first block whose tick has reached it. Measured on FluidSynth 2.3.1 at 16 kHz: a note-on at
# t = 0.1 s sounds from sample 1664 (its first sample is 0, the next ones are not), at 0.1041 s
# from 1728, at 1.01 s from 16256. ``note_samples`` reproduces that, so a note's waveform, phase
# included, starts on the same sample in the reference and in a voice.
#
# That is FluidSynth's clock (``FeatureConfig.note_clock`` "fluidsynth", also the clock recordings
# are aligned to). sfizz (note_clock "sfizz", issue 18) is handed every event at its own sample,
# round(t * sample_rate) (render.sfizz_events), with note_on's delay within the block, and starts
# the note there: measured with the grand's C4 at 48 kHz, for delays 0, 1, 100 and the block's
# last sample, the first non-zero output sample is the event's sample, and the waveform is the
# same as a note started on a block boundary, shifted (docs/grand.md; tests/test_grand.py).

NOTE_BLOCK = 64  # FluidSynth's block: every event starts on a multiple of this many samples
TICKS_PER_S = 1920  # midi.write_midi: 960 ticks per beat at 120 bpm
SCORE_VELOCITY = 64  # the note table's velocity under the score preset, which has none
NOTE_COLUMNS = ("key", "velocity", "onset", "release")  # key 0..87, velocity 1..127, samples


def event_ticks(t_s: np.ndarray) -> np.ndarray:
    """Event times in seconds -> the ticks midi.write_midi writes them at. (n,) -> (n,) int64."""
    return np.rint(np.asarray(t_s, dtype=np.float64) * TICKS_PER_S).astype(np.int64)


def note_samples(ticks: np.ndarray, sample_rate: int) -> np.ndarray:
    """Ticks -> the sample at which FluidSynth's file render starts the event (a multiple of
    NOTE_BLOCK). ticks: (n,) int64 -> (n,) int64.
    """
    ticks = np.asarray(ticks, dtype=np.int64)
    ms_per_block = 1000.0 * NOTE_BLOCK / sample_rate

    def block_ticks(b: np.ndarray) -> np.ndarray:
        msec = np.floor(b * ms_per_block)  # FluidSynth's millisecond clock is an integer
        start = np.floor(ms_per_block)  # the player starts at the second block
        return np.floor((msec - start) * TICKS_PER_S / 1000.0 + 0.5)

    # a guess just below the answer, then step forward until the block's tick reaches the event
    b = np.maximum(1, np.floor((ticks * 1000.0 / TICKS_PER_S) / ms_per_block).astype(np.int64) - 1)
    for _ in range(8):
        late = block_ticks(b) < ticks
        if not late.any():
            break
        b = b + late
    while True:  # the guess may overshoot by a block; step back while the previous block suffices
        early = (b > 1) & (block_ticks(b - 1) >= ticks)
        if not early.any():
            break
        b = b - early
    return b * NOTE_BLOCK


def event_samples(t_s: np.ndarray, sample_rate: int) -> np.ndarray:
    """Event times in seconds -> the samples sfizz plays them at (render.sfizz_events).
    (n,) -> (n,) int64."""
    return np.rint(np.asarray(t_s, dtype=np.float64) * sample_rate).astype(np.int64)


def _clock(cfg: FeatureConfig):
    """(seconds -> the clock's integer event times, those times -> the samples where the events
    start) of the reference's note clock."""
    if cfg.note_clock == "sfizz":
        return (lambda t_s: event_samples(t_s, cfg.sample_rate)), (lambda t: np.asarray(t, dtype=np.int64))
    return event_ticks, (lambda t: note_samples(t, cfg.sample_rate))


# Each reference's pedal rule: the pedal value (0..1) from which it holds the dampers off, per note
# clock. FluidSynth: 64 of 127. sfizz: 1 of 127 (its sustain_lo and sostenuto_lo default to 1, and
# a pedal at 1 holds a note as fully as one at 127: measured, docs/grand.md); the controller value
# it is sent is round(value * 127) (render.sfizz_events), so a value above 0.5/127 holds.
PEDAL_DOWN_FROM = {"fluidsynth": 64 / 127 - 1e-9, "sfizz": 0.5 / 127 + 1e-9}
# The version of the note table's rule, per clock. A cache records it per piece; ``prepare`` rewrites
# the tables of an older rule (no re-render) and ``Cache.load_notes`` refuses them. sfizz's 2: its
# own pedal rule instead of FluidSynth's: before, a pedal between 1 and 63 released the notes that
# sfizz held (14% of the time on the grand's train split, and 42% of its notes' releases moved,
# 1.2 s later on average: benchmarks/pedal_rule.py, docs/grand.md).
NOTE_RULE = {"fluidsynth": 1, "sfizz": 2}


def note_rule(cfg: FeatureConfig) -> int:
    """The version of the rule by which ``compute_notes`` makes this config's note tables."""
    return NOTE_RULE[cfg.note_clock]


def _pedal_down(curve, to_times, down_from: float) -> tuple[np.ndarray, np.ndarray]:
    """A pedal as (clock times of its changes, down after each change), down from the value
    ``down_from`` (``PEDAL_DOWN_FROM``, the reference's rule); repeated states are dropped."""
    if curve is None or len(curve.times_s) == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    t = to_times(curve.times_s)
    down = np.asarray(curve.values) >= down_from
    keep = np.ones(len(t), bool)
    keep[1:] = down[1:] != down[:-1]
    keep[0] = down[0]  # the pedal starts up, so a first "up" changes nothing
    return t[keep], down[keep]


def compute_notes(perf: Performance, cfg: FeatureConfig, n_samples: int | None = None) -> np.ndarray:
    """The note table of a performance: one row per note, sorted by onset.

    Columns (``NOTE_COLUMNS``): key 0..87, velocity 1..127, onset sample, release sample. Both
    samples are on the reference's note clock (``cfg.note_clock``): FluidSynth's 64-sample block
    grid (``note_samples``), or sfizz's own sample of each event. The release is where the voice
    starts to die away:

    - the note-off;
    - later, if the sustain pedal is down at the note-off (until it goes up), or if the key was
      down when the sostenuto pedal went down (until the sostenuto goes up), whichever holds
      longer; at equal ticks controllers act first, as midi.write_midi orders them. A pedal is
      down by the reference's rule (``PEDAL_DOWN_FROM``): from 64/127 for FluidSynth, from 1/127
      for sfizz;
    - earlier, at the key's next onset: a re-struck key releases its previous voice.

    A note never released (a pedal held to the end) is released at ``n_samples`` if given.

    Under the score preset (no velocity channels) every velocity is ``SCORE_VELOCITY``, so a
    score-mode model has to infer the dynamics, as the report's did. Pedal events, where a file has
    them (a score's pedal marks), still set the releases under either preset: the reference plays
    them, and the velocity-64 baseline that a score model is measured against has them too.

    Returns:
        notes: (notes, 4) int64.
    """
    if not perf.notes:
        return np.zeros((0, 4), np.int64)
    key = np.array([n.pitch - LOWEST_KEY for n in perf.notes], np.int64)
    vel = np.array([n.velocity if cfg.velocity else SCORE_VELOCITY for n in perf.notes], np.int64)
    to_times, to_samples = _clock(cfg)
    on = to_times([n.start_s for n in perf.notes])  # ticks (FluidSynth) or samples (sfizz)
    off = to_times([n.end_s for n in perf.notes])
    never = np.iinfo(np.int64).max // 4
    down_from = PEDAL_DOWN_FROM[cfg.note_clock]
    sus_t, sus_down = _pedal_down(perf.pedals.get("sustain"), to_times, down_from)
    sos_t, sos_down = _pedal_down(perf.pedals.get("sostenuto"), to_times, down_from)

    def next_up(times: np.ndarray, down: np.ndarray, t: np.ndarray) -> np.ndarray:
        """For each tick t: if the pedal is down at t, the tick it next goes up (else t)."""
        if len(times) == 0:
            return t
        i = np.searchsorted(times, t, side="right") - 1  # the last change at or before t
        is_down = (i >= 0) & down[np.clip(i, 0, None)]
        ups = np.append(times[~down], never)  # a pedal still down at the end never goes up
        up = ups[np.searchsorted(ups, t, side="right").clip(max=len(ups) - 1)]
        return np.where(is_down, up, t)

    release = off.copy()
    # sostenuto: held if the pedal went down while the key was down (after its note-on tick,
    # at or before its note-off tick), until the pedal goes up
    if len(sos_t):
        presses = sos_t[sos_down]
        k = np.searchsorted(presses, on, side="right")  # first press after the note-on
        first_press = np.where(k < len(presses), presses[np.clip(k, 0, len(presses) - 1)], never)
        caught = first_press <= off
        sos_release = next_up(sos_t, sos_down, np.where(caught, first_press, off))
        release = np.where(caught, np.maximum(release, sos_release), release)
    # sustain: held from the note-off while the pedal is down; a sostenuto release that falls
    # while the sustain pedal is down is held on by it too
    for _ in range(4):
        later = next_up(sus_t, sus_down, release)
        if np.array_equal(later, release):
            break
        release = later
    # a re-struck key releases its previous voice
    order = np.lexsort((on, key))
    same = key[order][1:] == key[order][:-1]
    nxt = np.full(len(on), never)
    nxt[order[:-1][same]] = on[order][1:][same]
    release = np.minimum(release, nxt)

    onset_s = to_samples(on)
    finite = release < never
    release_s = np.where(finite, to_samples(np.where(finite, release, 0)), n_samples if n_samples else never)
    release_s = np.maximum(release_s, onset_s)
    table = np.stack([key, vel, onset_s, release_s], axis=1)
    return table[np.lexsort((table[:, 0], table[:, 2]))]
