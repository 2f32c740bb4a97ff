"""The command line: one-line errors, exit codes, and the demo job end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import needs_fluidsynth


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_the_subcommands():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("prepare", "info", "train", "synthesize", "demo", "export"):
        assert command in proc.stdout


def test_user_errors_are_one_line_without_traceback(tmp_path):
    cases = [
        ("info", str(tmp_path)),
        ("prepare", str(tmp_path / "missing")),
        ("prepare", str(tmp_path)),  # a folder with no MIDI in it
        ("prepare", str(tmp_path), "--set", "model.hiden=1"),
    ]
    for args in cases:
        proc = run(*args)
        assert proc.returncode == 1, args
        assert "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: "), proc.stderr


@needs_fluidsynth
def test_prepare_then_info_through_the_cli(tmp_path):
    from pianosynth.examples import write_demo_midi

    write_demo_midi(tmp_path / "midi", count=2, bars=2)
    proc = run("prepare", str(tmp_path / "midi"), "--out", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    assert "total       2" in proc.stdout
    cache = proc.stdout.strip().splitlines()[0]
    info = run("info", cache, "--json")
    assert info.returncode == 0
    summary = json.loads(info.stdout)
    assert summary["files"] == 2 and summary["skipped"] == 0
    assert sum(s["hours"] for s in summary["splits"].values()) * 3600 > 10  # over 10 s of audio


def test_the_shipped_default_model_runs_the_demo(tmp_path):
    """`make demo`'s job: a generated piece through the model shipped in the package."""
    import soundfile as sf

    from pianosynth.synthesize import default_model_path
    from pianosynth.checkpoint import model_from_checkpoint

    _, cfg = model_from_checkpoint(default_model_path())
    proc = run("demo", "--out", str(tmp_path), "--bars", "2")
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(tmp_path / "demo.wav")
    assert sr == cfg.features.sample_rate and len(audio) > sr  # over a second of audio
    assert np.abs(audio).max() > 1e-3  # not silence
    assert (tmp_path / "demo.png").stat().st_size > 1000


def test_train_help_names_every_shipped_recipe(capsys):
    # the help text is built from the configs folder, so a new recipe cannot go missing from it
    from pianosynth.cli import main
    from pianosynth.recipes import shipped_recipes

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "grand" in shipped_recipes()
    assert f"({', '.join(shipped_recipes())})" in text
