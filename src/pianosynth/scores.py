"""Score files (MusicXML, compressed MusicXML, MEI, Humdrum **kern) -> note and pedal events.

partitura (Cancino-Chacón et al., the library behind the basismixer) parses the file; this
module turns the notated music into the same ``midi.Performance`` a MIDI file gives, so that
everything after it (features, note table, model, reference renderer) stays unaware that the
music came from a score (issue 13). What it does, in this order:

1. **Repeats** are unfolded (``partitura.score.unfold_part_maximal``: every repeated section
   is played twice, voltas taken in turn) and **ties** joined (one note for a tied chain,
   ``Part.notes_tied`` and ``Note.end_tied``).
2. **Tempo** (``tempo_map``): ``bpm`` if given (quarter notes per minute, the whole piece);
   otherwise the score's metronome marks and ``<sound tempo>`` values, and where none is in force
   its tempo words (``TEMPO_WORDS``, in beats per minute of the time signature's beat), with
   ritardando/accelerando words and "a tempo"; DEFAULT_BPM before any of them.
3. **Dynamics** (``velocity_map``): marks (``DYNAMICS``), crescendo and diminuendo (hairpins and
   words) ramp between them, sforzando-like marks and accents raise single notes
   (``IMPULSIVE``, ``ACCENTS``); staccato shortens a note (``SHORTEN``).
4. **Pedal marks** (Ped. ... *, or a pedal line) become a sustain-pedal curve; a pedal
   restarted where it ends is lifted for PEDAL_CHANGE_SECONDS, as a pianist changes it.

A score-mode model ignores the velocities and pedals; a performance-mode model hears them.
"""

from __future__ import annotations

import math
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from .midi import HIGHEST_KEY, LOWEST_KEY, MAX_SECONDS, Limits, MidiError, Note, PedalCurve, Performance, _number, check_limits

SCORE_SUFFIXES = (".musicxml", ".mxl", ".xml", ".mei", ".krn", ".kern")
DEFAULT_BPM = 120.0  # quarter notes per minute where a score gives no tempo (MIDI's default)
DEFAULT_VELOCITY = 64  # before the first dynamics mark

# Dynamics marks -> MIDI velocity: MuseScore's playback values, so that a score sounds here as
# it does in the notation program that most of these files come from.
DYNAMICS = {
    "pppppp": 4, "ppppp": 8, "pppp": 12, "ppp": 16, "pp": 33, "p": 49, "mp": 64,
    "mf": 80, "f": 96, "ff": 112, "fff": 126, "ffff": 127, "fffff": 127, "ffffff": 127,
    "pianissimo": 33, "piano": 49, "mezzo piano": 64, "mezzo forte": 80, "forte": 96, "fortissimo": 112,
}  # fmt: skip
HAIRPIN_STEP = 16  # a crescendo or diminuendo with no mark after it moves the level this much
HAIRPIN_QUARTERS = 4.0  # span of a "cresc." word that has no end (no dashes)
# Marks that hit one chord: (velocity added to the level for the chord, level afterwards or None).
IMPULSIVE = {
    "sf": (24, None), "sfz": (24, None), "sffz": (32, None), "fz": (24, None), "rf": (16, None),
    "rfz": (16, None), "fp": (24, "p"), "sfp": (24, "p"), "sfpp": (24, "pp"), "sfzp": (24, "p"), "pf": (0, "f"),
}  # fmt: skip
ACCENTS = {"accent": 16, "strong-accent": 24}  # velocity added to an accented note
SHORTEN = {"staccato": 0.5, "staccatissimo": 0.3, "spiccato": 0.3}  # fraction of the written length
MIN_NOTE_SECONDS = 0.03
GRACE_SECONDS = 0.06  # each grace note, played just before its main note
PEDAL_CHANGE_SECONDS = 0.06  # up time of a pedal change (a pedal mark starting where one ends)
# Tempo words -> beats per minute of the time signature's beat (a dotted quarter in 6/8, 9/8 and
# 12/8; a quarter in 2/2, so that an alla breve Allegro is not taken at a galloping half = 132).
# The middle of each word's usual metronome range. Checked longest first.
TEMPO_WORDS = {
    "prestissimo": 200, "presto": 176, "vivacissimo": 168, "vivace": 152, "vivo": 152,
    "allegro moderato": 120, "allegretto": 112, "allegro": 132, "moderato": 108, "andantino": 88,
    "andante": 80, "adagietto": 72, "adagio": 66, "larghetto": 63, "lento": 56, "largo": 50, "grave": 40,
}  # fmt: skip
RITARDANDO = 0.75  # a ritardando (rit., rall., ritenuto) slows to this fraction of the tempo
ACCELERANDO = 1.25
RAMP_QUARTERS = 8.0  # length of a rit./accel. that has no end of its own, unless a tempo mark comes first
TEMPO_RANGE = (1.0, 1000.0)  # quarter notes per minute a score's own tempo may have (as --bpm)
MAX_ZIP_MEMBERS = 1000  # files in an .mxl (a score and a few images)


