"""Checkpoint + MIDI -> waveform of any length, streamed to a sound file or returned as an array.

``Synth`` (``pianosynth.load()``) holds a model between calls. Every render, from the Python API,
the CLI, a batch or the local page, takes one path (``Synth._render``):

1. the MIDI (a path, bytes, a ``pretty_midi.PrettyMIDI`` or a ``mido.MidiFile``) becomes events,
   and features and the note table come from them exactly as ``prepare`` computes them, with the
   feature config stored in the checkpoint;
2. each model runs in overlapping, crossfaded chunks (``PianoSynth.synthesize``) and its float
   output, (channels, samples) at the model's own rate, goes to a temporary file block by block.
   A synthesizer loaded without a named model routes each General MIDI program to a shipped model
   (``routing``); several parts are rendered one by one, each resampled to the highest of their
   rates, and summed, a mono part spread to both channels of a stereo mix (``_mix_parts``). The
   mix is metered as it will be written (``audio.LoudnessMeter``: loudness and peak);
3. a second pass reads it back in blocks, applies the chosen gain (``audio.choose_gain``),
   makes the channels, resamples (``audio.Resampler``) and writes the output
   (``audio.AudioWriter``), metering what is written: the level and peak reported are the file's.

So a 30-minute piece never holds 30 minutes of activations, and the level costs no extra memory.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

from .errors import PianosynthError
from . import allocator
from .audio import (
    DEFAULT_LOUDNESS_LUFS,
    AudioWriter,
    Level,
    LoudnessMeter,
    OutputError,
    Resampler,
    as_channels,
    check_channels,
    check_sample_rate,
    choose_gain,
    match_channels,
    pcm_block,
    subtype_for,
)
from .features import compute_features, compute_notes
from .fileio import atomic_write, remove_stale_temps, replacing
from .midi import MAX_SECONDS, Limits, MidiError, Performance, check_limits, performance_from_pretty_midi, read_midi
from .registry import DEFAULT_ALIAS, default_name, find_instrument, model_files, models_dir
from .routing import Part, Route, Router
from .checkpoint import CheckpointError, model_from_checkpoint

BLOCK = 1 << 16  # samples per read/write block of the mix and the second pass
# Frames of feature windows that go through the encoder at once. Batching is what makes a
# recurrent network fast on a CPU, and it is also the render's largest transient: the GRU's gates
# and outputs for every frame of the batch, about 8 KB a frame, 260 MB at 32768 frames. The rest
# of the peak grows with the piece (uint8 features, 16 KB a second; the conditioning, 8 KB a
# second), so a long piece runs smaller batches: a 59-minute render peaked at 735 MB with 32768
# and 563 MB with 16384, whose conditioning was 1.5 x slower (docs/speed.md).
MAX_BATCH_FRAMES = 32768
LONG_PIECE_BATCH_FRAMES = 16384
LONG_PIECE_SECONDS = 20 * 60
# Frames per block of the voices (``PianoSynth.synthesize_voices``). Each block's temporaries
# grow with it (the voices sounding in it, each with its frames of partials), and while the
# voices render the allocator keeps them for the next block instead of faulting them in afresh
# (allocator.py): on a 59-minute piece, 256 frames peaked at 546 MB and 128 at 468 MB, so a long
# piece takes the smaller blocks, at some speed (docs/speed.md).
BLOCK_FRAMES = 256
LONG_PIECE_BLOCK_FRAMES = 128


class SynthesisError(PianosynthError, RuntimeError):
    """The output cannot be written as asked (exists, unknown format, no model)."""


@dataclass
class SynthesisResult:
    path: Path | None  # the file written (None for an in-memory render)
    seconds: float
    sample_rate: int  # of the output
    peak: float  # the sample peak of the output as written (after the gain, resampling and clipping)
    clipped_samples: int  # samples beyond [-1, 1] after the level change (clipped in the output)
    warnings: list[str]
    plot: Path | None = None
    channels: int = 1
    loudness_lufs: float = -math.inf  # integrated loudness (BS.1770, all channels) of the output as written
    gain_db: float = 0.0  # the gain applied to the models' mix
    compute_seconds: float = 0.0  # wall-clock time of the whole render
    audio: np.ndarray | None = field(default=None, repr=False)  # (channels, samples), in-memory renders only
    messages: list[str] = field(default_factory=list)  # choices made for the user (e.g. the score-mode model)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of wall-clock time."""
        return self.seconds / self.compute_seconds if self.compute_seconds > 0 else math.inf


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def shipped_models() -> dict[str, Path]:
    """The shipped checkpoints by name (the file's stem), the default first: the package's
    ``models/`` folder, or ``$PIANOSYNTH_MODELS_DIR`` (``registry.models_dir``)."""
    return model_files()


