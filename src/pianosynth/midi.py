"""MIDI files -> note and pedal events. The only module that parses MIDI (scores.py reads scores).

Parsing is pretty_midi's (tempo maps, type-0 channel splitting, running status). Its pairing of
note-ons with note-offs matters for repeated notes: one note-off closes every note of that key
still open on the channel, which is also what FluidSynth does when it renders the reference audio
(a note-off releases every voice of that key). Features and audio therefore agree on when a
re-struck key goes up, and no note-on is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOWEST_KEY = 21  # A0, MIDI note number of the lowest piano key
HIGHEST_KEY = 108  # C8
N_KEYS = HIGHEST_KEY - LOWEST_KEY + 1  # 88
PEDAL_CONTROLLERS = {"sustain": 64, "sostenuto": 66, "soft": 67}
# Limits checked before any features or audio are allocated (issue 11). The longest piece of ASAP
# lasts 31 min; an hour of features at 16 kHz and hop 256 is 240 MB of float32.
MAX_SECONDS = 3600.0  # default for --max-seconds: pieces longer than this are refused
MAX_ONSETS_PER_SECOND = 1000  # notes starting within any one second; ten fingers manage ~40


class MidiError(ValueError):
    """A MIDI file that cannot be used: unreadable, empty or without pitched notes."""


@dataclass
class Note:
    pitch: int  # MIDI note number, 21..108 once read by read_midi
    start_s: float  # key down, seconds
    end_s: float  # key up, seconds
    velocity: int  # 1..127
    program: int = 0  # General MIDI program of its channel (0: Acoustic Grand Piano)


@dataclass
class PedalCurve:
    """A controller as a step function: value ``values[i]`` (0..1) holds from ``times_s[i]`` on."""

    times_s: np.ndarray  # (events,) float64, non-decreasing
    values: np.ndarray  # (events,) float64 in 0..1

    def at(self, t_s: np.ndarray) -> np.ndarray:
        """Value at each time in ``t_s`` (0 before the first event). t_s: (n,) -> (n,)."""
        if len(self.times_s) == 0:
            return np.zeros(len(t_s))
        idx = np.searchsorted(self.times_s, t_s, side="right") - 1
        out = np.where(idx >= 0, self.values[np.clip(idx, 0, None)], 0.0)
        return out


@dataclass
class Performance:
    """Everything the features and the renderer need from one MIDI file."""

    notes: list[Note]
    pedals: dict[str, PedalCurve]  # "sustain", "sostenuto", "soft"
    end_s: float  # last note-off or controller event
    out_of_range: int = 0  # notes dropped for lying outside A0..C8
    drum_notes: int = 0  # notes dropped for being on the drum channel
    warnings: list[str] = field(default_factory=list)
    # Each program's own pedal curves (from the channels playing that program); ``pedals`` merges
    # them all. Only a multi-program file needs them (``split_by_program``).
    program_pedals: dict[int, dict[str, PedalCurve]] = field(default_factory=dict)

    @property
    def programs(self) -> list[int]:
        """The General MIDI programs its notes are played with, ascending."""
        return sorted({n.program for n in self.notes})


def read_midi(path: str | Path, max_seconds: float | None = MAX_SECONDS) -> Performance:
    """Reads a type-0 or type-1 Standard MIDI File into piano notes and pedal curves.

    All non-drum tracks and channels are merged; each note keeps its General MIDI program
    (``Note.program``, ``split_by_program``). Drum-channel notes and notes outside the 88 keys
    are dropped, counted and reported in ``Performance.warnings`` for the caller to show.

    Raises:
        MidiError: the file is missing, unreadable, has no pitched note on the piano's keys, or
            is over the limits (``check_limits``; ``max_seconds=None`` lifts the length limit).
    """
    import pretty_midi  # imported here: it is slow to import and not every command needs it

    path = Path(path)
    if not path.is_file():
        raise MidiError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MidiError(f"{path}: empty file")
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # pretty_midi/mido raise many types for malformed bytes
        raise MidiError(f"{path}: not a readable MIDI file ({type(e).__name__}: {e})") from e
    perf = performance_from_pretty_midi(pm, name=str(path))
    check_limits(perf, max_seconds, name=str(path))
    return perf


def check_limits(perf: Performance, max_seconds: float | None = MAX_SECONDS, name: str = "<midi>") -> None:
    """Refuses a performance longer than ``max_seconds`` (None: no length limit) or with more than
    MAX_ONSETS_PER_SECOND notes starting within one second, before anything is allocated for it.

    Raises:
        MidiError: one line naming the limit and the option that sets it.
    """
    if not math.isfinite(perf.end_s):
        raise MidiError(f"{name}: events at a non-finite time (a broken tempo map)")
    if max_seconds is not None and perf.end_s > max_seconds:
        raise MidiError(
            f"{name}: lasts {perf.end_s:.0f} s, over the limit of {max_seconds:g} s "
            "(raise it with --max-seconds if the piece really is that long)"
        )
    onsets = np.sort(np.array([n.start_s for n in perf.notes], dtype=np.float64))
    within = np.searchsorted(onsets, onsets + 1.0, side="left") - np.arange(len(onsets))  # (notes,)
    if len(onsets) and within.max() > MAX_ONSETS_PER_SECOND:
        i = int(within.argmax())
        raise MidiError(
            f"{name}: {int(within[i])} notes start within one second at {onsets[i]:.1f} s, over the "
            f"limit of {MAX_ONSETS_PER_SECOND} (not a piano performance)"
        )


def performance_from_pretty_midi(pm, name: str = "<midi>") -> Performance:
    """Converts a parsed ``pretty_midi.PrettyMIDI`` into a Performance (see read_midi)."""
    notes: list[Note] = []
    drum_notes = 0
    out_of_range = 0
    cc_events: dict[str, list[tuple[float, float]]] = {k: [] for k in PEDAL_CONTROLLERS}
    cc_by_program: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for inst in pm.instruments:
        if inst.is_drum:
            drum_notes += len(inst.notes)
            continue
        for n in inst.notes:
            if n.end <= n.start:
                continue
            if not LOWEST_KEY <= n.pitch <= HIGHEST_KEY:
                out_of_range += 1
                continue
            notes.append(Note(int(n.pitch), float(n.start), float(n.end), int(n.velocity), int(inst.program)))
        own = cc_by_program.setdefault(int(inst.program), {k: [] for k in PEDAL_CONTROLLERS})
        for cc in inst.control_changes:
            for pedal, number in PEDAL_CONTROLLERS.items():
                if cc.number == number:
                    cc_events[pedal].append((float(cc.time), cc.value / 127.0))
                    own[pedal].append((float(cc.time), cc.value / 127.0))
    warnings = []
    if drum_notes:
        warnings.append(f"{name}: skipped {drum_notes} note(s) on the drum channel")
    if out_of_range:
        warnings.append(f"{name}: dropped {out_of_range} note(s) outside the piano's A0..C8")
    if not notes:
        if drum_notes:
            raise MidiError(f"{name}: only drum notes, nothing for a piano to play")
        if out_of_range:
            raise MidiError(f"{name}: no notes on the piano's 88 keys")
        raise MidiError(f"{name}: no notes")
    notes.sort(key=lambda n: (n.start_s, n.pitch))
    pedals = _pedal_curves(cc_events)
    end_s = max(n.end_s for n in notes)
    for curve in pedals.values():
        if len(curve.times_s):
            end_s = max(end_s, float(curve.times_s[-1]))
    programs = {n.program for n in notes}
    program_pedals = {p: _pedal_curves(events) for p, events in cc_by_program.items() if p in programs} if len(programs) > 1 else {}
    return Performance(notes, pedals, end_s, out_of_range, drum_notes, warnings, program_pedals)


def _pedal_curves(cc_events: dict[str, list[tuple[float, float]]]) -> dict[str, PedalCurve]:
    pedals = {}
    for pedal, events in cc_events.items():
        # Several channels may carry the same pedal; the stable sort keeps file order at equal
        # times, so the last event at a time wins, as it would on a synthesizer.
        events = sorted(events, key=lambda e: e[0])
        pedals[pedal] = PedalCurve(
            np.array([t for t, _ in events], dtype=np.float64),
            np.array([v for _, v in events], dtype=np.float64),
        )
    return pedals


def split_by_program(perf: Performance) -> dict[int, Performance]:
    """One Performance per General MIDI program, ascending: its notes, the pedals of its own
    channels, and the whole file's ``end_s`` (so every part has the same length). A
    single-program performance comes back as itself."""
    programs = perf.programs
    if len(programs) <= 1:
        return {p: perf for p in programs}
    empty = {k: PedalCurve(np.zeros(0), np.zeros(0)) for k in PEDAL_CONTROLLERS}
    return {
        p: Performance([n for n in perf.notes if n.program == p], perf.program_pedals.get(p, empty), perf.end_s)
        for p in programs
    }


def write_midi(
    perf: Performance, path: str | Path, program: int = 0, bank: int = 0, ticks_per_beat: int = 960
) -> None:
    """Writes a Performance as a one-track type-0 MIDI file on channel 0 with the given sound.

    The bank select and program change come first, before any note, so that a synthesizer
    applies them to every note. Tempo stays at MIDI's default 120 bpm, so 960 ticks per beat
    quantise times to 1/1920 s, well inside one feature frame. At equal times controllers go
    first, then note-offs, then note-ons, so a key re-struck at the instant it is released sounds.
    """
    import mido

    ticks_per_s = ticks_per_beat * 2  # 120 bpm = 2 beats per second
    events: list[tuple[int, int, mido.Message]] = []  # (tick, order, message)
    for pedal, number in PEDAL_CONTROLLERS.items():
        curve = perf.pedals.get(pedal)
        if curve is None:
            continue
        for t, v in zip(curve.times_s, curve.values):
            msg = mido.Message("control_change", control=number, value=int(round(v * 127)))
            events.append((round(t * ticks_per_s), 0, msg))
    for n in perf.notes:
        on = mido.Message("note_on", note=n.pitch, velocity=max(1, min(127, n.velocity)))
        off = mido.Message("note_off", note=n.pitch, velocity=0)
        events.append((round(n.start_s * ticks_per_s), 2, on))
        events.append((round(n.end_s * ticks_per_s), 1, off))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack()
    track.append(mido.Message("control_change", control=0, value=bank // 128))
    track.append(mido.Message("control_change", control=32, value=bank % 128))
    track.append(mido.Message("program_change", program=program))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    track.append(mido.MetaMessage("end_of_track", time=0))
    mid = mido.MidiFile(type=0, ticks_per_beat=ticks_per_beat)
    mid.tracks.append(track)
    mid.save(str(path))
