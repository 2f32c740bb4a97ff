"""Several shipped models (issues 12 and 13): the index and its figures, `pianosynth models`,
`--instrument`, routing each General MIDI program of a file to its model, and the score-mode model
for a file without velocity variation. Every model here is a tiny untrained one made in the test,
in a temporary models folder named by PIANOSYNTH_MODELS_DIR: the package's own files are never
touched."""

from __future__ import annotations

import json
from pathlib import Path

import mido
import numpy as np
import pytest
import torch
from conftest import cc, note, tempo, write_events

import pianosynth
from pianosynth import cli, registry
from pianosynth.audio import Resampler
from pianosynth.config import load_config
from pianosynth.features import compute_features, compute_notes
from pianosynth.midi import read_midi, split_by_program
from pianosynth.model import build_model
from pianosynth.registry import MODELS_DIR_ENV, RegistryError
from pianosynth.synthesize import SynthesisError
from pianosynth.checkpoint import save_checkpoint

TINY = ["model.hidden=8", "model.layers=1"]


def tiny_checkpoint(path: Path, seed: int, *sets: str) -> Path:
    """An untrained tiny model, as export writes one; ``seed`` makes its weights its own."""
    cfg = load_config(None, TINY + list(sets))
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.features)
    state = {"format": 1, "version": "test", "config": cfg.to_dict(), "model": model.state_dict(),
             "step": 0, "best_valid": 1.0, "elapsed_s": 0.0}  # fmt: skip
    save_checkpoint(path, state)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Checkpoints to ship: a piano, a harpsichord (GM 6), a score-mode piano, one at 22050 Hz, and
    a piano of another reference (a stand-in for the grand)."""
    root = tmp_path_factory.mktemp("checkpoints")
    tiny_checkpoint(root / "piano.pt", 0)
    tiny_checkpoint(root / "grand.pt", 4, "render.soundfont=/somewhere/grand.sfz")
    tiny_checkpoint(root / "harpsichord.pt", 1, "render.program=6")
    tiny_checkpoint(root / "score.pt", 2, "features.preset=score")
    tiny_checkpoint(root / "marimba22k.pt", 3, "render.program=12", "features.sample_rate=22050")
    return root


def ship(folder: Path, made: Path, **names: str) -> Path:
    """A models folder holding ``name=checkpoint stem`` pairs, indexed by ``registry.add_model``;
    the first is the default, as fluidr3 is in the package's own."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, stem) in enumerate(names.items()):
        registry.add_model(made / f"{stem}.pt", name, folder=folder, default=i == 0)
    return folder


@pytest.fixture
def models(tmp_path, made, monkeypatch) -> Path:
    folder = ship(tmp_path / "models", made, fluidr3="piano", harpsichord="harpsichord", score="score")
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    return folder


def program_change(channel: int, program: int):
    return [(1, 0, mido.Message("program_change", program=program, channel=channel))]


def multi_program_midi(path: Path) -> Path:
    """Piano on channel 0 (with its own sustain pedal), harpsichord on 1, violin (40) on 2."""
    events = tempo(0, 120) + program_change(0, 0) + program_change(1, 6) + program_change(2, 40)
    events += note(1, 0, 480, 60, 100, channel=0) + note(1, 480, 720, 64, 70, channel=0)
    events += cc(1, 100, 64, 127, channel=0) + cc(1, 900, 64, 0, channel=0)
    events += note(1, 240, 960, 67, 50, channel=1) + note(1, 960, 1200, 72, 90, channel=1)
    events += note(1, 300, 800, 76, 80, channel=2)
    return write_events(path, events)


def piano_midi(path: Path, velocities=(100, 50, 80)) -> Path:
    events = tempo(0, 120)
    for i, v in enumerate(velocities):
        events += note(1, i * 240, i * 240 + 400, 60 + 4 * i, v)
    return write_events(path, events)


def part_audio(synth, perf) -> np.ndarray:
    """One model over one part's notes, as the renderer runs it, at the model's own level."""
    fc = synth.config.features
    x = torch.from_numpy(compute_features(perf, fc, quantized=True))
    notes = compute_notes(perf, fc, len(x) * fc.hop_samples) if synth.model.needs_notes else None
    return np.concatenate(list(synth.blocks(x, notes)))


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------------------------------------
# Programs in the MIDI
# ---------------------------------------------------------------------------------------------


