"""The Python API and the output stage: every kind of input, rate, channels, level, formats,
stdin/stdout and batches through the CLI. Uses the shipped default model (its rate and channels
read from the registry and its config, not assumed) on tiny generated pieces, and the 16 kHz mono
fluidr3 by name where a test is about a mono model or a rate below the output's."""

from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile as sf
from conftest import note, tempo, write_events

import pianosynth
from pianosynth import registry
from pianosynth.audio import Level, LoudnessMeter, OutputError, Resampler, choose_gain
from pianosynth.examples import generate_piece
from pianosynth.midi import MidiError, write_midi
from pianosynth.render import to_int16
from pianosynth.synthesize import SynthesisError

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, cwd=None, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianosynth", *args], capture_output=True, cwd=cwd, input=input, timeout=300)


def lufs(audio: np.ndarray, sr: int) -> float:
    """pyloudnorm's integrated loudness; audio (samples,) or (samples, channels)."""
    import pyloudnorm

    return pyloudnorm.Meter(sr).integrated_loudness(np.asarray(audio, dtype=np.float64))


@pytest.fixture(scope="module")
def synth():
    return pianosynth.load(threads=1)


@pytest.fixture(scope="module")
def fluidr3():
    """The FluidR3 piano by name: 16 kHz mono."""
    synth = pianosynth.load("fluidr3", threads=1)
    assert (synth.sample_rate, synth.config.features.channels) == (16000, 1)
    return synth


def default_info() -> registry.ModelInfo:
    """The shipped default model as the registry lists it."""
    return registry.shipped()[registry.default_name()]


def int16_frames(audio: np.ndarray) -> np.ndarray:
    """(channels, samples) float -> (samples, channels) int16, as soundfile reads a 16-bit file."""
    return to_int16(audio.T)[0]


