"""Note and pedal events -> reference audio, with FluidSynth or sfizz. Nothing neural here.

The renderer plays the same events the features were computed from, not the original file, so the
audio cannot disagree with the features about which notes exist.

- FluidSynth (``render.source: fluidsynth``) plays them from a temporary one-track MIDI file.
  Reverb and chorus are off (``-R 0 -C 0``); everything else is FluidSynth's default. It renders
  stereo; a mono feature config mixes it to mono.
- sfizz (``render.source: sfizz``) plays the Salamander grand (pianosynth.grand) in a process of
  its own (``SfizzProcess``), which loads the samples once and renders piece after piece; each
  event is handed to sfizz at its own sample (``note_on(delay, ...)`` within the block).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import PianosynthError
from .config import FeatureConfig, RenderConfig
from .midi import Performance, write_midi


class RenderError(PianosynthError, RuntimeError):
    """The renderer (FluidSynth, sfizz) or its instrument is missing, or the renderer failed."""


class RenderLimitError(RenderError):
    """The renderer ran past the time or the output size expected for the piece, and was stopped.
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
    """Returns the fluidsynth executable (for sfizz: the SFZ file, once the samples checked), or
    raises RenderError saying what to install."""
    if cfg.source == "sfizz":
        return str(check_sfizz())
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


def _set_parent_death_signal() -> None:
    """Asks Linux to SIGKILL this process when its parent dies, even by kill -9 (prctl
    PR_SET_PDEATHSIG). Called by a child of ours after exec, never between fork and exec."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the parent's finally still kills the process group


def _die_with_parent_prefix() -> list[str]:
    """A command prefix that makes the program it runs die with this process: util-linux's
    ``setpriv --pdeathsig KILL``, which sets PR_SET_PDEATHSIG and then execs it. Python code run
    between fork and exec (``preexec_fn``) can deadlock in a process with threads (a pool's, torch's),
    and ``Popen`` then waits forever for the exec; a full CI run once hung there. Without setpriv
    (not Linux) the prefix is empty and the parent's ``finally`` still kills the process group."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


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
            [*_die_with_parent_prefix(), *cmd], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
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
    """Renders a performance to exactly ``n_samples`` samples at ``feature_cfg.sample_rate``.

    Returns:
        audio: float32 in [-1, 1] (the renderer's float output, padded with silence or trimmed to
        the feature length): (n_samples,) for ``feature_cfg.channels == 1`` (stereo renders mixed
        to mono), (n_samples, 2) for 2.
    """
    if render_cfg.source == "sfizz":
        return _fit_channels(render_sfizz(perf, render_cfg, feature_cfg.sample_rate, n_samples), feature_cfg.channels)
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
    if audio.shape[1] == 1:
        audio = np.repeat(audio, 2, axis=1)
    out = np.zeros((n_samples, 2), dtype=np.float32)
    n = min(n_samples, len(audio))
    out[:n] = audio[:n, :2]
    return _fit_channels(out, feature_cfg.channels)


def _fit_channels(stereo: np.ndarray, channels: int) -> np.ndarray:
    """(n, 2) float32 -> (n,) mixed to mono for ``channels`` 1, or itself for 2."""
    if channels == 1:
        return stereo.mean(axis=1, dtype=np.float32)  # (samples,)
    return np.ascontiguousarray(stereo, dtype=np.float32)


def to_int16(audio: np.ndarray) -> tuple[np.ndarray, int]:
    """float audio in [-1, 1] -> int16, and the number of samples that clipped."""
    clipped = int(np.count_nonzero(np.abs(audio) > 1.0))
    return (np.clip(audio, -1.0, 1.0) * 32767.0).round().astype(np.int16), clipped


# ---------------------------------------------------------------------------------------------
# sfizz: the Salamander grand (issue 18)
# ---------------------------------------------------------------------------------------------
#
# sfizz runs in a process of its own: loading the grand takes 18-52 s and 2.5 GB (measured,
# docs/grand.md), so one process loads it once and renders piece after piece; the process is
# bounded in address space (SFIZZ_MEMORY_BYTES) and in time per piece, killed past either (or
# when this process dies), and a crash in the sampler cannot take the caller down with it.