def test_notes_keep_their_program_and_each_part_its_own_pedals(tmp_path):
    perf = read_midi(multi_program_midi(tmp_path / "multi.mid"))
    assert perf.programs == [0, 6, 40]
    assert [(n.pitch, n.program) for n in perf.notes] == [(60, 0), (67, 6), (76, 40), (64, 0), (72, 6)]
    parts = split_by_program(perf)
    assert list(parts) == [0, 6, 40]
    assert [n.pitch for n in parts[6].notes] == [67, 72]
    assert all(p.end_s == perf.end_s for p in parts.values())  # every part as long as the file
    # the sustain pedal was pressed on the piano's channel: the piano's part has it, the others not
    assert list(parts[0].pedals["sustain"].values) == [1.0, 0.0]
    assert len(parts[6].pedals["sustain"].times_s) == 0 and len(parts[40].pedals["sustain"].times_s) == 0
    assert list(perf.pedals["sustain"].values) == [1.0, 0.0]  # the merged curves are as before
    # a single-program performance is its own only part
    single = read_midi(piano_midi(tmp_path / "p.mid"))
    assert single.programs == [0] and split_by_program(single)[0] is single


# ---------------------------------------------------------------------------------------------
# Routing
# ---------------------------------------------------------------------------------------------


def test_each_program_goes_to_its_model_and_the_parts_are_mixed(models, tmp_path):
    midi = multi_program_midi(tmp_path / "multi.mid")
    synth = pianosynth.load(threads=1)
    result = synth.render_result(midi, gain_db=-20)  # the untrained parts sum beyond full scale
    piano, harpsichord = pianosynth.load(models / "fluidr3.pt", threads=1), pianosynth.load(models / "harpsichord.pt", threads=1)
    parts = split_by_program(read_midi(midi))
    # the piano plays its own program and the violin (no violin model): one part, notes together
    piano_part = parts[0]
    piano_part.notes = sorted(parts[0].notes + parts[40].notes, key=lambda n: (n.start_s, n.pitch))
    expected = (part_audio(piano, piano_part) + part_audio(harpsichord, parts[6])) * np.float32(0.1)
    assert result.audio.shape == (1, len(expected)) and result.sample_rate == 16000
    assert result.peak > 0.1 and np.abs(expected).max() < 1  # the mix is heard, and unclipped
    np.testing.assert_allclose(result.audio[0], expected, rtol=0, atol=1e-6)
    assert result.warnings == [f"{midi}: no shipped model plays program(s) 40 (Violin); rendered them as piano"]
    # and it is not what the piano alone makes of the whole file
    alone = piano.render_result(midi, gain_db=-20)
    assert alone.warnings == [] and np.abs(alone.audio - result.audio).max() > 1e-4


def test_a_single_program_file_takes_the_single_model_path_bit_identical(models, tmp_path):
    midi = piano_midi(tmp_path / "piano.mid")
    routed = pianosynth.load(threads=1)
    named = pianosynth.load(models / "fluidr3.pt", threads=1)
    assert routed.router is not None and named.router is None
    a, b = routed.render_result(midi), named.render_result(midi)  # with the loudness stage
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.warnings == b.warnings == [] and a.messages == []
    # the shipped models are not even looked up for it: a broken index does not matter
    (models / "index.json").write_text("not json")
    np.testing.assert_array_equal(routed.render_result(midi).audio, b.audio)
    with pytest.raises(RegistryError, match="not a readable model index"):
        pianosynth.load(threads=1).render_result(multi_program_midi(tmp_path / "m.mid"))


def test_a_harpsichord_file_is_played_by_the_harpsichord_model(models, tmp_path):
    events = tempo(0, 120) + program_change(0, 6) + note(1, 0, 480, 60, 90) + note(1, 240, 700, 67, 60)
    midi = write_events(tmp_path / "harpsichord.mid", events)
    routed = pianosynth.load(threads=1).render_result(midi)
    named = pianosynth.load(models / "harpsichord.pt", threads=1).render_result(midi)
    np.testing.assert_array_equal(routed.audio, named.audio)
    assert routed.warnings == [] and routed.messages == []


