"""The render path around the models (issue 21): the K-weighting and the meter without scipy,
parts of any rate and channel count mixed into one output, the streamed writer, the figures
reported, and what a render imports."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import pianosynth
from pianosynth.audio import AudioWriter, BlockFilter, LoudnessMeter, Resampler, k_weighting, subtype_for
from pianosynth.config import FeatureConfig
from pianosynth.examples import generate_piece
from pianosynth.features import compute_features
from pianosynth.midi import write_midi
from pianosynth.routing import Part, Route
from pianosynth.synthesize import Synth, read_performance

SRC = Path(pianosynth.__file__).resolve().parent.parent


def pyloudnorm_lufs(audio: np.ndarray, sr: int) -> float:
    """audio: (channels, samples)"""
    import pyloudnorm

    return pyloudnorm.Meter(sr).integrated_loudness(np.asarray(audio, dtype=np.float64).T)


@pytest.fixture(scope="module")
def piece(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("path") / "piece.mid"
    write_midi(generate_piece(seed=3, bars=2), path)
    return path


# ---------------------------------------------------------------------------------------------
# K-weighting and loudness, without scipy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sr", [16000, 22050, 44100, 48000])
def test_k_weighting_coefficients_are_pyloudnorms(sr):
    from pyloudnorm.iirfilter import IIRfilter

    theirs = [IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sr, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, sr, "high_pass")]
    for (b, a), f in zip(k_weighting(sr), theirs):
        np.testing.assert_allclose(np.array(b) / a[0], f.b / f.a[0], rtol=1e-12)
        np.testing.assert_allclose(np.array(a) / a[0], f.a / f.a[0], rtol=1e-12)


def direct_form(sections, x: np.ndarray) -> np.ndarray:
    """The biquads sample by sample, as the textbook writes them (x: (samples,))."""
    for b, a in sections:
        b, a = np.array(b) / a[0], np.array(a) / a[0]
        y, x1, x2, y1, y2 = np.zeros(len(x)), 0.0, 0.0, 0.0, 0.0
        for i, v in enumerate(x):
            y[i] = b[0] * v + b[1] * x1 + b[2] * x2 - a[1] * y1 - a[2] * y2
            x1, x2, y1, y2 = v, x1, y[i], y1
        x = y
    return x


@pytest.mark.parametrize("sr", [16000, 48000])
def test_block_filter_equals_the_recursion_in_blocks_of_any_size(sr):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 40_000))
    expected = np.stack([direct_form(k_weighting(sr), ch) for ch in x])
    f = BlockFilter(k_weighting(sr), channels=2)
    cuts = [0, 1, 31, 32, 33, 1000, 1031, 33_800, 40_000]  # shorter and longer than a sub-block, and whole groups
    y = np.concatenate([f(x[:, lo:hi]) for lo, hi in zip(cuts, cuts[1:])], axis=1)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-9 * np.abs(expected).max())


def test_loudness_agrees_with_pyloudnorm_on_a_sine_noise_and_a_rendered_piece(piece):
    rng = np.random.default_rng(1)
    sr = 48000
    t = np.arange(5 * sr) / sr
    sine = 0.5 * np.sin(2 * np.pi * 997 * t)[None]  # (1, samples)
    noise = 0.1 * rng.standard_normal((2, 4 * sr + 123))
    audio, rate = pianosynth.load(threads=1).render(piece, loudness=None)  # (channels, samples) at the default model's rate
    for signal, rate_ in ((sine, sr), (noise, sr), (audio, rate)):
        meter = LoudnessMeter(rate_, channels=len(signal))
        for lo in range(0, signal.shape[1], 7777):
            meter.add(signal[:, lo : lo + 7777].astype(np.float32))
        theirs = pyloudnorm_lufs(signal.astype(np.float32), rate_)
        assert abs(meter.loudness() - theirs) < 0.1  # the bound; the next line holds it far tighter
        assert meter.loudness() == pytest.approx(theirs, abs=1e-6)
    # BS.1770's calibration: a 997 Hz sine at full scale reads -3.01 LUFS, so at half scale -9.03
    meter = LoudnessMeter(sr)
    meter.add(sine)
    assert meter.loudness() == pytest.approx(-3.01 - 6.02, abs=0.05)


def test_a_meters_loudness_at_a_gain_is_that_of_the_scaled_audio():
    """``loudness(gain)`` stands for a second meter over the written file: the same blocks, the
    gates applied after the scaling (a quiet stretch crosses the -70 LUFS gate as the gain moves)."""
    rng = np.random.default_rng(2)
    sr = 48000
    loud = 0.2 * rng.standard_normal((2, 3 * sr))
    quiet = 3e-4 * rng.standard_normal((2, 2 * sr + 77))  # about -70 LUFS: gated or not by the gain
    audio = np.concatenate([loud, quiet, loud * 0.1], axis=1).astype(np.float32)
    meter = LoudnessMeter(sr, channels=2)
    meter.add(audio)
    for gain in (1.0, 0.05, 0.3, 3.0):
        scaled = LoudnessMeter(sr, channels=2)
        scaled.add(audio * np.float32(gain))
        assert meter.loudness(gain) == pytest.approx(scaled.loudness(), abs=1e-6)
    assert meter.loudness(0.0) == -math.inf
    assert math.isnan(LoudnessMeter(sr, weighting=False).loudness(2.0))


def test_a_meter_reads_the_same_whatever_size_of_piece_it_weights_at_a_time():
    """``LoudnessMeter.add`` K-weights a long block in pieces of ``SLICE`` numbers (a cache-sized
    working set, docs/speed.md): blocks longer than a piece, cut anywhere, read as one whole pass."""
    rng = np.random.default_rng(4)
    sr = 48000
    audio = (0.1 * rng.standard_normal((2, 3 * sr + 501)) * np.linspace(0.01, 1, 3 * sr + 501)).astype(np.float32)
    whole = LoudnessMeter(sr, channels=2)
    whole.SLICE = audio.size  # one piece: the filter over the whole block at once
    whole.add(audio)
    for slice_ in (1000, 4096, 1 << 16):
        meter = LoudnessMeter(sr, channels=2)
        meter.SLICE = slice_
        for lo, hi in ((0, 70_001), (70_001, 70_002), (70_002, audio.shape[1])):  # each longer or shorter than a piece
            meter.add(audio[:, lo:hi])
        assert meter.samples == whole.samples and meter.peak == whole.peak
        assert meter.loudness() == pytest.approx(whole.loudness(), abs=1e-9)
        assert meter.loudness() == pytest.approx(pyloudnorm_lufs(audio, sr), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Parts of any rate and channel count
# ---------------------------------------------------------------------------------------------


class StubSynth(Synth):
    """A synthesizer whose 'model' makes a known signal: (channels, frames * hop * rate / 16 kHz)
    at ``rate``, in blocks, from frames on the real 16 kHz frame clock."""

    def __init__(self, rate: int, channels: int, seed: int):
        fc = FeatureConfig(sample_rate=16000)
        cfg = type("Cfg", (), {"features": fc, "model": None, "render": None})()
        model = type("Model", (), {"needs_notes": False, "hop_samples": fc.hop_samples})()
        super().__init__(model, cfg, "stub.pt")
        self.rate, self.channels, self.seed = rate, channels, seed

    @property
    def sample_rate(self) -> int:
        return self.rate

    def signal(self, frames: int) -> np.ndarray:
        n = frames * self.config.features.hop_samples * self.rate // 16000
        t = np.arange(n) / self.rate
        rng = np.random.default_rng(self.seed)
        chans = [0.3 * np.sin(2 * np.pi * (220 + 330 * c) * t) * np.exp(-t) + 0.02 * rng.standard_normal(n) for c in range(self.channels)]
        return np.stack(chans).astype(np.float32)

    def blocks(self, x, notes=None, chunk_seconds=30.0, context_seconds=2.0):
        y = self.signal(len(x))
        for lo in range(0, y.shape[1], 10_007):
            yield y[0, lo : lo + 10_007] if self.channels == 1 else y[:, lo : lo + 10_007]


class StubRouter:
    def route(self, perf, label):
        return Route([Part(None, [0], perf), Part("grand", [1], perf)])


def test_a_48k_stereo_part_and_a_16k_mono_part_mix_to_their_sum(piece, tmp_path):
    mono16, grand = StubSynth(16000, 1, seed=0), StubSynth(48000, 2, seed=1)
    mono16.router = StubRouter()
    mono16._part_synths["grand"] = grand
    frames = len(compute_features(read_performance(piece), mono16.config.features))
    a, b = mono16.signal(frames), grand.signal(frames)
    a48 = Resampler(16000, 48000, a.shape[1])(a, last=True)  # (1, samples) at 48 kHz
    expected = (np.broadcast_to(a48, (2, a48.shape[1])) + b) * np.float32(0.1)
    result = mono16.render_result(piece, gain_db=-20)
    assert result.sample_rate == 48000 and result.channels == 2
    assert result.audio.shape == expected.shape
    np.testing.assert_allclose(result.audio, expected, rtol=0, atol=1e-6)
    # asked for mono at 16 kHz: the mean of the mix's channels, resampled
    mono = mono16.render_result(piece, gain_db=-20, channels=1, sample_rate=16000)
    down = Resampler(48000, 16000, expected.shape[1])(expected.mean(axis=0, keepdims=True), last=True)
    assert mono.audio.shape == down.shape
    np.testing.assert_allclose(mono.audio, down, rtol=0, atol=1e-5)
    # and to a 24-bit FLAC file, stereo, at the loudness target
    result = mono16.render_to_file(piece, tmp_path / "mix.flac", bits="24")
    audio, sr = sf.read(result.path, always_2d=True)
    assert sr == 48000 and audio.shape == (expected.shape[1], 2)
    assert abs(pyloudnorm_lufs(audio.T, sr) - (-23.0)) < 0.05


def test_the_passes_over_the_mix_run_in_the_allocators_blocks_stage(piece, tmp_path, monkeypatch):
    """After the model, the passes over the mix (the 16 kHz part resampled, the parts summed, the
    gain applied as the file is written) read and write blocks of one size over and over: they
    run in the allocator's blocks stage, which reuses them, and the batches stage comes back
    after (allocator.py; docs/speed.md)."""
    from pianosynth import allocator, synthesize
    from pianosynth.audio import AudioWriter

    stage = ["batches"]
    monkeypatch.setattr(allocator, "for_batches", lambda: stage.__setitem__(0, "batches"))
    monkeypatch.setattr(allocator, "for_blocks", lambda: stage.__setitem__(0, "blocks"))
    seen = {"resample": [], "mix": [], "write": []}
    resample_file, write = synthesize._resample_file, AudioWriter.write
    monkeypatch.setattr(synthesize, "_resample_file", lambda *a: (seen["resample"].append(stage[0]), resample_file(*a))[1])
    monkeypatch.setattr(AudioWriter, "write", lambda self, y: (seen["write"].append(stage[0]), write(self, y))[1])
    add = LoudnessMeter.add
    monkeypatch.setattr(LoudnessMeter, "add", lambda self, block: (seen["mix"].append(stage[0]), add(self, block))[1])
    mono16, grand = StubSynth(16000, 1, seed=0), StubSynth(48000, 2, seed=1)
    mono16.router = StubRouter()
    mono16._part_synths["grand"] = grand
    mono16.render_to_file(piece, tmp_path / "mix.wav")
    assert seen["resample"] == ["blocks"]
    assert seen["mix"] and set(seen["mix"]) == {"blocks"}  # the parts' sum, metered as it is written
    assert seen["write"] and set(seen["write"]) == {"blocks"}
    assert stage == ["batches"]


# ---------------------------------------------------------------------------------------------
# The writer, and the figures reported
# ---------------------------------------------------------------------------------------------


def without_peak_time(data: bytes) -> bytes:
    """A file's bytes with the time stamp of libsndfile's PEAK chunk (float WAV: 'PEAK', size,
    version, then the seconds when written) zeroed: two writes a second apart differ there only."""
    at = data.find(b"PEAK")
    return data if at < 0 else data[: at + 12] + bytes(4) + data[at + 16 :]


@pytest.mark.parametrize("suffix, bits", [(".wav", "16"), (".wav", "24"), (".wav", "float"), (".flac", "16"), (".flac", "24")])
@pytest.mark.parametrize("channels", [1, 2])
def test_streamed_writer_equals_the_one_pass_writer_bit_for_bit(tmp_path, suffix, bits, channels):
    rng = np.random.default_rng(2)
    audio = (0.5 * rng.standard_normal((channels, 50_000))).astype(np.float32)  # some beyond full scale
    fmt, subtype = subtype_for(tmp_path / f"x{suffix}", bits)
    with AudioWriter(tmp_path / f"one{suffix}", 44100, channels, fmt, subtype) as w:
        one = w.write(audio)
    streamed = []
    with AudioWriter(tmp_path / f"streamed{suffix}", 44100, channels, fmt, subtype) as w:
        for lo, hi in zip([0, 1, 4096, 4097, 33_333], [1, 4096, 4097, 33_333, 50_000]):
            streamed.append(w.write(audio[:, lo:hi]))
    assert without_peak_time((tmp_path / f"one{suffix}").read_bytes()) == without_peak_time((tmp_path / f"streamed{suffix}").read_bytes())
    np.testing.assert_array_equal(np.concatenate(streamed, axis=1), one)
    # what write returns is what the file holds
    if bits == "16":
        held, _ = sf.read(tmp_path / f"one{suffix}", dtype="int16", always_2d=True)
        np.testing.assert_array_equal(held.T, (one * 32768).astype(np.int16))
    else:
        held, _ = sf.read(tmp_path / f"one{suffix}", dtype="float32", always_2d=True)
        np.testing.assert_allclose(held.T, one, rtol=0, atol=0 if bits == "float" else 2**-23)


@pytest.mark.parametrize("options", [{}, {"channels": 2, "sample_rate": 44100}, {"gain_db": 40.0}, {"peak": 0.5, "bits": "24"}])
def test_the_reported_level_and_peak_are_the_files(piece, tmp_path, options):
    synth = pianosynth.load(threads=1)
    result = synth.render_to_file(piece, tmp_path / "out.wav", force=True, **options)
    audio, sr = sf.read(result.path, dtype="float32", always_2d=True)
    assert result.sample_rate == sr and result.channels == audio.shape[1]
    assert result.peak == pytest.approx(float(np.abs(audio).max()), abs=2**-22)
    assert result.loudness_lufs == pytest.approx(pyloudnorm_lufs(audio.T, sr), abs=1e-4)
    if "gain_db" in options:
        assert result.clipped_samples > 0 and result.peak > 0.999 and any("clipped" in w for w in result.warnings)  # clipped, and says so


def test_the_cli_prints_the_files_level(piece, tmp_path):
    out = tmp_path / "cli.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "pianosynth", "synthesize", str(piece), "-o", str(out), "--threads", "1", "--loudness", "-30"],
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(out, dtype="float32", always_2d=True)
    line = [ln for ln in proc.stderr.splitlines() if "LUFS" in ln][-1]
    assert f"{pyloudnorm_lufs(audio.T, sr):.1f} LUFS, peak {np.abs(audio).max():.3f}" in line


# ---------------------------------------------------------------------------------------------
# Start-up
# ---------------------------------------------------------------------------------------------


def test_rendering_imports_no_scipy_signal_matplotlib_partitura_or_starlette(piece, tmp_path):
    code = textwrap.dedent(f"""
        import sys
        import pianosynth
        synth = pianosynth.load(threads=1)
        synth.render_to_file({str(piece)!r}, {str(tmp_path / "x.flac")!r}, channels=2, sample_rate=48000)
        heavy = ("scipy.signal", "scipy.stats", "matplotlib", "partitura", "starlette", "pyloudnorm", "pianosynth.evaluate")
        print(" ".join(sorted(m for m in sys.modules if m.startswith(heavy))))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
    assert (tmp_path / "x.flac").exists()


