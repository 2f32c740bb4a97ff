"""Checkpoint + MIDI -> waveform of any length, streamed to a WAV or FLAC file.

Features come from the MIDI exactly as ``prepare`` computes them, with the feature config stored
in the checkpoint. The model runs in overlapping, crossfaded chunks (``PianoSynth.synthesize``), and
audio goes to disk block by block, so a 30-minute piece never holds 30 minutes of activations.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from .features import compute_features, compute_notes
from .fileio import atomic_write, remove_stale_temps
from .midi import MAX_SECONDS, read_midi
from .train import model_from_checkpoint

FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16")}
BLOCK = 1 << 18  # samples per read/write block in the second pass


class SynthesisError(RuntimeError):
    """The output cannot be written as asked (exists, unknown format, no model)."""


@dataclass
class SynthesisResult:
    path: Path
    seconds: float
    sample_rate: int
    peak: float  # before any normalisation
    clipped_samples: int  # samples beyond [-1, 1] in the written file, after any normalisation
    warnings: list[str]
    plot: Path | None


def default_model_path() -> Path:
    """The checkpoint shipped inside the package."""
    path = Path(str(resources.files("pianosynth") / "models" / "default.pt"))
    if not path.is_file():
        raise SynthesisError("no default model is shipped in this installation; pass --model CHECKPOINT")
    return path


def synthesize_file(
    midi_path: str | Path,
    out_path: str | Path,
    model_path: str | Path | None = None,
    force: bool = False,
    normalize: float | None = None,
    plot: bool = False,
    chunk_seconds: float = 30.0,
    context_seconds: float = 2.0,
    threads: int | None = None,
    max_seconds: float | None = MAX_SECONDS,
) -> SynthesisResult:
    """Synthesizes a MIDI file to ``out_path`` (.wav or .flac).

    Args:
        normalize: if given, scale so that the peak is this value (e.g. 0.95).
        plot: also write a spectrogram PNG next to the audio.
        chunk_seconds, context_seconds: the chunk core and the context on each side.
        threads: CPU threads (default: torch's count), each running its share of the chunks with
            one torch thread, which is faster on a CPU than torch's own threads inside one pass
            (benchmarks/synthesis_speed.py).
        max_seconds: refuse a piece longer than this before anything is allocated (None: no limit).
    """
    check_synthesis_arguments(normalize, chunk_seconds, context_seconds, threads, max_seconds)
    out_path = Path(out_path)
    fmt = FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise SynthesisError(f"{out_path}: output must end in .wav or .flac")
    if out_path.exists() and not force:
        raise SynthesisError(f"{out_path} exists; pass --force to overwrite it")
    if plot and out_path.with_suffix(".png").exists() and not force:
        raise SynthesisError(f"{out_path.with_suffix('.png')} exists; pass --force to overwrite it")
    workers = threads or torch.get_num_threads()
    model, cfg = model_from_checkpoint(model_path or default_model_path())
    perf = read_midi(midi_path, max_seconds=max_seconds)
    x = torch.from_numpy(compute_features(perf, cfg.features))  # (frames, channels)
    notes = compute_notes(perf, cfg.features, len(x) * cfg.features.hop_samples) if model.needs_notes else None
    fr, sr = cfg.features.frame_rate, cfg.features.sample_rate
    chunk = max(1, round(chunk_seconds * fr))
    context = max(1, round(context_seconds * fr))
    fade = min(context, max(1, round(0.25 * fr)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    if not os.access(out_path.parent, os.W_OK):
        raise SynthesisError(f"{out_path.parent}: folder is not writable")
    remove_stale_temps(out_path.parent)  # .NAME.raw<pid>.wav of a synthesis that was killed
    raw = out_path.with_name(f".{out_path.name}.raw{os.getpid()}.wav")
    tmp = out_path.with_name(f".{out_path.name}.tmp{os.getpid()}{out_path.suffix}")
    torch_threads = torch.get_num_threads()
    try:
        peak, n = 0.0, 0
        torch.set_num_threads(1)
        blocks = model.synthesize(
            x, chunk_frames=chunk, context_frames=context, crossfade_frames=fade, workers=workers, notes=notes
        )
        with sf.SoundFile(raw, "w", samplerate=sr, channels=1, subtype="FLOAT") as f:
            for block in blocks:
                a = block.numpy()
                peak = max(peak, float(np.abs(a).max(initial=0.0)))
                n += len(a)
                f.write(a)
        gain = normalize / peak if normalize and peak > 0 else 1.0
        clipped = 0
        with sf.SoundFile(raw) as src, sf.SoundFile(tmp, "w", samplerate=sr, channels=1, format=fmt[0], subtype=fmt[1]) as dst:
            for a in src.blocks(blocksize=BLOCK, dtype="float32"):
                a = a * gain
                clipped += int(np.count_nonzero(np.abs(a) > 1.0))
                dst.write(np.clip(a, -1.0, 1.0))
        os.replace(tmp, out_path)
    except sf.LibsndfileError as e:  # a full disk or a vanished folder reads "System error"
        raise SynthesisError(f"{out_path}: cannot write the audio ({e}); is the disk full?") from e
    finally:
        torch.set_num_threads(torch_threads)
        for p in (raw, tmp):
            if p.exists():
                p.unlink()
    warnings = list(perf.warnings)
    if clipped:
        warnings.append(f"{clipped} sample(s) clipped at full scale; try --normalize 0.95")
    png = None
    if plot:
        png = out_path.with_suffix(".png")
        audio, _ = sf.read(out_path, dtype="float32")
        plot_spectrogram(audio, sr, png, title=f"{Path(midi_path).name} (pianosynth)")
    return SynthesisResult(out_path, n / sr, sr, peak, clipped, warnings, png)


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