def test_parts_at_another_rate_are_resampled_into_the_mix(tmp_path, made, monkeypatch):
    folder = ship(tmp_path / "models", made, fluidr3="piano", marimba="marimba22k")
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    events = tempo(0, 120) + program_change(0, 0) + program_change(1, 12)
    events += note(1, 0, 480, 60, 100, channel=0) + note(1, 240, 600, 72, 60, channel=1)
    midi = write_events(tmp_path / "two.mid", events)
    result = pianosynth.load(threads=1).render_result(midi, gain_db=-20)
    assert result.sample_rate == 22050  # the mix keeps the widest band
    parts = split_by_program(read_midi(midi))
    piano16 = part_audio(pianosynth.load(folder / "fluidr3.pt", threads=1), parts[0])
    marimba = part_audio(pianosynth.load(folder / "marimba.pt", threads=1), parts[12])
    piano22 = Resampler(16000, 22050, len(piano16))(piano16, last=True)
    n = max(len(piano22), len(marimba))
    expected = (np.pad(piano22, (0, n - len(piano22))) + np.pad(marimba, (0, n - len(marimba)))) * np.float32(0.1)
    assert result.audio.shape == (1, n) and np.abs(expected).max() < 1
    np.testing.assert_allclose(result.audio[0], expected, rtol=0, atol=1e-6)


def test_unmatched_programs_are_a_warning_line_from_the_cli(models, tmp_path, capsys):
    midi = multi_program_midi(tmp_path / "multi.mid")
    code, out, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "multi.wav"))
    assert code == 0, err
    assert f"warning: {midi}: no shipped model plays program(s) 40 (Violin); rendered them as piano" in err.splitlines()
    # a named model plays every note: no routing, no warning
    code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "named.wav"), "--model", "default")
    assert code == 0 and "warning" not in err, err


# ---------------------------------------------------------------------------------------------
# The score-mode model for a file without dynamics (issue 13)
# ---------------------------------------------------------------------------------------------


def test_a_file_without_velocity_variation_gets_the_score_model(models, tmp_path, capsys):
    # the score model plays by itself where its figures beat the default at velocity 64 (issue 19;
    # tests/test_grand_voices.py tests the rule)
    index = registry.read_index(models)
    index["score"]["figures"] = {"mrstft": 1.0, "loudness_r": 0.9, registry.VELOCITY64: {"mrstft": 1.1, "loudness_r": 0.8}}
    registry.write_index(index, models)
    flat = piano_midi(tmp_path / "flat.mid", velocities=(80, 80, 80))
    routed = pianosynth.load(threads=1).render_result(flat)
    score = pianosynth.load(models / "score.pt", threads=1).render_result(flat)
    np.testing.assert_array_equal(routed.audio, score.audio)
    assert routed.messages == [
        f"{flat}: every note has velocity 80; rendered with the score-mode model 'score' "
        "(name a model with --model or --instrument to choose another)"
    ]
    # varied velocities: the performance model
    varied = piano_midi(tmp_path / "varied.mid", velocities=(80, 81, 80))
    a = pianosynth.load(threads=1).render_result(varied)
    np.testing.assert_array_equal(a.audio, pianosynth.load(models / "fluidr3.pt", threads=1).render_result(varied).audio)
    assert a.messages == []
    # the CLI says so; a named model or instrument overrides the choice
    code, _, err = run_cli(capsys, "synthesize", str(flat), "-o", str(tmp_path / "a.wav"))
    assert code == 0 and "rendered with the score-mode model 'score'" in err, err
    for option in (["--model", "default"], ["--instrument", "piano"]):
        code, _, err = run_cli(capsys, "synthesize", str(flat), "-o", str(tmp_path / "b.wav"), "--force", *option)
        assert code == 0 and "score-mode" not in err, err


def test_without_a_shipped_score_model_a_flat_file_stays_with_the_piano(tmp_path, made, monkeypatch):
    folder = ship(tmp_path / "models", made, fluidr3="piano")
    monkeypatch.setenv(MODELS_DIR_ENV, str(folder))
    flat = piano_midi(tmp_path / "flat.mid", velocities=(64, 64))
    routed = pianosynth.load(threads=1).render_result(flat)
    np.testing.assert_array_equal(routed.audio, pianosynth.load(folder / "fluidr3.pt", threads=1).render_result(flat).audio)
    assert routed.messages == [] and routed.warnings == []


# ---------------------------------------------------------------------------------------------
# --instrument
# ---------------------------------------------------------------------------------------------


