"""Objective metrics for models and baselines on fixed clips, and a listening page.

Every system (trained models and baselines) renders the same clips of one split of a cache, and
each output is compared with the cache's reference (FluidR3's grand piano; on a cache of
recordings, the recording, with the FluidR3 render of the same MIDI among the baselines) on mono
audio resampled to 16 kHz, so that models at other sample rates compare fairly. Every system's output, the
reference's included, first takes the path the reference took into the cache: clipped to [-1, 1]
and rounded to 16-bit PCM at its own sample rate (``as_pcm16``), so that no system gains or loses
by the noise floor of its output format (issue 14):

- ``mrstft``: multi-resolution STFT distance, the mean over FFT sizes 512, 1024, 2048 (hop =
  size/4, periodic Hann window, ``torch.stft`` centred with zero padding) of spectral convergence
  ``||R| - |S||_F / ||R||_F`` plus the mean of ``|log(|R| + 1e-5) - log(|S| + 1e-5)|``, on audio
  in [-1, 1] (``losses.MultiResolutionSTFTDistance``; cross-checked against auraloss in the tests);
- ``mrstft_floor80``: the same distance with each log floored 80 dB below the peak bin of a
  full-scale sinusoid (``1e-4 * n / 4`` for FFT size n) instead of at 1e-5, so that bins far
  below hearing, where 16-bit rounding noise lives, count as equal. It compresses the bottom of
  the scale (silence scores far closer to the reference than under ``mrstft``): read it beside
  ``mrstft``, never alone;
- ``lsd``: log-spectral distance in dB with FFT size 2048 (``losses.log_spectral_distance``);
- ``loudness_r``: Pearson r between the frame RMS levels in dB over 50 ms frames;
- ``note_f1``: basic-pitch transcribes the system's audio, and mir_eval scores it against the
  input notes, onsets only, 50 ms tolerance;
- ``speed``: for models, clip seconds synthesized per second of wall-clock time on this machine,
  run as ``synthesize`` runs it (``Synth.blocks``: 30-second chunks with 2 s of context, split
  between ``threads`` threads of one torch thread each) over the clip and 4 s of real context
  on either side, so the context counts against the speed.

On a cache whose reference is stereo (the concert grand, issue 18), those columns stay exactly as
defined above, on the mid signal (L+R)/2 resampled to 16 kHz and not level matched, so that they
compare with every published figure; and a second set is added, at the cache's own rate (48 kHz),
after one gain per clip has scaled each system to the reference's level (``match_level``: the RMS
over both channels; a level is a user's knob, not timbre). A mono system is copied into both
channels, and a system at another rate is resampled to the cache's:

- ``mrstft_floor80_lr``: ``mrstft_floor80`` with FFT sizes 1024, 2048, 4096 at 48 kHz
  (``losses.fft_sizes_for``; 512, 1024, 2048 at 16 kHz), taken on each channel, then averaged;
- ``mrstft_floor80_mid``: the same on the mid signal (L+R)/2;
- ``ild_db``: the mean inter-channel level difference error in dB, FFT size 2048 at 48 kHz, over
  the bins within 60 dB of their frame's peak and above the -80 dB floor
  (``losses.interchannel_level_error``);
- ``loudness_r_mid`` and ``note_f1_mid``: loudness r and note F1 of the level-matched mid.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pretty_midi
import torch

from .errors import PianosynthError
from .config import DEFAULT_SOUNDFONT, FeatureConfig, RenderConfig
from .dataset import Cache
from .features import compute_features, compute_notes
from .fileio import atomic_write
from .losses import (
    METRIC_FLOOR_DB,
    MultiResolutionSTFTDistance,
    fft_sizes_for,
    interchannel_level_error,
    log_spectral_distance,
    per_channel_distance,
)
from .midi import Note, PedalCurve, Performance, read_midi
from .render import to_int16

EVAL_SR = 16000
MUSESCORE_SOUNDFONT = "/usr/share/sounds/sf3/MuseScore_General.sf3"
METRICS = ("mrstft", "mrstft_floor80", "lsd", "loudness_r", "note_f1")
FLOOR_DB = METRIC_FLOOR_DB  # mrstft_floor80's log floor, relative to a full-scale sinusoid's peak bin
# the stereo evaluation's columns (issue 18), after level matching; and each clip's gain in dB
STEREO_METRICS = ("mrstft_floor80_lr", "mrstft_floor80_mid", "ild_db", "loudness_r_mid", "note_f1_mid")
ILD_RANGE_DB = 60.0  # ild_db counts the bins within this range of their frame's peak


class EvaluationError(PianosynthError, RuntimeError):
    """The evaluation cannot run as asked (no such split, no source MIDI, missing tool)."""


# ---------------------------------------------------------------------------------------------
# Clips
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    index: int
    piece: dict  # the cache manifest's record
    start_s: float
    seconds: float

    @property
    def name(self) -> str:
        return f"clip{self.index:02d}"


def choose_clips(cache: Cache, split: str, count: int, seconds: float) -> list[Clip]:
    """``count`` clips of ``seconds``, deterministic: pieces in hashed order, round robin, each
    piece's clips evenly spaced through it (frame-aligned to the cache's clock)."""
    pieces = sorted(cache.split(split), key=lambda p: hashlib.sha1(p["file"].encode()).hexdigest())
    if not pieces:
        raise EvaluationError(f"{cache.dir}: no pieces in the {split!r} split")
    fr = cache.features.frame_rate
    per_piece = [count // len(pieces) + (1 if i < count % len(pieces) else 0) for i in range(len(pieces))]
    clips = []
    for piece, n in zip(pieces, per_piece):
        room_s = max(0.0, piece["seconds"] - seconds)
        for k in range(n):
            start_frame = int(room_s * (k + 0.5) / n * fr)
            clips.append((piece, start_frame / fr))
    return [Clip(i, p, start, seconds) for i, (p, start) in enumerate(clips)]


def clip_notes(perf: Performance, clip: Clip) -> list[Note]:
    """Notes with an onset inside the clip, in clip time."""
    t0, t1 = clip.start_s, clip.start_s + clip.seconds
    return [replace(n, start_s=n.start_s - t0, end_s=min(n.end_s, t1) - t0) for n in perf.notes if t0 <= n.start_s < t1]


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def resample(audio: np.ndarray, sr_from: int, sr_to: int = EVAL_SR) -> np.ndarray:
    """Band-limited polyphase resampling along the last axis.

    audio: (..., samples) -> (..., samples * sr_to / sr_from)
    """
    if sr_from == sr_to:
        return audio.astype(np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(sr_from, sr_to)
    return resample_poly(audio, sr_to // g, sr_from // g, axis=-1).astype(np.float32)


def channels_first(audio: np.ndarray) -> np.ndarray:
    """A system's or the cache's audio as the library holds it: (samples,) mono or (samples,
    channels) as ``render.render`` and the cache give it -> (channels, samples) float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 1:
        return audio[None]
    if audio.ndim == 2:
        return np.ascontiguousarray(audio.T)
    raise ValueError(f"expected audio of shape (samples,) or (samples, channels), got {audio.shape}")


