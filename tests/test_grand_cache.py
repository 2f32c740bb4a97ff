"""A stereo 48 kHz cache of the grand (issue 18): prepare, load, crops, --verify, resume and the
disk check, with the tiny synthetic grand of test_grand.py; and mono caches keep their hashes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_grand import write_tiny_grand

from pianosynth import grand
from pianosynth.config import load_config
from pianosynth.dataset import Cache, CacheError, CropDataset, SourceFile, cache_key, find_sources, prepare
from pianosynth.examples import write_demo_midi
from pianosynth.features import compute_notes
from pianosynth.midi import read_midi
from pianosynth.render import close_sfizz

pytest.importorskip("pysfizz")


@pytest.fixture(scope="module")
def tiny_grand_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grand")
    write_tiny_grand(folder)
    return folder


@pytest.fixture
def grand_env(tiny_grand_dir, monkeypatch):
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(tiny_grand_dir))
    yield tiny_grand_dir
    close_sfizz()


GRAND = load_config(None, grand.GRAND_OVERRIDES + ["features.tail_seconds=0.2"])


def _midi(folder: Path, count: int = 3) -> Path:
    write_demo_midi(folder, count=count, bars=1)
    return folder


def test_mono_caches_keep_their_hashes():
    """The cache key of a default (FluidSynth, 16 kHz mono) config, as computed before issue 18
    (git 04bb566), and of a recordings config since its tail limit became an option (--max-tail,
    default 10 s instead of a fixed 2 s: other pieces are accepted, so the identity changed)."""
    src = [SourceFile(Path("/x/a.mid"), "a.mid", "train", 1.0), SourceFile(Path("/x/b.mid"), "b.mid", "test", None)]
    assert cache_key(src, load_config(None, [])) == "22dd693256"
    assert cache_key(src, load_config(None, ["render.source=recorded"])) == "b2c5b127ad"


def test_stereo_cache_loads_crops_verifies_and_resumes(grand_env, tmp_path):
    midi = _midi(tmp_path / "midi")
    sources = find_sources(midi)
    cache_dir = prepare(sources, tmp_path / "cache", GRAND, name="g")
    cache = Cache(cache_dir)
    assert cache.manifest["audio"] == {"sample_rate": 48000, "channels": 2, "dtype": "int16"}
    assert cache.manifest["grand"]["samples"] == grand.check_samples(grand_env)
    assert cache.channels == 2 and len(cache.pieces) == 3 and not cache.skipped
    hop = GRAND.features.hop_samples
    for piece in cache.pieces:
        x, y = cache.load(piece)
        assert isinstance(y, np.memmap) and y.dtype == np.int16
        assert y.shape == (piece["frames"] * hop, 2) and x.shape[0] == piece["frames"]
        assert np.abs(y).max() > 1000 and not np.array_equal(y[:, 0], y[:, 1])  # stereo, not a copy
        # the note table is on sfizz's clock: silence before the first onset, sound from it on
        notes = np.load(cache_dir / "pieces" / f"{piece['id']}.notes.npy")
        np.testing.assert_array_equal(notes, compute_notes(read_midi(midi / piece["file"]), GRAND.features, len(y)))
        first = notes[0, 2]
        assert np.all(y[:first] == 0) and np.any(y[first] != 0)
    # crops: (2, samples), the memory map's slice scaled to [-1, 1]
    ds = CropDataset(cache, cache.pieces[0]["split"], example_seconds=0.1, examples=4, random_crops=True)
    x, y = ds[1]
    piece, start = ds.crop_position(1)
    _, full = cache.load(ds.pieces[piece])
    assert tuple(y.shape) == (2, ds.frames * hop)
    np.testing.assert_array_equal(y.numpy(), full[start * hop : (start + ds.frames) * hop].T / np.float32(32767.0))
    assert cache.check_arrays(verify=True) == []

    # damage one piece's audio (same size), and drop another's record: --verify finds the first,
    # a rerun redoes both and nothing else, and gives the same bytes (renders are deterministic)
    records = {p.name: p.stat().st_mtime_ns for p in (cache_dir / "pieces").glob("*.json")}
    a, b, c = cache.pieces
    before = {p["id"]: np.array(cache.load(p)[1]) for p in cache.pieces}
    path = cache_dir / "pieces" / f"{a['id']}.audio.npy"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    (cache_dir / "pieces" / f"{b['id']}.json").unlink()
    problems = Cache(cache_dir).check_arrays(verify=True)
    assert len(problems) == 1 and f"{a['id']}.audio.npy does not match its hash" in problems[0]
    close_sfizz()  # the rerun starts its own sfizz process
    assert prepare(sources, tmp_path / "cache", GRAND, name="g", verify=True) == cache_dir
    again = Cache(cache_dir)
    assert again.check_arrays(verify=True) == []
    after = {p.name: p.stat().st_mtime_ns for p in (cache_dir / "pieces").glob("*.json")}
    assert after[f"{c['id']}.json"] == records[f"{c['id']}.json"]  # untouched
    assert after[f"{a['id']}.json"] != records[f"{a['id']}.json"]  # redone
    for p in again.pieces:
        np.testing.assert_array_equal(np.array(again.load(p)[1]), before[p["id"]])


def test_the_grand_is_part_of_the_cache_identity(grand_env, tmp_path):
    src = [SourceFile(Path("/x/a.mid"), "a.mid", "train", 1.0)]
    key = cache_key(src, GRAND)
    assert key != cache_key(src, load_config(None, grand.GRAND_OVERRIDES + ["render.sfizz_quality=10"]))
    assert key != cache_key(src, load_config(None, grand.GRAND_OVERRIDES + ["features.channels=1"]))
    listing = json.loads((grand_env / grand.LISTING).read_text())
    listing["samples"]["C4v1.ogg"]["sha1"] = "0" * 40  # another sample set
    other = tmp_path / "other"
    other.mkdir()
    (other / grand.AUDIO).symlink_to(grand_env / grand.AUDIO)
    (other / grand.LISTING).write_text(json.dumps(listing))
    assert grand.identity(grand_env)["samples"] != {"files": 568, "sha1": ""}
    with pytest.MonkeyPatch.context() as m:
        m.setenv(grand.SAMPLE_DIR_ENV, str(other))
        with pytest.raises(CacheError, match=r"C4v1\.ogg: does not match its sha1"):
            cache_key(src, GRAND)


def test_disk_space_is_checked_before_any_work(grand_env, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    midi = _midi(tmp_path / "midi", count=2)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    with pytest.raises(CacheError, match=r"not enough disk space: 2 piece\(s\).*48000 Hz x 2 channel\(s\)") as e:
        prepare(find_sources(midi), tmp_path / "cache", GRAND, name="g")
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache").glob("g-*/pieces/*.json"))


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_cli_prepare_reference_grand_and_fetch_grand_check(tiny_grand_dir, tmp_path):
    midi = _midi(tmp_path / "midi", count=2)
    env = {grand.SAMPLE_DIR_ENV: str(tiny_grand_dir)}
    proc = _cli("fetch-grand", "--check-only", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "568 samples checked" in proc.stdout
    proc = _cli("prepare", str(midi), "--reference", "grand", "--out", str(tmp_path / "c"), "--name", "g", "--jobs", "2", env=env)
    assert proc.returncode == 0, proc.stderr
    cache = Cache(proc.stdout.strip().splitlines()[0])
    assert (cache.features.sample_rate, cache.channels, cache.render.source) == (48000, 2, "sfizz")
    assert len(cache.pieces) == 2
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr  # the workers ended cleanly
    # without the samples: one line, no traceback
    proc = _cli("prepare", str(midi), "--reference", "grand", "--out", str(tmp_path / "d"), env={grand.SAMPLE_DIR_ENV: str(tmp_path / "none")})
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "fetch-grand" in errors[0] and "Traceback" not in proc.stderr, proc.stderr


def test_note_tables_of_an_older_rule_are_refused_and_rewritten_without_a_render(grand_env, tmp_path, monkeypatch):
    # sfizz's note tables changed rule (its own pedal rule, features.NOTE_RULE): a cache made
    # before says so when loaded, and prepare rewrites only the tables, keeping the audio
    from pianosynth import dataset
    from pianosynth.midi import PedalCurve, write_midi

    midi = _midi(tmp_path / "midi", count=2)
    perf = read_midi(midi / sorted(p.name for p in midi.glob("*.mid"))[0])
    perf.pedals["sustain"] = PedalCurve(np.array([0.0, perf.end_s / 2]), np.array([30 / 127, 0.0]))  # half down: sfizz holds
    write_midi(perf, midi / "pedal.mid")
    sources = find_sources(midi)
    cache_dir = prepare(sources, tmp_path / "cache", GRAND, name="g")
    pieces = cache_dir / "pieces"
    for record_path in pieces.glob("*.json"):  # as an older prepare left them: rule 1, FluidSynth's pedal
        rec = json.loads(record_path.read_text())
        del rec["note_rule"]
        old = compute_notes(read_midi(midi / rec["file"]), dataset.FeatureConfig(sample_rate=48000, hop_samples=768), rec["frames"] * 768)
        np.save(pieces / f"{rec['id']}.notes.npy", old)
        rec["arrays"]["notes"]["shape"] = list(old.shape)
        record_path.write_text(json.dumps(rec))
    old_manifest = json.loads((cache_dir / "manifest.json").read_text())
    for rec in old_manifest["pieces"]:
        del rec["note_rule"]
    (cache_dir / "manifest.json").write_text(json.dumps(old_manifest))
    cache = Cache(cache_dir)
    with pytest.raises(CacheError, match="older rule.*run prepare again"):
        cache.load_notes(cache.pieces[0])

    audio_times = {p.name: p.stat().st_mtime_ns for p in pieces.glob("*.audio.npy")}
    import pianosynth.render

    monkeypatch.setattr(pianosynth.render, "render", lambda *a, **k: pytest.fail("prepare re-rendered a finished piece"))
    assert prepare(sources, tmp_path / "cache", GRAND, name="g", verify=True) == cache_dir
    again = Cache(cache_dir)
    assert again.check_arrays(verify=True) == []
    assert {p.name: p.stat().st_mtime_ns for p in pieces.glob("*.audio.npy")} == audio_times
    held = 0
    for piece in again.pieces:
        notes = again.load_notes(piece)
        np.testing.assert_array_equal(notes, compute_notes(read_midi(midi / piece["file"]), GRAND.features, piece["frames"] * 768))
        old = compute_notes(read_midi(midi / piece["file"]), dataset.FeatureConfig(sample_rate=48000, hop_samples=768), piece["frames"] * 768)
        held += int((notes[:, 3] > old[:, 3]).sum())
    assert held > 0  # the half-down pedal now holds notes that the old table released