def test_instrument_picks_a_shipped_model(models, tmp_path, capsys):
    midi = piano_midi(tmp_path / "piano.mid")
    assert pianosynth.load(instrument="harpsichord").source == models / "harpsichord.pt"
    assert pianosynth.load(instrument="Harpsichord").source == models / "harpsichord.pt"  # its GM name
    assert pianosynth.load(instrument="piano").source == models / "fluidr3.pt"
    assert pianosynth.load(instrument="acoustic grand piano").source == models / "fluidr3.pt"  # performance first
    assert pianosynth.load(instrument="score").source == models / "score.pt"
    with pytest.raises(RegistryError, match="unknown instrument 'violin'"):
        pianosynth.load(instrument="violin")
    with pytest.raises(SynthesisError, match="not both"):
        pianosynth.load("default", instrument="piano")
    code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "h.wav"), "--instrument", "harpsichord")
    assert code == 0, err
    code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "m.wav"), "--model", str(models / "harpsichord.pt"))
    assert code == 0, err
    assert (tmp_path / "h.wav").read_bytes() == (tmp_path / "m.wav").read_bytes()
    code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "v.wav"), "--instrument", "violin")
    assert code == 1 and len(err.strip().splitlines()) == 1 and not (tmp_path / "v.wav").exists()
    assert err.strip() == (
        "error: unknown instrument 'violin'; shipped: fluidr3 (Acoustic Grand Piano), harpsichord (Harpsichord), "
        "score (Acoustic Grand Piano, score mode)"
    )
    code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "x.wav"), "--instrument", "piano", "--model", "default")
    assert code == 1 and err.strip() == "error: give --model or --instrument, not both"


# ---------------------------------------------------------------------------------------------
# The index, its figures, `pianosynth models` and `export --name`
# ---------------------------------------------------------------------------------------------


def metrics_json(path: Path, systems: dict[str, dict], weights: dict[str, str] | None = None) -> Path:
    """A metrics.json in the form ``pianosynth evaluate`` writes (evaluate.evaluate), with the
    given means for each model system."""
    weights = weights or {}
    stat = lambda v: {"mean": v, "std": 0.0 if v is not None else None, "n": 2 if v is not None else 0}  # noqa: E731
    result = {
        "cache": "tiny-cache", "split": "test",
        "clips": [{"name": f"clip{i}", "file": "a.mid", "start_s": 0.0, "seconds": 5.0, "notes": 3} for i in range(2)],
        "systems": [{"name": "reference (FluidR3 grand)", "kind": "reference", "sr": 16000}]
        + [{"name": n, "kind": "model", "sr": 16000, **({"weights": weights[n]} if n in weights else {})} for n in systems],
        "summary": {"reference (FluidR3 grand)": {k: stat(0.0) for k in ("mrstft", "loudness_r", "note_f1")},
                    **{n: {k: stat(v) for k, v in figs.items()} for n, figs in systems.items()}},
    }  # fmt: skip
    path.write_text(json.dumps(result))
    return path


def test_evaluate_records_the_weights_that_export_checks(made):
    from pianosynth.evaluate import model_system
    from pianosynth.checkpoint import load_checkpoint

    system = model_system(made / "harpsichord.pt", pieces=None, name="h")
    assert system.weights == registry.weights_hash(load_checkpoint(made / "harpsichord.pt"))
    assert system.weights != registry.weights_hash(load_checkpoint(made / "piano.pt"))


