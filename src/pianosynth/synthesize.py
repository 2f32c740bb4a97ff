"""Checkpoint + MIDI -> waveform of any length, streamed to a sound file or returned as an array.

``Synth`` (``pianosynth.load()``) holds a model between calls. Every render, from the Python API,
the CLI, a batch or the local page, takes one path (``Synth._render``):

1. the MIDI (a path, bytes, a ``pretty_midi.PrettyMIDI`` or a ``mido.MidiFile``) becomes events,
   and features and the note table come from them exactly as ``prepare`` computes them, with the
   feature config stored in the checkpoint;
2. the model runs in overlapping, crossfaded chunks (``PianoSynth.synthesize``) and its float
   output goes to a temporary file block by block while its loudness and peak are measured
   (``audio.LoudnessMeter``);
3. a second pass reads it back in blocks, applies the chosen gain (``audio.choose_gain``),
   resamples (``audio.Resampler``), makes the channels and writes the output.

So a 30-minute piece never holds 30 minutes of activations, and the level costs no extra memory.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf
import torch

from .audio import (
    DEFAULT_LOUDNESS_LUFS,
    Level,
    LoudnessMeter,
    OutputError,
    Resampler,
    check_channels,
    check_sample_rate,
    choose_gain,
    pcm_block,
    subtype_for,
)
from .features import compute_features, compute_notes
from .fileio import atomic_write, remove_stale_temps
from .midi import MAX_SECONDS, MidiError, Performance, performance_from_pretty_midi, read_midi
from .train import model_from_checkpoint

BLOCK = 1 << 18  # samples per read/write block in the second pass
DEFAULT_MODEL = "default"  # the shipped model that load() and the CLI use when none is named


class SynthesisError(RuntimeError):
    """The output cannot be written as asked (exists, unknown format, no model)."""


@dataclass
class SynthesisResult:
    path: Path | None  # the file written (None for an in-memory render)
    seconds: float
    sample_rate: int  # of the output
    peak: float  # the model's own sample peak, before any level change
    clipped_samples: int  # samples beyond [-1, 1] after the level change (clipped in the output)
    warnings: list[str]
    plot: Path | None = None
    channels: int = 1
    loudness_lufs: float = -math.inf  # the model's own integrated loudness (mono), before any level change
    gain_db: float = 0.0  # the gain applied
    compute_seconds: float = 0.0  # wall-clock time of the whole render
    audio: np.ndarray | None = field(default=None, repr=False)  # (channels, samples), in-memory renders only

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of wall-clock time."""
        return self.seconds / self.compute_seconds if self.compute_seconds > 0 else math.inf


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


def shipped_models() -> dict[str, Path]:
    """The checkpoints shipped inside the package, by name (the file's stem)."""
    folder = Path(str(resources.files("pianosynth") / "models"))
    return {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}


def default_model_path() -> Path:
    """The checkpoint shipped inside the package."""
    path = shipped_models().get(DEFAULT_MODEL)
    if path is None:
        raise SynthesisError("no default model is shipped in this installation; pass --model CHECKPOINT")
    return path


def resolve_model(model: str | Path | None) -> Path:
    """None -> the shipped default; a shipped model's name (e.g. "default") -> its file; anything
    else is a checkpoint path."""
    if model is None:
        return default_model_path()
    shipped = shipped_models()
    if isinstance(model, str) and model in shipped and not Path(model).exists():
        return shipped[model]
    return Path(model)


# ---------------------------------------------------------------------------------------------
# MIDI in
# ---------------------------------------------------------------------------------------------


