"""scripts/pack_cache.py: a packed and unpacked cache is a cache that trains, with the same
features, notes and splits, and audio within the measured band-limiting error."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import needs_fluidsynth

from pianosynth.config import Config, FeatureConfig
from pianosynth.dataset import Cache, find_sources, prepare
from pianosynth.examples import write_demo_midi

ROOT = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("pack_cache", ROOT / "scripts" / "pack_cache.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_fluidsynth
def test_pack_then_unpack_gives_a_cache_with_the_same_features_and_near_audio(tmp_path):
    pack_cache = load_script()
    write_demo_midi(tmp_path / "midi", count=3, bars=2)
    cache_dir = prepare(
        find_sources(tmp_path / "midi"), tmp_path / "c",
        Config(features=FeatureConfig(sample_rate=48000, hop_samples=768, channels=2, tail_seconds=0.3)), name="stereo",
    )  # fmt: skip
    source = Cache(cache_dir)
    # two chunks: the first holds what fits in a tiny size, the second the rest
    one = min(p["seconds"] for p in source.pieces) * 25e3 / 2**20
    chunks = pack_cache.pack(Path(cache_dir), tmp_path / "packed", chunks=5, chunk_mib=one * 1.5, valid_seconds=600)
    assert len(chunks) >= 2
    dest = tmp_path / "unpacked"
    pack_cache.unpack(chunks[:1], dest)
    first = Cache(dest)
    assert 0 < len(first.pieces) < len(source.pieces)
    pack_cache.unpack(chunks, dest)  # the rest, and the first chunk again, which adds nothing
    got = Cache(dest)
    # the train and valid splits travel; the test split stays (evaluate reads the full-rate cache)
    assert sorted(p["id"] for p in got.pieces) == sorted(p["id"] for p in source.pieces if p["split"] != "test")
    assert got.check_arrays(verify=True) == []
    assert got.features == source.features and got.render == source.render
    by_id = {p["id"]: p for p in source.pieces}
    for piece in got.pieces:
        original = by_id[piece["id"]]
        assert piece["split"] == original["split"] and piece["packed"] == {"rate": pack_cache.PACK_RATE}
        x0, y0 = source.load(original)
        x1, y1 = got.load(piece)
        assert np.array_equal(x0, x1)
        assert np.array_equal(source.load_notes(original), got.load_notes(piece))
        assert y1.shape == y0.shape and y1.dtype == np.int16
        err = y1.astype(np.float64) - y0
        measured = 10 * np.log10(np.mean(err**2) / np.mean(y0.astype(np.float64) ** 2))
        # the unpacked audio is the round trip that roundtrip_error_db measures, and it is close
        assert measured == pytest.approx(pack_cache.roundtrip_error_db(np.asarray(y0), 48000), abs=0.5)
        assert measured < -20
    # a chunk of another cache's settings is refused
    head = json.loads((chunks[0] / "pack.json").read_text())
    head["config"]["features"]["hop_samples"] = 512
    (chunks[0] / "pack.json").write_text(json.dumps(head))
    with pytest.raises(SystemExit, match="other settings"):
        pack_cache.unpack(chunks[:1], dest)