def test_export_name_ships_a_model_with_its_figures_and_models_lists_it(models, made, tmp_path, capsys):
    from pianosynth.checkpoint import load_checkpoint

    code, out, err = run_cli(capsys, "models")
    assert code == 0 and err == "", err
    lines = out.split("\n\n")[0].splitlines()  # the table; the licences follow it
    assert lines[0].split() == ["name", "instrument", "program", "rate", "preset", "size", "MR-STFT", "loudness", "r", "note", "F1", "evaluated", "on"]
    assert [line.split()[0] for line in lines[1:]] == ["fluidr3", "harpsichord", "score"]
    assert lines[2].split() == ["harpsichord", "Harpsichord", "6", "16000", "Hz", "performance", "0.1", "MB", "-", "-", "-", "-"]
    weights = registry.weights_hash(load_checkpoint(made / "harpsichord.pt"))
    metrics = metrics_json(tmp_path / "metrics.json", {"h (frames, mrstft)": {"mrstft": 1.234, "loudness_r": 0.9, "note_f1": None},
                                                       "other (frames, mrstft)": {"mrstft": 2.0, "loudness_r": 0.5, "note_f1": 0.1}},
                           weights={"h (frames, mrstft)": weights})  # fmt: skip
    # several model systems: one must be named
    code, _, err = run_cli(capsys, "export", str(made / "harpsichord.pt"), "--name", "harpsichord", "--results", str(metrics), "--force")
    assert code == 1 and "2 model systems" in err and "--system" in err
    # figures measured on other weights are refused
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "--name", "harpsichord", "--results", str(metrics), "--system", "h (frames, mrstft)", "--force")
    assert code == 1 and "other weights" in err, err
    code, out, err = run_cli(capsys, "export", str(made / "harpsichord.pt"), "--name", "harpsichord", "--results", str(metrics), "--system", "h (frames, mrstft)", "--force")
    assert code == 0, err
    assert out.strip() == str(models / "harpsichord.pt")
    entry = registry.read_index(models)["harpsichord"]
    assert entry["figures"]["mrstft"] == 1.234 and entry["figures"]["note_f1"] is None
    assert entry["figures"]["source"]["weights_checked"] is True and entry["figures"]["source"]["clips"] == 2
    code, out, _ = run_cli(capsys, "models")
    row = out.splitlines()[2].split()
    assert row[:2] == ["harpsichord", "Harpsichord"] and row[8:] == ["1.234", "0.900", "-", "2", "x", "5", "s,", "test", "of", "tiny-cache"]
    listed = json.loads(run_cli(capsys, "models", "--json")[1])
    assert [m["name"] for m in listed] == ["fluidr3", "harpsichord", "score"] and listed[1]["figures"]["loudness_r"] == 0.9
    # the shipped file itself, exported again: indexed in place, not rewritten, figures kept
    before = (models / "harpsichord.pt").read_bytes()
    code, _, err = run_cli(capsys, "export", str(models / "harpsichord.pt"), "--name", "harpsichord")
    assert code == 0, err
    assert (models / "harpsichord.pt").read_bytes() == before
    assert registry.read_index(models)["harpsichord"]["figures"]["mrstft"] == 1.234
    # other weights under the name: the old figures go
    code, _, err = run_cli(capsys, "export", str(made / "score.pt"), "--name", "harpsichord", "--force")
    assert code == 0, err
    assert "figures" not in registry.read_index(models)["harpsichord"]
    # no overwrite without --force, and names are checked
    assert run_cli(capsys, "export", str(made / "piano.pt"), "--name", "harpsichord")[0] == 1
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "--name", "Bad Name")
    assert code == 1 and "model name 'Bad Name'" in err
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"))
    assert code == 1 and "give -o FILE for a slim copy, or --name NAME" in err
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "-o", str(tmp_path / "x.pt"), "--results", str(metrics))
    assert code == 1 and "--results, --system, --data and --default go with --name" in err and not (tmp_path / "x.pt").exists()


def test_models_warns_where_the_index_and_the_files_disagree(models, made, capsys):
    tiny_checkpoint(models / "stray.pt", 5, "render.program=24")  # dropped in without export
    (models / "score.pt").unlink()
    code, out, err = run_cli(capsys, "models")
    assert code == 0
    assert [line.split()[0] for line in out.split("\n\n")[0].splitlines()[1:]] == ["fluidr3", "harpsichord", "stray"]
    assert "Acoustic Guitar (nylon)" in out  # read from the checkpoint itself, no figures
    assert "warning: score: listed in index.json" in err
    assert "warning: stray: stray.pt is not in index.json" in err
    index = registry.read_index(models)
    index["harpsichord"]["sha1"] = "0" * 40
    registry.write_index(index, models)
    assert "harpsichord: harpsichord.pt is not the file index.json describes" in run_cli(capsys, "models")[2]


def test_a_model_over_the_size_limit_is_not_shipped(made, tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "MAX_SHIPPED_BYTES", 1000)
    with pytest.raises(RegistryError, match="over the 0.001 MB limit"):
        registry.add_model(made / "piano.pt", "big", folder=tmp_path)
    assert list(tmp_path.iterdir()) == []  # no file, no index, no temporary left