class ScoreError(MidiError):
    """A score file that cannot be used: unreadable by partitura, or without pitched notes."""


def is_score(path: str | Path) -> bool:
    """Whether ``path`` names a score file (by its suffix) rather than a MIDI file."""
    return Path(path).suffix.lower() in SCORE_SUFFIXES


def read_score(
    path: str | Path, bpm: float | None = None, max_seconds: float | None = MAX_SECONDS, limits: Limits | None = None
) -> Performance:
    """Reads a MusicXML (.musicxml, .xml, .mxl), MEI (.mei) or Humdrum (.krn) score into notes
    and pedal curves, as ``midi.read_midi`` reads a MIDI file (see the module's docstring).

    Before partitura reads it, the file is held to ``limits`` (``midi.Limits``): its size, an
    .mxl's unpacked size (read member by member, so a zip bomb stops at the limit whatever its
    header claims), the number of XML elements, and a **kern score's spines. partitura then reads
    it in a child process (``_read_in_child``) killed past ``limits.score_seconds`` of wall-clock
    time, with ``limits.score_memory_mib`` of address space.

    Args:
        bpm: quarter notes per minute for the whole piece, instead of the score's own tempo.
        max_seconds: as for ``read_midi`` (None: no length limit).
        limits: the budget (default ``midi.Limits()``).

    Raises:
        ScoreError: one line: the file is missing, partitura cannot read it (or crashes, or
            runs out of its time or memory), it has no notes on the piano's keys, a tempo outside
            TEMPO_RANGE, or it is over the limits.
    """
    import tempfile

    limits = limits or Limits()
    path = Path(path)
    name = str(path)
    try:
        size = path.stat().st_size if path.is_file() else None
    except (OSError, ValueError):
        size = None
    if size is None:
        raise ScoreError(f"{path}: no such file")
    if size == 0:
        raise ScoreError(f"{path}: empty file")
    if bpm is not None and not (isinstance(bpm, (int, float)) and not isinstance(bpm, bool) and math.isfinite(bpm) and TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]):
        raise ScoreError(f"bpm must be a number of quarter notes per minute in 1..1000, got {bpm!r}")
    _check(limits, name, "a file of", size / 2**20, "input_mib", " MiB")
    with tempfile.TemporaryDirectory(prefix="pianosynth-score-") as tmp:
        source = path
        suffix = path.suffix.lower()
        if suffix == ".mxl" or (suffix in (".xml", ".musicxml") and _is_zip(path)):
            source = _unpack_mxl(path, Path(tmp), limits, name)
            suffix = ".musicxml"
        if suffix in (".krn", ".kern"):
            _check_kern(source, limits, name)
        else:
            _check_xml(source, limits, name)
        perf = _read_in_child(source, name, bpm, limits, Path(tmp))
    check_limits(perf, max_seconds, name=name, limits=limits)
    return perf


