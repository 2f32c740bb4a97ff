"""Reference rendering, the dataset cache (resume, skips) and the training crops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_fluidsynth, note, tempo, write_events

from pianosynth.config import Config, FeatureConfig, RenderConfig
from pianosynth.dataset import Cache, CropDataset, find_sources, piece_id, prepare, select_subset, split_by_hash
from pianosynth.fileio import TEMP_MARKER
from pianosynth.examples import write_demo_midi
from pianosynth.features import compute_features, dequantize
from pianosynth.midi import read_midi
from pianosynth.render import RenderError, check_renderer, render

TINY = Config(features=FeatureConfig(sample_rate=16000, hop_samples=160, tail_seconds=0.3))


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_missing_soundfont_is_one_clear_error(tmp_path, simple_midi):
    cfg = RenderConfig(soundfont=str(tmp_path / "nope.sf2"))
    with pytest.raises(RenderError, match=r"SoundFont .*nope\.sf2 not found"):
        check_renderer(cfg)
    missing_r3 = RenderConfig(soundfont=str(tmp_path / "FluidR3_GM.sf2"))
    with pytest.raises(RenderError, match="apt-get install fluid-soundfont-gm"):
        check_renderer(missing_r3)
    # through the CLI: one line on stderr, non-zero exit, no traceback
    proc = _cli("prepare", str(simple_midi.parent), "--out", str(tmp_path / "c"), "--soundfont", str(tmp_path / "nope.sf2"))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: SoundFont") and "Traceback" not in proc.stderr


def test_missing_fluidsynth_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RenderError, match="apt-get install fluidsynth"):
        check_renderer(RenderConfig())


@needs_fluidsynth
@pytest.mark.parametrize("sample_rate", [16000, 22050, 24000, 44100])
def test_render_is_aligned_with_the_note(tmp_path, sample_rate):
    # One note from 0.5 s to 1.0 s: silence before its onset, sound during it.
    path = write_events(tmp_path / "n.mid", tempo(0, 120) + note(1, 480, 960, 60, 110))
    perf = read_midi(path)
    fc = FeatureConfig(sample_rate=sample_rate, hop_samples=256, tail_seconds=0.5)
    x = compute_features(perf, fc)
    audio = render(perf, RenderConfig(), fc, len(x) * 256)
    assert audio.shape == (len(x) * 256,) and audio.dtype == np.float32
    onset = int(0.5 * sample_rate)
    assert np.abs(audio[: onset - 64]).max() < 1e-4  # nothing before the key goes down
    assert np.abs(audio[onset : onset + sample_rate // 10]).max() > 0.01  # the attack is there


@needs_fluidsynth
def test_program_changes_the_sound(tmp_path, simple_midi):
    perf = read_midi(simple_midi)
    fc = FeatureConfig(sample_rate=16000, hop_samples=160, tail_seconds=0.2)
    n = len(compute_features(perf, fc)) * 160
    piano = render(perf, RenderConfig(program=0), fc, n)
    organ = render(perf, RenderConfig(program=19), fc, n)
    assert np.abs(piano - organ).max() > 0.01


def _make_corpus(folder: Path, count: int = 4) -> list[Path]:
    paths = write_demo_midi(folder, count=count, bars=2)
    (folder / "empty.mid").write_bytes(b"")
    (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    write_events(folder / "drums.mid", tempo(0, 120) + note(1, 0, 480, 38, channel=9))
    return paths


@needs_fluidsynth
def test_prepare_skips_bad_files_and_caches_features_equal_to_fresh(tmp_path):
    midi = tmp_path / "midi"
    good = _make_corpus(midi)
    cache_dir = prepare(find_sources(midi), tmp_path / "cache", TINY, name="t", jobs=2)
    cache = Cache(cache_dir)
    assert sorted(p["file"] for p in cache.pieces) == sorted(p.name for p in good)
    reasons = {s["file"]: s["reason"] for s in cache.skipped}
    assert set(reasons) == {"empty.mid", "corrupt.mid", "drums.mid"}
    assert "empty file" in reasons["empty.mid"]
    assert "not a readable MIDI file" in reasons["corrupt.mid"]
    assert "only drum notes" in reasons["drums.mid"]
    summary = cache.summary()
    assert summary["skipped"] == 3 and sum(summary["reasons"].values()) == 3
    for piece in cache.pieces:
        x, y = cache.load(piece)
        assert isinstance(x, np.memmap) and isinstance(y, np.memmap)
        assert x.dtype == np.uint8 and y.dtype == np.int16
        assert x.shape[0] * 160 == y.shape[0]
        fresh = compute_features(read_midi(midi / piece["file"]), TINY.features)
        np.testing.assert_array_equal(dequantize(np.asarray(x)), fresh)
        assert np.abs(y).max() > 100  # real audio, not silence
        assert len(piece["sha1"]) == 40


@needs_fluidsynth
def test_prepare_resumes_after_a_kill(tmp_path):
    """SIGKILL `pianosynth prepare` after its first finished piece; a rerun finishes the rest
    without redoing finished pieces and leaves no corrupt entry."""
    midi = tmp_path / "midi"
    write_demo_midi(midi, count=10, bars=6)
    out = tmp_path / "cache"
    args = ["prepare", str(midi), "--out", str(out), "--name", "k", "--set", "features.hop_samples=160"]
    proc = subprocess.Popen([sys.executable, "-m", "pianosynth", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    done: list[Path] = []
    while time.time() < deadline and not done:
        done = list(out.glob("k-*/pieces/*.json"))
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert done, "prepare finished no piece before the deadline"
    cache_dir = done[0].parent.parent
    assert not (cache_dir / "manifest.json").exists()  # killed before the end
    finished_before = {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("pieces/*.json")}
    assert 1 <= len(finished_before) < 10
    # a half-written temporary file, as a kill during np.save would leave (fileio's name: the
    # killed process's id and the marker)
    (cache_dir / "pieces" / f".x.audio.npy.{proc.pid}.{TEMP_MARKER}k1ll3d.npy").write_bytes(b"\x93NUMPY partial")

    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    cache = Cache(cache_dir)
    assert len(cache.pieces) == 10 and not cache.skipped
    for name, mtime in finished_before.items():  # finished pieces were not redone
        assert (cache_dir / "pieces" / name).stat().st_mtime_ns == mtime
    assert not list(cache_dir.glob("pieces/.*"))
    for piece in cache.pieces:
        x, y = cache.load(piece)
        assert x.shape[0] * 160 == y.shape[0] == piece["frames"] * 160


def test_split_by_hash_is_deterministic_and_balanced():
    names = [f"piece_{i}.mid" for i in range(2000)]
    splits = [split_by_hash(n) for n in names]
    assert splits == [split_by_hash(n) for n in names]
    frac = {s: splits.count(s) / len(splits) for s in ("train", "valid", "test")}
    assert 0.75 < frac["train"] < 0.85 and 0.07 < frac["valid"] < 0.13 and 0.07 < frac["test"] < 0.13


def test_asap_style_splits_csv_and_max_hours(tmp_path):
    root = tmp_path / "asap"
    rows = ["performance_midi,score_midi,composer,piece,split,seconds"]
    for i in range(20):
        split = ["train", "valid", "test"][i % 3]
        rows.append(f"c/p{i}/perf{i}.mid,c/p{i}/midi_score.mid,c,c/p{i},{split},600")
    root.mkdir()
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    sources = find_sources(root)
    assert len(sources) == 20 and sources[0].split == "train" and sources[0].seconds == 600
    subset = select_subset(sources, max_hours=1.0)  # 6 files of 10 minutes reach one hour
    assert len(subset) == 6
    assert subset == select_subset(sources, max_hours=1.0)
    assert len(select_subset(sources, limit=3)) == 3
    scores = find_sources(root, column="score_midi")
    assert len(scores) == 20 and all(s.seconds is None for s in scores)


def test_piece_ids_are_unique_and_safe():
    ids = {piece_id(f"Bach/Fugue/bwv_{i}/Shi05M.mid") for i in range(100)}
    assert len(ids) == 100 and all("/" not in i for i in ids)


@needs_fluidsynth
def test_crops_are_deterministic_and_read_from_the_cache(tmp_path):
    midi = tmp_path / "midi"
    write_demo_midi(midi, count=3, bars=4)
    cache_dir = prepare(find_sources(midi), tmp_path / "cache", TINY, name="c")
    # all three files may fall in any split; use whichever split has pieces
    cache = Cache(cache_dir)
    split = cache.pieces[0]["split"]
    train = CropDataset(cache, split, example_seconds=0.5, random_crops=True, seed=3)
    x, y = train[7]
    assert x.shape == (50, TINY.features.n_channels) and y.shape == (8000,)
    x2, y2 = CropDataset(cache, split, example_seconds=0.5, random_crops=True, seed=3)[7]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
    x3, _ = CropDataset(cache, split, example_seconds=0.5, random_crops=True, seed=4)[7]
    assert not np.array_equal(x.numpy(), x3.numpy())
    # the crop is the cached piece's frames at the crop position
    piece, start = train.crop_position(7)
    fx, fy = cache.load(train.pieces[piece])
    np.testing.assert_array_equal(x.numpy(), dequantize(np.asarray(fx[start : start + 50])))
    np.testing.assert_allclose(y.numpy(), fy[start * 160 : start * 160 + 8000] / 32767.0, rtol=1e-6)
    valid = CropDataset(cache, split, example_seconds=0.5, examples=6, random_crops=False)
    assert len(valid) <= 6 and [valid.crop_position(i) for i in range(len(valid))] == [
        valid.crop_position(i) for i in range(len(valid))
    ]
