"""Fuzzing (issue 11): a few hundred seeded MIDI mutations through read_midi, compute_features,
compute_notes and synthesize. The only exception allowed is MidiError (a one-line refusal), and a
failed synthesis leaves no file behind. benchmarks/fuzz.py runs the same cases by the ten thousand
with a time and memory limit on each."""

from __future__ import annotations

import numpy as np
import pytest
from mutator import features_case, mutate, seed_files

from pianosynth.config import FeatureConfig
from pianosynth.midi import MidiError

CASES = 300
SYNTH_CASES = 12


@pytest.fixture(scope="module")
def seeds():
    return seed_files()


def test_mutations_are_seeded_and_bounded(seeds):
    a = [mutate(seeds[0], np.random.default_rng(i)) for i in range(20)]
    assert a == [mutate(seeds[0], np.random.default_rng(i)) for i in range(20)]
    assert len(set(a)) > 15 and all(len(x) <= 1 << 16 for x in a)


def test_mutated_midi_through_features_and_notes(seeds, tmp_path):
    fc = FeatureConfig()
    outcomes: dict[str, int] = {}
    for i in range(CASES):
        data = mutate(seeds[i % len(seeds)], np.random.default_rng(i))
        out = features_case(data, tmp_path / "case.mid", fc)  # raises on anything but MidiError
        outcomes[out] = outcomes.get(out, 0) + 1
    # the cases reach past the parser: some files are read and featurised, some refused by a limit
    assert outcomes.get("ok", 0) >= 30, outcomes
    assert sum(v for k, v in outcomes.items() if k.startswith("refused")) >= 30, outcomes


def test_mutated_midi_through_synthesize(seeds, tmp_path):
    from test_reliability import tiny_checkpoint

    from pianosynth.synthesize import synthesize_file

    model = tiny_checkpoint(tmp_path / "m.pt")
    out_dir = tmp_path / "out"
    written = 0
    for i in range(SYNTH_CASES):
        (tmp_path / "case.mid").write_bytes(mutate(seeds[i % len(seeds)], np.random.default_rng(10_000 + i)))
        out = out_dir / f"{i}.wav"
        try:
            synthesize_file(tmp_path / "case.mid", out, model_path=model, threads=1)
            written += 1
        except MidiError:
            assert not out.exists()
        assert not [p for p in out_dir.glob(".*")]  # no temporary file left, whatever happened
    assert written >= 1


# ---------------------------------------------------------------------------------------------
# Issue 20: scores, the API's object inputs, the page
# ---------------------------------------------------------------------------------------------


def test_mutated_scores_through_features_and_notes(tmp_path, monkeypatch):
    from mutator import mutate_score, score_case, score_seeds

    from pianosynth import scores as reader

    # partitura in this process: the same outcomes without read_score's child process (~3 s to
    # start, each score), which test_trust.py tests and benchmarks/fuzz.py runs on every case
    monkeypatch.setattr(reader, "_read_in_child", lambda source, name, bpm, limits, folder: reader._load_score(source, name, bpm))
    scores = score_seeds()
    fc = FeatureConfig()
    outcomes: dict[str, int] = {}
    for i in range(48):
        suffix, data = scores[i % len(scores)]
        out = score_case(suffix, mutate_score(suffix, data, np.random.default_rng(i)), tmp_path, fc)  # raises on anything but MidiError
        outcomes[f"{suffix} {out.split(':')[0]}"] = outcomes.get(f"{suffix} {out.split(':')[0]}", 0) + 1
    assert sum(v for k, v in outcomes.items() if k.endswith("ok")) >= 5, outcomes
    assert sum(v for k, v in outcomes.items() if k.endswith("refused")) >= 5, outcomes


def test_api_inputs_of_any_type_raise_only_what_is_documented(seeds, tmp_path):
    from mutator import api_input
    from test_reliability import tiny_checkpoint

    import pianosynth
    from pianosynth.audio import OutputError

    synth = pianosynth.load(tiny_checkpoint(tmp_path / "m.pt"), threads=1)
    kinds: dict[str, int] = {}
    for i in range(80):
        obj, options = api_input(np.random.default_rng(i), seeds)
        try:
            synth.render(obj, **options)
            kind = "ok"
        except (MidiError, OutputError) as e:  # the only exceptions render documents
            assert "\n" not in str(e)
            kind = type(e).__name__
        kinds[kind] = kinds.get(kind, 0) + 1
    assert set(kinds) == {"ok", "MidiError", "OutputError"}, kinds


def test_page_requests_are_answered_below_500(seeds, tmp_path):
    pytest.importorskip("starlette")
    from mutator import page_case, score_seeds
    from starlette.testclient import TestClient
    from test_reliability import tiny_checkpoint

    from pianosynth.serve import create_app

    app = create_app(models={"tiny": tiny_checkpoint(tmp_path / "m.pt")}, max_upload_bytes=65536, max_seconds=60, threads=1)
    scores = score_seeds()
    statuses: dict[str, int] = {}
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        for i in range(40):
            status = page_case(client, np.random.default_rng(i), seeds, scores)
            assert not status.startswith("UNEXPECTED"), (i, status)
            statuses[status] = statuses.get(status, 0) + 1
    assert {"200", "400", "403"} <= set(statuses), statuses