def _check(limits: Limits, name: str, what: str, value: float, limit: str, unit: str = "") -> None:
    try:
        limits.check(name, what, value, limit, unit)
    except MidiError as e:
        raise ScoreError(str(e)) from None


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _unpack_mxl(path: Path, folder: Path, limits: Limits, name: str) -> Path:
    """The root score of a compressed MusicXML file, unpacked into ``folder`` while counting
    the bytes that come out (a member's header may understate them): refused past
    ``limits.score_mib``. -> the unpacked .musicxml"""
    import zipfile
    import zlib
    from xml.etree import ElementTree

    cap = int(limits.score_mib * 2**20)

    def read(zf: zipfile.ZipFile, member: str, out) -> int:
        total = 0
        with zf.open(member) as f:
            while chunk := f.read(1 << 16):
                total += len(chunk)
                if total > cap:
                    _check(limits, name, f"{member} unpacks to more than", total / 2**20, "score_mib", " MiB")
                out.write(chunk)
        return total

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.namelist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ScoreError(f"{name}: {len(members):,} files in the archive, over the {MAX_ZIP_MEMBERS:,} a score has")
            if "META-INF/container.xml" in members:
                import io

                buf = io.BytesIO()
                read(zf, "META-INF/container.xml", buf)
                root = ElementTree.fromstring(buf.getvalue())
                found = next((e.get("full-path") for e in root.iter() if e.tag.endswith("rootfile") and e.get("full-path")), None)
            else:
                found = next((m for m in members if m.lower().endswith((".xml", ".musicxml")) and not m.startswith("META-INF/")), None)
            if found is None or found not in members:
                raise ScoreError(f"{name}: a compressed MusicXML file without a score in it")
            out_path = folder / "score.musicxml"
            with open(out_path, "wb") as out:
                read(zf, found, out)
            return out_path
    except ScoreError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ElementTree.ParseError, zlib.error, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as e:
        raise ScoreError(f"{name}: not a readable compressed MusicXML file ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e


def _check_xml(path: Path, limits: Limits, name: str) -> None:
    """Refuses an XML score over ``limits.score_mib`` or with more than ``limits.xml_elements``
    elements, before partitura builds its objects. The count is of start tags, from the bytes
    (every ``<`` but those of end tags, comments, CDATA, declarations and processing
    instructions): at C speed, never below the true count."""
    _check(limits, name, "a score of", path.stat().st_size / 2**20, "score_mib", " MiB")
    count, tail = 0, b""
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            data = tail + chunk
            # a tag split between chunks is counted in the next one: keep the last byte back
            body, tail = data[:-1], data[-1:]
            count += body.count(b"<") - body.count(b"</") - body.count(b"<!") - body.count(b"<?")
            if count > limits.xml_elements:
                break
    count += tail.count(b"<")
    _check(limits, name, "XML elements:" if count <= limits.xml_elements else "XML elements: at least", count, "xml_elements")


def _check_kern(path: Path, limits: Limits, name: str) -> None:
    """Refuses a **kern score with more than ``limits.kern_spines`` spines on a line, or more
    tokens (a note, a rest, a bar line or an interpretation in one spine) than
    ``limits.xml_elements``, the budget of a score's elements in any format."""
    widest = tokens = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.startswith(b"!!"):
                fields = line.count(b"\t") + 1
                widest, tokens = max(widest, fields), tokens + fields
    _check(limits, name, "spines:", widest, "kern_spines")
    _check(limits, name, "**kern tokens (elements of the score):", tokens, "xml_elements")


# partitura reads every score in a child process of its own, bounded in time and memory, whatever
# its format. Its readers are Python and lxml code run on untrusted files (the page's uploads); the
# checks above bound the input's size and elements, but nothing bounded partitura's own time or
# memory, a timer's exception does not land while a C call runs, and a crash in a C extension
# would take the caller (the page's server) with it. The child reads the file by its path and
# writes JSON: nothing but plain values comes back. For every format, not only the compressed
# one: an .mxl is unpacked above and read by the same MusicXML reader as a plain .musicxml, and
# the MEI and **kern readers are no better bounded. The price is the child's start with
# partitura's import, for every score (the caller no longer imports partitura itself):
# ``benchmarks/score_reader.py``, docs/reliability.md.
_CHILD_CODE = """
import json, sys
with open(sys.argv[1]) as f:
    request = json.load(f)
sys.path[:0] = request["path"]
from pianosynth.scores import _child_main
_child_main(request)
"""


def _read_in_child(source: Path, name: str, bpm: float | None, limits: Limits, folder: Path) -> Performance:
    """``_load_score`` in a child process (``sys.executable -I -c _CHILD_CODE``, no code between
    fork and exec): its address space capped at ``limits.score_memory_mib`` (RLIMIT_AS, set by the
    child itself), killed past ``limits.score_seconds`` of wall-clock time, or when this process is
    interrupted, or dies (PR_SET_PDEATHSIG; RLIMIT_CPU as a last bound). ``folder``: a temporary
    folder for the request, the answer (JSON) and the child's stderr.

    Raises:
        ScoreError: one line, as ``_load_score``'s, or for the child's time, memory or crash.
        RuntimeError: the child failed without an answer for another reason (a bug, not the score).
    """
    import json
    import os
    import signal
    import subprocess

    request_path, out, log_path = folder / "request.json", folder / "answer.json", folder / "reader.log"
    package_root = str(Path(__file__).resolve().parents[1])  # the folder holding this pianosynth
    request = {
        "source": str(source), "name": name, "bpm": bpm, "out": str(out), "parent": os.getpid(),
        "memory_bytes": int(limits.score_memory_mib * 2**20), "cpu_seconds": math.ceil(limits.score_seconds) + 10,
        "path": [package_root] + [p or os.getcwd() for p in sys.path],  # the modules this process would import
    }  # fmt: skip
    request_path.write_text(json.dumps(request))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # no BLAS thread pools
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _CHILD_CODE, str(request_path)], stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env
        )
    try:
        proc.wait(timeout=limits.score_seconds)
    except subprocess.TimeoutExpired:
        raise ScoreError(
            f"{name}: partitura was still reading it after {_number(limits.score_seconds)} s, the limit; stopped "
            f"(raise it with --limit score_seconds=N)"
        ) from None
    finally:
        if proc.poll() is None:  # over time, or this process interrupted (Ctrl-C, a timer's exception)
            proc.kill()
            proc.wait()
    memory = f"its memory limit of {_number(limits.score_memory_mib)} MiB (raise it with --limit score_memory_mib=N)"
    if not out.is_file():
        tail = (log_path.read_bytes()[-2000:].decode(errors="replace").strip().splitlines() or [""])[-1][:200]
        if proc.returncode < 0:
            signame = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else str(-proc.returncode)
            if -proc.returncode == getattr(signal, "SIGXCPU", None):  # RLIMIT_CPU: only if this process could not stop it first
                raise ScoreError(f"{name}: partitura's reading ran out of CPU time (raise it with --limit score_seconds=N)")
            raise ScoreError(f"{name}: partitura crashed while reading it ({signame}; a large score may need more than {memory})")
        if "MemoryError" in tail:  # so short of memory that even the answer could not be written
            raise ScoreError(f"{name}: partitura ran out of {memory}")
        raise RuntimeError(f"{name}: the score reader's process exited with status {proc.returncode} without an answer: {tail}")
    answer = json.loads(out.read_text())
    if "performance" in answer:
        return _performance_from_plain(answer["performance"])
    if "memory" in answer:
        raise ScoreError(f"{name}: partitura ran out of {memory}")
    if "error" in answer:
        raise ScoreError(str(answer["error"]))
    raise RuntimeError(f"{name}: reading the score failed unexpectedly ({answer.get('unexpected')})")