def default_model_path() -> Path:
    """The shipped default model: the one the models index names as the default (``"default"``
    in index.json; ``registry.default_name``)."""
    name = default_name()
    path = shipped_models().get(name) if name is not None else None
    if path is None:
        where = f"the models index names {name!r} as the default, but {name}.pt is not in {models_dir()}" if name else "no default model is shipped in this installation"
        raise SynthesisError(f"{where}; pass --model CHECKPOINT")
    return path


def resolve_model(model: str | Path | None) -> Path:
    """None or "default" -> the shipped default; a shipped model's name (e.g. "fluidr3") -> its
    file; anything else is a checkpoint path. A bare word that names neither is a CheckpointError
    listing the shipped names (a misspelt name said "no such checkpoint")."""
    if model is None:
        return default_model_path()
    if isinstance(model, str) and not Path(model).exists():
        shipped = shipped_models()
        if model in shipped:
            return shipped[model]
        if model == DEFAULT_ALIAS:
            return default_model_path()
        if len(Path(model).parts) == 1 and not Path(model).suffix:  # a name, not a file's path
            raise CheckpointError(
                f"unknown model {model!r}; shipped: {', '.join(shipped) or '(none)'} (pianosynth models), or give a checkpoint file"
            )
    return Path(model)


# ---------------------------------------------------------------------------------------------
# MIDI in
# ---------------------------------------------------------------------------------------------


