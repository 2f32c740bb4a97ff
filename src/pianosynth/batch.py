"""Many MIDI or score inputs -> one output path each, named after its input. No synthesis here.

A file given directly is written as its own name with the output suffix; a folder is searched
recursively and each file found keeps its path relative to that folder. Without an output
folder every output lands beside its input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import PianosynthError

MIDI_SUFFIXES = (".mid", ".midi")
# Scores found in folders; a plain .xml is read only when named, as a folder may hold other XML
FOLDER_SCORE_SUFFIXES = (".musicxml", ".mxl", ".mei", ".krn", ".kern")


class BatchError(PianosynthError, ValueError):
    """The inputs cannot be planned: missing, no MIDI in a folder, two inputs for one output."""


@dataclass(frozen=True)
class Job:
    source: Path  # the MIDI file
    output: Path  # where its audio goes


def find_midi(folder: Path) -> list[Path]:
    """MIDI and score files under ``folder`` (recursively, hidden files left out), in sorted order."""
    return sorted(
        p for p in folder.rglob("*")
        if p.suffix.lower() in MIDI_SUFFIXES + FOLDER_SCORE_SUFFIXES and p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def plan(inputs: list[str | Path], out_dir: str | Path | None, suffix: str) -> list[Job]:
    """One Job per MIDI file in ``inputs`` (files and folders), outputs ending in ``suffix``.

    Raises:
        BatchError: an input is missing, a folder holds no MIDI file, or two inputs would
        write the same output.
    """
    out = Path(out_dir) if out_dir is not None else None
    jobs: list[Job] = []
    seen_sources: set[Path] = set()
    owners: dict[Path, Path] = {}
    for item in map(Path, inputs):
        if item.is_dir():
            found = find_midi(item)
            if not found:
                raise BatchError(f"{item}: no MIDI (.mid, .midi) or score (.musicxml, .mxl, .mei, .krn) files in this folder")
            pairs = [(p, (out or item) / p.relative_to(item).with_suffix(suffix)) for p in found]
        elif item.is_file():
            pairs = [(item, (out / item.name if out else item).with_suffix(suffix))]
        else:
            raise BatchError(f"{item}: no such file or folder")
        for source, output in pairs:
            key = source.resolve()
            if key in seen_sources:  # named twice (a file and its folder): render it once
                continue
            seen_sources.add(key)
            target = output.resolve()
            if target in owners:
                raise BatchError(f"{owners[target]} and {source} would both be written to {output}")
            if target == key:
                raise BatchError(f"{source}: the output would overwrite the input")
            owners[target] = source
            jobs.append(Job(source, output))
    return jobs
