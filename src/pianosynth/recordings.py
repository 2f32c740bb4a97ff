"""Recorded audio paired with a MIDI file -> a cache's reference audio (issue 12). Nothing neural here.

A recording enters the cache through the same piece record as a FluidSynth render; only the way
its audio is made differs:

1. **Decode** with soundfile (whatever libsndfile reads: WAV, FLAC, Ogg, MP3), block by block,
   **mix to mono** (the mean of the channels) and **resample** to the feature rate with soxr
   (``audio.Resampler``, soxr's HQ), so a long file is never held at its own rate.
2. **Align**: a constant offset between the MIDI and the audio (a lead-in), up to
   ``Limits.max_lead_in_s`` either way (``prepare --max-lead-in``),
   is estimated by cross-correlating an onset-strength curve of the audio with the MIDI's note
   onsets (the note table's onsets, the reference's note clock), first on a 10 ms grid over the
   whole range, then on a 1 ms grid within ±30 ms of it with a parabolic peak. The audio is then
   shifted so that the MIDI's time 0 is its sample 0 (head cut, or padded with silence).
3. **Check**: a pair is refused, with its reason, where the best alignment is still poor
   (``MIN_ALIGNMENT``), where the recording stops more than ``MAX_LENGTH_DIFF_S`` before the
   MIDI's end, or where it still sounds (within ``AUDIBLE_DB`` of its loudest moment) more than
   ``Limits.max_tail_s`` after it (``prepare --max-tail``): silence, room tone and a room's
   reverberant tail after the music are allowed.
4. **Level**: every piece is brought to ``LOUDNESS_LUFS`` integrated loudness (ITU-R BS.1770,
   ``audio.LoudnessMeter``) under the same -1 dBFS sample-peak ceiling that ``synthesize`` uses
   (``audio.choose_gain``), so no piece clips when it is stored as 16-bit PCM.

The offset (positive: the audio starts later than the MIDI says), the alignment score, the gain
and the file's rate, channels and SHA-1 go into the piece's record (the cache's manifest).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")  # in order of preference when a stem has several
MAX_OFFSET_S = 1.0  # the default lead-in limit: the largest constant MIDI-audio offset searched, either way
MAX_LENGTH_DIFF_S = 2.0  # the recording may stop this much before the MIDI's end
# The default tail limit: how long the recording may still sound (within AUDIBLE_DB of its loudest
# frame) after the MIDI's last event. A pedalled final chord in a real room rings on; 2 s refused
# renders with reverb whose tails sounded 2.4 s past the end.
MAX_TAIL_S = 10.0
# The alignment score is the correlation (Pearson r) of the audio's onset strength with the MIDI's
# onset curve at the best offset. FluidR3 renders of 12 ASAP pieces score 0.49 to 0.77 against their
# own MIDI and -0.03 to 0.06 against another piece's (benchmarks/recordings.py fluidr3); the 101
# stand-in recordings score 0.52 to 0.86 (docs/recordings.md).
MIN_ALIGNMENT = 0.3
# Recordings are brought to the loudness of the FluidR3 references the project trains on, so that a
# model, the FluidR3 render and a recording meet at one level: the 101 pieces of the 8-hour FluidR3
# cache measure -50.1 to -36.4 LUFS, median -42.8 (benchmarks/recordings.py loudness).
LOUDNESS_LUFS = -43.0
AUDIBLE_DB = -50.0  # sounding: a 50 ms frame within 50 dB of the loudest one
# A tail after the MIDI's end must die away: a 50 ms frame this much louder than the quietest
# audible frame before it (after the end) is a new sound, e.g. more music, not reverberation.
# A piano's beating partials and a room's echoes move a decaying tail by a few dB, not by this.
TAIL_RISE_DB = 15.0
READ_BLOCK_SECONDS = 10.0

COARSE_HOP_S = 0.01  # the first search's grid
FINE_HOP_S = 0.001  # the second search's grid
FINE_RANGE_S = 0.03  # the second search looks this far either side of the first one's answer
FINE_SECONDS = 120.0  # the second search reads the MIDI's first two minutes (the offset is constant)


MAX_DECODE_SHORTFALL_S = 0.1  # decoded audio this much shorter than its header claims: truncated or damaged


class RecordingError(ValueError):
    """A recording that cannot be paired with its MIDI: unreadable, misaligned or of another length."""


@dataclass(frozen=True)
class Limits:
    """How far a recording may stray from its MIDI and still be used (``prepare`` options)."""

    max_lead_in_s: float = MAX_OFFSET_S  # the largest offset searched, either way (--max-lead-in)
    max_tail_s: float = MAX_TAIL_S  # how long it may sound after the MIDI's end (--max-tail)

    def __post_init__(self) -> None:
        for name, value, hi in (("max_lead_in_s", self.max_lead_in_s, 60.0), ("max_tail_s", self.max_tail_s, 600.0)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= hi):
                raise ValueError(f"recordings: {name} must be in (0, {hi:g}] seconds, got {value}")


def settings(limits: Limits = Limits()) -> dict:
    """What a recordings cache was made with (part of its identity and its manifest)."""
    return {
        "max_offset_s": limits.max_lead_in_s,
        "max_length_diff_s": MAX_LENGTH_DIFF_S,
        "max_tail_s": limits.max_tail_s,
        "min_alignment": MIN_ALIGNMENT,
        "loudness_lufs": LOUDNESS_LUFS,
        "resampler": "soxr HQ",
        "version": 2,  # 2: the fine search on log magnitudes of 8 ms windows
    }


def find_audio(midi_path: Path) -> Path | None:
    """The audio file beside a MIDI file with the same stem (``AUDIO_SUFFIXES``, any case)."""
    midi_path = Path(midi_path)
    by_suffix = {}
    if midi_path.parent.is_dir():
        for p in midi_path.parent.iterdir():
            if p.stem == midi_path.stem and p.suffix.lower() in AUDIO_SUFFIXES and p.is_file():
                by_suffix.setdefault(p.suffix.lower(), p)
    for suffix in AUDIO_SUFFIXES:
        if suffix in by_suffix:
            return by_suffix[suffix]
    return None


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    audio: np.ndarray  # (samples,) float32 mono at the feature rate
    sample_rate: int  # the file's own rate
    channels: int  # the file's own channel count
    seconds: float  # the file's length
    sha1: str  # of the file's bytes


def read_recording(path: Path, sample_rate: int, name: str | None = None) -> Decoded:
    """Decodes an audio file, mixed to mono and resampled to ``sample_rate`` (soxr HQ)."""
    import soundfile as sf

    from .audio import Resampler

    name = name or str(path)
    try:
        h = hashlib.sha1()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        with sf.SoundFile(str(path)) as f:
            rate, channels, frames = f.samplerate, f.channels, f.frames
            if frames <= 0 or rate <= 0:
                raise RecordingError(f"{name}: the audio file holds no samples")
            resampler = Resampler(rate, sample_rate, frames)
            out, done = [], 0
            block = max(1, int(READ_BLOCK_SECONDS * rate))
            while done < frames:
                x = f.read(min(block, frames - done), dtype="float32", always_2d=True)  # (n, channels)
                if len(x) == 0:
                    break
                done += len(x)
                out.append(resampler(x.mean(axis=1), last=done >= frames))
            if done < frames:
                out.append(resampler(np.zeros(0, np.float32), last=True))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        if isinstance(e, RecordingError):
            raise
        raise RecordingError(f"{name}: the audio cannot be read ({str(e).strip() or type(e).__name__})") from e
    # The length is what decodes, not what the header claims: a cut .mp3 keeps its full length in
    # its header, and the resampler pads its output to the length it was told (issue 20).
    if (frames - done) / rate > MAX_DECODE_SHORTFALL_S:
        raise RecordingError(
            f"{name}: truncated or damaged: the header claims {frames / rate:.1f} s but only {done / rate:.1f} s decode"
        )
    audio = np.concatenate(out) if out else np.zeros(0, np.float32)
    audio = audio[: round(done * sample_rate / rate)]
    if not np.all(np.isfinite(audio)):
        raise RecordingError(f"{name}: the audio holds NaN or infinite samples")
    return Decoded(audio.astype(np.float32, copy=False), rate, channels, done / rate, h.hexdigest())


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------


def onset_strength(audio: np.ndarray, sample_rate: int, hop: int, n_fft: int, log: bool) -> np.ndarray:
    """Spectral flux of ``audio`` on frames centred at multiples of ``hop``.

    Frame t is the summed rise of each bin's magnitude from frame t-1 to t+1 (a central
    difference, so a rise is placed where it happens, not half a hop late). ``log`` compresses
    the magnitudes first (quiet notes count), otherwise they stay linear, which puts the peak of a
    sharp attack on the attack itself (the Hann window's middle reaches it then).

    audio: (samples,) -> (frames,) float64, frames = samples // hop + 1
    """
    window = np.hanning(n_fft + 1)[:-1].astype(np.float32)
    padded = np.pad(np.asarray(audio, np.float32), (n_fft // 2, n_fft // 2 + hop))
    n_frames = len(audio) // hop + 1
    scale = 1.0 / max(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))), 1e-8)
    lo_bin = max(1, int(round(30.0 * n_fft / sample_rate)))  # below 30 Hz: rumble, not notes
    mags = np.zeros((n_frames + 2, n_fft // 2 + 1 - lo_bin), np.float32)  # frames -1 .. n_frames
    step = 8192  # frames per chunk: bounded memory for any length
    for a in range(0, n_frames, step):
        b = min(n_frames, a + step)
        idx = np.arange(a, b)[:, None] * hop + np.arange(n_fft)[None, :]  # (chunk, n_fft)
        spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1))[:, lo_bin:]
        spec *= scale
        mags[a + 1 : b + 1] = np.log1p(10.0 * spec) if log else spec
    mags[0] = mags[1]
    mags[-1] = mags[-2]
    rise = np.maximum(mags[2:] - mags[:-2], 0.0)  # (n_frames, bins)
    return rise.sum(axis=1, dtype=np.float64)


def _onset_curve(onsets: np.ndarray, weights: np.ndarray, n_frames: int, hop: int, sigma_frames: float) -> np.ndarray:
    """MIDI onsets (samples) -> a curve on the same frames as ``onset_strength``, each onset a
    Gaussian of width ``sigma_frames`` (fractional positions kept)."""
    from scipy.ndimage import gaussian_filter1d

    curve = np.zeros(n_frames)
    pos = onsets / hop
    i = np.floor(pos).astype(np.int64)
    frac = pos - i
    ok = (i >= 0) & (i + 1 < n_frames)
    np.add.at(curve, i[ok], weights[ok] * (1 - frac[ok]))  # linear split between the two frames
    np.add.at(curve, i[ok] + 1, weights[ok] * frac[ok])
    return gaussian_filter1d(curve, sigma_frames, mode="constant")


def _detrend(env: np.ndarray, frames: int) -> np.ndarray:
    """Removes a moving average of ``frames`` (slow swells of loudness are not onsets)."""
    from scipy.ndimage import uniform_filter1d

    return np.maximum(env - uniform_filter1d(env, max(1, frames), mode="nearest"), 0.0)


def _correlations(env: np.ndarray, curve: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson r of ``env`` shifted by each lag in -max_lag..max_lag against ``curve``:
    r[k] pairs env[t + lag] with curve[t], lag = k - max_lag. -> (2 * max_lag + 1,)"""
    from scipy.signal import correlate

    e = env - env.mean()
    c = curve - curve.mean()
    full = correlate(e, c, mode="full", method="fft")  # index n - 1 is lag 0
    zero = len(c) - 1
    lags = np.arange(-max_lag, max_lag + 1)
    idx = zero + lags
    out = np.zeros(len(lags))
    ok = (idx >= 0) & (idx < len(full))
    out[ok] = full[idx[ok]]
    norm = np.linalg.norm(e) * np.linalg.norm(c)
    return out / norm if norm > 0 else out


@dataclass(frozen=True)
class Alignment:
    offset_s: float  # where the MIDI's time 0 falls in the audio (positive: the audio starts late)
    score: float  # Pearson r of the onset curves at that offset, on the coarse grid
    coarse_offset_s: float  # the first search's answer
    margin: float  # score / the best r at any offset more than 50 ms away from it


def estimate_offset(audio: np.ndarray, sample_rate: int, onsets: np.ndarray, velocities: np.ndarray,
                    max_offset_s: float = MAX_OFFSET_S) -> Alignment:  # fmt: skip
    """The constant offset between a recording and its MIDI's note onsets.

    audio: (samples,) mono at ``sample_rate``; onsets: (notes,) onset samples at that rate on the
    MIDI's clock; velocities: (notes,) 1..127.
    """
    onsets = np.asarray(onsets, np.float64)
    weights = np.asarray(velocities, np.float64) / 127.0
    if len(onsets) == 0 or len(audio) == 0:
        return Alignment(0.0, 0.0, 0.0, 0.0)
    # coarse: 10 ms frames, log magnitudes, onsets blurred by 20 ms
    hop = max(1, round(COARSE_HOP_S * sample_rate))
    n_fft = 1 << int(round(math.log2(0.064 * sample_rate)))
    env = _detrend(onset_strength(audio, sample_rate, hop, n_fft, log=True), round(0.5 / COARSE_HOP_S))
    n = max(len(env), int(onsets.max() // hop) + 2)
    env = np.pad(env, (0, n - len(env)))
    curve = _onset_curve(onsets, weights, n, hop, sigma_frames=2.0)
    max_lag = int(math.ceil(max_offset_s / COARSE_HOP_S))
    r = _correlations(env, curve, max_lag)
    best = int(np.argmax(r))
    coarse_lag = best - max_lag  # frames
    score = float(r[best])
    away = np.abs(np.arange(len(r)) - best) * COARSE_HOP_S > 0.05
    runner_up = float(r[away].max()) if away.any() else 0.0
    margin = score / runner_up if runner_up > 0 else math.inf
    # fine: 1 ms frames, log magnitudes of 8 ms windows, only within ±30 ms of the coarse answer.
    # Linear magnitudes put a lone attack's peak on the attack itself, but in a room the loudest
    # notes and their reflections then decide, and the peak wandered up to 29 ms late on the
    # stand-in; log magnitudes of short windows gave a sharp peak 2 to 3 ms early on all of them.
    hop_f = max(1, round(FINE_HOP_S * sample_rate))
    n_fft_f = 1 << int(round(math.log2(0.008 * sample_rate)))
    part = onsets < FINE_SECONDS * sample_rate
    if part.sum() < 8:  # too few notes in the first minutes: use them all
        part[:] = True
    head = audio[: int((onsets[part].max() / sample_rate + abs(coarse_lag) * COARSE_HOP_S + 1.0) * sample_rate)]
    env_f = _detrend(onset_strength(head, sample_rate, hop_f, n_fft_f, log=True), round(0.1 / FINE_HOP_S))
    n_f = max(len(env_f), int(onsets[part].max() // hop_f) + 2)
    env_f = np.pad(env_f, (0, n_f - len(env_f)))
    curve_f = _onset_curve(onsets[part], weights[part], n_f, hop_f, sigma_frames=1.0)
    center = coarse_lag * hop / hop_f
    reach = int(math.ceil(FINE_RANGE_S / FINE_HOP_S))
    max_lag_f = int(math.ceil(abs(center))) + reach + 1
    r_f = _correlations(env_f, curve_f, max_lag_f)
    lags_f = np.arange(-max_lag_f, max_lag_f + 1)
    window = np.abs(lags_f - center) <= reach
    k = int(np.flatnonzero(window)[np.argmax(r_f[window])])
    delta = 0.0
    if 0 < k < len(r_f) - 1:  # parabolic interpolation of the peak
        y0, y1, y2 = r_f[k - 1], r_f[k], r_f[k + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            delta = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
    offset_s = (lags_f[k] + delta) * hop_f / sample_rate
    return Alignment(float(offset_s), score, coarse_lag * hop / sample_rate, margin)


def shift(audio: np.ndarray, offset_samples: int, n_samples: int) -> np.ndarray:
    """Moves ``audio`` earlier by ``offset_samples`` (later if negative), cut or padded with
    silence to exactly ``n_samples``. (samples,) -> (n_samples,)"""
    out = np.zeros(n_samples, np.float32)
    if offset_samples >= 0:
        part = audio[offset_samples : offset_samples + n_samples]
        out[: len(part)] = part
    else:
        part = audio[: max(0, n_samples + offset_samples)]
        out[-offset_samples : -offset_samples + len(part)] = part
    return out


def audible_end_s(audio: np.ndarray, sample_rate: int, frame_s: float = 0.05) -> float:
    """The end of the last 50 ms frame within ``AUDIBLE_DB`` of the loudest frame (0 for silence)."""
    n = max(1, round(frame_s * sample_rate))
    frames = len(audio) // n
    if frames == 0:
        return 0.0
    rms = np.sqrt(np.mean(np.square(audio[: frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    if rms.max() <= 0:
        return 0.0
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (AUDIBLE_DB / 20))
    return float((loud[-1] + 1) * n / sample_rate)


def rise_after(audio: np.ndarray, sample_rate: int, start_s: float, frame_s: float = 0.05) -> tuple[float, float] | None:
    """The first 50 ms frame after ``start_s`` that is ``TAIL_RISE_DB`` louder than the quietest
    audible frame between ``start_s`` and it, as (its time in s, the rise in dB); None where the
    audio only dies away. Frames quieter than ``AUDIBLE_DB`` below the loudest count as that
    level, so that noise near silence is no rise. audio: (samples,)"""
    n = max(1, round(frame_s * sample_rate))
    frames = len(audio) // n
    first = max(0, int(math.ceil(start_s * sample_rate / n)))
    if frames - first < 2:
        return None
    rms = np.sqrt(np.mean(np.square(audio[: frames * n].reshape(frames, n), dtype=np.float64), axis=1))
    if rms.max() <= 0:
        return None
    db = 20 * np.log10(np.maximum(rms, rms.max() * 10 ** (AUDIBLE_DB / 20)))[first:]
    rise = db - np.minimum.accumulate(db)
    over = np.flatnonzero(rise > TAIL_RISE_DB)
    return (float((first + over[0]) * n / sample_rate), float(rise[over[0]])) if len(over) else None


# ---------------------------------------------------------------------------------------------
# One pair
# ---------------------------------------------------------------------------------------------


def reference_from_recording(audio_path: Path, onsets: np.ndarray, velocities: np.ndarray, midi_end_s: float,
                             sample_rate: int, n_samples: int, name: str,
                             limits: Limits = Limits()) -> tuple[np.ndarray, dict]:  # fmt: skip
    """A recording as a cache's reference audio, and what was done to it.

    Args:
        audio_path: the recording.
        onsets, velocities: (notes,) the MIDI's note onsets (samples at ``sample_rate``) and velocities.
        midi_end_s: the MIDI's last event.
        n_samples: the reference's length (the features' frames * hop).
        name: how errors name the pair.
        limits: the lead-in and tail it may have.

    Returns:
        audio: (n_samples,) float32, aligned to the MIDI and levelled (within [-1, 1]);
        record: the file's rate, channels, length and SHA-1, the offset, the alignment score and
        the gain.

    Raises:
        RecordingError: unreadable, poorly aligned, or of another length than the MIDI.
    """
    from .audio import Level, LoudnessMeter, choose_gain

    dec = read_recording(audio_path, sample_rate, name)
    record = {
        "audio_sha1": dec.sha1,
        "audio_sample_rate": dec.sample_rate,
        "audio_channels": dec.channels,
        "audio_seconds": round(dec.seconds, 6),
    }
    al = estimate_offset(dec.audio, sample_rate, onsets, velocities, max_offset_s=limits.max_lead_in_s)
    record.update(offset_s=round(al.offset_s, 6), alignment=round(al.score, 4))
    if al.score < MIN_ALIGNMENT:
        raise RecordingError(
            f"{name}: the audio does not align with the MIDI (onset correlation {al.score:.2f} at the best "
            f"offset {al.offset_s:+.3f} s, below {MIN_ALIGNMENT}); another performance?"
        )
    # Lengths, on the MIDI's clock. A recording may run on in silence, room tone or the room's
    # reverberation after the music, so it is too long only where it still sounds max_tail_s past
    # the MIDI's end; it is too short where it stops more than MAX_LENGTH_DIFF_S before.
    end_s = len(dec.audio) / sample_rate - al.offset_s
    audible_s = audible_end_s(dec.audio, sample_rate) - al.offset_s
    record.update(audio_end_s=round(end_s, 3), audible_end_s=round(audible_s, 3))
    if end_s < midi_end_s - MAX_LENGTH_DIFF_S:
        raise RecordingError(
            f"{name}: the audio ends {midi_end_s - end_s:.1f} s before the MIDI does (after aligning it), "
            f"the lengths differ by more than {MAX_LENGTH_DIFF_S:g} s"
        )
    rise = rise_after(dec.audio, sample_rate, midi_end_s + al.offset_s)
    if rise is not None:
        raise RecordingError(
            f"{name}: the audio still sounds {audible_s - midi_end_s:.1f} s after the MIDI ends (after aligning it), "
            f"and rises by {rise[1]:.0f} dB {rise[0] - al.offset_s - midi_end_s:.1f} s after the end: more music, not a tail"
        )
    if audible_s > midi_end_s + limits.max_tail_s:
        raise RecordingError(
            f"{name}: the audio still sounds {audible_s - midi_end_s:.1f} s after the MIDI ends (after aligning it), "
            f"more than the {limits.max_tail_s:g} s tail allowed (prepare --max-tail)"
        )
    y = shift(dec.audio, int(round(al.offset_s * sample_rate)), n_samples)
    meter = LoudnessMeter(sample_rate)
    meter.add(y)
    loudness = meter.loudness()
    if not math.isfinite(loudness):
        raise RecordingError(f"{name}: the aligned audio is silent")
    gain, _ = choose_gain(Level(loudness_lufs=LOUDNESS_LUFS), loudness, meter.peak)
    y *= gain
    record.update(
        loudness_lufs=round(loudness, 3),
        gain_db=round(20 * math.log10(gain), 3),
        loudness_after_lufs=round(loudness + 20 * math.log10(gain), 3),
    )
    return y, record