def to_stereo(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) -> (2, samples): a mono signal is copied into both channels."""
    if audio.shape[0] == 1:
        return np.repeat(audio, 2, axis=0)
    if audio.shape[0] != 2:
        raise ValueError(f"expected 1 or 2 channels, got {audio.shape[0]}")
    return audio


def mixdown(audio: np.ndarray) -> np.ndarray:
    """The mid signal, the mean of the channels: (samples,) or (samples, channels) -> (samples,)"""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if audio.ndim == 1 else audio.mean(axis=1, dtype=np.float32)


def match_level(audio: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, float]:
    """One gain that gives ``audio`` the RMS (over all channels) of ``ref``: a level is a user's
    knob, not timbre, so the stereo columns do not score it. A silent ``audio`` is left as it is.

    audio, ref: (channels, samples) -> (audio scaled, the gain in dB)
    """
    rms = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    ref_rms = float(np.sqrt(np.mean(np.square(ref, dtype=np.float64))))
    if rms <= 0 or ref_rms <= 0:
        return audio, 0.0
    gain = ref_rms / rms
    return (audio * np.float32(gain)).astype(np.float32), 20 * math.log10(gain)


def as_pcm16(audio: np.ndarray) -> np.ndarray:
    """The audio a 16-bit PCM file holds, back as float: clipped to [-1, 1] and rounded to
    multiples of 1/32767, exactly as ``prepare`` stores the reference (``render.to_int16``) and
    reads it back (/ 32767). The reference passes through unchanged.

    audio: any shape, e.g. (samples,) or (samples, channels) -> the same shape, float32
    """
    return to_int16(np.asarray(audio, dtype=np.float32))[0].astype(np.float32) / np.float32(32767.0)


_MRSTFT = MultiResolutionSTFTDistance(per_example=True)
_MRSTFT_FLOORED = MultiResolutionSTFTDistance(per_example=True, floor_db=FLOOR_DB)


def spectral_metrics(audio: np.ndarray, ref: np.ndarray) -> dict:
    """MR-STFT distance (unfloored and floored) and LSD of ``audio`` against ``ref`` (both
    (samples,) at 16 kHz)."""
    a, r = torch.from_numpy(audio)[None], torch.from_numpy(ref)[None]
    with torch.no_grad():
        return {
            "mrstft": float(_MRSTFT(a, r)[0]),
            "mrstft_floor80": float(_MRSTFT_FLOORED(a, r)[0]),
            "lsd": float(log_spectral_distance(a, r)[0]),
        }


_STEREO_DISTANCES: dict[int, MultiResolutionSTFTDistance] = {}


def stereo_metrics(audio: np.ndarray, ref: np.ndarray, sr: int) -> dict:
    """The stereo columns' spectral part: floored MR-STFT per channel and on the mid, and the
    inter-channel level error, of ``audio`` against ``ref``, both (2, samples) at ``sr`` (level
    matching is the caller's: ``match_level``)."""
    if sr not in _STEREO_DISTANCES:
        _STEREO_DISTANCES[sr] = MultiResolutionSTFTDistance(fft_sizes_for(sr), per_example=True, floor_db=FLOOR_DB)
    distance = _STEREO_DISTANCES[sr]
    a, r = torch.from_numpy(np.ascontiguousarray(audio))[None], torch.from_numpy(np.ascontiguousarray(ref))[None]
    with torch.no_grad():
        return {
            "mrstft_floor80_lr": float(per_channel_distance(distance, a, r)[0]),
            "mrstft_floor80_mid": float(distance(a.mean(dim=1), r.mean(dim=1))[0]),
            "ild_db": float(interchannel_level_error(a, r, n_fft=fft_sizes_for(sr)[1], range_db=ILD_RANGE_DB, floor_db=FLOOR_DB)[0]),
        }


def stereo_scores(
    audio: np.ndarray, ref: np.ndarray, sr: int, notes: list[Note] | None = None, transcriber: "BasicPitch | None" = None
) -> tuple[np.ndarray, dict]:
    """Every stereo column of one clip: ``audio`` scaled to the level of ``ref`` (``match_level``),
    then ``stereo_metrics``, and loudness r and note F1 (with a transcriber) on the mid signal.

    audio, ref: (2, samples) at ``sr`` -> (audio level matched, {column: value, "gain_db": dB})
    """
    audio, gain_db = match_level(audio, ref)
    row = {"gain_db": gain_db, **stereo_metrics(audio, ref, sr)}
    mid, ref_mid = audio.mean(axis=0), ref.mean(axis=0)
    row["loudness_r_mid"] = loudness_correlation(mid, ref_mid, sr)
    row["note_f1_mid"] = onset_f1(notes or [], transcriber.transcribe(mid, sr)) if transcriber else float("nan")
    return audio, row


def frame_rms_db(audio: np.ndarray, sr: int = EVAL_SR, frame_s: float = 0.05) -> np.ndarray:
    """RMS level in dB of consecutive ``frame_s`` frames. (samples,) -> (frames,)"""
    n = int(round(frame_s * sr))
    frames = audio[: len(audio) // n * n].reshape(-1, n).astype(np.float64)
    return 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-5)


def loudness_correlation(audio: np.ndarray, ref: np.ndarray, sr: int = EVAL_SR) -> float:
    """Pearson r of the 50 ms frame RMS in dB; NaN when either contour is constant (silence)."""
    a, r = frame_rms_db(audio, sr), frame_rms_db(ref, sr)
    if np.std(a) < 1e-9 or np.std(r) < 1e-9:
        return float("nan")
    return float(np.corrcoef(a, r)[0, 1])


def midi_to_hz(pitch: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(pitch, dtype=np.float64) - 69) / 12)


