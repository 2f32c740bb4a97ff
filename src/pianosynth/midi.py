"""MIDI files -> note and pedal events. The only module that parses MIDI (scores.py reads scores).

Parsing is pretty_midi's (tempo maps, type-0 channel splitting, running status). Its pairing of
note-ons with note-offs matters for repeated notes: one note-off closes every note of that key
still open on the channel, which is also what FluidSynth does when it renders the reference audio
(a note-off releases every voice of that key). Features and audio therefore agree on when a
re-struck key goes up, and no note-on is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .errors import PianosynthError

LOWEST_KEY = 21  # A0, MIDI note number of the lowest piano key
HIGHEST_KEY = 108  # C8
N_KEYS = HIGHEST_KEY - LOWEST_KEY + 1  # 88
PEDAL_CONTROLLERS = {"sustain": 64, "sostenuto": 66, "soft": 67}
# Limits checked before any features or audio are allocated (issue 11). The longest piece of ASAP
# lasts 31 min; an hour of features at 16 kHz and hop 256 is 240 MB of float32.
MAX_SECONDS = 3600.0  # default for --max-seconds: pieces longer than this are refused
MAX_ONSETS_PER_SECOND = 1000  # notes starting within any one second; ten fingers manage ~40


def _number(x: float) -> str:
    """1,000,000 rather than 1e+06; 0.5 as 0.5."""
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,g}"


class MidiError(PianosynthError, ValueError):
    """A MIDI file that cannot be used: unreadable, empty or without pitched notes."""


@dataclass(frozen=True)
class Limits:
    """The budget of one job beyond its length (``max_seconds``), each checked before the work it
    bounds is allocated (issue 20). Past one: a one-line ``MidiError`` naming it and the option
    that raises it, ``--limit NAME=VALUE`` (``Limits.parse``), or ``limits=Limits(...)`` in the API.
    The defaults keep a job of any input under ~1.5 GB (docs/reliability.md)."""

    notes: int = 200_000  # notes in the piece; a 30-minute sonata has ~20,000
    polyphony: int = 1024  # notes sounding at once (key down to key up): 88 keys on 11 channels
    onsets_per_second: int = MAX_ONSETS_PER_SECOND  # notes starting within any one second
    input_mib: float = 32.0  # a MIDI or score file as given (the page has its own upload limit)
    score_mib: float = 64.0  # a score's XML once unpacked (.mxl is a zip: a bomb stops here)
    xml_elements: int = 500_000  # elements in a MusicXML or MEI score: partitura keeps ~1 kB for each; the longest ASAP score has 114,000
    kern_spines: int = 64  # spines of a Humdrum **kern score on one line (a piano score has 2-6)
    score_seconds: float = 300.0  # wall-clock time of partitura's reading of one score, in a child process killed past it (scores.read_score)
    score_memory_mib: float = 2048.0  # address space (RLIMIT_AS) of that child process: ~750 MiB for a score of 500,000 elements, 400 for the longest ASAP score
    chunk_mib: float = 768.0  # memory the synthesis may need for one chunk (synthesize.chunk_bytes); each thread renders one

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise MidiError(f"limit {f.name} must be a finite number above 0, got {value!r}")

    @classmethod
    def parse(cls, items: list[str] | None) -> "Limits":
        """``["notes=500000", "chunk_mib=2048"]`` (the CLI's ``--limit``) -> Limits."""
        names = {f.name: f.type for f in fields(cls)}
        values = {}
        for item in items or []:
            key, sep, text = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in names:
                raise MidiError(f"--limit {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}")
            try:
                values[key] = int(text) if names[key] == "int" else float(text)
            except ValueError:
                raise MidiError(f"--limit {item!r}: {text!r} is not a number") from None
        return replace(cls(), **values)

    def check(self, name: str, what: str, value: float, limit: str, unit: str = "") -> None:
        """Raises MidiError if ``value`` is over the limit called ``limit``."""
        bound = getattr(self, limit)
        if value > bound:
            raise MidiError(
                f"{name}: {what} {value:,.0f}{unit}, over the limit of {_number(bound)}{unit} "
                f"(raise it with --limit {limit}=N)"
            )


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


def read_midi(path: str | Path, max_seconds: float | None = MAX_SECONDS, limits: Limits | None = None) -> Performance:
    """Reads a type-0 or type-1 Standard MIDI File into piano notes and pedal curves.

    All non-drum tracks and channels are merged; each note keeps its General MIDI program
    (``Note.program``, ``split_by_program``). Drum-channel notes and notes outside the 88 keys
    are dropped, counted and reported in ``Performance.warnings`` for the caller to show.

    Raises:
        MidiError: the file is missing, unreadable, has no pitched note on the piano's keys, or
            is over the limits (``check_limits``; ``max_seconds=None`` lifts the length limit).
    """
    import pretty_midi  # imported here: it is slow to import and not every command needs it

    limits = limits or Limits()
    path = Path(path)
    try:
        size = path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):  # a name with a NUL byte, or too long
        size = None
    if size is None:
        raise MidiError(f"{path}: no such file")
    if size == 0:
        raise MidiError(f"{path}: empty file")
    limits.check(str(path), "a file of", size / 2**20, "input_mib", " MiB")
    check_note_count(path, limits)
    try:
        pm = pretty_midi.PrettyMIDI(str(path))
    except Exception as e:  # pretty_midi/mido raise many types for malformed bytes
        raise MidiError(f"{path}: not a readable MIDI file ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    perf = performance_from_pretty_midi(pm, name=str(path), limits=limits)
    check_limits(perf, max_seconds, name=str(path), limits=limits)
    return perf


EVENTS_PER_NOTE = 4  # MIDI events allowed per note of ``Limits.notes`` (a note is two; pedals add some); mido keeps ~800 bytes an event


def check_note_count(path: Path, limits: Limits) -> None:
    """Refuses a Standard MIDI File with more note-ons than ``limits.notes``, or more events than
    EVENTS_PER_NOTE per note of it, before it is parsed: pretty_midi and mido keep several objects
    per event (1.7 MB of notes took 30 s and 240 MB to parse). The walk counts what mido would
    read; a file it cannot walk is left to the parser to refuse."""
    ons, events = count_midi_events(path.read_bytes(), stop_after=limits.notes * EVENTS_PER_NOTE)
    limits.check(str(path), "note-ons:", ons, "notes")
    if events > limits.notes * EVENTS_PER_NOTE:
        raise MidiError(
            f"{path}: more than {limits.notes * EVENTS_PER_NOTE:,} MIDI events "
            f"({EVENTS_PER_NOTE} per note of --limit notes; raise it with --limit notes=N)"
        )


def count_midi_events(data: bytes, stop_after: int | None = None) -> tuple[int, int]:
    """(note-ons with a velocity above 0, all events) of a Standard MIDI File's bytes, walking
    its track chunks; the walk stops at the first thing it cannot read, or once it has counted
    more than ``stop_after`` events."""
    ons = events = 0
    pos, end = 0, len(data)

    def vlq(p: int) -> tuple[int, int]:
        value = 0
        for _ in range(4):
            if p >= end:
                raise IndexError
            b = data[p]
            p += 1
            value = (value << 7) | (b & 0x7F)
            if b < 0x80:
                return value, p
        return value, p

    try:
        while pos + 8 <= end:
            kind, length = data[pos : pos + 4], int.from_bytes(data[pos + 4 : pos + 8], "big")
            pos += 8
            if kind != b"MTrk":
                pos += length
                continue
            p, stop, running = pos, min(end, pos + length), 0
            while p < stop:
                _, p = vlq(p)
                status = data[p]
                if status & 0x80:
                    p += 1
                    if status < 0xF0:
                        running = status
                else:
                    status = running
                    if not status:
                        raise IndexError
                events += 1
                if stop_after is not None and events > stop_after:
                    return ons, events
                if status == 0xFF:
                    p += 1
                    n, p = vlq(p)
                    p += n
                elif status in (0xF0, 0xF7):
                    n, p = vlq(p)
                    p += n
                else:
                    hi = status & 0xF0
                    if hi == 0x90 and p + 1 < end and data[p + 1] > 0:
                        ons += 1
                    p += 1 if hi in (0xC0, 0xD0) else 2
            pos += length
    except IndexError:
        pass
    return ons, events


def check_limits(
    perf: Performance, max_seconds: float | None = MAX_SECONDS, name: str = "<midi>", limits: Limits | None = None
) -> None:
    """Refuses a performance longer than ``max_seconds`` (None: no length limit), or over
    ``limits`` (default ``Limits()``) in notes, notes sounding at once or notes starting within
    one second, before anything is allocated for it.

    Raises:
        MidiError: one line naming the limit and the option that sets it.
    """
    limits = limits or Limits()
    if not math.isfinite(perf.end_s):
        raise MidiError(f"{name}: events at a non-finite time (a broken tempo map)")
    if max_seconds is not None and perf.end_s > max_seconds:
        raise MidiError(
            f"{name}: lasts {perf.end_s:.0f} s, over the limit of {max_seconds:g} s "
            "(raise it with --max-seconds if the piece really is that long)"
        )
    limits.check(name, "notes:", len(perf.notes), "notes")
    onsets = np.sort(np.array([n.start_s for n in perf.notes], dtype=np.float64))
    within = np.searchsorted(onsets, onsets + 1.0, side="left") - np.arange(len(onsets))  # (notes,)
    if len(onsets) and within.max() > limits.onsets_per_second:
        i = int(within.argmax())
        raise MidiError(
            f"{name}: {int(within[i])} notes start within one second at {onsets[i]:.1f} s, over the "
            f"limit of {limits.onsets_per_second} (not a piano performance; raise it with --limit onsets_per_second=N)"
        )
    ends = np.sort(np.array([n.end_s for n in perf.notes], dtype=np.float64))
    sounding = np.searchsorted(onsets, onsets, side="right") - np.searchsorted(ends, onsets, side="right")  # (notes,)
    if len(onsets) and sounding.max() > limits.polyphony:
        i = int(sounding.argmax())
        limits.check(name, f"notes sounding at once at {onsets[i]:.1f} s:", int(sounding[i]), "polyphony")


def performance_from_pretty_midi(pm, name: str = "<midi>", limits: Limits | None = None) -> Performance:
    """Converts a parsed ``pretty_midi.PrettyMIDI`` into a Performance (see read_midi). An object
    built in Python is checked as a file is: times finite and not negative, pitches, velocities,
    programs and controller values in 0..127, at most ``limits.notes`` notes.

    Raises:
        MidiError: one line for anything else, of any type or value.
    """
    try:
        return _performance_from_pretty_midi(pm, name, limits or Limits())
    except MidiError:
        raise
    except (TypeError, ValueError, AttributeError, OverflowError, IndexError, KeyError) as e:
        raise MidiError(f"{name}: not a usable pretty_midi.PrettyMIDI ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def _midi_int(value, what: str, name: str, low: int = 0, high: int = 127) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)) or not math.isfinite(value) or value != int(value) or not low <= value <= high:
        raise MidiError(f"{name}: {what} must be an integer in {low}..{high}, got {value!r}")
    return int(value)


def _seconds(value, what: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise MidiError(f"{name}: {what} must be a number of seconds, got {value!r}")
    t = float(value)
    if not math.isfinite(t) or t < 0:
        raise MidiError(f"{name}: {what} must be finite and not negative, got {t!r}")
    return t


def _performance_from_pretty_midi(pm, name: str, limits: Limits) -> Performance:
    instruments = list(pm.instruments)
    limits.check(name, "notes:", sum(len(inst.notes) for inst in instruments), "notes")
    notes: list[Note] = []
    drum_notes = 0
    out_of_range = 0
    cc_events: dict[str, list[tuple[float, float]]] = {k: [] for k in PEDAL_CONTROLLERS}
    cc_by_program: dict[int, dict[str, list[tuple[float, float]]]] = {}
    for inst in instruments:
        if inst.is_drum:
            drum_notes += len(inst.notes)
            continue
        program = _midi_int(inst.program, "a program", name)
        for n in inst.notes:
            start, end = _seconds(n.start, "a note's start", name), _seconds(n.end, "a note's end", name)
            pitch, velocity = _midi_int(n.pitch, "a note's pitch", name), _midi_int(n.velocity, "a note's velocity", name)
            if end <= start or velocity == 0:
                continue
            if not LOWEST_KEY <= pitch <= HIGHEST_KEY:
                out_of_range += 1
                continue
            notes.append(Note(pitch, start, end, velocity, program))
        own = cc_by_program.setdefault(program, {k: [] for k in PEDAL_CONTROLLERS})
        for cc in inst.control_changes:
            number = _midi_int(cc.number, "a controller number", name)
            for pedal, pedal_number in PEDAL_CONTROLLERS.items():
                if number == pedal_number:
                    value = _midi_int(cc.value, "a controller value", name) / 127.0
                    t = _seconds(cc.time, "a controller's time", name)
                    cc_events[pedal].append((t, value))
                    own[pedal].append((t, value))
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