def read_performance(
    midi, name: str | None = None, max_seconds: float | None = MAX_SECONDS, bpm: float | None = None
) -> Performance:
    """Events from a MIDI or score path, its bytes, a ``pretty_midi.PrettyMIDI`` or a ``mido.MidiFile``.

    A path (or ``name``, for bytes) ending in a score suffix (``scores.SCORE_SUFFIXES``: MusicXML,
    .mxl, MEI, Humdrum) is read by ``scores.read_score`` with tempo ``bpm`` (quarter notes per
    minute; None: the score's own); anything else is MIDI, read by ``midi.read_midi``, which keeps
    its own tempo (a ``bpm`` given for it is reported in ``Performance.warnings``).

    Bytes and mido objects are written to a temporary file and read from there, so every kind of
    input meets the same checks; errors name ``name`` (default "<bytes>" or "<mido.MidiFile>")
    instead of the temporary file.
    """
    from .scores import is_score, read_score

    suffix = ".mid"
    if isinstance(midi, (str, Path)):
        if is_score(midi):
            return read_score(midi, bpm=bpm, max_seconds=max_seconds)
        return _midi_bpm_warning(read_midi(midi, max_seconds=max_seconds), bpm, str(midi))
    if type(midi).__name__ == "PrettyMIDI":
        return _midi_bpm_warning(performance_from_pretty_midi(midi, name=name or "<PrettyMIDI>"), bpm, name or "<PrettyMIDI>")
    if isinstance(midi, (bytes, bytearray, memoryview)):
        label = name or "<bytes>"
        if name is not None and is_score(name):
            suffix = Path(name).suffix.lower()

        def write(path: Path) -> None:
            path.write_bytes(bytes(midi))

    elif type(midi).__name__ == "MidiFile" and hasattr(midi, "save"):
        label = name or "<mido.MidiFile>"

        def write(path: Path) -> None:
            midi.save(str(path))

    else:
        raise TypeError(f"midi must be a path, bytes, a pretty_midi.PrettyMIDI or a mido.MidiFile, got {type(midi).__name__}")
    with tempfile.TemporaryDirectory(prefix="pianosynth-midi-") as tmp:
        path = Path(tmp) / f"input{suffix}"
        write(path)
        try:
            perf = read_performance(path, max_seconds=max_seconds, bpm=bpm)
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


def load(model: str | Path | None = None, threads: int | None = None) -> "Synth":
    """A synthesizer that keeps its model loaded between renders.

    Args:
        model: None for the shipped default model, a shipped model's name (``shipped_models()``),
            or the path of a checkpoint written by ``pianosynth train`` or ``export``.
        threads: CPU threads for each render (default: torch's count), each running its share of
            the chunks with one torch thread, which is faster on a CPU than torch's own threads
            inside one pass (benchmarks/synthesis_speed.py).
    """
    path = resolve_model(model)
    net, cfg = model_from_checkpoint(path)
    return Synth(net, cfg, path, threads=threads)


