"""prepare on recordings (issue 12): paired folders, the MAESTRO layout, alignment, level, skips.

The "recordings" are made here: a random piece of MIDI notes and a synthetic piano-like tone for
each note (harmonics with a sharp attack and an exponential decay), placed where the reference's
note clock puts the note (``features.compute_notes``) plus a known offset.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import needs_fluidsynth, note, tempo, write_events
from pianosynth.config import Config, FeatureConfig, RenderConfig, config_from_dict
from pianosynth.dataset import Cache, find_maestro, find_recordings, prepare
from pianosynth.features import compute_notes, n_frames_for
from pianosynth.midi import read_midi
from pianosynth.recordings import (
    LOUDNESS_LUFS,
    MIN_ALIGNMENT,
    estimate_offset,
    read_recording,
)

FC = FeatureConfig()
RECORDED = Config(render=RenderConfig(source="recorded"))


def _cli(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from pianosynth.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def make_midi(path: Path, seed: int, seconds: float = 12.0) -> Path:
    """A random piece: about 3 onsets a second, some of them chords, at 120 bpm (960 ticks a second)."""
    rng = np.random.default_rng(seed)
    events = tempo(0, 120)
    t = 0.2
    while t < seconds:
        for pitch in rng.choice(np.arange(40, 90), size=int(rng.integers(1, 4)), replace=False):
            dur = float(rng.uniform(0.2, 1.0))
            events += note(1, round(t * 960), round((t + dur) * 960), int(pitch), int(rng.integers(40, 120)))
        t += float(rng.uniform(0.12, 0.6))
    return write_events(path, events, ticks_per_beat=480)


def synth_recording(midi: Path, sample_rate: int, offset_s: float, channels: int = 1, tail_s: float = 1.0,
                    gain: float = 1.0) -> np.ndarray:  # fmt: skip
    """A tone per note, starting where the note table (at ``sample_rate``) starts it, shifted by
    ``offset_s`` (positive: later). -> (samples, channels) float32"""
    perf = read_midi(midi)
    fc = FeatureConfig(sample_rate=sample_rate)
    notes = compute_notes(perf, fc)
    n = int(round((perf.end_s + tail_s + max(offset_s, 0)) * sample_rate))
    out = np.zeros(n)
    t = np.arange(int(1.5 * sample_rate)) / sample_rate
    for key, vel, onset, release in notes:
        f0 = 440.0 * 2 ** ((key + 21 - 69) / 12)
        tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 6) if f0 * h < sample_rate / 2 - 500)
        env = np.exp(-t / 0.4) * np.minimum(1.0, t / 0.001)
        start = int(onset) + int(round(offset_s * sample_rate))
        seg = (vel / 127) ** 2 * 0.1 * tone * env
        lo, hi = max(0, start), min(n, start + len(seg))
        if hi > lo:
            out[lo:hi] += seg[lo - start : hi - start]
    out *= gain
    chans = [out * (1.0 - 0.2 * c) for c in range(channels)]
    return np.stack(chans, axis=1).astype(np.float32)


def make_pair(folder: Path, stem: str, seed: int, offset_s: float, suffix: str = ".wav", sample_rate: int = 16000,
              channels: int = 1, **kw) -> tuple[Path, Path]:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    midi = make_midi(folder / f"{stem}.mid", seed)
    audio = folder / f"{stem}{suffix}"
    sf.write(str(audio), synth_recording(midi, sample_rate, offset_s, channels, **kw), sample_rate)
    return midi, audio


# ---------------------------------------------------------------------------------------------
# Alignment
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset_s", [0.2371, -0.4123, 0.0, 0.9])
def test_a_known_offset_is_recovered_within_5_ms(tmp_path, offset_s):
    midi = make_midi(tmp_path / "a.mid", seed=1)
    audio = synth_recording(midi, 16000, offset_s)[:, 0]
    notes = compute_notes(read_midi(midi), FC)
    al = estimate_offset(audio, 16000, notes[:, 2], notes[:, 1])
    assert abs(al.offset_s - offset_s) < 0.005, (al, offset_s)
    assert al.score > MIN_ALIGNMENT


def test_another_pieces_audio_scores_below_the_threshold(tmp_path):
    midi = make_midi(tmp_path / "a.mid", seed=1, seconds=30)
    other = synth_recording(make_midi(tmp_path / "b.mid", seed=2, seconds=30), 16000, 0.0)[:, 0]
    notes = compute_notes(read_midi(midi), FC)
    assert estimate_offset(other, 16000, notes[:, 2], notes[:, 1]).score < MIN_ALIGNMENT


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def test_a_stereo_44k_file_is_mixed_to_mono_and_resampled(tmp_path):
    sr_in, seconds = 44100, 2.0
    t = np.arange(int(sr_in * seconds)) / sr_in
    above = np.sin(2 * np.pi * 10000 * t)  # above the 8 kHz Nyquist of 16 kHz: must be filtered out
    left = 0.5 * np.sin(2 * np.pi * 1000 * t) + 0.1 * above
    right = 0.3 * np.sin(2 * np.pi * 1000 * t) + 0.1 * above
    path = tmp_path / "st.flac"
    sf.write(str(path), np.stack([left, right], axis=1), sr_in, subtype="PCM_24")
    dec = read_recording(path, 16000)
    assert (dec.sample_rate, dec.channels) == (44100, 2)
    assert dec.seconds == pytest.approx(seconds)
    assert len(dec.audio) == round(len(t) * 16000 / 44100)
    t16 = np.arange(len(dec.audio)) / 16000
    want = 0.4 * np.sin(2 * np.pi * 1000 * t16)  # the mean of the channels
    mid = slice(800, len(t16) - 800)  # away from the resampler's edges
    assert np.max(np.abs(dec.audio[mid] - want[mid])) < 2e-3
    # the 10 kHz tone would alias to 6 kHz without a low-pass: nothing there
    spec = np.abs(np.fft.rfft(dec.audio[mid] * np.hanning(len(t16[mid]))))
    freqs = np.fft.rfftfreq(len(t16[mid]), 1 / 16000)
    at = lambda f: spec[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(6000) < 1e-4 * at(1000)


def test_an_unreadable_file_is_a_recording_error(tmp_path):
    from pianosynth.recordings import RecordingError

    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    with pytest.raises(RecordingError, match="cannot be read"):
        read_recording(bad, 16000)


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------


def test_a_paired_folder_becomes_a_cache_aligned_and_levelled(tmp_path):
    offsets = {"one": 0.25, "two": -0.15}
    make_pair(tmp_path / "in", "one", 1, offsets["one"], gain=0.02)
    make_pair(tmp_path / "in" / "sub", "two", 2, offsets["two"], suffix=".flac", sample_rate=44100, channels=2, gain=3.0)
    sources = find_recordings(tmp_path / "in")
    assert [(s.rel, s.audio_rel) for s in sources] == [("one.mid", "one.wav"), ("sub/two.mid", "sub/two.flac")]
    cache = Cache(prepare(sources, tmp_path / "cache", RECORDED, name="rec"))
    assert cache.render.source == "recorded" and cache.manifest["recordings"]["loudness_lufs"] == LOUDNESS_LUFS
    assert not cache.skipped and len(cache.pieces) == 2
    from pianosynth.audio import LoudnessMeter

    for piece in cache.pieces:
        stem = Path(piece["file"]).stem
        assert piece["audio_file"] == next(s.audio_rel for s in sources if s.rel == piece["file"])
        assert abs(piece["offset_s"] - offsets[stem]) < 0.005
        assert len(piece["audio_sha1"]) == 40
        x, y = cache.load(piece)
        assert len(y) == len(x) * FC.hop_samples == n_frames_for(read_midi(tmp_path / "in" / piece["file"]), FC) * 256
        meter = LoudnessMeter(16000)
        meter.add(np.asarray(y, np.float32) / 32767)
        assert meter.loudness() == pytest.approx(LOUDNESS_LUFS, abs=0.1)
        assert piece["loudness_after_lufs"] == pytest.approx(LOUDNESS_LUFS, abs=0.01)
        # the stored audio starts where the MIDI's notes start: the first onset's attack is there
        notes = cache.load_notes(piece)
        first = int(notes[0, 2])
        y = np.asarray(y, np.float32)
        assert np.abs(y[max(0, first - 200) : first - 40]).max() < 0.05 * np.abs(y[first : first + 400]).max()
    two = next(p for p in cache.pieces if p["file"] == "sub/two.mid")
    assert (two["audio_sample_rate"], two["audio_channels"]) == (44100, 2)
    assert two["gain_db"] < 0 < next(p for p in cache.pieces if p["file"] == "one.mid")["gain_db"]


def test_bad_pairs_are_skipped_with_their_reason_and_nothing_else_is_lost(tmp_path):
    folder = tmp_path / "in"
    make_pair(folder, "good", 1, 0.1)
    make_midi(folder / "unreadable.mid", 2)
    (folder / "unreadable.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    make_midi(folder / "mismatched.mid", 3, seconds=30)  # paired with another piece's recording
    other = make_midi(tmp_path / "other.mid", 4, seconds=30)
    sf.write(str(folder / "mismatched.wav"), synth_recording(other, 16000, 0.0), 16000)
    midi = make_midi(folder / "short.mid", 5)  # the recording stops 4 s before the music does
    rec = synth_recording(midi, 16000, 0.0)
    sf.write(str(folder / "short.wav"), rec[: len(rec) - 5 * 16000], 16000)
    midi = make_midi(folder / "long.mid", 7)  # the recording goes on with 6 s of other music
    more = synth_recording(make_midi(tmp_path / "more.mid", 8, seconds=6), 16000, 0.0)
    sf.write(str(folder / "long.wav"), np.concatenate([synth_recording(midi, 16000, 0.0, tail_s=0.5), more]), 16000)
    make_midi(folder / "alone.mid", 6)  # no recording at all
    proc = _cli("prepare", str(folder), "--recordings", "--out", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    cache = Cache(proc.stdout.splitlines()[0])
    assert [p["file"] for p in cache.pieces] == ["good.mid"]
    reasons = {s["file"]: s["reason"] for s in cache.skipped}
    assert set(reasons) == {"unreadable.mid", "mismatched.mid", "short.mid", "long.mid", "alone.mid"}
    assert "cannot be read" in reasons["unreadable.mid"]
    assert "does not align" in reasons["mismatched.mid"]
    assert "before the MIDI does" in reasons["short.mid"]
    assert "still sounds" in reasons["long.mid"]
    assert "no audio file" in reasons["alone.mid"]
    assert "skipped mismatched.mid" in proc.stderr
    assert not cache.check_arrays(verify=True)
    # the good piece is what it would be alone
    alone = Cache(prepare([s for s in find_recordings(folder) if s.rel == "good.mid"], tmp_path / "cache2", RECORDED))
    assert alone.pieces[0]["file"] == "good.mid"
    assert np.array_equal(cache.load(cache.pieces[0])[1], alone.load(alone.pieces[0])[1])


def test_the_maestro_layout_keeps_its_split(tmp_path):
    root = tmp_path / "maestro-v3.0.0"
    rows = []
    for i, split in enumerate(["train", "validation", "test", "train"]):
        midi, audio = make_pair(root / "2018", f"piece{i}", 10 + i, 0.05 * i)
        rows.append({
            "canonical_composer": "X", "canonical_title": f"T{i}", "split": split, "year": "2018",
            "midi_filename": f"2018/{midi.name}", "audio_filename": f"2018/{audio.name}", "duration": "13.1",
        })  # fmt: skip
    with open(root / "maestro-v3.0.0.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    sources = find_maestro(root / "maestro-v3.0.0.csv")
    assert [(s.rel, s.split, s.audio_rel) for s in sources] == [
        (r["midi_filename"], {"validation": "valid"}.get(r["split"], r["split"]), r["audio_filename"]) for r in rows
    ]
    proc = _cli("prepare", str(root / "maestro-v3.0.0.csv"), "--out", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    cache_dir = Path(proc.stdout.splitlines()[0])
    assert cache_dir.name.startswith("maestro-v3.0.0-")
    manifest = json.loads((cache_dir / "manifest.json").read_text())
    assert manifest["config"]["render"]["source"] == "recorded"
    assert {p["file"]: p["split"] for p in manifest["pieces"]} == {s.rel: s.split for s in sources}
    for p in manifest["pieces"]:
        assert abs(p["offset_s"] - 0.05 * int(Path(p["file"]).stem[-1])) < 0.005


def test_a_maestro_csv_without_its_columns_is_one_clear_error(tmp_path):
    bad = tmp_path / "x.csv"
    bad.write_text("midi_filename,split\na.mid,train\n")
    proc = _cli("prepare", str(bad), "--out", str(tmp_path / "cache"))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "audio_filename" in proc.stderr


def test_fluidsynth_caches_keep_their_hash_and_recordings_get_their_own():
    """render.source is left out of a FluidSynth config's dict, so caches and runs made before it
    existed keep their names; a recordings config differs."""
    plain = Config().to_dict()
    assert "source" not in plain["render"]
    assert config_from_dict(plain).render.source == "fluidsynth"
    rec = RECORDED.to_dict()
    assert rec["render"]["source"] == "recorded" and config_from_dict(rec) == RECORDED


def test_a_recordings_reference_is_never_rendered():
    from pianosynth.render import RenderError, render

    with pytest.raises(RenderError, match="not rendered"):
        render(None, RenderConfig(source="recorded"), FC, 100)


@needs_fluidsynth
def test_evaluate_scores_against_the_recording_with_the_fluidr3_render_as_a_baseline(tmp_path, monkeypatch):
    from pianosynth import evaluate as ev
    from pianosynth.config import DEFAULT_SOUNDFONT
    from pianosynth.evaluate import evaluate

    monkeypatch.setattr(ev, "MUSESCORE_SOUNDFONT", DEFAULT_SOUNDFONT)  # not under test here, and slow to load

    make_pair(tmp_path / "in", "one", 1, 0.1)
    make_pair(tmp_path / "in", "two", 2, -0.1)
    sources = [replace(s, split="test") for s in find_recordings(tmp_path / "in")]
    cache = Cache(prepare(sources, tmp_path / "cache", RECORDED))
    result = evaluate(cache, [], tmp_path / "eval", split="test", clips=2, seconds=3.0, transcribe=False)
    names = [s["name"] for s in result["systems"]]
    assert names[0] == "reference (recording)" and "FluidR3 grand (FluidSynth)" in names
    summary = result["summary"]
    assert summary["reference (recording)"]["mrstft"]["mean"] == 0.0
    # the FluidR3 render is not the recording (it was the reference of a FluidSynth cache)
    assert summary["FluidR3 grand (FluidSynth)"]["mrstft"]["mean"] > 0.5


def test_verify_redoes_a_piece_whose_recording_changed(tmp_path):
    midi, audio = make_pair(tmp_path / "in", "one", 1, 0.1)
    cache = Cache(prepare(find_recordings(tmp_path / "in"), tmp_path / "cache", RECORDED))
    first = cache.pieces[0]
    sf.write(str(audio), synth_recording(midi, 16000, 0.3), 16000)  # the same take, re-exported later
    again = Cache(prepare(find_recordings(tmp_path / "in"), tmp_path / "cache", RECORDED))
    assert again.pieces[0]["audio_sha1"] == first["audio_sha1"]  # without --verify the finished piece is kept
    fixed = Cache(prepare(find_recordings(tmp_path / "in"), tmp_path / "cache", RECORDED, verify=True))
    assert fixed.pieces[0]["audio_sha1"] != first["audio_sha1"]
    assert abs(fixed.pieces[0]["offset_s"] - 0.3) < 0.005


def test_the_standin_draws_are_a_pure_function_of_seed_and_path():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_standin", Path(__file__).parents[1] / "scripts" / "make_standin.py")
    ms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ms)
    a, b = ms.draw_file("Bach/x.mid", 0), ms.draw_file("Bach/x.mid", 0)
    assert a == b and a != ms.draw_file("Bach/y.mid", 0) and a != ms.draw_file("Bach/x.mid", 1)
    offsets = [ms.draw_file(f"p{i}.mid", 0)["offset_s"] for i in range(200)]
    assert -ms.MAX_OFFSET_S <= min(offsets) < -0.2 and 0.2 < max(offsets) <= ms.MAX_OFFSET_S
    noise = ms.pink_noise(44100, 2, 0.01, 0)
    assert noise.shape == (2, 44100) and np.sqrt(np.mean(noise**2)) == pytest.approx(0.01, rel=1e-3)


def _reverberant(dry: np.ndarray, sample_rate: int, t60_s: float, seed: int = 0) -> np.ndarray:
    """``dry`` (samples, channels) in a room: convolved with exponentially decaying noise whose
    level falls 60 dB in ``t60_s``, mixed with the direct sound."""
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    t = np.arange(int(1.5 * t60_s * sample_rate)) / sample_rate
    ir = rng.standard_normal(len(t)) * 10 ** (-3 * t / t60_s)
    ir *= 0.5 / np.sqrt(np.sum(ir**2))
    wet = np.stack([fftconvolve(dry[:, c], ir)[: len(dry) + len(ir)] for c in range(dry.shape[1])], axis=1)
    out = wet.copy()
    out[: len(dry)] += dry
    return out.astype(np.float32)


def test_a_room_with_a_4_s_reverberant_tail_and_a_0_4_s_lead_in_is_accepted_and_aligned(tmp_path):
    from pianosynth.recordings import Limits, audible_end_s

    folder = tmp_path / "in"
    folder.mkdir()
    midi = make_midi(folder / "hall.mid", 11)
    dry = synth_recording(midi, 16000, 0.4, tail_s=0.0)  # the first note 0.4 s late: a lead-in
    wet = _reverberant(dry, 16000, t60_s=7.5)  # a hall; the tail sounds some 4 s past the last note-off
    sf.write(str(folder / "hall.wav"), wet, 16000)
    end_s = read_midi(midi).end_s
    tail_s = audible_end_s(wet[:, 0], 16000) - 0.4 - end_s
    assert 3.5 < tail_s < 5  # longer than the fixed 2 s limit that used to refuse such renders
    sources = find_recordings(folder)
    cache = Cache(prepare(sources, tmp_path / "cache", RECORDED, name="hall"))
    assert not cache.skipped, cache.skipped
    piece = cache.pieces[0]
    assert abs(piece["offset_s"] - 0.4) < 0.005
    assert piece["audible_end_s"] - end_s == pytest.approx(tail_s, abs=0.06)
    assert cache.manifest["recordings"]["max_tail_s"] == Limits().max_tail_s
    # the stored audio starts where the MIDI's notes start
    notes = cache.load_notes(piece)
    first = int(notes[0, 2])
    y = np.abs(np.asarray(cache.load(piece)[1], np.float32))
    assert y[max(0, first - 200) : first - 40].max() < 0.05 * y[first : first + 400].max()
    # the limits are options: a tighter tail refuses it, a shorter lead-in search misses it
    proc = _cli("prepare", str(folder), "--recordings", "--out", str(tmp_path / "tight"), "--max-tail", "2")
    assert proc.returncode == 0, proc.stderr
    assert "more than the 2 s tail allowed (prepare --max-tail)" in proc.stderr
    tight = Cache(proc.stdout.splitlines()[0])
    assert tight.manifest["recordings"]["max_tail_s"] == 2.0 and tight.dir != cache.dir and not tight.pieces
    loose = Cache(prepare(sources, tmp_path / "short", RECORDED, name="hall", limits=Limits(max_lead_in_s=0.2)))
    assert not loose.pieces or abs(loose.pieces[0]["offset_s"] - 0.4) > 0.1
    bad = _cli("prepare", str(folder), "--out", str(tmp_path / "x"), "--max-tail", "5")
    assert bad.returncode == 1 and bad.stderr.strip().endswith("--max-tail go with --recordings (or a MAESTRO CSV)")


def test_a_tail_that_rises_again_is_more_music_not_reverberation():
    from pianosynth.recordings import rise_after

    sr = 16000
    t = np.arange(6 * sr) / sr
    decay = np.sin(2 * np.pi * 220 * t) * 10 ** (-3 * t / 4.0) * (1 + 0.3 * np.sin(2 * np.pi * 1.3 * t))  # beating
    assert rise_after(decay, sr, 0.5) is None
    more = decay.copy()
    more[4 * sr :] += 0.5 * np.sin(2 * np.pi * 330 * t[: 2 * sr]) * np.exp(-t[: 2 * sr] / 0.5)  # a new note at 4 s
    at, by = rise_after(more, sr, 0.5)
    assert at == pytest.approx(4.0, abs=0.06) and by > 15