def onset_f1(ref_notes: list[Note], est: list[tuple[float, float, int]], tolerance_s: float = 0.05) -> float:
    """mir_eval note F1 on onsets only (pitch within 50 cents, onset within ``tolerance_s``).

    est: (start_s, end_s, midi_pitch) triples. NaN when the clip has no reference notes.
    """
    import mir_eval

    if not ref_notes:
        return float("nan")
    if not est:
        return 0.0
    ref_iv = np.array([[n.start_s, max(n.end_s, n.start_s + 1e-3)] for n in ref_notes])
    est_iv = np.array([[s, max(e, s + 1e-3)] for s, e, _ in est])
    _, _, f1, _ = mir_eval.transcription.precision_recall_f1_overlap(
        ref_iv, midi_to_hz([n.pitch for n in ref_notes]), est_iv, midi_to_hz([p for _, _, p in est]),
        onset_tolerance=tolerance_s, offset_ratio=None,
    )  # fmt: skip
    return float(f1)


class BasicPitch:
    """basic-pitch's ICASSP 2022 model through onnxruntime (the .onnx file ships in its wheel)."""

    def __init__(self):
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # resampy's pkg_resources notice
                from basic_pitch import ICASSP_2022_MODEL_PATH
                from basic_pitch.inference import Model
        except ImportError as e:
            raise EvaluationError(
                f"note F1 needs basic-pitch and the eval extra ({e}): pip install 'pianosynth[eval]', then "
                "pip install --no-deps basic-pitch==0.4.0 (its own metadata would pull TensorFlow); or make setup"
            ) from e
        path = Path(ICASSP_2022_MODEL_PATH)
        onnx = path if path.suffix == ".onnx" else path.with_suffix(".onnx")
        if not onnx.is_file():
            onnx = Path(str(path).rstrip("/")).parent / "nmp.onnx"
        self.model = Model(str(onnx))

    def transcribe(self, audio: np.ndarray, sr: int) -> list[tuple[float, float, int]]:
        """(start_s, end_s, midi_pitch) of the notes basic-pitch hears in ``audio``."""
        import contextlib
        import io
        import tempfile

        import soundfile as sf
        from basic_pitch.inference import predict

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "a.wav"
            sf.write(path, audio, sr)
            with contextlib.redirect_stdout(io.StringIO()):  # predict() prints a line per file
                _, _, events = predict(str(path), self.model)
        return [(float(s), float(e), int(p)) for s, e, p, *_ in events]


# ---------------------------------------------------------------------------------------------
# Systems
# ---------------------------------------------------------------------------------------------


@dataclass
class System:
    """A named way of turning a clip into audio: returns (audio at ``sr``, compute seconds), the
    audio (samples,) mono or (samples, channels), as ``render.render`` returns it."""

    name: str
    kind: str  # "model", "baseline" or "reference"
    render: Callable[[Clip], tuple[np.ndarray, float]]
    sr: int
    weights: str | None = None  # a model's registry.weights_hash: ties its figures to its weights


