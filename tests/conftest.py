"""Shared helpers: tiny MIDI files written note by note inside the tests."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import mido
import pytest

from pianosynth.config import DEFAULT_SOUNDFONT

HAS_FLUIDSYNTH = shutil.which("fluidsynth") is not None and Path(DEFAULT_SOUNDFONT).is_file()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")  # Debian's, for the page tests
needs_fluidsynth = pytest.mark.skipif(not HAS_FLUIDSYNTH, reason="fluidsynth or FluidR3_GM.sf2 missing")


def write_events(
    path: Path,
    events: list[tuple[int, int, mido.Message | mido.MetaMessage]],
    ticks_per_beat: int = 480,
    midi_type: int = 1,
) -> Path:
    """Writes (track, absolute tick, message) events as a MIDI file of ``midi_type``.

    Track 0 exists even when empty (tempo map for type 1).
    """
    n_tracks = 1 if midi_type == 0 else max(t for t, _, _ in events) + 1
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=ticks_per_beat)
    for track_no in range(n_tracks):
        track = mido.MidiTrack()
        now = 0
        for _, tick, msg in sorted(
            ((t, k, m) for t, k, m in events if midi_type == 0 or t == track_no), key=lambda e: e[1]
        ):
            track.append(msg.copy(time=tick - now))
            now = tick
        mid.tracks.append(track)
    mid.save(str(path))
    return path


def note(track: int, on_tick: int, off_tick: int, pitch: int, velocity: int = 100, channel: int = 0):
    """The two events of one note."""
    return [
        (track, on_tick, mido.Message("note_on", note=pitch, velocity=velocity, channel=channel)),
        (track, off_tick, mido.Message("note_off", note=pitch, velocity=0, channel=channel)),
    ]


def cc(track: int, tick: int, control: int, value: int, channel: int = 0):
    return [(track, tick, mido.Message("control_change", control=control, value=value, channel=channel))]


def tempo(tick: int, bpm: float):
    return [(0, tick, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))]


@pytest.fixture
def simple_midi(tmp_path: Path) -> Path:
    """Two notes at 120 bpm (480 ticks per beat = 0.5 s)."""
    events = tempo(0, 120) + note(1, 0, 480, 60, 100) + note(1, 480, 960, 64, 50)
    return write_events(tmp_path / "simple.mid", events)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now, for a server a test starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
