"""The command line: one-line errors, exit codes, and the demo job end to end."""

import json
import subprocess
import sys

from conftest import needs_fluidsynth


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_the_subcommands():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("prepare", "info", "demo"):
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
def test_demo_prepares_generated_music_and_info_reads_it(tmp_path):
    proc = run("demo", "--out", str(tmp_path / "demo"), "--pieces", "2")
    assert proc.returncode == 0, proc.stderr
    assert "total       2" in proc.stdout
    cache = next((tmp_path / "demo" / "cache").iterdir())
    info = run("info", str(cache), "--json")
    assert info.returncode == 0
    summary = json.loads(info.stdout)
    assert summary["files"] == 2 and summary["skipped"] == 0
    assert sum(s["hours"] for s in summary["splits"].values()) * 3600 > 10  # over 10 s of audio
