"""End to end through the CLI: two tiny MIDI files -> prepare -> train -> synthesize."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import needs_fluidsynth, note, tempo, write_events

from pianosynth.examples import write_demo_midi
from pianosynth.features import compute_features
from pianosynth.midi import read_midi
from pianosynth.synthesize import SynthesisError, synthesize_file
from pianosynth.checkpoint import model_from_checkpoint, save_checkpoint

pytestmark = needs_fluidsynth


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("e2e")
    midi = root / "midi"
    write_demo_midi(midi, count=2, bars=3)
    prep = cli("prepare", str(midi), "--out", str(root / "cache"), "--set", "features.hop_samples=128")
    assert prep.returncode == 0, prep.stderr
    cache = Path(prep.stdout.strip().splitlines()[0])
    sets = ["model.hidden=16", "model.layers=1", "train.batch_size=2", "train.example_seconds=1.0",
            "train.steps=3", "train.valid_every=3", "train.valid_examples=2"]  # fmt: skip
    # the report's recipe, named: without --config, train follows whatever model is shipped
    tr = cli("train", "--cache", str(cache), "--runs", str(root / "runs"), "--config", "report", *[a for s in sets for a in ("--set", s)])
    assert tr.returncode == 0, tr.stderr
    run_dir = Path(tr.stdout.strip().splitlines()[-1])
    return run_dir / "last.pt", midi / "demo_00.mid"


def test_synthesize_cli_writes_audio_of_the_feature_length_and_a_plot(trained, tmp_path):
    ckpt, midi = trained
    out = tmp_path / "song.wav"
    proc = cli("synthesize", str(midi), "-o", str(out), "--model", str(ckpt), "--plot")
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(out)
    _, cfg = model_from_checkpoint(ckpt)
    frames = len(compute_features(read_midi(midi), cfg.features))
    assert sr == 16000 and len(audio) == frames * 128
    assert out.with_suffix(".png").stat().st_size > 1000
    # never overwrite without --force
    again = cli("synthesize", str(midi), "-o", str(out), "--model", str(ckpt))
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    forced = cli("synthesize", str(midi), "-o", str(out), "--model", str(ckpt), "--force", "--normalize", "0.5")
    assert forced.returncode == 0, forced.stderr
    loud, _ = sf.read(out)
    assert abs(np.abs(loud).max() - 0.5) < 1e-3


def test_file_synthesis_equals_the_model_on_the_whole_sequence(trained, tmp_path):
    ckpt, midi = trained
    model, cfg = model_from_checkpoint(ckpt)
    x = torch.from_numpy(compute_features(read_midi(midi), cfg.features))
    with torch.no_grad():
        whole = model(x[None])[0].numpy()
    res = synthesize_file(midi, tmp_path / "a.flac", model_path=ckpt, chunk_seconds=1.0, context_seconds=1.0, loudness=None)
    audio, _ = sf.read(res.path, dtype="float32")
    assert len(audio) == len(whole)
    # 16-bit output: compare within a few quantisation steps plus the chunking tolerance
    assert np.abs(audio - whole).max() < 1e-3 * max(np.abs(whole).max(), 1e-3) + 3 / 32767


def test_clipping_warns(trained, tmp_path):
    ckpt, _ = trained
    state = torch.load(ckpt, weights_only=False)
    state["model"]["decoder.proj.bias"] += 5.0  # a model whose output is far beyond full scale
    loud = tmp_path / "loud.pt"
    save_checkpoint(loud, state)  # a new checksum for the changed weights
    path = write_events(tmp_path / "n.mid", tempo(0, 120) + note(1, 0, 480, 60))
    res = synthesize_file(path, tmp_path / "loud.wav", model_path=loud, loudness=None)
    assert res.clipped_samples > 0 and any("clipped" in w for w in res.warnings)


def test_bad_inputs_are_one_line_errors(trained, tmp_path):
    ckpt, midi = trained
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    cases = [
        (str(empty), str(tmp_path / "x.wav"), str(ckpt), "empty file"),
        (str(midi), str(tmp_path / "x.mp3"), str(ckpt), "must end in .wav, .flac, .ogg"),
        (str(midi), str(tmp_path / "x.wav"), str(tmp_path / "none.pt"), "no such checkpoint"),
        (str(midi), str(tmp_path / "x.wav"), str(midi), "not a readable checkpoint"),
        (str(midi), str(tmp_path / "x.wav"), "grnd", "error: unknown model 'grnd'; shipped: "),  # a misspelt name
    ]
    for src, dst, model, message in cases:
        proc = cli("synthesize", src, "-o", dst, "--model", model)
        assert proc.returncode == 1, proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert not Path(dst).exists()
    with pytest.raises(SynthesisError, match="exists"):
        (tmp_path / "y.wav").write_bytes(b"keep me")
        synthesize_file(midi, tmp_path / "y.wav", model_path=ckpt)
    assert (tmp_path / "y.wav").read_bytes() == b"keep me"


def test_export_drops_the_optimizer_and_still_synthesizes(trained, tmp_path):
    ckpt, midi = trained
    slim = tmp_path / "slim.pt"
    proc = cli("export", str(ckpt), "-o", str(slim))
    assert proc.returncode == 0, proc.stderr
    state = torch.load(slim, weights_only=False)
    assert "optimizer" not in state and "rng" not in state
    assert slim.stat().st_size < ckpt.stat().st_size
    a = synthesize_file(midi, tmp_path / "a.wav", model_path=ckpt)
    b = synthesize_file(midi, tmp_path / "b.wav", model_path=slim)
    assert np.array_equal(sf.read(a.path)[0], sf.read(b.path)[0])
    assert cli("export", str(ckpt), "-o", str(slim)).returncode == 1  # no overwrite without --force


def test_demo_with_a_given_model(trained, tmp_path):
    ckpt, _ = trained
    proc = cli("demo", "--out", str(tmp_path), "--model", str(ckpt), "--bars", "2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "demo.wav").is_file() and (tmp_path / "demo.png").is_file()