def test_the_shipped_index_describes_the_shipped_files(monkeypatch):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert registry.check() == []
    shipped = registry.shipped()
    assert list(shipped)[0] == registry.default_name() == "grand" and all(m.indexed for m in shipped.values())
    assert all(m.bytes <= registry.MAX_SHIPPED_BYTES for m in shipped.values())
    # the default since issue 19: the learned Salamander grand, played by sfizz, at 48 kHz stereo
    grand = shipped["grand"]
    assert grand.default and grand.program == 0 and grand.preset == "performance" and grand.decoder == "grand"
    assert (grand.soundfont, grand.sample_rate) == ("grand.sfz", 48000)
    assert pianosynth.load("default").config.features.channels == 2
    # fluidr3 and the harpsichord still ship by name
    fluidr3 = shipped["fluidr3"]
    assert not fluidr3.default and fluidr3.program == 0 and fluidr3.preset == "performance"
    assert (fluidr3.soundfont, fluidr3.sample_rate) == ("FluidR3_GM.sf2", 16000)  # the founding report's setting
    assert (shipped["harpsichord"].program, shipped["harpsichord"].sample_rate) == (6, 16000)
    assert not (registry.models_dir() / "default.pt").exists()  # the default is the index's, not a file's name


def test_models_names_each_shipped_models_training_data_terms_and_its_reference(monkeypatch, capsys):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name, m in registry.shipped().items():
        assert "CC BY-NC-SA 4.0" in m.data and "ASAP" in m.data  # every shipped model learned from ASAP
        assert f"  {name}: trained on {m.data}" in out
        assert f"reference: {m.reference_credit}" in out and "not recorded here" not in m.reference_credit  # its maker and licence
    assert "reference: FluidR3 GM SoundFont by Frank Wen and contributors (MIT licence)" in out
    assert cli.main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(r["data"] and r["reference_credit"] for r in rows)
    assert registry.reference_credit("/x/SalamanderGrandPianoV3.sfz") == "Salamander Grand Piano by Alexander Holm (CC BY 3.0)"
    assert registry.reference_credit("mine.sf2") == "mine.sf2 (maker and licence not recorded here)"
    assert registry.reference_credit("/home/u/.cache/pianosynth/grand/grand.sfz").startswith("Salamander Grand Piano by Alexander Holm")


# ---------------------------------------------------------------------------------------------
# The default model: named by the index, not by a file's name (issue 19)
# ---------------------------------------------------------------------------------------------


def test_the_index_names_the_default_and_default_resolves_to_it(models, tmp_path, capsys):
    raw = json.loads((models / "index.json").read_text())
    assert raw["format"] == registry.INDEX_FORMAT == 2 and raw["default"] == "fluidr3"
    assert list(raw["models"]) == ["fluidr3", "harpsichord", "score"] and not (models / "default.pt").exists()
    assert registry.default_name(models) == registry.resolve_name("default") == "fluidr3"
    assert registry.resolve_name("harpsichord") == "harpsichord"
    fluidr3 = models / "fluidr3.pt"
    assert pianosynth.load().source == pianosynth.load("default").source == pianosynth.load("fluidr3").source == fluidr3
    assert pianosynth.load(instrument="piano").source == pianosynth.load(instrument="default").source == fluidr3
    assert list(pianosynth.shipped_models()) == ["fluidr3", "harpsichord", "score"]  # names, not the alias
    code, out, err = run_cli(capsys, "models")
    assert code == 0 and err == "", err
    rows = out.split("\n\n")[0].splitlines()[1:]
    assert rows[0].startswith("fluidr3 (default)  Acoustic Grand Piano") and "(default)" not in "".join(rows[1:])
    listed = json.loads(run_cli(capsys, "models", "--json")[1])
    assert [(m["name"], m["default"]) for m in listed] == [("fluidr3", True), ("harpsichord", False), ("score", False)]
    # "default" names no model of its own: it cannot be shipped under that name
    with pytest.raises(RegistryError, match="means the index's default model"):
        registry.add_model(models / "harpsichord.pt", "default", folder=models)