class Synth:
    """A loaded model and the one rendering path. Make it with ``pianosynth.load()``.

    Audio comes back as float32 shaped ``(channels, samples)``, mono included (``(1, samples)``),
    in [-1, 1].
    """

    def __init__(self, model, cfg, source: str | Path, threads: int | None = None):
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise OutputError(f"threads must be a positive integer, got {threads!r}")
        self.model, self.config, self.source, self.threads = model, cfg, Path(source), threads

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
        channels: int = 1,
        loudness: float | None = DEFAULT_LOUDNESS_LUFS,
        gain_db: float | None = None,
        peak: float | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        progress: Callable[[float, float], None] | None = None,
        bpm: float | None = None,
    ) -> tuple[np.ndarray, int]:
        """Synthesizes ``midi`` (a MIDI or score path, bytes, a ``pretty_midi.PrettyMIDI`` or a
        ``mido.MidiFile``); scores (MusicXML, .mxl, MEI, Humdrum) are read by ``scores.read_score``.

        Args:
            sample_rate: output rate in Hz (default: the model's), resampled with soxr.
            channels: 1, or 2 for the same signal in both.
            loudness: integrated loudness target in LUFS under a -1 dBFS peak ceiling
                (``audio.DEFAULT_LOUDNESS_LUFS``); None with no ``gain_db``/``peak`` keeps the
                model's own level.
            gain_db, peak: instead of the loudness target, a fixed gain in dB, or the sample peak
                to scale to (0 < peak <= 1).
            chunk_seconds, context_seconds: the chunk core and the context on each side.
            progress: called as ``progress(seconds_done, seconds_total)`` while the model runs.
            bpm: a score's tempo in quarter notes per minute, instead of its own marks.

        Returns:
            (audio, sample_rate): audio float32 (channels, samples).
        """
        result = self.render_result(
            midi, sample_rate=sample_rate, channels=channels, loudness=loudness, gain_db=gain_db, peak=peak,
            chunk_seconds=chunk_seconds, context_seconds=context_seconds, progress=progress, bpm=bpm,
        )  # fmt: skip
        return result.audio, result.sample_rate

    def render_result(self, midi, **options) -> SynthesisResult:
        """``render``, returning a ``SynthesisResult`` (with ``.audio``, the level, the warnings)."""
        chunks: list[np.ndarray] = []

        def open_sink(sr: int, channels: int):
            return _MemorySink(chunks)

        result = self._render(midi, open_sink, **options)
        y = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        result.audio = np.ascontiguousarray(np.broadcast_to(y, (result.channels, len(y))), dtype=np.float32)
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
        unless ``force``; the file appears whole or not at all (temporary name, then rename).
        ``plot`` also writes a spectrogram PNG beside it. Other options as for ``render``."""
        out_path = Path(path)
        fmt, subtype = subtype_for(out_path, bits)
        if out_path.exists() and not force:
            raise SynthesisError(f"{out_path} exists; pass --force to overwrite it")
        if plot and out_path.with_suffix(".png").exists() and not force:
            raise SynthesisError(f"{out_path.with_suffix('.png')} exists; pass --force to overwrite it")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(out_path.parent, os.W_OK):
            raise SynthesisError(f"{out_path.parent}: folder is not writable")
        remove_stale_temps(out_path.parent)  # .NAME.tmp<pid> of a synthesis that was killed
        tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}{out_path.suffix}")

        def open_sink(sr: int, channels: int):
            return _FileSink(tmp, sr, channels, fmt, subtype)

        try:
            result = self._render(midi, open_sink, **options)
            os.replace(tmp, out_path)
        except sf.LibsndfileError as e:  # a full disk or a vanished folder reads "System error"
            raise SynthesisError(f"{out_path}: cannot write the audio ({e}); is the disk full?") from e
        finally:
            if tmp.exists():
                tmp.unlink()
        result.path = out_path
        if plot:
            result.plot = out_path.with_suffix(".png")
            audio, sr = sf.read(out_path, dtype="float32", always_2d=True)
            label = Path(midi).name if isinstance(midi, (str, Path)) else "MIDI"
            plot_spectrogram(audio[:, 0], sr, result.plot, title=f"{label} (pianosynth)")
        return result

    def _render(
        self,
        midi,
        open_sink,
        *,
        sample_rate: int | None = None,
        channels: int = 1,
        loudness: float | None = DEFAULT_LOUDNESS_LUFS,
        gain_db: float | None = None,
        peak: float | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 2.0,
        progress: Callable[[float, float], None] | None = None,
        name: str | None = None,
        max_seconds: float | None = MAX_SECONDS,
        bpm: float | None = None,
    ) -> SynthesisResult:
        """The one rendering path (see the module's docstring); ``open_sink(sr, channels)`` gives
        a context manager that takes (samples,) float32 blocks in [-1, 1]."""
        out_sr = check_sample_rate(sample_rate) if sample_rate is not None else self.sample_rate
        channels = check_channels(channels)
        level = Level(loudness_lufs=None if gain_db is not None or peak is not None else loudness, gain_db=gain_db, peak=peak)
        for option, value, positive in (("chunk_seconds", chunk_seconds, True), ("context_seconds", context_seconds, False)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (positive and value == 0):
                raise OutputError(f"{option} must be a finite number {'above' if positive else 'of at least'} 0, got {value!r}")
        t0 = time.perf_counter()
        model, fc = self.model, self.config.features
        perf = read_performance(midi, name=name, max_seconds=max_seconds, bpm=bpm)  # refused before any allocation
        x = torch.from_numpy(compute_features(perf, fc, quantized=True))  # (frames, channels) uint8: a quarter of float32
        sr = fc.sample_rate
        total_s = len(x) / fc.frame_rate
        if max_seconds is not None and total_s > max_seconds:
            label = name or (str(midi) if isinstance(midi, (str, Path)) else "the MIDI")
            raise SynthesisError(f"{label}: {total_s:.0f} s of audio is over the limit of {max_seconds:g} s")
        notes = compute_notes(perf, fc, len(x) * fc.hop_samples) if model.needs_notes else None
        meter = LoudnessMeter(sr)
        with tempfile.TemporaryDirectory(prefix="pianosynth-") as tmp:
            raw = Path(tmp) / "raw.wav"
            with sf.SoundFile(raw, "w", samplerate=sr, channels=1, subtype="FLOAT") as f:
                for a in self.blocks(x, notes, chunk_seconds, context_seconds):
                    meter.add(a)
                    f.write(a)
                    if progress:
                        progress(meter.samples / sr, total_s)
            gain, warnings = choose_gain(level, meter.loudness(), meter.peak, channels)
            resample = Resampler(sr, out_sr, meter.samples)
            clipped, n_out = 0, 0
            with sf.SoundFile(raw) as src, open_sink(out_sr, channels) as sink:
                read = 0
                for a in src.blocks(blocksize=BLOCK, dtype="float32"):
                    read += len(a)
                    y = resample(a * np.float32(gain), last=read >= meter.samples)
                    clipped += int(np.count_nonzero(np.abs(y) > 1.0))
                    n_out += len(y)
                    sink.write(np.clip(y, -1.0, 1.0))
                if meter.samples == 0:
                    sink.write(resample(np.zeros(0, np.float32), last=True))
        warnings = list(perf.warnings) + warnings
        if clipped:
            warnings.append(f"{clipped} sample(s) clipped at full scale; lower --loudness or --gain")
        return SynthesisResult(
            path=None, seconds=n_out / out_sr, sample_rate=out_sr, peak=meter.peak, clipped_samples=clipped,
            warnings=warnings, channels=channels, loudness_lufs=meter.loudness(),
            gain_db=20 * math.log10(gain) if gain > 0 else -math.inf, compute_seconds=time.perf_counter() - t0,
        )  # fmt: skip


    def blocks(self, x: torch.Tensor, notes=None, chunk_seconds: float = 30.0, context_seconds: float = 2.0):
        """The model over a whole feature sequence in chunks, split between ``threads`` threads of
        one torch thread each, as every render runs it (``evaluate`` times this too).

        x: (frames, in_channels), notes: (notes, 4) or None -> yields (samples,) float32 blocks
        """
        fr = self.config.features.frame_rate
        chunk = max(1, round(chunk_seconds * fr))
        context = max(1, round(context_seconds * fr))
        fade = min(context, max(1, round(0.25 * fr)))
        workers = self.threads or torch.get_num_threads()
        torch_threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            for block in self.model.synthesize(
                x, chunk_frames=chunk, context_frames=context, crossfade_frames=fade, workers=workers, notes=notes
            ):
                yield block.numpy()
        finally:
            torch.set_num_threads(torch_threads)


class _MemorySink:
    def __init__(self, chunks: list):
        self.chunks = chunks

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, y: np.ndarray) -> None:
        self.chunks.append(y.astype(np.float32, copy=False))


class _FileSink:
    """Writes (samples,) blocks as ``channels`` identical channels through soundfile."""

    def __init__(self, path: Path, sr: int, channels: int, fmt: str, subtype: str):
        self.file = sf.SoundFile(path, "w", samplerate=sr, channels=channels, format=fmt, subtype=subtype)
        self.channels, self.subtype = channels, subtype

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()
        return False

    def write(self, y: np.ndarray) -> None:
        block = pcm_block(y, self.subtype)  # (samples,)
        self.file.write(np.repeat(block[:, None], self.channels, axis=1))


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