def system_output(system: System, clip: Clip) -> tuple[np.ndarray, float]:
    """The one path from every system, reference included, to the metrics: its audio as a 16-bit
    file at its own rate would hold it, mixed to mono, then resampled to 16 kHz.

    Returns (audio (samples,) at EVAL_SR, compute seconds).
    """
    mono, _, compute_s = system_outputs(system, clip)
    return mono, compute_s


def system_outputs(system: System, clip: Clip, stereo_sr: int | None = None) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``system_output``'s path, rendering once: the mono audio at 16 kHz and, with ``stereo_sr``,
    the same 16-bit audio as (2, samples) at that rate (a mono system copied into both channels),
    not yet level matched.

    Returns (mono (samples,) at EVAL_SR, stereo (2, samples) at stereo_sr or None, compute seconds).
    """
    audio, compute_s = system.render(clip)
    pcm = as_pcm16(audio)
    stereo = None if stereo_sr is None else to_stereo(resample(channels_first(pcm), system.sr, stereo_sr))
    return resample(mixdown(pcm), system.sr), stereo, compute_s


class _Pieces:
    """Source MIDI, and renders of each piece up to the end of its last clip, computed once per
    piece: the last piece's render of each setting is kept (``choose_clips`` gives a piece's clips
    one after another), since a piece at 48 kHz stereo takes hundreds of MB.

    ``until_s``: piece file -> the end of its last clip, in seconds. A renderer plays events in
    order, and notes that start later cannot sound earlier, so a render of the notes that start
    before that end, that long, equals the whole render there (a test checks it for FluidSynth);
    it saves about half of each baseline's rendering."""

    def __init__(self, cache: Cache, until_s: dict[str, float] | None = None):
        self.cache = cache
        self.until_s = until_s or {}
        self._perf: dict[str, Performance] = {}
        self._renders: dict[tuple, tuple[str, np.ndarray]] = {}

    def perf(self, piece: dict) -> Performance:
        if piece["file"] not in self._perf:
            path = piece.get("path")
            if not path or not Path(path).is_file():
                raise EvaluationError(
                    f"{self.cache.dir}: the source MIDI of {piece['file']} is not at {path!r}; run prepare again"
                )
            self._perf[piece["file"]] = read_midi(path)
        return self._perf[piece["file"]]

    def rendered(self, piece: dict, render_cfg: RenderConfig, velocity: int | None) -> np.ndarray:
        """The whole piece through ``render.render`` with ``render_cfg`` (FluidSynth or sfizz, at
        the cache's rate and channels; optionally with every velocity set), float32 (samples,) or
        (samples, channels)."""
        from .render import render

        key = (render_cfg, velocity)
        if key not in self._renders or self._renders[key][0] != piece["file"]:
            self._renders.pop(key, None)  # free the last piece's audio before rendering the next
            perf = self.perf(piece)
            if velocity is not None:
                perf = with_velocity(perf, velocity)
            fc = self.cache.features
            n = piece["frames"] * fc.hop_samples
            until_s = self.until_s.get(piece["file"])
            if until_s is not None and any(note.start_s < until_s for note in perf.notes):
                perf = until(perf, until_s)
                n = min(n, int(math.ceil(until_s * fc.sample_rate)))
            self._renders[key] = piece["file"], render(perf, render_cfg, fc, n)
        return self._renders[key][1]


def _cut(audio: np.ndarray, clip: Clip, sr: int) -> np.ndarray:
    """The clip's samples of a whole piece, zero-padded past its end: (samples, ...) -> (n, ...)"""
    lo = int(round(clip.start_s * sr))
    n = int(round(clip.seconds * sr))
    out = np.zeros((n, *audio.shape[1:]), dtype=np.float32)
    seg = audio[lo : lo + n]
    out[: len(seg)] = seg
    return out


UNTIL_MARGIN_S = 1.0  # note-offs and pedal events this far past a render's end are kept


def until(perf: Performance, end_s: float) -> Performance:
    """What a render needs of ``perf`` up to ``end_s``: notes that start before it, their
    note-offs at ``end_s + UNTIL_MARGIN_S`` at the latest, and pedal events before that. A renderer
    plays events in order (FluidSynth in blocks of 64 samples), so its audio before ``end_s`` is
    the whole performance's; and it stops soon after (a note or a pedal held to the piece's end
    would make it render the whole piece, past the size bound that the shorter render sets)."""
    stop = end_s + UNTIL_MARGIN_S

    def cut(curves: dict[str, PedalCurve]) -> dict[str, PedalCurve]:
        return {k: PedalCurve(c.times_s[c.times_s < stop], c.values[c.times_s < stop]) for k, c in curves.items()}

    notes = [replace(n, end_s=min(n.end_s, stop)) for n in perf.notes if n.start_s < end_s]
    return replace(
        perf, notes=notes, pedals=cut(perf.pedals), end_s=min(perf.end_s, stop),
        program_pedals={p: cut(c) for p, c in perf.program_pedals.items()},
    )


def with_velocity(perf: Performance, velocity: int) -> Performance:
    """The performance with every note at one velocity (a bare score's dynamics)."""
    return replace(perf, notes=[replace(n, velocity=velocity) for n in perf.notes])