@pytest.fixture(scope="module")
def piece(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("api") / "piece.mid"
    write_midi(generate_piece(seed=1, bars=2), path)
    return path


# ---------------------------------------------------------------------------------------------
# The API
# ---------------------------------------------------------------------------------------------


def test_every_kind_of_input_gives_the_same_audio(synth, piece):
    audio, sr = synth.render(piece)
    assert sr == synth.sample_rate == default_info().sample_rate
    channels = synth.config.features.channels
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == channels and audio.shape[1] > sr
    for other in (str(piece), piece.read_bytes(), pretty_midi.PrettyMIDI(str(piece)), mido.MidiFile(str(piece))):
        again, sr2 = synth.render(other)
        assert sr2 == sr
        np.testing.assert_array_equal(again, audio)


def test_bad_input_is_a_midi_error_naming_the_input(synth, tmp_path):
    with pytest.raises(MidiError, match="<bytes>: not a readable MIDI file"):
        synth.render(b"not midi at all")
    with pytest.raises(MidiError, match="no such file"):
        synth.render(tmp_path / "missing.mid")
    with pytest.raises(MidiError, match="midi must be"):
        synth.render(12)


def test_load_by_name_and_by_path_is_the_same_model(synth, piece):
    default = registry.default_name()
    assert list(pianosynth.shipped_models())[0] == default  # the default first
    by_name = pianosynth.load(default, threads=1)
    by_path = pianosynth.load(pianosynth.shipped_models()[default], threads=1)
    assert by_name.source == by_path.source == synth.source == pianosynth.load("default").source
    np.testing.assert_array_equal(by_name.render(piece)[0], synth.render(piece)[0])


def test_the_api_takes_the_chunked_path(synth, piece):
    # short chunks join to the same audio as long ones, within the chunking tolerance
    whole, _ = synth.render(piece, loudness=None, chunk_seconds=60)
    chunked, _ = synth.render(piece, loudness=None, chunk_seconds=1.0, context_seconds=1.0)
    assert whole.shape == chunked.shape
    assert not np.array_equal(whole, chunked)  # it really ran in chunks
    rms = lambda a: float(np.sqrt(np.mean(a.astype(np.float64) ** 2)))  # noqa: E731
    assert rms(whole - chunked) < 0.1 * rms(whole)  # measured: 3 % with 1 s of context


def test_readme_example_runs(tmp_path, piece):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Python API.*?```python\n(.*?)```", text, re.S)
    assert block, "README has a Python API section with a python block"
    (tmp_path / "song.mid").write_bytes(piece.read_bytes())
    proc = subprocess.run([sys.executable, "-c", block.group(1)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(tmp_path / "song.flac", always_2d=True)
    assert sr == 44100 and audio.shape[1] == 2


# ---------------------------------------------------------------------------------------------
# Level
# ---------------------------------------------------------------------------------------------


def test_loudness_meter_agrees_with_pyloudnorm_fed_in_odd_blocks():
    rng = np.random.default_rng(0)
    for sr, seconds in ((16000, 3.37), (22050, 5.04), (44100, 2.0)):
        t = np.arange(int(sr * seconds)) / sr
        x = rng.standard_normal(len(t)) * 0.1 * (0.2 + np.sin(3 * t) ** 2) * (t > 0.7)  # silence, then a swell
        meter = LoudnessMeter(sr)
        for lo, hi in zip([0, 1000, 1037, 6037], [1000, 1037, 6037, len(x)]):
            meter.add(x[lo:hi])
        assert meter.loudness() == pytest.approx(lufs(x, sr), abs=1e-6)
        assert meter.peak == pytest.approx(np.abs(x).max())
    assert LoudnessMeter(16000).loudness() == -math.inf


@pytest.mark.parametrize("target, sr, channels", [(-23.0, None, 1), (-20.0, 44100, 2)])
def test_loudness_target_is_met_within_half_a_lu(synth, piece, target, sr, channels):
    audio, rate = synth.render(piece, loudness=target, sample_rate=sr, channels=channels)
    assert abs(lufs(audio.T, rate) - target) < 0.5
    assert np.abs(audio).max() <= 10 ** (-1 / 20) + 1e-3  # under the ceiling


def test_the_peak_ceiling_wins_and_says_so():
    gain, warnings = choose_gain(Level(loudness_lufs=-10.0), loudness_lufs=-40.0, peak=0.5)
    assert gain * 0.5 == pytest.approx(10 ** (-1 / 20))
    assert warnings and "ceiling" in warnings[0]
    gain, warnings = choose_gain(Level(loudness_lufs=-30.0), loudness_lufs=-40.0, peak=0.01)
    assert gain == pytest.approx(10 ** (10 / 20)) and not warnings
    assert choose_gain(Level(loudness_lufs=None, gain_db=-6.0), -40.0, 0.5)[0] == pytest.approx(10 ** (-6 / 20))
    assert choose_gain(Level(loudness_lufs=None, peak=0.9), -40.0, 0.3)[0] == pytest.approx(3.0)
    assert choose_gain(Level.raw(), -40.0, 0.3)[0] == 1.0
    # stereo with the same signal twice measures 3 dB louder, so it gets 3 dB less gain
    mono, stereo = choose_gain(Level(loudness_lufs=-30.0), -40.0, 0.01)[0], choose_gain(Level(loudness_lufs=-30.0), -40.0, 0.01, channels=2)[0]
    assert 20 * math.log10(mono / stereo) == pytest.approx(10 * math.log10(2))


@pytest.mark.parametrize("kwargs", [{"loudness_lufs": math.nan}, {"loudness_lufs": 3.0}, {"loudness_lufs": None, "peak": 0.0},
                                    {"loudness_lufs": None, "peak": -1.0}, {"loudness_lufs": None, "gain_db": math.inf},
                                    {"loudness_lufs": -20.0, "gain_db": 1.0}])  # fmt: skip
def test_bad_levels_are_refused(kwargs):
    with pytest.raises(OutputError):
        Level(**kwargs)


def test_gain_and_peak_and_raw_levels(synth, piece):
    raw, _ = synth.render(piece, loudness=None)
    louder, _ = synth.render(piece, gain_db=6.0)
    np.testing.assert_allclose(louder, np.clip(raw * 10 ** (6 / 20), -1, 1), atol=1e-6)
    peaked, _ = synth.render(piece, peak=0.5)
    assert np.abs(peaked).max() == pytest.approx(0.5, abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Rate, channels, formats
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampled_output_has_the_rate_and_nothing_above_the_model_nyquist(fluidr3, piece, rate):
    # fluidr3 by name: a 16 kHz model, so that 22050 to 48000 Hz are above its own rate
    base, sr = fluidr3.render(piece, loudness=None)
    audio, out_sr = fluidr3.render(piece, loudness=None, sample_rate=rate)
    assert out_sr == rate and audio.shape[1] == round(base.shape[1] * rate / sr)
    x = audio[0].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)))) ** 2  # Hann: a rectangle's leakage alone is -75 dB
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    if rate > sr:
        above = spectrum[freqs > sr / 2].sum() / spectrum.sum()
        assert above < 1e-10  # -100 dB: the model's band and silence above it (measured: -138 dB at 44.1 kHz)
    # the band both rates share holds the same music: same loudness within 0.1 LU
    assert lufs(audio[0], rate) == pytest.approx(lufs(base[0], sr), abs=0.1 if rate >= 16000 else 1.0)