def test_the_command_line_renders_without_loading_the_training_or_evaluation_stages(piece, tmp_path):
    # cli.main catches every stage's error through their one base (errors.py), so a render no
    # longer imports train, evaluate and dataset just to name their errors; a bad input still
    # ends in one line and exit 1
    code = textwrap.dedent(f"""
        import sys
        from pianosynth.cli import main
        code = main(["synthesize", {str(piece)!r}, "-o", {str(tmp_path / "x.wav")!r}, "--threads", "1"])
        stages = ("pianosynth.train", "pianosynth.evaluate", "pianosynth.dataset", "pianosynth.losses", "scipy", "tensorboard")
        print(code, " ".join(sorted(m for m in sys.modules if m.startswith(stages))))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0"
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd not really")
    proc = subprocess.run(
        [sys.executable, "-m", "pianosynth", "synthesize", str(bad), "-o", str(tmp_path / "y.wav")],
        capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert proc.returncode == 1 and proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_stereo_48k_grand_checkpoint_renders_to_a_stereo_file(tmp_path, piece):
    """The grand decoder at two channels, (2, samples) blocks at 48 kHz, through the library:
    a stereo file at the model's rate, channels that differ, the level reported the file's; and
    beside the 16 kHz mono piano in one file (the router), both at 48 kHz in two channels."""
    from pianosynth.checkpoint import save_checkpoint
    from pianosynth.config import load_config
    from pianosynth.model import build_model

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "grand.yaml", ["model.hidden=8", "model.layers=1"])
    assert (cfg.features.sample_rate, cfg.features.channels) == (48000, 2)
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features)
    state = {"format": 1, "version": "test", "config": cfg.to_dict(), "model": model.state_dict(), "step": 0, "best_valid": 1.0, "elapsed_s": 0.0}
    save_checkpoint(tmp_path / "grand2.pt", state)
    grand = pianosynth.load(tmp_path / "grand2.pt", threads=1)
    result = grand.render_to_file(piece, tmp_path / "grand.flac", bits="24", gain_db=0.0)
    audio, sr = sf.read(result.path, always_2d=True)  # (samples, 2)
    assert sr == 48000 and audio.shape[1] == 2 and result.channels == 2
    assert np.abs(audio[:, 0] - audio[:, 1]).max() > 1e-4  # two channels of their own, not a copy
    assert result.loudness_lufs == pytest.approx(pyloudnorm_lufs(audio.T, sr), abs=1e-3)
    # a mono fold on request: the mean of the channels
    mono = grand.render_result(piece, gain_db=0.0, channels=1)
    np.testing.assert_allclose(mono.audio[0], audio.mean(axis=1), atol=2**-22)


def test_the_shipped_default_and_the_harpsichord_mix_across_rates_and_channels(tmp_path):
    """Routed with the shipped models: a piano part played by the default model (the 48 kHz stereo
    grand since issue 19) and a harpsichord part by the 16 kHz mono harpsichord, mixed at the
    higher rate in the wider channel count: the sum of each model's own part, the lower-rate one
    resampled (soxr) and a mono one spread to both channels."""
    import mido
    from conftest import note, tempo, write_events

    from pianosynth import registry
    from pianosynth.features import compute_notes
    from pianosynth.midi import read_midi, split_by_program

    models = registry.shipped()
    default, harpsichord = models[registry.default_name()], models["harpsichord"]
    assert harpsichord.program == 6 and default.program == 0
    assert default.sample_rate != harpsichord.sample_rate  # a mix across rates, the point of this test
    events = tempo(0, 120) + [(1, 0, mido.Message("program_change", program=6, channel=1))]
    events += note(1, 0, 480, 60, 90, channel=0) + note(1, 240, 720, 67, 50, channel=0) + note(1, 120, 600, 72, 80, channel=1)
    midi = write_events(tmp_path / "duo.mid", events)
    result = pianosynth.load(threads=1).render_result(midi, gain_db=-20)
    assert result.warnings == [] and result.messages == []

    def part_audio(name: str, perf) -> tuple[np.ndarray, int]:
        """(channels, samples) of one model over one part, at its own rate and level."""
        synth = pianosynth.load(name, threads=1)
        fc = synth.config.features
        x = torch.from_numpy(compute_features(perf, fc, quantized=True))
        notes = compute_notes(perf, fc, len(x) * fc.hop_samples) if synth.model.needs_notes else None
        blocks = [np.atleast_2d(b) for b in synth.blocks(x, notes)]  # (samples,) mono, (channels, samples) stereo
        return np.concatenate(blocks, axis=1), synth.sample_rate

    parts = split_by_program(read_midi(midi))
    rate = max(default.sample_rate, harpsichord.sample_rate)
    played = []
    for name, program in ((default.name, 0), ("harpsichord", 6)):
        audio, sr = part_audio(name, parts[program])
        played.append(audio if sr == rate else Resampler(sr, rate, audio.shape[1], len(audio))(audio, last=True))
    channels, n = max(len(a) for a in played), max(a.shape[1] for a in played)
    expected = sum(np.pad(np.broadcast_to(a, (channels, a.shape[1])), ((0, 0), (0, n - a.shape[1]))) for a in played) * np.float32(0.1)
    assert (result.sample_rate, result.channels) == (rate, channels) and result.audio.shape == expected.shape
    assert all(np.abs(a).max() > 1e-2 for a in played) and np.abs(expected).max() < 1  # each part heard, the mix unclipped
    np.testing.assert_allclose(result.audio, expected, rtol=0, atol=1e-6)


def test_a_render_meters_with_numpys_blas_on_one_thread_and_gives_the_pool_back(piece, tmp_path, monkeypatch):
    # The meter's small matrix products ran on OpenBLAS's own pool beside the model's workers
    # (docs/speed.md); a render holds numpy's BLAS to one thread, and the caller's size returns after.
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas_threads() -> list[int]:
        return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]

    if not blas_threads():
        pytest.skip("numpy loaded no BLAS that threadpoolctl can see")
    seen = []
    add = LoudnessMeter.add
    monkeypatch.setattr(LoudnessMeter, "add", lambda self, block: (seen.append(blas_threads()), add(self, block))[1])
    with threadpool_limits(limits=2, user_api="blas"):
        synth = pianosynth.load("fluidr3", threads=1)
        synth.render_to_file(piece, tmp_path / "out.wav", force=True)
        assert seen and all(counts == [1] * len(counts) for counts in seen)
        assert blas_threads() == [2] * len(blas_threads())