def test_switching_the_default_switches_what_synthesize_and_load_use(models, made, tmp_path, capsys):
    midi = piano_midi(tmp_path / "piano.mid")
    code, _, err = run_cli(capsys, "export", str(made / "grand.pt"), "--name", "grand", "--default")
    assert code == 0 and "grand (default): Acoustic Grand Piano" in err, err
    assert registry.default_name() == "grand" and json.loads((models / "index.json").read_text())["default"] == "grand"
    grand = models / "grand.pt"
    assert pianosynth.load().source == pianosynth.load("default").source == pianosynth.load(instrument="piano").source == grand
    assert pianosynth.load("fluidr3").source == models / "fluidr3.pt"  # still there by its name
    assert pianosynth.load(instrument="acoustic grand piano").source == grand  # the default before others of its program
    for name, option in (("auto", []), ("alias", ["--model", "default"]), ("named", ["--model", "grand"])):
        code, _, err = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / f"{name}.wav"), *option)
        assert code == 0, err
    assert (tmp_path / "auto.wav").read_bytes() == (tmp_path / "alias.wav").read_bytes() == (tmp_path / "named.wav").read_bytes()
    code, _, _ = run_cli(capsys, "synthesize", str(midi), "-o", str(tmp_path / "fluidr3.wav"), "--model", "fluidr3")
    assert code == 0 and (tmp_path / "fluidr3.wav").read_bytes() != (tmp_path / "auto.wav").read_bytes()
    # a program without a model of its own goes to the default
    violin = write_events(tmp_path / "violin.mid", tempo(0, 120) + program_change(0, 40) + note(1, 0, 480, 76, 80))
    routed = pianosynth.load(threads=1).render_result(violin)
    np.testing.assert_array_equal(routed.audio, pianosynth.load(grand, threads=1).render_result(violin).audio)
    assert run_cli(capsys, "models")[1].split("\n\n")[0].splitlines()[1].startswith("grand (default)")
    # back again: one line of index.json
    text = (models / "index.json").read_text()
    assert text.count('"default": "grand"') == 1
    (models / "index.json").write_text(text.replace('"default": "grand"', '"default": "fluidr3"'))
    assert pianosynth.load().source == pianosynth.load("default").source == models / "fluidr3.pt"
    assert registry.check(models) == []
    # set_default: indexed performance models only
    assert registry.set_default("grand", models).default and registry.default_name(models) == "grand"
    with pytest.raises(RegistryError, match="score-mode model"):
        registry.set_default("score", models)
    with pytest.raises(RegistryError, match="no model 'violin'"):
        registry.set_default("violin", models)
    assert registry.default_name(models) == "grand"
    # export --default of a shipped file: indexed where it is, not rewritten, and the default
    before = (models / "fluidr3.pt").read_bytes()
    code, _, err = run_cli(capsys, "export", str(models / "fluidr3.pt"), "--name", "fluidr3", "--default")
    assert code == 0 and "fluidr3 (default)" in err and registry.default_name(models) == "fluidr3", err
    assert (models / "fluidr3.pt").read_bytes() == before
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "-o", str(tmp_path / "x.pt"), "--default")
    assert code == 1 and "--default go with --name" in err
    # an index naming a default it lacks: synthesize says so, models warns
    (models / "index.json").write_text(text.replace('"default": "grand"', '"default": "nothere"'))
    with pytest.raises(SynthesisError, match="names 'nothere' as the default"):
        pianosynth.load()
    assert "names 'nothere' as the default model" in run_cli(capsys, "models")[2]


def test_a_format1_index_without_the_key_still_names_its_default_model(models, made, tmp_path):
    """An index of format 1 had no "default" key: the model named "default" was the default."""
    index = registry.read_index(models)
    (models / "fluidr3.pt").rename(models / "default.pt")
    old = {"default": {**index.pop("fluidr3"), "file": "default.pt"}, **index}
    (models / "index.json").write_text(json.dumps({"format": 1, "models": old}, indent=1) + "\n")
    assert registry.default_name(models) == registry.resolve_name("default") == "default"
    assert pianosynth.load().source == pianosynth.load("default").source == pianosynth.load(instrument="piano").source == models / "default.pt"
    shipped = registry.shipped(models)
    assert list(shipped) == ["default", "harpsichord", "score"] and shipped["default"].default and registry.check(models) == []
    router = pianosynth.load(threads=1).router  # routing finds the same default through the old index
    assert router is not None and router.models()["default"].default
    # adding a model writes format 2 and keeps that default
    registry.add_model(made / "marimba22k.pt", "marimba", folder=models)
    raw = json.loads((models / "index.json").read_text())
    assert raw["format"] == 2 and raw["default"] == "default" and list(raw["models"])[0] == "default"
    # a folder without an index: default.pt is the default, as before
    bare = tmp_path / "bare"
    bare.mkdir()
    (models / "default.pt").rename(bare / "default.pt")
    assert registry.default_name(bare) == "default" and registry.shipped(bare)["default"].default
    # and an index of an unknown format is refused
    (models / "index.json").write_text(json.dumps({"format": 3, "models": {}}))
    with pytest.raises(RegistryError, match="not a model index of format 1 or 2"):
        registry.read_index(models)


