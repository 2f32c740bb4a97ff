"""The command line's surface: flags after the subcommand, defaults shown once, numbers checked."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pianosynth.cli import build_parser, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pianosynth", *args], capture_output=True, text=True, timeout=120)


def test_verbose_is_accepted_before_and_after_the_subcommand():
    parser = build_parser()
    assert parser.parse_args(["-v", "info", "x"]).verbose is True
    assert parser.parse_args(["info", "x", "-v"]).verbose is True
    assert parser.parse_args(["info", "x"]).verbose is False
    # and it works: a user error shows its traceback with -v after the subcommand
    proc = run("info", "/nonexistent-cache", "-v")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def _subcommands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


@pytest.mark.parametrize("name", sorted(_subcommands()))
def test_help_shows_each_default_once_and_never_none(name):
    text = " ".join(_subcommands()[name].format_help().split())  # unwrap the lines
    assert "(default: None)" not in text
    for option in re.split(r"\s(?=--?[a-z])", text):
        assert option.count("(default:") <= 1, option
    # and every option with a value by default shows it, 0 included
    for action in _subcommands()[name]._actions:
        if not action.option_strings or action.nargs == 0 or action.default in (None, []) or "default" in (action.help or ""):
            continue
        assert f"(default: {action.default})" in text, (action.option_strings, action.default)


@pytest.mark.parametrize(
    "args",
    [
        ["synthesize", "a.mid", "--threads", "0"],
        ["synthesize", "a.mid", "--chunk-seconds", "0"],
        ["synthesize", "a.mid", "--chunk-seconds", "inf"],
        ["synthesize", "a.mid", "--context-seconds", "-1"],
        ["synthesize", "a.mid", "--sample-rate", "1000"],
        ["synthesize", "a.mid", "--loudness", "nan"],
        ["synthesize", "a.mid", "--loudness", "5"],
        ["synthesize", "a.mid", "--gain", "inf"],
        ["synthesize", "a.mid", "--normalize", "0"],
        ["synthesize", "a.mid", "--normalize", "-0.5"],
        ["synthesize", "a.mid", "--loudness", "-20", "--gain", "3"],
        ["train", "--cache", "c", "--threads", "0"],
        ["prepare", "x", "--jobs", "0"],
        ["prepare", "x", "--max-hours", "nan"],
        ["prepare", "x", "--program", "128"],
        ["evaluate", "--cache", "c", "--clips", "0"],
        ["evaluate", "--cache", "c", "--threads", "-2"],
        ["demo", "--bars", "0"],
        ["serve", "--port", "70000"],
    ],
)
def test_bad_numbers_are_refused_in_one_line(args, capsys):
    with pytest.raises(SystemExit) as stop:
        main(args)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"pianosynth {args[0]}: error: argument ")


def test_synthesize_refuses_contradictory_outputs(tmp_path, capsys):
    (tmp_path / "a.mid").write_bytes(b"")
    for args, message in [
        (["synthesize", str(tmp_path), "-o", "x.wav"], "-o names one output file"),
        (["synthesize", str(tmp_path / "a.mid"), "-o", "x.wav", "--out-dir", "o"], "not both"),
        (["synthesize", "-"], "stdin needs -o"),
        (["synthesize", "-", str(tmp_path / "a.mid"), "--out-dir", "o"], "must be the only input"),
        (["synthesize", str(tmp_path / "a.mid"), "-o", "-", "--plot"], "--plot needs an output file"),
        (["synthesize", str(tmp_path / "missing.mid")], "no such file or folder"),
    ]:
        assert main(args) == 1, args
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ") and message in err, (args, err)