# Samples per render_block. Every event starts at its own sample whatever the block (note_on's
# delay), but sfizz steps a voice's envelope once per block, so the waveform of a note depends a
# little on where in its block it starts: measured on C4, 5e-3 (-26 dB under the peak) with
# 1024-sample blocks, 5e-6 (-86 dB) with 128 (docs/grand.md).
SFIZZ_BLOCK = 128
SFIZZ_MEMORY_BYTES = 8 << 30  # the sfizz process's address space (its peak with the grand: 2.7 GB)
SFIZZ_LOAD_SECONDS = 900.0  # loading the grand took 18-52 s on a shared 2-core machine
# A render may run SFIZZ_SECONDS_BASE + SFIZZ_SECONDS_PER_SECOND * the piece's length (quality 10
# renders a dense minute at about real time; lower qualities several times faster)
SFIZZ_SECONDS_BASE = 60.0
SFIZZ_SECONDS_PER_SECOND = 10.0
SFIZZ_CONTROLLERS = (64, 66, 67)  # sustain, sostenuto, soft: reset before every piece
EVENT_CONTROL, EVENT_NOTE_OFF, EVENT_NOTE_ON = 0, 1, 2  # at equal samples, in this order (as midi.write_midi)


def check_sfizz(folder: str | Path | None = None) -> Path:
    """Checks that pysfizz is installed and the grand's samples are whole (``grand.check_samples``),
    writes the SFZ file and returns its path; raises RenderError in one line otherwise."""
    from .grand import GrandError, check_samples, write_sfz

    try:
        import pysfizz  # noqa: F401
    except ImportError:
        raise RenderError("sfizz is not installed: run \"pip install 'pianosynth[grand]'\" (the pysfizz package)") from None
    try:
        check_samples(folder)
        return write_sfz(folder)
    except GrandError as e:
        raise RenderError(str(e)) from None
    except OSError as e:
        raise RenderError(f"cannot write the grand's SFZ file ({e})") from None


def sfizz_events(perf: Performance, sample_rate: int) -> np.ndarray:
    """The performance as sfizz events at their own samples, in the order they are played.

    Returns:
        events: (n, 4) int64 rows of (sample, kind, number, value): kind EVENT_CONTROL with a
        controller number and value 0..127, or EVENT_NOTE_OFF / EVENT_NOTE_ON with a key and
        velocity 1..127. Sorted by sample, then kind, so that at one instant the pedals act first
        and a key re-struck where it is released sounds (as midi.write_midi orders them).
    """
    from .midi import PEDAL_CONTROLLERS

    rows = []
    for pedal, number in PEDAL_CONTROLLERS.items():
        curve = perf.pedals.get(pedal)
        if curve is not None:
            for t, v in zip(curve.times_s, curve.values):
                rows.append((round(t * sample_rate), EVENT_CONTROL, number, int(round(v * 127))))
    for n in perf.notes:
        rows.append((round(n.start_s * sample_rate), EVENT_NOTE_ON, n.pitch, max(1, min(127, n.velocity))))
        rows.append((round(n.end_s * sample_rate), EVENT_NOTE_OFF, n.pitch, 0))
    if not rows:
        return np.zeros((0, 4), np.int64)
    events = np.array(rows, dtype=np.int64)
    return events[np.lexsort((events[:, 1], events[:, 0]))]