def instrument_label(render_cfg: RenderConfig, soundfont: str = "FluidR3") -> str:
    """A baseline's sound in a label: "FluidR3 grand" for the piano, else the General MIDI name
    of the cache's program (e.g. "FluidR3 Harpsichord"); the concert grand that sfizz plays is
    "Salamander grand"."""
    if render_cfg.source == "sfizz":
        return "Salamander grand"
    if render_cfg.program == 0:
        return f"{soundfont} grand"
    return f"{soundfont} {pretty_midi.program_to_instrument_name(render_cfg.program)}"


def reference_system(cache: Cache) -> System:
    """The cache's own reference audio: the FluidSynth render, or the aligned, levelled recording."""
    sr = cache.features.sample_rate

    def render(clip: Clip):
        _, y = cache.load(clip.piece)
        return _cut(np.asarray(y, dtype=np.float32) / 32767.0, clip, sr), 0.0

    label = {"recorded": "recording", "sfizz": "Salamander grand, sfizz"}.get(cache.render.source, instrument_label(cache.render))
    return System(f"reference ({label})", "reference", render, sr)


def mono_mix_system(reference: System) -> System:
    """The reference mixed to mono, (L+R)/2, played in both channels: what its stereo image is worth."""

    def render(clip: Clip):
        return mixdown(reference.render(clip)[0]), 0.0

    return System(f"{reference.name.removeprefix('reference (').removesuffix(')')}, mixed to mono", "baseline", render, reference.sr)


def shipped_fluidr3_model() -> Path | None:
    """The shipped performance model that learned FluidR3's grand at 16 kHz (fluidr3), if any."""
    from .registry import shipped

    for info in shipped().values():
        if info.soundfont == Path(DEFAULT_SOUNDFONT).name and info.program == 0 and info.sample_rate == EVAL_SR and info.preset == "performance":
            return info.path
    return None


def silence_system() -> System:
    return System("silence", "baseline", lambda clip: (np.zeros(int(round(clip.seconds * EVAL_SR)), np.float32), 0.0), EVAL_SR)


def sine_system(pieces: _Pieces, reference: System) -> System:
    """pretty_midi's sine synthesis of the clip's notes, scaled to the reference clip's RMS
    (pretty_midi's own output level is arbitrary)."""
    import pretty_midi

    def render(clip: Clip):
        inst = pretty_midi.Instrument(program=0)
        for n in clip_notes(pieces.perf(clip.piece), clip):
            inst.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start_s, n.end_s))
        audio = np.zeros(int(round(clip.seconds * EVAL_SR)), np.float32)
        if inst.notes:
            synth = inst.synthesize(fs=EVAL_SR).astype(np.float32)[: len(audio)]
            audio[: len(synth)] = synth
        ref = resample(mixdown(reference.render(clip)[0]), reference.sr)
        rms, ref_rms = np.sqrt(np.mean(audio**2)), np.sqrt(np.mean(ref**2))
        return (audio * (ref_rms / rms) if rms > 0 else audio), 0.0

    return System("sine (pretty_midi)", "baseline", render, EVAL_SR)


def soundfont_system(pieces: _Pieces, name: str, render_cfg: RenderConfig, velocity: int | None = None) -> System:
    sr = pieces.cache.features.sample_rate

    def render(clip: Clip):
        return _cut(pieces.rendered(clip.piece, render_cfg, velocity), clip, sr), 0.0

    return System(name, "baseline", render, sr)


def model_system(
    path: str | Path, pieces: _Pieces, context_seconds: float = 4.0, name: str | None = None, threads: int | None = None,
    velocity: int | None = None, synth=None,
) -> System:
    """A checkpoint synthesizing each clip from its own features, with real context either side,
    through the same chunked path as ``synthesize`` (``Synth.blocks``). With ``velocity``, every
    note is given that velocity first: what the model plays from a bare score. ``synth``: the
    checkpoint already loaded (``synthesize.load``), to share it between systems."""
    from .synthesize import load

    synth = synth if synth is not None else load(path, threads=threads)
    cfg = synth.config
    fc: FeatureConfig = cfg.features
    feats: dict[str, tuple[torch.Tensor, np.ndarray]] = {}

    def render(clip: Clip):
        key = clip.piece["file"]
        if key not in feats:  # features and notes exactly as prepare computes them, with the model's config
            perf = pieces.perf(clip.piece)
            if velocity is not None:
                perf = with_velocity(perf, velocity)
            x = compute_features(perf, fc)
            feats[key] = torch.from_numpy(x), compute_notes(perf, fc, len(x) * fc.hop_samples)
        x, notes = feats[key]
        lo = max(0, int(round((clip.start_s - context_seconds) * fc.frame_rate)))
        hi = min(len(x), int(round((clip.start_s + clip.seconds + context_seconds) * fc.frame_rate)))
        local = notes.copy()
        local[:, 2:] -= lo * fc.hop_samples  # sample 0 is the window's first
        t = time.perf_counter()
        audio = np.concatenate(list(synth.blocks(x[lo:hi], local)), axis=-1)
        if audio.ndim == 2:  # a stereo decoder's (channels, samples): samples first, as every render here
            audio = audio.T
        elapsed = time.perf_counter() - t
        shifted = replace(clip, start_s=clip.start_s - lo / fc.frame_rate)
        return _cut(audio, shifted, fc.sample_rate), elapsed

    from .registry import weights_hash

    label = name or Path(path).stem
    weights = weights_hash({"model": synth.model.state_dict()})
    flat = "" if velocity is None else f", every velocity {velocity}"
    return System(f"{label} ({cfg.model.decoder}, {'+'.join(cfg.train.loss)}){flat}", "model", render, fc.sample_rate, weights)