def test_resampler_streams_exactly_as_one_call():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(40000).astype(np.float32)
    r = Resampler(16000, 44100, len(x))
    streamed = np.concatenate([r(x[:12345]), r(x[12345:30000]), r(x[30000:], last=True)])
    assert len(streamed) == round(40000 * 44100 / 16000)
    one = Resampler(16000, 44100, len(x))(x, last=True)
    np.testing.assert_allclose(streamed, one, atol=1e-6)


def test_two_channels_hold_the_same_signal(fluidr3, piece, tmp_path):
    # a mono model's signal spread to two channels (the stereo default's channels differ)
    result = fluidr3.render_to_file(piece, tmp_path / "st.wav", channels=2)
    audio, _ = sf.read(result.path, dtype="int16", always_2d=True)
    assert audio.shape[1] == 2 and np.array_equal(audio[:, 0], audio[:, 1]) and np.abs(audio).max() > 1000


def test_16_bit_files_round_as_prepare_stores_the_reference(synth, piece, tmp_path):
    audio, _ = synth.render(piece)
    for suffix in (".wav", ".flac"):
        path = synth.render_to_file(piece, tmp_path / f"a{suffix}").path
        np.testing.assert_array_equal(sf.read(path, dtype="int16", always_2d=True)[0], int16_frames(audio))


@pytest.mark.parametrize("name, bits, subtype", [("a.wav", "24", "PCM_24"), ("a.wav", "float", "FLOAT"), ("a.flac", "24", "PCM_24"),
                                                 ("a.ogg", None, "VORBIS")])  # fmt: skip
def test_formats_and_bit_depths(synth, piece, tmp_path, name, bits, subtype):
    audio, sr = synth.render(piece)
    path = synth.render_to_file(piece, tmp_path / name, bits=bits).path
    info = sf.info(path)
    assert info.subtype == subtype and info.samplerate == sr
    back, _ = sf.read(path, dtype="float32", always_2d=True)  # (samples, channels)
    tolerance = {"PCM_24": 1e-6, "FLOAT": 0, "VORBIS": 0.05}[subtype]
    n = min(len(back), audio.shape[1])
    assert back.shape[1] == len(audio) and np.abs(back[:n] - audio.T[:n]).max() <= tolerance


def test_impossible_outputs_are_refused_before_writing(synth, piece, tmp_path):
    for name, bits, message in [("a.mp3", None, "must end in"), ("a.flac", "float", "holds 16 or 24"), ("a.ogg", "16", "no bit depth")]:
        with pytest.raises(OutputError, match=message):
            synth.render_to_file(piece, tmp_path / name, bits=bits)
        assert not (tmp_path / name).exists()
    for kwargs in ({"sample_rate": 1000}, {"sample_rate": 44100.5}, {"channels": 3}, {"chunk_seconds": 0}, {"context_seconds": math.nan}):
        with pytest.raises(OutputError):
            synth.render(piece, **kwargs)
    (tmp_path / "keep.wav").write_bytes(b"keep me")
    with pytest.raises(SynthesisError, match="exists"):
        synth.render_to_file(piece, tmp_path / "keep.wav")
    assert (tmp_path / "keep.wav").read_bytes() == b"keep me"


# ---------------------------------------------------------------------------------------------
# The CLI: stdin, stdout, batches
# ---------------------------------------------------------------------------------------------


def test_stdin_to_stdout_equals_the_file_output(synth, piece, tmp_path):
    proc = cli("synthesize", "-", "-o", "-", "--threads", "1", input=piece.read_bytes())
    assert proc.returncode == 0, proc.stderr.decode()
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="int16", always_2d=True)
    expected, _ = synth.render(piece)
    assert sr == synth.sample_rate and np.array_equal(audio, int16_frames(expected))
    bad = cli("synthesize", "-", "-o", "-", input=b"junk")
    assert bad.returncode == 1 and bad.stdout == b""
    assert bad.stderr.decode().strip().splitlines()[-1].startswith("error: <stdin>: not a readable MIDI file")