def test_the_score_models_baseline_is_the_default_of_its_own_reference(models, made, tmp_path):
    """Once another reference's model (the grand) is the default, the FluidR3 score model is still
    measured against fluidr3, the performance model of its program and its soundfont."""
    from pianosynth.checkpoint import load_checkpoint

    registry.add_model(made / "grand.pt", "grand", folder=models, default=True)
    index = registry.read_index(models)
    assert index["grand"]["soundfont"] == "grand.sfz" and index["score"]["soundfont"] == index["fluidr3"]["soundfont"] == "FluidR3_GM.sf2"
    assert registry.velocity64_baseline_model(index["score"], index, "grand") == "fluidr3"
    assert registry.velocity64_baseline_model({**index["score"], "soundfont": "grand.sfz"}, index, "grand") == "grand"
    assert registry.velocity64_baseline_model({**index["score"], "soundfont": "other.sf2"}, index, "grand") is None
    index["score"]["figures"] = {"mrstft": 1.5, "loudness_r": 0.78, "note_f1": 0.7}
    registry.write_index(index, models)
    assert registry.default_name(models) == "grand"  # write_index keeps the default
    fluidr3_weights = registry.weights_hash(load_checkpoint(models / "fluidr3.pt"))
    grand_weights = registry.weights_hash(load_checkpoint(models / "grand.pt"))
    flat = {"flat (voices), every velocity 64": {"mrstft": 1.46, "loudness_r": 0.76, "note_f1": 0.7}}
    # the grand's figures are not the score model's baseline: the weights say whose they are
    with pytest.raises(RegistryError, match="other weights"):
        registry.record_velocity64_baseline("score", metrics_json(tmp_path / "g.json", flat, {next(iter(flat)): grand_weights}), folder=models)
    info = registry.record_velocity64_baseline("score", metrics_json(tmp_path / "f.json", flat, {next(iter(flat)): fluidr3_weights}), folder=models)
    assert info.figures[registry.VELOCITY64]["source"]["model"] == "fluidr3"
    assert registry.velocity64_baseline_name(info) == "fluidr3"
    assert registry.score_model_verdict(info) == (False, "test MR-STFT 1.500 against 1.460, loudness r 0.780 against 0.760")
    # a one-velocity file: the score model does not beat fluidr3, so the default (the grand) plays it, and says so
    midi = piano_midi(tmp_path / "flat.mid", velocities=(64, 64, 64))
    routed = pianosynth.load(threads=1).render_result(midi)
    assert routed.messages == [
        f"{midi}: every note has velocity 64; rendered with 'grand', not the score-mode model 'score', which does not beat "
        "'fluidr3' at velocity 64 (test MR-STFT 1.500 against 1.460, loudness r 0.780 against 0.760)"
    ]
    np.testing.assert_array_equal(routed.audio, pianosynth.load(models / "grand.pt", threads=1).render_result(midi).audio)


def test_export_data_records_the_training_data_and_other_weights_drop_the_old(models, made, capsys):
    """--data says what a model learned from; new weights under the same name keep no old claim."""
    code, _, err = run_cli(capsys, "export", str(made / "grand.pt"), "--name", "grand", "--data", "my recordings, CC BY 4.0")
    assert code == 0, err
    assert registry.read_index(models)["grand"]["data"] == "my recordings, CC BY 4.0"
    code, out, _ = run_cli(capsys, "models")
    assert "grand: trained on my recordings, CC BY 4.0" in out
    # the same weights again keep it; other weights without --data drop it
    assert run_cli(capsys, "export", str(models / "grand.pt"), "--name", "grand")[0] == 0
    assert registry.read_index(models)["grand"]["data"] == "my recordings, CC BY 4.0"
    assert run_cli(capsys, "export", str(made / "piano.pt"), "--name", "grand", "--force")[0] == 0
    assert "data" not in registry.read_index(models)["grand"]
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "--name", "grand", "--force", "--data", "  ")
    assert code == 1 and "--data" in err
    code, _, err = run_cli(capsys, "export", str(made / "piano.pt"), "-o", "x.pt", "--data", "x")
    assert code == 1 and "go with --name" in err