def grand_baselines(pieces: _Pieces, reference: System, threads: int | None = None, models: list = ()) -> list[System]:
    """The yardsticks of a concert-grand cache (issue 18), all at its rate and channels unless
    said: silence and sines as everywhere; the grand itself with every velocity at 64 (a bare
    score's dynamics) and mixed to mono (its stereo image lost); FluidR3's and MuseScore
    General's grands through FluidSynth; and the shipped 16 kHz model that learned FluidR3 (mono,
    resampled and copied into both channels), unless it is among ``models`` already."""
    cache = pieces.cache
    systems = [
        silence_system(),
        sine_system(pieces, reference),
        soundfont_system(pieces, f"{instrument_label(cache.render)}, every velocity 64", cache.render, velocity=64),
        mono_mix_system(reference),
        soundfont_system(pieces, "FluidR3 grand (FluidSynth)", RenderConfig(program=0)),
        soundfont_system(pieces, "MuseScore General grand (FluidSynth)", RenderConfig(soundfont=MUSESCORE_SOUNDFONT, program=0)),
    ]
    from .synthesize import load, resolve_model

    path = shipped_fluidr3_model()
    if path is not None and all(resolve_model(m).resolve() != path.resolve() for m in models):
        systems.append(model_system(path, pieces, name=f"shipped 16 kHz model ({path.stem})", synth=load(path, threads=threads)))
    return systems


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(
    cache: Cache,
    models: list[str | Path],
    out_dir: str | Path,
    split: str = "test",
    clips: int = 12,
    seconds: float = 30.0,
    baselines: bool = True,
    transcribe: bool = True,
    progress: Callable[[int, int, str], None] | None = None,
    model_names: list[str] | None = None,
    threads: int | None = None,
    flat_velocity: int | None = None,
) -> dict:
    """Runs every system on the same clips, writes metrics.json, metrics.md and index.html.

    ``progress(clips_done, clips_total, message)`` is called before each clip and once at the end;
    ``threads`` is what ``synthesize --threads`` would be for the models; ``flat_velocity`` adds,
    for each model that reads velocities, a second row with every velocity set to it (a bare
    score's input)."""
    out = Path(out_dir)
    chosen = choose_clips(cache, split, clips, seconds)
    until_s: dict[str, float] = {}
    for clip in chosen:
        until_s[clip.piece["file"]] = max(until_s.get(clip.piece["file"], 0.0), clip.start_s + clip.seconds)
    pieces = _Pieces(cache, until_s)
    ref = reference_system(cache)
    systems = [ref]
    stereo = cache.features.channels == 2
    if baselines and cache.render.source == "sfizz":
        systems += grand_baselines(pieces, ref, threads=threads, models=models)
    elif baselines:
        # the SoundFont render of the cache's settings: on a cache of recordings, what its user has
        # without learning anything (the render section there names the SoundFont, FluidR3 by default)
        rendered = replace(cache.render, source="fluidsynth")
        systems += [
            silence_system(),
            sine_system(pieces, ref),
            # the same instrument from another SoundFont
            soundfont_system(
                pieces, f"{instrument_label(rendered, 'MuseScore General')} (FluidSynth)",
                RenderConfig(soundfont=MUSESCORE_SOUNDFONT, program=rendered.program, bank=rendered.bank),
            ),
            soundfont_system(pieces, f"{instrument_label(rendered)}, every velocity 64", rendered, velocity=64),
        ]
        if cache.render.source == "recorded":
            systems.insert(3, soundfont_system(pieces, f"{instrument_label(rendered)} (FluidSynth)", rendered))
    names = model_names or [None] * len(models)
    from .synthesize import load

    for m, n in zip(models, names):
        synth = load(m, threads=threads)
        systems.append(model_system(m, pieces, name=n, synth=synth))
        if flat_velocity is not None and synth.config.features.velocity:
            systems.append(model_system(m, pieces, name=n, velocity=flat_velocity, synth=synth))
    transcriber = BasicPitch() if transcribe else None
    return score_systems(
        systems, chosen, lambda clip: clip_notes(pieces.perf(clip.piece), clip), out, cache.dir.name, split,
        stereo_sr=cache.features.sample_rate if stereo else None, transcriber=transcriber, progress=progress,
    )  # fmt: skip