def test_without_o_the_output_lands_beside_the_input(piece, tmp_path):
    src = tmp_path / "song.mid"
    src.write_bytes(piece.read_bytes())
    proc = cli("synthesize", str(src), "--threads", "1", "--format", "flac", "--sample-rate", "22050")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == str(tmp_path / "song.flac")
    assert sf.info(tmp_path / "song.flac").samplerate == 22050


def test_batch_names_skips_and_keeps_going_past_a_bad_file(piece, tmp_path):
    src = tmp_path / "in"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "a.mid").write_bytes(piece.read_bytes())
    (src / "deep" / "b.MID").write_bytes(piece.read_bytes())
    (src / "deep" / "bad.mid").write_bytes(b"MThd broken")  # in the middle, in sorted order
    (src / "deep" / "er" / "c.midi").write_bytes(piece.read_bytes())
    (src / "notes.txt").write_text("not MIDI")
    single = tmp_path / "single.mid"
    write_events(single, tempo(0, 120) + note(1, 0, 480, 60))
    out = tmp_path / "out"
    proc = cli("synthesize", str(src), str(single), "--out-dir", str(out), "--threads", "1")
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav"))
    assert written == ["a.wav", "deep/b.wav", "deep/er/c.wav", "single.wav"]
    assert "4 written, 0 skipped (existing), 1 failed" in err
    assert f"failed: {src / 'deep' / 'bad.mid'}: " in err and "Traceback" not in err
    # again: everything that exists is skipped, the bad file still fails
    stamp = (out / "a.wav").stat().st_mtime_ns
    again = cli("synthesize", str(src), str(single), "--out-dir", str(out), "--threads", "1", "--skip-existing")
    assert again.returncode == 1 and "0 written, 4 skipped (existing), 1 failed" in again.stderr.decode()
    assert (out / "a.wav").stat().st_mtime_ns == stamp
    # without --skip-existing or --force an existing output is a failure, not an overwrite
    third = cli("synthesize", str(src / "a.mid"), str(single), "--out-dir", str(out), "--threads", "1")
    assert third.returncode == 1 and "exists; pass --force" in third.stderr.decode()
    assert (out / "a.wav").stat().st_mtime_ns == stamp


def test_batch_refuses_two_inputs_for_one_output(piece, tmp_path):
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "same.mid").write_bytes(piece.read_bytes())
    proc = cli("synthesize", str(tmp_path / "x" / "same.mid"), str(tmp_path / "y" / "same.mid"), "--out-dir", str(tmp_path / "o"))
    assert proc.returncode == 1 and "would both be written to" in proc.stderr.decode()
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------
# A new user's papercuts: file objects, dir(), --format with -o
# ---------------------------------------------------------------------------------------------


def test_a_binary_file_object_renders_like_the_path(synth, piece):
    expected, _ = synth.render(piece)
    from_buffer, _ = synth.render(io.BytesIO(piece.read_bytes()))
    with open(piece, "rb") as f:
        from_file, _ = synth.render(f)
    assert np.array_equal(from_buffer, expected) and np.array_equal(from_file, expected)
    with pytest.raises(MidiError, match="^<bytes>: "):
        synth.render(io.BytesIO(b"junk"))
    with open(piece, encoding="latin-1") as text, pytest.raises(MidiError, match=r"binary mode \('rb'\)"):
        synth.render(text)


def test_dir_lists_the_public_names_the_package_loads_on_first_use():
    names = dir(pianosynth)
    assert {"load", "Synth", "shipped_models", "__version__"} <= set(names)
    assert names == sorted(names)


def test_format_and_o_agree_or_say_why_not(synth, piece, tmp_path):
    proc = cli("synthesize", str(piece), "-o", "-", "--format", "flac", "--threads", "1")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout[:4] == b"fLaC"
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="int16", always_2d=True)
    expected, _ = synth.render(piece)
    assert sr == synth.sample_rate and np.array_equal(audio, int16_frames(expected))  # FLAC is lossless
    assert cli("synthesize", str(piece), "-o", "-", "--threads", "1").stdout[:4] == b"RIFF"  # WAV by default
    bad = cli("synthesize", str(piece), "-o", str(tmp_path / "x.wav"), "--format", "flac")
    assert bad.returncode == 1 and not (tmp_path / "x.wav").exists()
    assert bad.stderr.decode().strip() == f"error: -o {tmp_path / 'x.wav'} and --format flac disagree; give the file a .flac suffix, or leave --format out"
