"""Note and pedal events -> reference audio, with FluidSynth. Nothing neural here.

The renderer plays the same events the features were computed from (written to a temporary
one-track MIDI file), not the original file, so the audio cannot disagree with the features about
which notes exist. Reverb and chorus are off (``-R 0 -C 0``); everything else is FluidSynth's
default.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import FeatureConfig, RenderConfig
from .midi import Performance, write_midi


class RenderError(RuntimeError):
    """FluidSynth or its SoundFont is missing, or FluidSynth failed."""


def check_renderer(cfg: RenderConfig) -> str:
    """Returns the fluidsynth executable, or raises RenderError saying what to install."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise RenderError(
            "fluidsynth is not installed: run 'sudo apt-get install fluidsynth fluid-soundfont-gm'"
        )
    sf2 = Path(cfg.soundfont)
    if not sf2.is_file():
        hint = (
            "run 'sudo apt-get install fluid-soundfont-gm'"
            if sf2.name == "FluidR3_GM.sf2"
            else "check the --soundfont path"
        )
        raise RenderError(f"SoundFont {sf2} not found: {hint}")
    return exe


def render(perf: Performance, render_cfg: RenderConfig, feature_cfg: FeatureConfig, n_samples: int) -> np.ndarray:
    """Renders a performance to mono audio of exactly ``n_samples`` samples.

    Returns:
        audio: (n_samples,) float32 in [-1, 1] (FluidSynth's float output, mixed to mono,
        padded with silence or trimmed to the feature length).
    """
    exe = check_renderer(render_cfg)
    with tempfile.TemporaryDirectory(prefix="pianosynth-render-") as tmp:
        midi_path = Path(tmp) / "events.mid"
        wav_path = Path(tmp) / "out.wav"
        write_midi(perf, midi_path, program=render_cfg.program, bank=render_cfg.bank)
        cmd = [
            exe, "-n", "-i", "-q",
            "-R", "0", "-C", "0",
            "-g", str(render_cfg.gain),
            "-r", str(feature_cfg.sample_rate),
            "-O", "float", "-T", "wav",
            "-F", str(wav_path),
            str(render_cfg.soundfont), str(midi_path),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "error" in line.lower()]
        if proc.returncode != 0 or errors or not wav_path.is_file():
            detail = errors[0] if errors else f"exit status {proc.returncode}"
            raise RenderError(f"fluidsynth failed on {render_cfg.soundfont}: {detail}")
        audio, sr = sf.read(str(wav_path), dtype="float32", always_2d=True)
    if sr != feature_cfg.sample_rate:
        raise RenderError(f"fluidsynth wrote {sr} Hz audio, expected {feature_cfg.sample_rate} Hz")
    mono = audio.mean(axis=1)  # (samples,)
    out = np.zeros(n_samples, dtype=np.float32)
    n = min(n_samples, len(mono))
    out[:n] = mono[:n]
    return out


def to_int16(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """float audio in [-1, 1] -> int16, and the number of samples that clipped."""
    clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16), clipped