def _child_main(request: dict) -> None:
    """The child process of ``_read_in_child``: reads one score and writes the answer, a JSON
    object with one key: "performance" (``_performance_to_plain``), "error" (a ScoreError's line),
    "memory" (a MemoryError) or "unexpected" (any other exception, named in one line)."""
    import json
    import os

    from .render import _set_parent_death_signal

    _set_parent_death_signal()
    if os.getppid() != request["parent"]:  # the parent died before the signal was set
        sys.exit(1)
    _set_limit("RLIMIT_CPU", request["cpu_seconds"])
    import partitura  # noqa: F401  # before the memory limit: the imports' ~300 MiB are the same for any score

    _set_limit("RLIMIT_AS", request["memory_bytes"])
    try:
        answer = {"performance": _performance_to_plain(_load_score(Path(request["source"]), request["name"], request["bpm"]))}
    except MidiError as e:
        answer = {"error": str(e)}
    except MemoryError:
        answer = {"memory": True}
    except Exception as e:  # a bug rather than the score: the parent raises it as RuntimeError
        answer = {"unexpected": f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"}
    out = Path(request["out"])
    part = out.with_name(out.name + ".part")
    try:
        part.write_text(json.dumps(answer))
    except MemoryError:
        part.write_text('{"memory": true}')
    os.replace(part, out)  # whole or not at all: a child killed while writing leaves no answer


def _set_limit(name: str, value: int) -> None:
    """Sets resource limit ``name`` (soft and hard) of this process, never above the one it was
    given; where the system has no such limit (not Linux), the wall-clock limit still holds."""
    try:
        import resource

        kind = getattr(resource, name)
        _, hard = resource.getrlimit(kind)
        resource.setrlimit(kind, (value, value) if hard == resource.RLIM_INFINITY else (min(value, hard),) * 2)
    except (ImportError, AttributeError, ValueError, OSError):
        pass


def _performance_to_plain(perf: Performance) -> dict:
    """A score's Performance as JSON-able lists (floats round-trip exactly through JSON)."""
    return {
        "notes": [[n.pitch, n.start_s, n.end_s, n.velocity, n.program] for n in perf.notes],
        "pedals": {k: [c.times_s.tolist(), c.values.tolist()] for k, c in perf.pedals.items()},
        "end_s": perf.end_s, "out_of_range": perf.out_of_range, "warnings": list(perf.warnings),
    }  # fmt: skip


def _performance_from_plain(plain: dict) -> Performance:
    """``_performance_to_plain``'s inverse, every value converted to its field's type."""
    notes = [Note(int(p), float(s), float(e), int(v), int(g)) for p, s, e, v, g in plain["notes"]]
    pedals = {str(k): PedalCurve(np.asarray(t, dtype=np.float64), np.asarray(v, dtype=np.float64)) for k, (t, v) in plain["pedals"].items()}
    return Performance(notes, pedals, float(plain["end_s"]), out_of_range=int(plain["out_of_range"]), warnings=[str(w) for w in plain["warnings"]])


def _load_score(path: Path, name: str, bpm: float | None) -> Performance:
    import partitura  # imported here: it is slow to import and only scores need it
    from partitura import score as ps

    limit = sys.getrecursionlimit()
    try:
        with warnings.catch_warnings(record=True) as caught:  # partitura warns of every construct it skips
            warnings.simplefilter("always")
            sys.setrecursionlimit(max(limit, 20000))  # its unfolding deep-copies the score
            loaded = partitura.load_score(str(path))
            parts = list(ps.unfold_part_maximal(loaded).parts) if len(loaded.parts) else []
    except RecursionError as e:
        raise ScoreError(f"{name}: too deeply nested for partitura to unfold its repeats") from e
    except MemoryError:
        raise  # the child answers "memory" and the parent names the limit
    except Exception as e:  # partitura and lxml raise many types for malformed files
        detail = " ".join(str(e).split())[:200] or "no detail"
        raise ScoreError(f"{name}: not a score partitura can read ({type(e).__name__}: {detail})") from e
    finally:
        sys.setrecursionlimit(limit)
    try:
        perf = performance_from_parts(parts, bpm=bpm, name=name)
    except MidiError:
        raise
    except (ValueError, TypeError, ArithmeticError, IndexError, KeyError, AttributeError) as e:  # a construct partitura read but cannot time
        raise ScoreError(f"{name}: a score this program cannot time ({type(e).__name__}: {' '.join(str(e).split())[:200]})") from e
    changes = sum('pedal types "change"' in str(w.message) for w in caught)
    if changes:
        perf.warnings.append(f"{name}: {changes} pedal 'change'/'continue' mark(s) not read (partitura skips them); a change is played as the pedal staying down")
    return perf


def performance_from_parts(parts: list, bpm: float | None = None, name: str = "<score>") -> Performance:
    """partitura Parts (already unfolded) -> a Performance (see ``read_score``)."""
    from partitura import score as ps

    written: list[tuple[float, float, int, list[str], int]] = []  # (onset q, end q, pitch, articulations, graces after)
    directions: list[tuple[float, float | None, object]] = []  # (start q, end q or None, direction)
    tempos: list[tuple[float, float]] = []  # (q, quarter notes per minute)
    meters: list[tuple[float, float]] = []  # (q, quarters per beat)
    for part in parts:
        q = part.quarter_map
        for n in part.notes_tied:
            if isinstance(n, ps.GraceNote):
                after, g = 0, n.grace_next
                while isinstance(g, ps.GraceNote):  # the chain ends at its main note
                    after, g = after + 1, g.grace_next
                t = float(q(n.start.t))
                written.append((t, t, int(n.midi_pitch), [], after + 1))
            else:
                written.append((float(q(n.start.t)), float(q(n.end_tied.t)), int(n.midi_pitch), list(n.articulations or []), 0))
        for d in part.iter_all(ps.Direction, include_subclasses=True):
            directions.append((float(q(d.start.t)), float(q(d.end.t)) if d.end is not None else None, d))
        for t in part.iter_all(ps.Tempo):
            at, rate = float(q(t.start.t)), _quarter_bpm(t)
            if bpm is None and not (math.isfinite(rate) and TEMPO_RANGE[0] <= rate <= TEMPO_RANGE[1]):
                raise ScoreError(
                    f"{name}: a tempo of {rate:g} quarter notes per minute at quarter {at:g}, outside "
                    f"{TEMPO_RANGE[0]:g}..{TEMPO_RANGE[1]:g} (give the piece a tempo with --bpm)"
                )
            tempos.append((at, rate))
        for ts in part.iter_all(ps.TimeSignature):
            meters.append((float(q(ts.start.t)), _quarters_per_beat(ts.beats, ts.beat_type)))
    if not written:
        raise ScoreError(f"{name}: no notes")
    in_range = [w for w in written if LOWEST_KEY <= w[2] <= HIGHEST_KEY]
    out_of_range = len(written) - len(in_range)
    if not in_range:
        raise ScoreError(f"{name}: no notes on the piano's 88 keys")
    directions.sort(key=lambda d: d[0])
    seconds = tempo_map(tempos, meters, directions, bpm)
    onsets_q = np.array(sorted({w[0] for w in in_range}))
    velocity_at = velocity_map(directions, onsets_q)

    notes: list[Note] = []
    for onset_q, end_q, pitch, articulations, grace in in_range:
        start = float(seconds(onset_q))
        velocity = velocity_at[onset_q] + sum(ACCENTS.get(a, 0) for a in articulations)
        if grace:  # before the beat, one GRACE_SECONDS each, so that the main note keeps its place
            start, end = start - grace * GRACE_SECONDS, start - (grace - 1) * GRACE_SECONDS
        else:
            end = float(seconds(end_q))
            factor = min([SHORTEN[a] for a in articulations if a in SHORTEN], default=1.0)
            end = start + max(MIN_NOTE_SECONDS, (end - start) * factor)
        notes.append(Note(pitch, start, end, int(min(127, max(1, round(velocity))))))
    shift = -min(0.0, min(n.start_s for n in notes))  # grace notes before the first beat
    for n in notes:
        n.start_s, n.end_s = n.start_s + shift, n.end_s + shift
    notes.sort(key=lambda n: (n.start_s, n.pitch))
    end_s = max(n.end_s for n in notes)
    sustain = _sustain_curve([(s, e) for s, e, d in directions if isinstance(d, ps.SustainPedalDirection)], seconds, shift, end_s)
    pedals = {"sustain": sustain, "sostenuto": PedalCurve(np.zeros(0), np.zeros(0)), "soft": PedalCurve(np.zeros(0), np.zeros(0))}
    if len(sustain.times_s):
        end_s = max(end_s, float(sustain.times_s[-1]))
    warnings_ = [f"{name}: dropped {out_of_range} note(s) outside the piano's A0..C8"] if out_of_range else []
    return Performance(notes, pedals, end_s, out_of_range=out_of_range, warnings=warnings_)


def _quarter_bpm(tempo) -> float:
    """A partitura Tempo (a rate of its unit, a quarter when none) in quarter notes per minute."""
    from partitura.utils.music import to_quarter_tempo

    return float(to_quarter_tempo(tempo.unit or "q", tempo.bpm))


def _quarters_per_beat(beats: int, beat_type: int) -> float:
    """The beat that tempo words count, in quarters (see TEMPO_WORDS)."""
    if beat_type >= 8 and beats in (6, 9, 12):
        return 3 * 4 / beat_type  # compound meter: a dotted beat
    return 4 / beat_type if beat_type >= 4 else 1.0


def tempo_word_bpm(text: str) -> float | None:
    """Beats per minute of a tempo word (``TEMPO_WORDS``), or None: "Allegro molto" -> 132."""
    text = text.lower()
    for word in sorted(TEMPO_WORDS, key=len, reverse=True):
        if re.search(rf"\b{word}\b", text):
            return float(TEMPO_WORDS[word])
    return None


def tempo_map(tempos: list, meters: list, directions: list, bpm: float | None = None):
    """Score time in quarters -> seconds.

    Args:
        tempos: (quarter, quarter notes per minute) of the score's metronome marks.
        meters: (quarter, quarters per beat) of its time signatures, for tempo words.
        directions: (start quarter, end quarter or None, partitura Direction), sorted by start.
        bpm: if given, this many quarters per minute throughout, and the rest is ignored.

    Returns:
        seconds(q): a function of a float or an array of quarters (np.interp-like, extrapolated
        at the last tempo).
    """
    from partitura import score as ps

    if bpm is not None:
        return lambda q: np.asarray(q, dtype=np.float64) * 60.0 / bpm
    meters = sorted(meters) or [(0.0, 1.0)]

    def beat_at(q: float) -> float:
        i = max(0, np.searchsorted([m[0] for m in meters], q, side="right") - 1)
        return meters[i][1]

    # events: (q, order, kind, value); metronome marks first at equal q, so they win over words
    events: list[tuple[float, int, str, float]] = [(q, 0, "set", v) for q, v in tempos]
    marked = {round(q, 6) for q, _ in tempos}
    for q, end, d in directions:
        if isinstance(d, ps.ResetTempoDirection):
            first_tempo = re.search(r"tempo\s*(i|1|primo)\b", d.text.lower())  # Tempo I; else "a tempo"
            events.append((q, 1, "first" if first_tempo else "reset", 0.0))
        elif isinstance(d, ps.ConstantTempoDirection):
            word = tempo_word_bpm(d.text + " " + (d.raw_text or ""))
            if word is not None and round(q, 6) not in marked:
                events.append((q, 1, "set", word * beat_at(q)))
        elif isinstance(d, (ps.DecreasingTempoDirection, ps.IncreasingTempoDirection)) and round(q, 6) not in marked:
            # (a metronome mark or <sound tempo> at the same place is the engraver's own reading of it)
            factor = RITARDANDO if isinstance(d, ps.DecreasingTempoDirection) else ACCELERANDO
            events.append((q, 2, "ramp", factor if end is None or end <= q else -factor))  # sign: has its own end
            if end is not None and end > q:
                events.append((end, 3, "end", 0.0))
    events.sort(key=lambda e: (e[0], e[1]))
    # piecewise-linear tempo as (q0, q1, bpm0, bpm1) pieces, then integrated
    pieces: list[tuple[float, float, float, float]] = []
    cur = first = base = DEFAULT_BPM
    seen_first = False
    changes = [e[0] for e in events if e[2] != "end"]  # a ramp stops where the next change starts
    for i, (q, _, kind, value) in enumerate(events):
        if kind in ("set", "reset", "first"):
            if kind == "set":
                cur = base = value
                if not seen_first:
                    first, seen_first = value, True
            else:
                cur = base if kind == "reset" else first
            pieces.append((q, q, cur, cur))
        elif kind == "ramp":
            nxt = next((s for s in changes if s > q), math.inf)
            if value < 0:  # its own end
                end = next(e[0] for e in events[i + 1 :] if e[2] == "end")
            else:
                end = q + RAMP_QUARTERS
            end = min(end, nxt)
            target = cur * abs(value)
            pieces.append((q, end, cur, target))
            cur = target
    knots_q = [0.0]
    knots_bpm = [DEFAULT_BPM]
    for q0, q1, b0, b1 in pieces:
        knots_q += [q0, q1] if q1 > q0 else [q0]
        knots_bpm += [b0, b1] if q1 > q0 else [b0]
    # integrate 60 / bpm(q) on a fine grid: steps hold, ramps are linear in q
    grid = [knots_q[0]]
    rates = []
    for (qa, ba), (qb, bb) in zip(zip(knots_q, knots_bpm), zip(knots_q[1:], knots_bpm[1:])):
        if qb <= qa:
            continue
        ramp = bb != ba and any(p[0] == qa and p[1] == qb for p in pieces)
        steps = 32 if ramp else 1
        for k in range(steps):
            mid = ba + (bb - ba) * (k + 0.5) / steps if ramp else ba
            grid.append(qa + (qb - qa) * (k + 1) / steps)
            rates.append(60.0 / mid)
    final_rate = 60.0 / (knots_bpm[-1] if knots_bpm else DEFAULT_BPM)
    grid_q = np.array(grid)
    rates_a = np.array(rates + [final_rate])  # seconds per quarter from each grid point on
    cum = np.concatenate([[0.0], np.cumsum(np.diff(grid_q) * rates_a[:-1])])

    def seconds(q):
        q = np.asarray(q, dtype=np.float64)
        i = np.clip(np.searchsorted(grid_q, q, side="right") - 1, 0, len(grid_q) - 1)
        return cum[i] + (q - grid_q[i]) * rates_a[i]

    return seconds


def velocity_map(directions: list, onsets_q: np.ndarray) -> dict[float, float]:
    """The dynamic level (MIDI velocity, before accents) at each onset, in quarters.

    Marks set the level; a crescendo or diminuendo ramps linearly over its span to the mark
    that ends it (a mark within a quarter after its end), or by HAIRPIN_STEP without one;
    sforzando-like marks (``IMPULSIVE``) raise the first chord at or after them.
    """
    from partitura import score as ps

    # pieces: (q0, q1, level0, level1) in order; a mark is a piece with q0 == q1
    pieces: list[tuple[float, float, float, float]] = []
    impulses: list[tuple[float, float]] = []  # (q, velocity added)
    level = float(DEFAULT_VELOCITY)
    marks = [(q, DYNAMICS[_mark(d)]) for q, _, d in directions if isinstance(d, ps.ConstantLoudnessDirection) and _mark(d) in DYNAMICS]
    for q, end, d in directions:
        if isinstance(d, ps.ConstantLoudnessDirection) and _mark(d) in DYNAMICS:
            level = float(DYNAMICS[_mark(d)])
            pieces.append((q, q, level, level))
        elif isinstance(d, ps.ImpulsiveLoudnessDirection) and _mark(d) in IMPULSIVE:
            add, after = IMPULSIVE[_mark(d)]
            impulses.append((q, add))
            if after is not None:
                level = float(DYNAMICS[after])
                pieces.append((q, q, level, level))
        elif isinstance(d, (ps.IncreasingLoudnessDirection, ps.DecreasingLoudnessDirection)):
            up = isinstance(d, ps.IncreasingLoudnessDirection)
            stop = end if end is not None and end > q else q + HAIRPIN_QUARTERS
            following = [v for mq, v in marks if q < mq <= stop + 1.0]
            target = following[0] if following and (following[0] > level) == up else level + (HAIRPIN_STEP if up else -HAIRPIN_STEP)
            target = min(float(DYNAMICS["fff"]), max(float(DYNAMICS["ppp"]), target))  # hairpins stay within ppp..fff
            pieces.append((q, stop, level, target))
            level = target
    starts = np.array([p[0] for p in pieces])
    out: dict[float, float] = {}
    for q in onsets_q:
        i = int(np.searchsorted(starts, q, side="right")) - 1
        if i < 0:
            v = float(DEFAULT_VELOCITY)
        else:
            q0, q1, a, b = pieces[i]
            v = a + (b - a) * (q - q0) / (q1 - q0) if q1 > q0 and q < q1 else b
        out[float(q)] = v
    for q, add in impulses:  # the first chord at or after the mark
        j = int(np.searchsorted(onsets_q, q - 1e-9, side="left"))
        if j < len(onsets_q):
            out[float(onsets_q[j])] += add
    return out


def _mark(direction) -> str:
    return (direction.text or "").strip().lower()


def _sustain_curve(spans: list, seconds, shift: float, end_s: float) -> PedalCurve:
    """Pedal marks (start q, end q or None) -> a sustain curve of 1.0 (down) and 0.0 (up)."""
    times: list[float] = []
    values: list[float] = []
    spans = sorted((float(seconds(s)) + shift, float(seconds(e)) + shift if e is not None else end_s) for s, e in spans)
    for down, up in spans:
        if times and down <= times[-1] + 1e-9:  # restarted where (or before) the last one ends: a change
            times[-1] = min(times[-1], down)
            down = times[-1] + PEDAL_CHANGE_SECONDS
        if up <= down:
            continue
        times += [down, up]
        values += [1.0, 0.0]
    return PedalCurve(np.array(times, dtype=np.float64), np.array(values, dtype=np.float64))