def read_performance(
    midi, name: str | None = None, max_seconds: float | None = MAX_SECONDS, bpm: float | None = None,
    limits: Limits | None = None,
) -> Performance:
    """Events from a MIDI or score path, its bytes, a binary file object (``open(p, "rb")``,
    ``io.BytesIO``; its ``name`` names it), a ``pretty_midi.PrettyMIDI`` or a ``mido.MidiFile``.

    A path (or ``name``, for bytes) ending in a score suffix (``scores.SCORE_SUFFIXES``: MusicXML,
    .mxl, MEI, Humdrum) is read by ``scores.read_score`` with tempo ``bpm`` (quarter notes per
    minute; None: the score's own); anything else is MIDI, read by ``midi.read_midi``, which keeps
    its own tempo (a ``bpm`` given for it is reported in ``Performance.warnings``).

    Bytes and mido objects are written to a temporary file and read from there, so every kind of
    input meets the same checks; errors name ``name`` (default "<bytes>" or "<mido.MidiFile>")
    instead of the temporary file. Every kind meets the same budget (``max_seconds`` and
    ``limits``, default ``midi.Limits()``) before anything is allocated for it.

    Raises:
        MidiError: for an input of any other type, or any value it cannot use.
    """
    from .scores import is_score, read_score

    limits = limits or Limits()
    suffix = ".mid"
    if hasattr(midi, "read") and not isinstance(midi, (str, Path)):  # an open file, io.BytesIO
        data = midi.read()
        if not isinstance(data, (bytes, bytearray)):
            raise MidiError(f"a file object given as midi must be opened in binary mode ('rb'), got {type(data).__name__} from read()")
        own = getattr(midi, "name", None)
        label = name or (str(own) if isinstance(own, (str, Path)) else None)
        return read_performance(bytes(data), name=label, max_seconds=max_seconds, bpm=bpm, limits=limits)
    if isinstance(midi, os.PathLike):
        midi = Path(midi)
    if isinstance(midi, (str, Path)):
        if is_score(midi):
            return read_score(midi, bpm=bpm, max_seconds=max_seconds, limits=limits)
        return _midi_bpm_warning(read_midi(midi, max_seconds=max_seconds, limits=limits), bpm, str(midi))
    if type(midi).__name__ == "PrettyMIDI":
        label = name or "<PrettyMIDI>"
        perf = performance_from_pretty_midi(midi, name=label, limits=limits)
        check_limits(perf, max_seconds, name=label, limits=limits)
        return _midi_bpm_warning(perf, bpm, label)
    if isinstance(midi, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if name is not None and is_score(name):
            suffix = Path(name).suffix.lower()
        limits.check(label, "a file of", len(midi) / 2**20, "input_mib", " MiB")

        def write(path: Path) -> None:
            path.write_bytes(bytes(midi))

    elif type(midi).__name__ == "MidiFile" and hasattr(midi, "save"):
        label = name or "<mido.MidiFile>"

        def write(path: Path) -> None:
            try:
                midi.save(str(path))
            except (TypeError, ValueError, AttributeError, OverflowError, KeyError, IndexError) as e:
                raise MidiError(f"{label}: not a usable mido.MidiFile ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e

    else:
        raise MidiError(
            f"midi must be a path, bytes, a binary file object, a pretty_midi.PrettyMIDI or a mido.MidiFile, got {type(midi).__name__}"
        )
    with tempfile.TemporaryDirectory(prefix="pianosynth-midi-") as tmp:
        path = Path(tmp) / f"input{suffix}"
        write(path)
        try:
            perf = read_performance(path, max_seconds=max_seconds, bpm=bpm, limits=limits)
        except MidiError as e:
            raise type(e)(str(e).replace(str(path), label)) from e
    perf.warnings = [w.replace(str(path), label) for w in perf.warnings]
    return perf


def _midi_bpm_warning(perf: Performance, bpm: float | None, label: str) -> Performance:
    if bpm is not None:
        perf.warnings.append(f"{label}: --bpm applies to scores only; a MIDI file keeps its own tempo")
    return perf


# ---------------------------------------------------------------------------------------------
# The synthesizer
# ---------------------------------------------------------------------------------------------


def load(model: str | Path | None = None, threads: int | None = None, instrument: str | None = None) -> "Synth":
    """A synthesizer that keeps its model loaded between renders.

    Args:
        model: None for the shipped default model (routing, below), a shipped model's name
            (``shipped_models()``; "default" is the default model's), or the path of a checkpoint written by ``pianosynth train`` or ``export``.
        threads: CPU threads for each render (default: torch's count), each running its share of
            the chunks with one torch thread, which is faster on a CPU than torch's own threads
            inside one pass (benchmarks/synthesis_speed.py).
        instrument: instead of ``model``, a shipped model by instrument: its name, "piano", or a
            General MIDI instrument name ("harpsichord") (``registry.find_instrument``).

    With neither ``model`` nor ``instrument``, the synthesizer routes: each General MIDI program
    of a file goes to a shipped model of that program, the rest to the piano, and a file without
    velocity variation goes to a shipped score-mode model (``routing``). A named model or
    instrument plays every note itself.

    Raises:
        registry.RegistryError: an unknown instrument (the message lists the shipped ones).
    """
    if model is not None and instrument is not None:
        raise SynthesisError("name a model or an instrument, not both")
    path = find_instrument(instrument).path if instrument is not None else resolve_model(model)
    net, cfg = model_from_checkpoint(path)
    router = Router(cfg.render.program) if model is None and instrument is None else None
    return Synth(net, cfg, path, threads=threads, router=router)


class Synth:
    """A loaded model and the one rendering path. Make it with ``pianosynth.load()``.

    Audio comes back as float32 shaped ``(channels, samples)``, mono included (``(1, samples)``),
    in [-1, 1].
    """

    def __init__(self, model, cfg, source: str | Path, threads: int | None = None, router: Router | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OutputError(f"threads must be a positive integer, got {threads!r}")
        self.model, self.config, self.source, self.threads = model, cfg, Path(source), threads
        self.router = router  # None: this model plays every note (routing.Router)
        self._part_synths: dict[str, Synth] = {}  # shipped models the router chose, loaded once

    @property
    def sample_rate(self) -> int:
        """The model's own sample rate; its audio holds nothing above half of it."""
        return self.config.features.sample_rate

    def __repr__(self) -> str:
        return f"Synth({str(self.source)!r}, decoder={self.config.model.decoder!r}, sample_rate={self.sample_rate})"

    def render(
        self,
        midi,
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        loudness: float | None = DEFAULT_LOUDNESS_LUFS,
        gain_db: float | None = None,
        peak: float | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        progress: Callable[[float, float], None] | None = None,
        bpm: float | None = None,
        max_seconds: float | None = MAX_SECONDS,
        limits: Limits | None = None,
    ) -> tuple[np.ndarray, int]:
        """Synthesizes ``midi`` (a MIDI or score path, bytes, a binary file object such as
        ``io.BytesIO``, a ``pretty_midi.PrettyMIDI`` or a ``mido.MidiFile``); scores (MusicXML, .mxl, MEI, Humdrum) are read by ``scores.read_score``.

        Args:
            sample_rate: output rate in Hz (default: the highest of the models that play), resampled with soxr.
            channels: 1 or 2 (default: the models' own; a mono model's signal is spread to both
                channels, a stereo mix is folded to mono as the mean of its channels).
            loudness: integrated loudness target in LUFS under a -1 dBFS peak ceiling
                (``audio.DEFAULT_LOUDNESS_LUFS``); None with no ``gain_db``/``peak`` keeps the
                model's own level.
            gain_db, peak: instead of the loudness target, a fixed gain in dB, or the sample peak
                to scale to (0 < peak <= 1).
            chunk_seconds, context_seconds: the chunk core and the context on each side.
            progress: called as ``progress(seconds_done, seconds_total)`` while the model runs.
            bpm: a score's tempo in quarter notes per minute, instead of its own marks.
            max_seconds, limits: the budget (``midi.Limits``), checked before anything is
                allocated; None for ``max_seconds`` lifts the length limit.

        Returns:
            (audio, sample_rate): audio float32 (channels, samples).

        Raises:
            MidiError: an input of any type or value that cannot be used, or one over the budget.
            OutputError: an option of the wrong type or out of range.
        """
        result = self.render_result(
            midi, sample_rate=sample_rate, channels=channels, loudness=loudness, gain_db=gain_db, peak=peak,
            chunk_seconds=chunk_seconds, context_seconds=context_seconds, progress=progress, bpm=bpm,
            max_seconds=max_seconds, limits=limits,
        )  # fmt: skip
        return result.audio, result.sample_rate

    def render_result(self, midi, **options) -> SynthesisResult:
        """``render``, returning a ``SynthesisResult`` (with ``.audio``, the level, the warnings)."""
        chunks: list[np.ndarray] = []

        def open_sink(sr: int, channels: int):
            return _MemorySink(chunks, channels)

        result = self._render(midi, open_sink, **options)
        audio = np.concatenate(chunks, axis=1) if chunks else np.zeros((result.channels, 0), np.float32)
        result.audio = np.ascontiguousarray(audio, dtype=np.float32)
        return result

    def render_to_file(
        self,
        midi,
        path: str | Path,
        *,
        force: bool = False,
        bits: str | None = None,
        plot: bool = False,
        **options,
    ) -> SynthesisResult:
        """Synthesizes ``midi`` into ``path``: .wav (16-bit, 24-bit or float), .flac (16 or 24)
        or .ogg (Vorbis). ``bits`` is "16" (default), "24" or "float". An existing file is kept
        unless ``force``; the file appears whole or not at all (``fileio.replacing``).
        ``plot`` also writes a spectrogram PNG beside it. Other options as for ``render``.
        The result's level and peak are those of the file written."""
        if not isinstance(path, (str, Path)) or not str(path) or "\0" in str(path):
            raise OutputError(f"the output must be a file name (str or Path), got {path!r}")
        out_path = Path(path)
        fmt, subtype = subtype_for(out_path, bits)
        if out_path.exists() and not force:
            raise SynthesisError(f"{out_path} exists; pass --force to overwrite it")
        if plot and not can_plot():
            raise SynthesisError("--plot draws with matplotlib, which is not installed: pip install 'pianosynth[plot]'")
        if plot and out_path.with_suffix(".png").exists() and not force:
            raise SynthesisError(f"{out_path.with_suffix('.png')} exists; pass --force to overwrite it")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out_path.parent, os.W_OK):
            raise SynthesisError(f"{out_path.parent}: folder is not writable")
        remove_stale_temps(out_path.parent)  # temporaries of a synthesis that was killed (fileio)
        try:
            with replacing(out_path, suffix=out_path.suffix) as tmp:  # an unpredictable name, O_EXCL
                result = self._render(midi, lambda sr, channels: AudioWriter(tmp, sr, channels, fmt, subtype), **options)
        except sf.LibsndfileError as e:  # a full disk or a vanished folder reads "System error"
            raise SynthesisError(f"{out_path}: cannot write the audio ({e}); is the disk full?") from e
        result.path = out_path
        if plot:
            result.plot = out_path.with_suffix(".png")
            audio, sr = sf.read(out_path, dtype="float32", always_2d=True)
            label = Path(midi).name if isinstance(midi, (str, Path)) else options.get("name") or "MIDI"
            plot_spectrogram(audio.mean(axis=1), sr, result.plot, title=f"{label} (pianosynth)")
        return result

    def _render(
        self,
        midi,
        open_sink,
        *,
        sample_rate: int | None = None,
        channels: int | None = None,
        loudness: float | None = DEFAULT_LOUDNESS_LUFS,
        gain_db: float | None = None,
        peak: float | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        progress: Callable[[float, float], None] | None = None,
        name: str | None = None,
        max_seconds: float | None = MAX_SECONDS,
        bpm: float | None = None,
        limits: Limits | None = None,
    ) -> SynthesisResult:
        """The one rendering path (see the module's docstring); ``open_sink(sr, channels)`` gives
        a context manager whose ``write`` takes (channels, samples) float32 blocks and returns them
        as written (``audio.AudioWriter``)."""
        asked_sr = check_sample_rate(sample_rate) if sample_rate is not None else None
        asked_channels = check_channels(channels) if channels is not None else None
        level = Level(loudness_lufs=None if gain_db is not None or peak is not None else loudness, gain_db=gain_db, peak=peak)
        for option, value, positive in (("chunk_seconds", chunk_seconds, True), ("context_seconds", context_seconds, False)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise OutputError(f"{option} must be a finite number {'above' if positive else 'of at least'} 0, got {value!r}")
        for option, value, allowed, inside in (("max_seconds", max_seconds, "above 0", lambda v: v > 0), ("bpm", bpm, "in 1..1000", lambda v: 1 <= v <= 1000)):
            number = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
            if value is not None and not (number and inside(value)):
                raise OutputError(f"{option} must be None or a finite number {allowed}, got {value!r}")
        t0 = time.perf_counter()
        limits = limits if limits is not None else Limits()
        if not isinstance(limits, Limits):
            raise OutputError(f"limits must be a pianosynth.midi.Limits, got {type(limits).__name__}")
        perf = read_performance(midi, name=name, max_seconds=max_seconds, bpm=bpm, limits=limits)  # refused before any allocation
        label = name or (str(midi) if isinstance(midi, (str, Path)) else "the MIDI")
        route = self.router.route(perf, label) if self.router is not None else Route([Part(None, perf.programs, perf)])
        parts = []  # (synth, features, note table) of each part, all checked before any model runs
        for part in route.parts:
            synth = self._part_synth(part.model)
            fc = synth.config.features
            x = torch.from_numpy(compute_features(part.perf, fc, quantized=True))  # (frames, channels) uint8: a quarter of float32
            total_s = len(x) / fc.frame_rate
            if max_seconds is not None and total_s > max_seconds:
                raise MidiError(f"{label}: {total_s:.0f} s of audio is over the limit of {max_seconds:g} s (raise it with --max-seconds)")  # input over the budget: MidiError, as documented
            notes = compute_notes(part.perf, fc, len(x) * fc.hop_samples) if synth.model.needs_notes else None
            need = chunk_bytes(synth.model, len(x), notes, round(chunk_seconds * fc.frame_rate), round(context_seconds * fc.frame_rate))
            limits.check(label, "the synthesis of its densest chunk needs about", need / 2**20, "chunk_mib", " MiB")  # per thread
            parts.append((synth, x, notes))
        sr = max(synth.sample_rate for synth, _, _ in parts)  # of the mix: no part loses its band
        out_sr = asked_sr if asked_sr is not None else sr
        with tempfile.TemporaryDirectory(prefix="pianosynth-") as tmp, one_blas_thread():
            raw, mix_channels, meter = _mix_parts(parts, Path(tmp), sr, asked_channels, level.loudness_lufs is not None, chunk_seconds, context_seconds, progress)
            out_channels = asked_channels or mix_channels
            gain, warnings = choose_gain(level, meter.loudness(), meter.peak)
            resample = Resampler(sr, out_sr, meter.samples, out_channels)
            clipped = 0
            with allocator.streaming(), sf.SoundFile(raw) as src, open_sink(out_sr, out_channels) as sink:  # the sink's closing write too
                # the file's own level, as reported. Where the file is the metered mix times the
                # gain (same rate, same channels, nothing clipped), its loudness is the mix's at
                # that gain and the sink's scale (``LoudnessMeter.loudness(gain)``), and the file
                # is not K-weighted again: that pass is timed in docs/speed.md
                scale = getattr(sink, "scale", None)
                scaled = scale is not None and meter.weighting and out_sr == sr and meter.channels == out_channels and meter.peak * gain < 0.999
                written = LoudnessMeter(out_sr, out_channels, weighting=not scaled)
                read = 0
                for a in src.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):  # (samples, channels)
                    read += len(a)
                    y = resample(match_channels(a.T, out_channels) * np.float32(gain), last=read >= meter.samples)
                    clipped += int(np.count_nonzero(np.abs(y) > 1.0))
                    written.add(sink.write(y))
                if meter.samples == 0:
                    written.add(sink.write(resample(np.zeros((out_channels, 0), np.float32), last=True)))
        warnings = list(perf.warnings) + route.warnings + warnings
        if clipped:
            warnings.append(f"{clipped} sample(s) clipped at full scale; lower --loudness or --gain")
        return SynthesisResult(
            path=None, seconds=written.samples / out_sr, sample_rate=out_sr, peak=written.peak, clipped_samples=clipped,
            warnings=warnings, channels=out_channels, loudness_lufs=meter.loudness(gain * scale) if scaled else written.loudness(),
            gain_db=20 * math.log10(gain) if gain > 0 else -math.inf, compute_seconds=time.perf_counter() - t0,
            messages=route.messages,
        )  # fmt: skip

    def _part_synth(self, name: str | None) -> "Synth":
        """The synthesizer for a part the router gave to a shipped model (None: this one)."""
        if name is None:
            return self
        if name not in self._part_synths:
            self._part_synths[name] = load(self.router.models()[name].path, threads=self.threads)
        return self._part_synths[name]

    def blocks(self, x: torch.Tensor, notes=None, chunk_seconds: float = 30.0, context_seconds: float = 2.0):
        """The model over a whole feature sequence in chunks, split between ``threads`` threads of
        one torch thread each, as every render runs it (``evaluate`` times this too).

        x: (frames, in_channels), notes: (notes, 4) or None -> yields float32 blocks as the
        decoder makes them: (samples,) from a mono decoder, (channels, samples) from a stereo one
        (``audio.as_channels`` reads both as (channels, samples)).
        """
        fr = self.config.features.frame_rate
        chunk = max(1, round(chunk_seconds * fr))
        context = max(1, round(context_seconds * fr))
        fade = min(context, max(1, round(0.25 * fr)))
        workers = self.threads or torch.get_num_threads()
        torch_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            # the allocator's stages, where the process asked for them (allocator.py): the
            # conditioning's batches until the first block, then the voices' blocks
            allocator.for_batches()
            long = len(x) > LONG_PIECE_SECONDS * fr
            for i, block in enumerate(self.model.synthesize(
                x, chunk_frames=chunk, context_frames=context, crossfade_frames=fade, workers=workers, notes=notes,
                max_batch_frames=LONG_PIECE_BATCH_FRAMES if long else MAX_BATCH_FRAMES,
                block_frames=LONG_PIECE_BLOCK_FRAMES if long else BLOCK_FRAMES,
            )):  # fmt: skip
                if i == 0:
                    allocator.for_blocks()
                yield block.numpy()
        finally:
            torch.set_num_threads(torch_threads)
            allocator.for_batches()


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread; the pool's size is restored after.
    A render holds it: the loudness meter's K-weighting is small matrix products
    (``audio.BlockFilter``) in the main thread, beside the model's worker threads, and OpenBLAS
    spread each product over a pool of its own threads, which then competed with the workers
    for the cores (docs/speed.md, "numpy's BLAS on one thread"). threadpoolctl finds the BLAS
    that numpy loaded, whichever it is."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


VOICE_ROW_BYTES_PER_HOP_SAMPLE = 28  # voices decoder: bytes per (voice, frame) row per sample of hop (measured: docs/reliability.md)
FRAME_BYTES_PER_SAMPLE = 16  # other decoders: the output buffers of a batch of windows, float32, ~4 copies


def chunk_bytes(model, frames: int, notes, chunk_frames: int, context_frames: int, workers: int = 1) -> int:
    """The memory the synthesis of ``model`` needs for its largest chunk, from the sizes alone,
    before anything runs (issue 20; checked against ``Limits.chunk_mib``). ``workers`` threads
    each render a chunk (a block) at once.

    The voices decoder renders blocks of ``block_frames`` with a margin on each side, one row per
    (voice, frame) sounding in it, a voice lasting from its onset to ``voice_end``: the largest
    block's row count, from a running sum of the voices alive in each frame, times the bytes of a
    row. Other decoders run a batch of windows of the chunk plus its context at once
    (``PianoSynth.synthesize``): their output samples.

    frames: the piece's feature frames; notes: its note table (notes, 4) or None.
    """
    hop = model.hop_samples
    if frames <= 0:
        return 0
    if notes is not None and getattr(model, "needs_notes", False) and len(notes):
        dec = model.decoder
        n = np.asarray(notes, dtype=np.int64).reshape(-1, 4)
        ends = dec.voice_end(torch.from_numpy(n[:, 2]), torch.from_numpy(n[:, 3])).numpy()
        first = np.clip(n[:, 2] // hop - 1, 0, frames)  # a voice frame spans a hop either side of its centre
        last = np.clip(-(-ends // hop) + 1, 0, frames)
        alive = np.zeros(frames + 2, np.int64)
        np.add.at(alive, first, 1)
        np.add.at(alive, last, -1)
        alive = np.cumsum(alive)[:frames]  # (frames,) voices sounding in each frame
        window = min(frames, workers * BLOCK_FRAMES + 2 * dec.margin_frames)  # synthesize_voices' blocks at once and margins
        sums = np.concatenate([[0], np.cumsum(alive)])
        rows = int((sums[window:] - sums[:-window]).max())
        return rows * VOICE_ROW_BYTES_PER_HOP_SAMPLE * hop
    span = min(frames, max(1, chunk_frames) + 2 * max(1, context_frames))
    windows = min(-(-frames // max(1, chunk_frames)), max(1, 32768 // span))  # synthesize's max_batch_frames
    return int(windows * span * hop * FRAME_BYTES_PER_SAMPLE)


def _mix_parts(parts, tmp: Path, sr: int, channels: int | None, loudness: bool, chunk_seconds, context_seconds, progress):
    """The models' mix at ``sr`` in a float file in ``tmp``, metered as it will be written.

    Each part is rendered with its model into its own file, at its model's rate and channel
    count, then resampled to ``sr`` where its rate differs (``_resample_file``); the parts are
    summed block by block, a mono part spread to every channel of a stereo mix. A lone part at
    ``sr`` is written, and metered, straight away. The meter sees the mix with ``channels``
    (None: the mix's own) channels, as the output will have them; it runs the K-weighting only
    when a ``loudness`` target needs it.

    parts: [(synth, x (frames, channels), notes or None)] -> (the mix's file, its channels, the meter)
    """
    total_s = sum(len(x) / synth.config.features.frame_rate for synth, x, _ in parts)
    done_s, files = 0.0, []
    direct = len(parts) == 1 and parts[0][0].sample_rate == sr
    meter = None
    for i, (synth, x, notes) in enumerate(parts):
        part_sr, n, path = synth.sample_rate, 0, tmp / f"part{i}.wav"
        with contextlib.ExitStack() as stack:
            f = None
            for a in map(as_channels, synth.blocks(x, notes, chunk_seconds, context_seconds)):  # (channels, samples)
                if f is None:
                    f = stack.enter_context(sf.SoundFile(path, "w", samplerate=part_sr, channels=len(a), subtype="FLOAT"))
                    if direct:
                        meter = LoudnessMeter(sr, channels or len(a), weighting=loudness)
                if direct:
                    meter.add(match_channels(a, meter.channels))
                f.write(a.T)
                n += a.shape[1]
                if progress:
                    progress(done_s + n / part_sr, total_s)
            if f is None:  # no audio at all: an empty mono file
                stack.enter_context(sf.SoundFile(path, "w", samplerate=part_sr, channels=1, subtype="FLOAT"))
        done_s += n / part_sr
        if part_sr != sr:
            with allocator.streaming():
                path = _resample_file(path, sr, n)
        files.append(path)
    if direct:
        mix_channels = sf.info(files[0]).channels
        return files[0], mix_channels, meter or LoudnessMeter(sr, channels or mix_channels, weighting=loudness)
    raw = tmp / "mix.wav"
    with contextlib.ExitStack() as stack, allocator.streaming():
        sources = [stack.enter_context(sf.SoundFile(p)) for p in files]
        mix_channels = max(src.channels for src in sources)
        meter = LoudnessMeter(sr, channels or mix_channels, weighting=loudness)
        out = stack.enter_context(sf.SoundFile(raw, "w", samplerate=sr, channels=mix_channels, subtype="FLOAT"))
        while True:
            blocks = [src.read(BLOCK, dtype="float32", always_2d=True).T for src in sources]  # (channels, samples)
            longest = max(b.shape[1] for b in blocks)
            if longest == 0:
                break
            mix = np.zeros((mix_channels, longest), np.float32)  # the parts may differ in length by a hop or so
            for b in blocks:
                mix[:, : b.shape[1]] += b  # a mono part broadcasts to every channel
            meter.add(match_channels(mix, meter.channels))
            out.write(mix.T)
    return raw, mix_channels, meter


def _resample_file(path: Path, out_sr: int, n: int) -> Path:
    """A float WAV of ``n`` samples -> the same at ``out_sr``, with its channels (soxr, streaming)."""
    info = sf.info(path)
    resample = Resampler(info.samplerate, out_sr, n, info.channels)
    out_path = path.with_name(path.stem + f"-{out_sr}.wav")
    with sf.SoundFile(path) as src, sf.SoundFile(out_path, "w", samplerate=out_sr, channels=info.channels, subtype="FLOAT") as dst:
        read = 0
        for a in src.blocks(blocksize=BLOCK, dtype="float32", always_2d=True):
            read += len(a)
            dst.write(resample(a.T, last=read >= n).T)
        if n == 0:
            dst.write(resample(np.zeros((info.channels, 0), np.float32), last=True).T)
    path.unlink()  # one part's copy on disk at a time
    return out_path


class _MemorySink:
    """Keeps (channels, samples) blocks as they would be written to a float file."""

    scale = 1.0  # float, as given (``AudioWriter.scale``)

    def __init__(self, chunks: list, channels: int):
        self.chunks, self.channels = chunks, channels

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, y: np.ndarray) -> np.ndarray:
        y = pcm_block(y, "FLOAT").T  # clipped, float32
        self.chunks.append(y)
        return y


def synthesize_file(
    midi_path,
    out_path: str | Path,
    model_path: str | Path | None = None,
    force: bool = False,
    normalize: float | None = None,
    plot: bool = False,
    chunk_seconds: float = 30.0,
    context_seconds: float = 2.0,
    threads: int | None = None,
    **options,
) -> SynthesisResult:
    """Loads a model and synthesizes one MIDI file to ``out_path`` (see ``Synth.render_to_file``).

    Args:
        normalize: if given, scale so that the peak is this value (e.g. 0.95) instead of the
            default loudness target.
        options: ``sample_rate``, ``channels``, ``loudness``, ``gain_db``, ``bits``, ``progress``,
            ``bpm`` (a score's tempo), ``max_seconds`` (refuse a longer piece before anything is allocated; None: no limit).
    """
    check_synthesis_arguments(normalize, chunk_seconds, context_seconds, threads, options.get("max_seconds", MAX_SECONDS))
    if normalize is not None:
        options["peak"] = normalize
    synth = load(model_path, threads=threads)
    return synth.render_to_file(
        midi_path, out_path, force=force, plot=plot, chunk_seconds=chunk_seconds, context_seconds=context_seconds, **options
    )


def check_synthesis_arguments(
    normalize: float | None, chunk_seconds: float, context_seconds: float, threads: int | None, max_seconds: float | None
) -> None:
    """Raises SynthesisError naming the argument, its value and what is allowed."""

    def need(ok: bool, name: str, value, allowed: str) -> None:
        if not ok:
            raise SynthesisError(f"{name} must be {allowed}, got {value!r}")

    def num(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    need(normalize is None or (num(normalize) and 0 < normalize <= 1), "normalize", normalize, "a peak in (0, 1]")
    need(num(chunk_seconds) and 0 < chunk_seconds <= 3600, "chunk_seconds", chunk_seconds, "in (0, 3600]")
    need(num(context_seconds) and 0 <= context_seconds <= 600, "context_seconds", context_seconds, "in [0, 600]")
    need(threads is None or (isinstance(threads, int) and 1 <= threads <= 1024), "threads", threads, "an integer in 1..1024")
    need(max_seconds is None or (num(max_seconds) and max_seconds > 0), "max_seconds", max_seconds, "a number of seconds > 0")


def can_plot() -> bool:
    """Whether matplotlib (the ``plot`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def plot_spectrogram(audio: np.ndarray, sample_rate: int, path: Path, title: str = "") -> None:
    """Writes a log-magnitude spectrogram of ``audio`` (samples,) as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft = 1024
    hop = max(n_fft // 4, len(audio) // 4000)  # at most ~4000 columns, whatever the length
    spec = torch.stft(
        torch.from_numpy(np.ascontiguousarray(audio)),
        n_fft,
        hop,
        window=torch.hann_window(n_fft),
        return_complex=True,
    ).abs()
    db = 20 * torch.log10(spec + 1e-5).numpy()
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.imshow(
        db, origin="lower", aspect="auto", cmap="magma", vmin=db.max() - 80, vmax=db.max(),
        extent=[0, len(audio) / sample_rate, 0, sample_rate / 2000],
    )  # fmt: skip
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(title)
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100), suffix=".png")
    finally:
        plt.close(fig)