class SfizzProcess:
    """A sfizz process that holds one SFZ instrument loaded and renders events to stereo audio.

    >>> proc = SfizzProcess(sfz_path, 48000, quality=1, voices=256)
    >>> audio = proc.render(sfizz_events(perf, 48000), n_samples)   # (n_samples, 2) float32
    >>> proc.close()
    """

    def __init__(self, sfz: str | Path, sample_rate: int, quality: int, voices: int, regions: int | None = None):
        self.sample_rate = sample_rate
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-"))
        self.log_path = self.tmp / "sfizz.log"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), OMP_NUM_THREADS="1")
        env["PIANOSYNTH_SFIZZ_PARENT"] = str(os.getpid())
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from pianosynth.render import _sfizz_main; _sfizz_main()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env,
                start_new_session=True,  # the child sets its own parent-death signal (_sfizz_main)
            )  # fmt: skip
        self._buffer = b""
        try:
            self._send(
                {"sfz": str(sfz), "sample_rate": sample_rate, "block": SFIZZ_BLOCK, "quality": quality, "voices": voices, "memory": SFIZZ_MEMORY_BYTES}
            )  # fmt: skip
            ready = self._receive(SFIZZ_LOAD_SECONDS, f"loading {sfz}")
            if regions is not None and ready["regions"] != regions:
                raise RenderError(f"sfizz loaded {ready['regions']} of the {regions} regions of {sfz}: a sample is missing or unreadable")
        except BaseException:
            self.close()
            raise
        self.load_seconds: float = ready["load_seconds"]  # wall clock of load_sfz_file
        self.peak_rss_bytes: int = ready["peak_rss_bytes"]  # the process's peak resident memory once loaded

    def render(self, events: np.ndarray, n_samples: int) -> np.ndarray:
        """events: (n, 4) int64 from ``sfizz_events`` -> audio (n_samples, 2) float32.

        Raises RenderLimitError (and ends the process) past the time bound, RenderError if sfizz
        fails or runs out of its memory."""
        events_path, out_path = self.tmp / "events.npy", self.tmp / "out.npy"
        np.save(events_path, np.asarray(events, dtype=np.int64))
        seconds = SFIZZ_SECONDS_BASE + SFIZZ_SECONDS_PER_SECOND * n_samples / self.sample_rate
        self._send({"events": str(events_path), "n_samples": int(n_samples), "out": str(out_path)})
        self._receive(seconds, "rendering")
        try:
            audio = np.load(out_path)
        finally:
            out_path.unlink(missing_ok=True)
        if audio.shape != (n_samples, 2) or audio.dtype != np.float32:
            raise RenderError(f"sfizz returned {audio.dtype} {audio.shape}, expected float32 {(n_samples, 2)}")
        return audio

    def _send(self, message: dict) -> None:
        try:
            self.proc.stdin.write((json.dumps(message) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise RenderError(f"the sfizz process has stopped: {self._last_log_line()}") from None

    def _receive(self, max_seconds: float, doing: str) -> dict:
        import select

        deadline = time.monotonic() + max_seconds
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise RenderLimitError(f"sfizz ran over {max_seconds:.0f} s {doing}; stopped")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    self.proc.wait()
                    raise RenderError(f"the sfizz process stopped while {doing} (exit status {self.proc.returncode}): {self._last_log_line()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply = json.loads(line)
        if "error" in reply:
            raise RenderError(f"sfizz failed {doing}: {reply['error']}")
        return reply

    def _last_log_line(self) -> str:
        try:
            lines = [x for x in self.log_path.read_text(errors="replace").splitlines() if x.strip()]
        except OSError:
            lines = []
        return lines[-1] if lines else "no message"

    def close(self) -> None:
        """Ends the process and removes its temporary folder."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)


def _sfizz_play(synth, events: np.ndarray, n_samples: int, block: int) -> np.ndarray:
    """In the sfizz process: plays ``events`` from silence. -> (n_samples, 2) float32."""
    synth.all_sound_off()
    for number in SFIZZ_CONTROLLERS:
        synth.cc(0, number, 0)
    synth.render_block()  # the reset takes effect; nothing sounds yet
    out = np.zeros((n_samples, 2), dtype=np.float32)
    # the first event of each block: events[starts[b]:starts[b + 1]] fall in block b
    n_blocks = -(-n_samples // block)
    starts = np.searchsorted(events[:, 0], np.arange(n_blocks + 1) * block) if len(events) else np.zeros(n_blocks + 1, int)
    for b in range(n_blocks):
        for sample, kind, number, value in events[starts[b] : starts[b + 1]].tolist():
            delay = sample - b * block
            if kind == EVENT_CONTROL:
                synth.cc(delay, number, value)
            elif kind == EVENT_NOTE_ON:
                synth.note_on(delay, number, value)
            else:
                synth.note_off(delay, number, 0)
        left, right = synth.render_block()
        n = min(block, n_samples - b * block)
        out[b * block : b * block + n, 0] = left[:n]
        out[b * block : b * block + n, 1] = right[:n]
    return out


def _sfizz_main() -> None:
    """The sfizz process: one JSON line of settings on stdin, then one JSON line per piece to
    render; one JSON reply line each on the original stdout (sfizz's own messages go to stderr)."""
    import resource

    _set_parent_death_signal()
    if str(os.getppid()) != os.environ.get("PIANOSYNTH_SFIZZ_PARENT"):  # it died before that
        os._exit(1)
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process ends

    def reply(**message) -> None:
        replies.write(json.dumps(message) + "\n")

    settings = json.loads(sys.stdin.readline())
    try:
        resource.setrlimit(resource.RLIMIT_AS, (settings["memory"], settings["memory"]))
        from pysfizz import _sfizz

        started = time.monotonic()
        synth = _sfizz.Synth(settings["sample_rate"], settings["block"])
        synth.enable_freewheeling()  # samples load before a note plays, never in the background
        synth.set_sample_quality(settings["quality"])
        synth.set_num_voices(settings["voices"])
        if not synth.load_sfz_file(settings["sfz"]):
            reply(error=f"sfizz could not load {settings['sfz']}")
            return
        load_seconds = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        reply(regions=synth.get_num_regions(), load_seconds=load_seconds, peak_rss_bytes=peak)
    except (MemoryError, OSError, ImportError) as e:
        reply(error=f"{type(e).__name__}: {e}")
        return
    for line in sys.stdin:
        request = json.loads(line)
        try:
            events = np.load(request["events"])
            audio = _sfizz_play(synth, events, request["n_samples"], settings["block"])
            np.save(request["out"], audio)
            del audio
            reply(ok=True)
        except MemoryError:
            reply(error=f"out of memory (the sfizz process may use {settings['memory'] / 2**30:.0f} GiB)")
        except (OSError, ValueError) as e:
            reply(error=f"{type(e).__name__}: {e}")


_SFIZZ_PROCESSES: dict[tuple, SfizzProcess] = {}  # one loaded instrument per settings, for this process's life


def render_sfizz(perf: Performance, render_cfg: RenderConfig, sample_rate: int, n_samples: int) -> np.ndarray:
    """The grand played by sfizz: ``n_samples`` of (n_samples, 2) float32 at ``sample_rate``.

    The first call starts (and checks the samples for) a sfizz process kept for the calls that
    follow with the same settings; it ends with this process (``close_sfizz``)."""
    from .grand import N_REGIONS, sample_dir

    key = (str(sample_dir()), sample_rate, render_cfg.sfizz_quality, render_cfg.sfizz_voices)
    proc = _SFIZZ_PROCESSES.get(key)
    if proc is None or proc.proc.poll() is not None:
        sfz = check_sfizz()
        if not _SFIZZ_PROCESSES:
            atexit.register(close_sfizz)
        proc = _SFIZZ_PROCESSES[key] = SfizzProcess(sfz, sample_rate, render_cfg.sfizz_quality, render_cfg.sfizz_voices, N_REGIONS)
    try:
        return proc.render(sfizz_events(perf, sample_rate), n_samples)
    except RenderError:
        proc.close()
        del _SFIZZ_PROCESSES[key]
        raise


def close_sfizz() -> None:
    """Ends this process's sfizz processes."""
    while _SFIZZ_PROCESSES:
        _, proc = _SFIZZ_PROCESSES.popitem()
        proc.close()
