"""The README stays true and short: every file it links exists, every `pianosynth` and `make`
command it shows is accepted as written, and it holds no issue numbers or commit ids."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from pianosynth.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MAX_LINES = 150  # a musician reads it in two minutes; everything else is in docs/


def shell_lines(text: str) -> list[list[str]]:
    """The commands of the ```sh blocks, split as the shell would, comments dropped."""
    out = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        out += [words for line in block.splitlines() if (words := shlex.split(line, comments=True))]
    return out


def test_the_readme_is_short_and_holds_no_issue_numbers_or_commit_ids():
    assert len(README.splitlines()) <= MAX_LINES
    assert not re.findall(r"(?i)\bissues? \d+|#\d+\b", README)
    assert not re.findall(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", README)  # a commit id mixes letters and digits


def test_every_file_the_readme_links_exists():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    local = [link.split("#")[0] for link in links if not re.match(r"[a-z]+://", link)]
    assert local, "the README links its docs"
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, missing


def test_every_command_the_readme_shows_is_accepted_as_written():
    commands = shell_lines(README)
    parser = build_parser()
    shown = {words[1] for words in commands if words[0] == "pianosynth"}
    assert {"synthesize", "demo", "prepare", "train", "models"} <= shown
    for words in commands:
        if words[0] == "pianosynth":
            try:
                parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"the README's command is refused: {' '.join(words)}")
        elif words[0] == "make":
            targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
            assert set(words[1:]) <= targets, words
        elif words[0] == "tensorboard":  # watches the folder train writes its runs into
            logdir = words[words.index("--logdir") + 1].rstrip("/")
            assert build_parser().parse_args(["train", "--cache", "c"]).runs == logdir


def test_the_search_for_commands_sees_a_refused_one():
    bad = "```sh\npianosynth synthesize song.mid --no-such-option   # a comment\n```\n"
    assert shell_lines(bad) == [["pianosynth", "synthesize", "song.mid", "--no-such-option"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(shell_lines(bad)[0][1:])


def test_the_one_sentence_that_names_the_default_model_names_the_index_default(monkeypatch):
    from pianosynth import registry

    monkeypatch.delenv(registry.MODELS_DIR_ENV, raising=False)
    named = re.findall(r"default model, today `(\w+)`", " ".join(README.split()))
    assert named == [registry.default_name()]  # one place to change when the default changes
