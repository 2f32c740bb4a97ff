"""Note and pedal events -> reference audio, with FluidSynth. Nothing neural here.

The renderer plays the same events the features were computed from (written to a temporary
one-track MIDI file), not the original file, so the audio cannot disagree with the features about
which notes exist. Reverb and chorus are off (``-R 0 -C 0``); everything else is FluidSynth's
default.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .config import FeatureConfig, RenderConfig
from .midi import Performance, write_midi


class RenderError(RuntimeError):
    """FluidSynth or its SoundFont is missing, or FluidSynth failed."""


class RenderLimitError(RenderError):
    """FluidSynth ran past the time or the output size expected for the piece, and was stopped.
    A property of the piece (prepare skips it), not of the installation."""


TEMP_PREFIX = "pianosynth-render-"  # + "<pid>-": the temporary folder of one render
# A render is stopped once its output passes RENDER_SIZE_FACTOR times the expected size, or runs
# past RENDER_SECONDS_BASE + RENDER_SECONDS_PER_SECOND * the piece's length (FluidSynth renders a
# piano piece ~100x faster than real time on one core). FluidSynth writes float stereo and goes on
# until its voices have died away: measured 3.0 s past the last event of one short note and 2.5 s
# past a generated piece (FluidSynth 2.3.1) with FluidR3; other SoundFonts ring for longer (the
# MuseScore General grand under a pedal held to the end ran past 18 s), so the expected length has
# a generous RENDER_TAIL_SECONDS added: the bound is there to stop runaways, not long tails.
RENDER_TAIL_SECONDS = 60.0
RENDER_SIZE_FACTOR = 1.5
RENDER_SIZE_MARGIN = 1 << 16  # bytes: the WAV header and a few blocks
RENDER_SECONDS_BASE = 60.0
RENDER_SECONDS_PER_SECOND = 1.0
SOUNDFONT_MAGIC = (b"RIFF", b"sfbk")  # bytes 0..3 and 8..11 of an SF2 or SF3 file


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
    try:
        with open(sf2, "rb") as f:
            head = f.read(12)
    except OSError as e:
        raise RenderError(f"SoundFont {sf2} cannot be read ({e.strerror})") from e
    if (head[:4], head[8:12]) != SOUNDFONT_MAGIC:
        raise RenderError(f"SoundFont {sf2} is not an SF2/SF3 file (no RIFF sfbk header); check the --soundfont path")
    return exe


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGKILL it when its parent dies (even by kill -9),
    so FluidSynth never renders on as an orphan (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's finally still kills the process group


def remove_stale_render_folders(root: str | Path | None = None) -> list[Path]:
    """Removes the temporary folders of renders whose process is gone (a run killed with -9)."""
    from .fileio import pid_alive

    removed = []
    root = Path(root or tempfile.gettempdir())
    for folder in root.glob(f"{TEMP_PREFIX}*"):
        pid = folder.name[len(TEMP_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)) and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def run_bounded(cmd: list[str], out_path: Path, log_path: Path, max_bytes: int, max_seconds: float) -> int:
    """Runs ``cmd`` in its own process group, killed when it writes more than ``max_bytes`` to
    ``out_path``, runs longer than ``max_seconds``, or this process is interrupted or dies.

    Returns its exit status. Raises RenderLimitError past a limit.
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )  # fmt: skip
    try:
        started = time.monotonic()
        delay = 0.005
        while proc.poll() is None:
            size = out_path.stat().st_size if out_path.exists() else 0
            if size > max_bytes:
                raise RenderLimitError(f"fluidsynth wrote over {max_bytes / 1e6:.1f} MB, more than the piece needs; stopped")
            if time.monotonic() - started > max_seconds:
                raise RenderLimitError(f"fluidsynth ran over {max_seconds:.0f} s; stopped")
            time.sleep(delay)
            delay = min(0.1, delay * 2)
        return proc.returncode
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def render(perf: Performance, render_cfg: RenderConfig, feature_cfg: FeatureConfig, n_samples: int) -> np.ndarray:
    """Renders a performance to mono audio of exactly ``n_samples`` samples.

    Returns:
        audio: (n_samples,) float32 in [-1, 1] (FluidSynth's float output, mixed to mono,
        padded with silence or trimmed to the feature length).
    """
    if render_cfg.source != "fluidsynth":
        raise RenderError(f"the reference of a render.source={render_cfg.source!r} cache is not rendered; it is read from the cache")
    exe = check_renderer(render_cfg)
    with tempfile.TemporaryDirectory(prefix=f"{TEMP_PREFIX}{os.getpid()}-") as tmp:
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
        log_path = Path(tmp) / "fluidsynth.log"
        expected = n_samples + RENDER_TAIL_SECONDS * feature_cfg.sample_rate
        max_bytes = int(RENDER_SIZE_FACTOR * expected * 2 * 4) + RENDER_SIZE_MARGIN  # float stereo
        max_seconds = RENDER_SECONDS_BASE + RENDER_SECONDS_PER_SECOND * n_samples / feature_cfg.sample_rate
        returncode = run_bounded(cmd, wav_path, log_path, max_bytes, max_seconds)
        errors = [line for line in log_path.read_text(errors="replace").splitlines() if "error" in line.lower()]
        if returncode != 0 or errors or not wav_path.is_file():
            detail = errors[0] if errors else f"exit status {returncode}"
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