def score_systems(
    systems: list[System],
    chosen: list[Clip],
    notes_of: Callable[[Clip], list[Note]],
    out_dir: str | Path,
    cache_name: str,
    split: str,
    stereo_sr: int | None = None,
    transcriber: BasicPitch | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> dict:
    """Scores every system on every clip against ``systems[0]``, the reference, and writes
    metrics.json, metrics.md, index.html, and the audio and images the page shows.

    ``notes_of(clip)``: the clip's input notes, in clip time. With ``stereo_sr``, the stereo
    columns are added at that rate, and the page plays every system in stereo at that rate, level
    matched; without it, as before issue 18: mono at 16 kHz."""
    import soundfile as sf

    out = Path(out_dir)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    (out / "img").mkdir(parents=True, exist_ok=True)
    ref = systems[0]
    stereo = stereo_sr is not None
    page_sr = stereo_sr if stereo else EVAL_SR
    rows: dict[str, list[dict]] = {s.name: [] for s in systems}
    clip_info = []
    for i, clip in enumerate(chosen):
        if progress:
            progress(i, len(chosen), f"{clip.name}: {clip.piece['file']} from {clip.start_s:.1f} s")
        notes = notes_of(clip)
        ref16, ref_st, _ = system_outputs(ref, clip, stereo_sr)
        clip_info.append({"name": clip.name, "file": clip.piece["file"], "start_s": clip.start_s, "seconds": clip.seconds, "notes": len(notes)})
        plot_piano_roll(notes, clip.seconds, out / "img" / f"{clip.name}_roll.png")
        for si, system in enumerate(systems):
            a16, a_st, compute_s = system_outputs(system, clip, stereo_sr)
            row = spectral_metrics(a16, ref16)
            row["loudness_r"] = loudness_correlation(a16, ref16)
            row["note_f1"] = onset_f1(notes, transcriber.transcribe(a16, EVAL_SR)) if transcriber else float("nan")
            row["speed"] = clip.seconds / compute_s if system.kind == "model" and compute_s > 0 else float("nan")
            if stereo:
                a_st, stereo_row = stereo_scores(a_st, ref_st, page_sr, notes, transcriber)
                row.update(stereo_row)
            rows[system.name].append(row)
            tag = f"{clip.name}_s{si}"
            heard = a_st.T if stereo else a16  # the page plays what the stereo columns score: level matched
            sf.write(out / "audio" / f"{tag}.wav", np.clip(heard, -1, 1), page_sr, subtype="PCM_16")
            plot_spectrogram_small(a_st.mean(axis=0) if stereo else a16, out / "img" / f"{tag}.png", page_sr)
        if i + 1 < len(chosen):  # an evaluation stopped early keeps the clips it finished
            _write_result(out, cache_name, split, stereo, page_sr, systems, clip_info, rows, len(chosen))
    if progress:
        progress(len(chosen), len(chosen), "done")
    return _write_result(out, cache_name, split, stereo, page_sr, systems, clip_info, rows, len(chosen))


def _write_result(out: Path, cache_name: str, split: str, stereo: bool, sr: int, systems: list[System], clip_info: list[dict],
                  rows: dict[str, list[dict]], planned: int) -> dict:  # fmt: skip
    """metrics.json, metrics.md and index.html for the clips done so far (of ``planned``)."""
    result = {
        "cache": cache_name,
        "split": split,
        "stereo": stereo,
        "sample_rate": sr,
        "clips": clip_info,
        "clips_planned": planned,
        "systems": [{"name": s.name, "kind": s.kind, "sr": s.sr, **({"weights": s.weights} if s.weights else {})} for s in systems],
        "per_clip": rows,
        "summary": {name: _summarise(r) for name, r in rows.items()},
        "definitions": __doc__,
    }
    _write_text(out / "metrics.json", json.dumps(result, indent=1, default=_nan_to_none))
    _write_text(out / "metrics.md", metrics_table(result))
    _write_text(out / "index.html", listening_page(result))
    return result


def _nan_to_none(x):
    return None


def _summarise(rows: list[dict]) -> dict:
    out = {}
    for key in (*METRICS, "speed", *STEREO_METRICS, "gain_db"):
        if not rows or key not in rows[0]:
            continue
        vals = np.array([r[key] for r in rows], dtype=np.float64)
        vals = vals[np.isfinite(vals)]
        out[key] = {"mean": float(vals.mean()) if len(vals) else None, "std": float(vals.std()) if len(vals) else None, "n": int(len(vals))}
    return out


def _fmt(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def metrics_table(result: dict) -> str:
    """A markdown table: one row per system, mean ± standard deviation over clips."""
    head = "| system | MR-STFT ↓ | MR-STFT, floor −80 dB ↓ | LSD dB ↓ | loudness r ↑ | note F1 ↑ | speed (× real time) ↑ |\n"
    head += "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    lines = []
    for s in result["systems"]:
        m = result["summary"][s["name"]]
        speed = "—" if m["speed"]["mean"] is None else f"{m['speed']['mean']:.0f}"
        lines.append(
            f"| {s['name']} | {_fmt(m['mrstft'], 3)} | {_fmt(m['mrstft_floor80'], 3)} | {_fmt(m['lsd'], 2)} | "
            f"{_fmt(m['loudness_r'], 3)} | "
            f"{_fmt(m['note_f1'], 3)} | {speed} |"
        )
    n = len(result["clips"])
    secs = result["clips"][0]["seconds"] if n else 0
    planned = result.get("clips_planned", n)
    partial = f" (the evaluation stopped after {n} of {planned})" if planned > n else ""
    text = f"{n} clips{partial} of {secs:g} s from the {result['split']} split of `{result['cache']}`; mean ± std over clips.\n\n" + head + "\n".join(lines) + "\n"
    if result.get("stereo"):
        text += "\n" + stereo_table(result)
    return text


def stereo_table(result: dict) -> str:
    """The stereo columns (issue 18) as a markdown table, one row per system."""
    khz = result["sample_rate"] / 1000
    head = (
        f"Stereo at {khz:g} kHz, each system first scaled by one gain per clip to the reference's level "
        "(its mean in the last column); a mono system plays in both channels.\n\n"
        "| system | MR-STFT floor −80 dB, per channel ↓ | MR-STFT floor −80 dB, mid ↓ | level difference error dB ↓ | "
        "loudness r, mid ↑ | note F1, mid ↑ | gain dB |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for s in result["systems"]:
        m = result["summary"][s["name"]]
        lines.append(
            f"| {s['name']} | {_fmt(m['mrstft_floor80_lr'], 3)} | {_fmt(m['mrstft_floor80_mid'], 3)} | {_fmt(m['ild_db'], 2)} | "
            f"{_fmt(m['loudness_r_mid'], 3)} | {_fmt(m['note_f1_mid'], 3)} | {_fmt(m['gain_db'], 1)} |"
        )
    return head + "\n".join(lines) + "\n"


def listening_page(result: dict) -> str:
    """A static HTML page (no network, no scripts) with players, spectrograms and piano rolls; it
    plays and shows the files in ``audio/`` and ``img/`` beside it, so copy the folder whole."""
    import html

    def md_to_html_table(md: str) -> str:
        rows = [r for r in md.splitlines() if r.startswith("|") and not r.startswith("| ---")]
        if not rows:
            return ""
        cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
        out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells[0]) + "</tr>"]
        for r in cells[1:]:
            out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>")
        return "\n".join(out + ["</table>"])

    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pianosynth listening page</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}td{white-space:nowrap}"
        "th:first-child,td:first-child{text-align:left;white-space:normal}"
        ".grid{display:grid;grid-template-columns:260px 320px 1fr;gap:6px;align-items:center}"
        "img{max-width:100%}audio{width:300px}h2{margin-top:2em}</style></head><body>",
        "<h1>pianosynth: listening page</h1>",
        f"<p>Every system renders the same clips of the <b>{html.escape(result['split'])}</b> split of "
        f"<code>{html.escape(result['cache'])}</code>; metrics compare each with the reference at 16 kHz, every "
        "system's output (the reference's included) taken as the 16-bit PCM its file would hold. The floored "
        "MR-STFT treats bins more than 80 dB below a full-scale sinusoid as silent, so inaudible noise cannot move it; it compresses "
        "the bottom of the scale, so read it beside the unfloored one, never alone.</p>",
        md_to_html_table(metrics_table({**result, "stereo": False})),
    ]
    if result.get("stereo"):
        khz = result["sample_rate"] / 1000
        parts += [
            f"<h2>Stereo at {khz:g} kHz, level matched</h2>",
            f"<p>The players below play stereo at {khz:g} kHz. Before the stereo metrics, and in the players, every "
            "system is scaled by <b>one gain per clip</b> that gives it the reference's level (RMS over both "
            "channels; the mean gain is the last column): a level is a user's knob, not timbre. The table above is "
            "not level matched: it is on the mid signal at 16 kHz, as every earlier evaluation. A mono system "
            "plays in both channels.</p>",
            md_to_html_table(stereo_table(result)),
        ]
    for clip in result["clips"]:
        parts.append(
            f"<h2>{clip['name']}: {html.escape(clip['file'])}, {clip['start_s']:.1f}–{clip['start_s'] + clip['seconds']:.1f} s"
            f" ({clip['notes']} notes)</h2>"
        )
        parts.append(f"<p><img src='img/{clip['name']}_roll.png' alt='piano roll of {clip['name']}'></p><div class='grid'>")
        for si, s in enumerate(result["systems"]):
            tag = f"{clip['name']}_s{si}"
            parts.append(
                f"<div>{html.escape(s['name'])}</div><audio controls preload='metadata' src='audio/{tag}.wav'></audio>"
                f"<img src='img/{tag}.png' alt='spectrogram of {html.escape(s['name'])}'>"
            )
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def plot_spectrogram_small(audio: np.ndarray, path: Path, sr: int = EVAL_SR) -> None:
    """A small spectrogram image for the listening page: (samples,) at ``sr``, up to sr / 2."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = fft_sizes_for(sr)[1]  # 1024 at 16 kHz: the same time span at any rate
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(audio)), n_fft, n_fft // 4, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * torch.log10(spec * (1024 / n_fft) + 1e-5).numpy()  # the same dB scale at every size
    fig, ax = plt.subplots(figsize=(6, 1.6))
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=0, extent=[0, len(audio) / sr, 0, sr / 2000])
    ax.set_ylabel("kHz")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_piano_roll(notes: list[Note], seconds: float, path: Path) -> None:
    """The clip's input notes as a piano roll, shaded by velocity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.6))
    for n in notes:
        ax.add_patch(plt.Rectangle((n.start_s, n.pitch - 0.4), n.end_s - n.start_s, 0.8, color=plt.cm.viridis(n.velocity / 127)))
    ax.set_xlim(0, seconds)
    ax.set_ylim(20, 109)
    ax.set_ylabel("key")
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=80)
    plt.close(fig)
