"""A bounded, seeded MIDI mutator for the fuzz tests (tests/test_fuzz.py) and benchmarks/fuzz.py.

``mutate(seed_bytes, rng)`` applies 1 to 3 mutations chosen by ``rng``: byte and bit changes,
insertions, deletions, duplicated ranges, truncation, and the header and event fields that decide
how long and how dense a file is (division, tempo, delta times, note-on bursts). Every case is a
pure function of its seed, so a failure is reproduced by its number.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import mido
import numpy as np

MAX_BYTES = 1 << 16  # mutated files stay below 64 KiB
# how often each mutation kind is drawn (see mutate): the structural ones (division, tempo, delta
# times, bursts) more often, since random bytes mostly make files mido refuses outright
KIND_WEIGHTS = [0.08, 0.08, 0.04, 0.04, 0.04, 0.04, 0.17, 0.17, 0.17, 0.17]


def seed_files() -> list[bytes]:
    """Small valid MIDI files: the starting points of the mutations."""
    from pianosynth.examples import generate_piece
    from pianosynth.midi import write_midi

    out = []
    # a generated piece (notes, pedals) written by the project's own writer
    perf = generate_piece(seed=0, bars=1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seed.mid"
        write_midi(perf, path)
        out.append(path.read_bytes())
    # a type-1 file with a tempo map, two tracks, pedals, a drum note and running status
    mid = mido.MidiFile(type=1, ticks_per_beat=480)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0), mido.MetaMessage("set_tempo", tempo=400000, time=960)])
    notes = mido.MidiTrack()
    for i, pitch in enumerate((60, 64, 67, 72)):
        notes.append(mido.Message("note_on", note=pitch, velocity=90, time=0 if i == 0 else 120))
        notes.append(mido.Message("control_change", control=64, value=127 if i % 2 else 0, time=10))
        notes.append(mido.Message("note_on", note=pitch, velocity=0, time=240))
    notes.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
    notes.append(mido.Message("note_off", channel=9, note=36, velocity=0, time=100))
    mid.tracks += [meta, notes]
    buf = io.BytesIO()
    mid.save(file=buf)
    out.append(buf.getvalue())
    return out


def vlq(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """1 to 3 random mutations of ``data``; the result is at most MAX_BYTES long."""
    b = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.choice(10, p=KIND_WEIGHTS))
        n = len(b)
        if n == 0:
            b += bytes(rng.integers(0, 256, 8, dtype=np.uint8))
            continue
        i = int(rng.integers(0, n))
        if kind == 0:  # flip a bit
            b[i] ^= 1 << int(rng.integers(0, 8))
        elif kind == 1:  # set a byte to an interesting or a random value
            b[i] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF, 0x90, 0xB0, 0xFF, int(rng.integers(0, 256))]))
        elif kind == 2:  # insert random bytes
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
        elif kind == 3:  # delete a range
            del b[i : i + int(rng.integers(1, 16))]
        elif kind == 4:  # duplicate a range
            j = min(n, i + int(rng.integers(1, 64)))
            b[j:j] = b[i:j]
        elif kind == 5:  # truncate
            del b[i:]
        elif kind == 6 and n >= 14:  # header division: small, zero or SMPTE
            b[12:14] = int(rng.choice([0, 1, 2, 3, 0x7FFF, 0x8000, 0xE728, int(rng.integers(0, 65536))])).to_bytes(2, "big")
        elif kind == 7:  # a tempo event's value
            k = b.find(b"\xff\x51\x03")
            if k >= 0 and k + 6 <= n:
                b[k + 3 : k + 6] = int(rng.choice([0, 1, 0xFFFFFF, int(rng.integers(0, 1 << 24))])).to_bytes(3, "big")
        elif kind == 8:  # a huge delta time before an event
            b[i:i] = vlq(int(rng.choice([0x0FFFFFFF, 9_999_000, int(rng.integers(0, 1 << 28))])))
        else:  # a burst of note-ons (running status) at one instant
            count = int(rng.choice([int(rng.integers(1, 400)), 5280]))
            k = b.find(b"MTrk")
            if k >= 0 and k + 8 <= n:
                burst = b"\x00\x90" + b"".join(bytes([0, 21 + (j % 88), 1 + (j % 127)]) for j in range(count))[1:]
                b[k + 8 : k + 8] = burst
                length = int.from_bytes(b[k + 4 : k + 8], "big") + len(burst)
                b[k + 4 : k + 8] = min(length, 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b[:MAX_BYTES])


def outcome_class(message: str) -> str:
    """A refusal's reason without the file name and numbers, to count outcomes by kind."""
    import re

    reason = message.split(": ", 1)[-1]
    reason = re.sub(r"\(.*", "", reason)
    return re.sub(r"[0-9][0-9.]*", "N", reason).strip()


def features_case(data: bytes, path, features_cfg) -> str:
    """The fuzz target below synthesis: read_midi, compute_features, compute_notes on one file.
    Returns "ok" or "refused: <class>"; any exception but MidiError propagates."""
    from pianosynth.features import compute_features, compute_notes
    from pianosynth.midi import MidiError, read_midi

    path.write_bytes(data)
    try:
        perf = read_midi(path)
    except MidiError as e:
        return "refused: " + outcome_class(str(e))
    x = compute_features(perf, features_cfg)  # (frames, channels)
    notes = compute_notes(perf, features_cfg, len(x) * features_cfg.hop_samples)
    assert x.shape == (len(x), features_cfg.n_channels) and np.isfinite(x).all()
    assert notes.ndim == 2 and (notes[:, 3] >= notes[:, 2]).all()
    return "ok"


# ---------------------------------------------------------------------------------------------
# Scores (issue 20): MusicXML, .mxl, MEI and **kern seeds and text-aware mutations
# ---------------------------------------------------------------------------------------------

SCORE_VALUES = ["0", "-1", "1e9", "inf", "nan", "", "abc", "99999999999999999999", "0.0001", "4", "960", "-0"]
SCORE_TAGS = [
    '<repeat direction="backward"/>', '<repeat direction="forward"/>', '<sound tempo="0"/>', '<sound tempo="1e9"/>',
    '<sound tempo="inf"/>', '<tie type="start"/>', "<grace/>", "<chord/>", "<dot/>", "<rest/>", '<ending number="1" type="start"/>',
    "<divisions>0</divisions>", "<duration>0</duration>", "<duration>100000</duration>", "<beat-type>0</beat-type>",
    '<pedal type="start"/>', '<wedge type="crescendo"/>', "<words>rit.</words>", "<alter>99</alter>", "<octave>40</octave>",
]  # fmt: skip
KERN_TOKENS = ["*^", "*v", "*MM0", "*MM1e9", "*MMinf", "0c", "1000000c", "4cc#-", "=", "==", "*-", "!!", "4r", "*M0/0", "q", "."]


def score_seeds() -> list[tuple[str, bytes]]:
    """Small valid scores, (suffix, bytes): MusicXML (repeat, tie, chord, grace, dynamics, tempo,
    pedal), the same compressed, MEI written by partitura, and a two-spine **kern."""
    from test_scores import REPEAT_END, dynamics, metronome, musicxml, note, pedal, wedge, words

    xml = musicxml([
        metronome(96) + dynamics("p") + pedal("start") + note("C4", 1) + note("E4", 1, accent=True) + note("G4", 1, chord=True) + note("G4", 2) + pedal("stop") + REPEAT_END,
        wedge("crescendo") + note("A4", 4, tie="start"),
        wedge("stop") + dynamics("f") + words("rit.") + note("A4", 2, tie="stop") + note("B4", 1, grace=True) + note("B4", 2, staccato=True),
    ]).encode()  # fmt: skip
    seeds = [(".musicxml", xml), (".mxl", xml)]  # .mxl: the XML is mutated, then zipped (mxl_bytes)
    import partitura

    with tempfile.TemporaryDirectory() as tmp:  # MEI as partitura writes it (every element with its xml:id)
        (Path(tmp) / "s.musicxml").write_bytes(xml)
        partitura.save_mei(partitura.load_score(str(Path(tmp) / "s.musicxml")), str(Path(tmp) / "s.mei"))
        mei = (Path(tmp) / "s.mei").read_bytes()
    seeds.append((".mei", mei))
    kern = b"**kern\t**kern\n*M4/4\t*M4/4\n*MM60\t*MM60\n=1\t=1\n4c\t4CC\n4e\t4GG\n2g\t2C\n==\t==\n*-\t*-\n"
    seeds.append((".krn", kern))
    return seeds


def mxl_bytes(xml: bytes) -> bytes:
    """A compressed MusicXML file holding ``xml`` as its root score."""
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/container.xml", '<?xml version="1.0"?><container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>')
        zf.writestr("score.xml", xml)
    return buf.getvalue()


def mutate_score(suffix: str, data: bytes, rng: np.random.Generator) -> bytes:
    """1 to 3 mutations of a score's text that keep it mostly well-formed (values, tags,
    duplicated elements, deleted ranges) or break it (bytes, truncation); .mxl is zipped after,
    now and then with its XML blown up to test the unpacked limit."""
    b = bytearray(data)
    kern = suffix in (".krn", ".kern")
    for _ in range(int(rng.integers(1, 4))):
        kind = int(rng.integers(0, 8))
        n = len(b)
        if n == 0:
            b += b"<a/>"
            continue
        i = int(rng.integers(0, n))
        if kind == 0:  # a number or attribute value replaced by an interesting one
            import re

            spots = [m.span() for m in re.finditer(rb'(?<=>)[^<>]{1,12}(?=<)|(?<==")[^"]{0,12}(?=")' if not kern else rb"[0-9]+", bytes(b))]
            if spots:
                lo, hi = spots[int(rng.integers(len(spots)))]
                b[lo:hi] = SCORE_VALUES[int(rng.integers(len(SCORE_VALUES)))].encode()
        elif kind == 1:  # a tag or token inserted at a tag boundary (or a line start)
            sep = b"\n" if kern else b">"
            j = b.find(sep, i)
            token = (KERN_TOKENS if kern else SCORE_TAGS)[int(rng.integers(len(KERN_TOKENS if kern else SCORE_TAGS)))].encode()
            if j >= 0:
                b[j + 1 : j + 1] = token + (b"\t" * int(rng.integers(0, 3)) + b"\n" if kern else b"")
        elif kind == 2:  # an element (or line) repeated many times
            if kern:
                lo = b.rfind(b"\n", 0, i) + 1
                hi = b.find(b"\n", i) + 1 or n
                b[hi:hi] = b[lo:hi] * int(rng.choice([2, 10, 200, 2000]))
            else:
                lo = b.find(b"<note>", i)
                hi = b.find(b"</note>", lo) + len(b"</note>") if lo >= 0 else -1
                if lo >= 0 and hi > lo:
                    b[hi:hi] = b[lo:hi] * int(rng.choice([2, 10, 200, 2000]))
        elif kind == 3 and kern:  # spines widened
            b = bytearray(b"\n".join(line + b"\t" + line for line in bytes(b).split(b"\n")))
        elif kind == 3:  # a measure repeated with its repeat barline
            lo = b.find(b"<measure", i)
            hi = b.find(b"</measure>", lo) + len(b"</measure>") if lo >= 0 else -1
            if lo >= 0 and hi > lo:
                b[hi:hi] = b[lo:hi] * int(rng.choice([2, 20, 100]))
        elif kind == 4:  # delete a range
            del b[i : i + int(rng.integers(1, 64))]
        elif kind == 5:  # truncate
            del b[i:]
        elif kind == 6:  # flip a byte
            b[i] = int(rng.integers(0, 256))
        else:  # insert random bytes
            b[i:i] = bytes(rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8))
    out = bytes(b[: 4 * MAX_BYTES])
    if suffix == ".mxl":
        if rng.random() < 0.02:  # a zip bomb: ~100 kB that unpack past the 64 MiB limit
            import zipfile

            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr("META-INF/container.xml", '<?xml version="1.0"?><container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>')
                with zf.open("score.xml", "w") as f:
                    chunk = b"<a/>" * (1 << 18)
                    for _ in range(70):
                        f.write(chunk)
            return buf.getvalue()
        out = mxl_bytes(out) if rng.random() < 0.9 else bytes(mutate(mxl_bytes(out), rng))
    return out


def score_case(suffix: str, data: bytes, folder, features_cfg, limits=None) -> str:
    """read_score (under ``limits``, default ``midi.Limits()``) -> features -> notes on one mutated
    score; "ok" or "refused: <class>"; any exception but MidiError (ScoreError is one) propagates."""
    from pianosynth.features import compute_features, compute_notes
    from pianosynth.midi import MidiError
    from pianosynth.scores import read_score

    path = folder / f"case{suffix}"
    path.write_bytes(data)
    try:
        perf = read_score(path, limits=limits)
    except MidiError as e:
        return "refused: " + outcome_class(str(e))
    x = compute_features(perf, features_cfg)
    notes = compute_notes(perf, features_cfg, len(x) * features_cfg.hop_samples)
    assert np.isfinite(x).all() and (notes[:, 3] >= notes[:, 2]).all()
    return "ok"


# ---------------------------------------------------------------------------------------------
# The API's object inputs and options
# ---------------------------------------------------------------------------------------------

ODD_NUMBERS = [float("nan"), float("inf"), -float("inf"), -1, -0.5, 0, 1e6, 1e12, 127, 128, 1000, True, "x", None, 2.5, 10**30]


def api_input(rng: np.random.Generator, seeds: list[bytes]):
    """An input for ``Synth.render`` of any type: plain odd values, mutated MIDI bytes, a
    PrettyMIDI or a mido.MidiFile with odd field values. -> (input, options)"""
    import pretty_midi

    def odd():
        return ODD_NUMBERS[int(rng.integers(len(ODD_NUMBERS)))]

    kind = int(rng.integers(0, 6))
    if kind == 0:
        obj = [None, 12, 3.5, [], {}, b"", "", "no\0such.mid", object(), np.zeros(3), "/nonexistent/x.mid"][int(rng.integers(11))]
    elif kind == 1:
        obj = mutate(seeds[int(rng.integers(len(seeds)))], rng)
    elif kind in (2, 3):
        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=int(rng.integers(0, 128)) if rng.random() < 0.9 else odd())
        for _ in range(int(rng.integers(0, 6))):
            start = float(rng.uniform(0, 3))
            n = pretty_midi.Note(velocity=int(rng.integers(1, 128)), pitch=int(rng.integers(21, 109)), start=start, end=start + float(rng.uniform(0.05, 1)))
            if rng.random() < 0.5:  # set after construction: pretty_midi's constructor checks only end >= start
                setattr(n, str(rng.choice(["start", "end", "pitch", "velocity"])), odd())
            inst.notes.append(n)
        if rng.random() < 0.3:
            inst.control_changes.append(pretty_midi.ControlChange(number=64, value=odd() if rng.random() < 0.5 else 127, time=float(rng.uniform(0, 2))))
        inst.is_drum = bool(rng.random() < 0.05)
        pm.instruments.append(inst)
        obj = pm
    elif kind == 4:
        mid = mido.MidiFile(ticks_per_beat=int(rng.choice([1, 96, 480])))
        track = mido.MidiTrack()
        for _ in range(int(rng.integers(0, 8))):
            msg = mido.Message("note_on", note=int(rng.integers(21, 109)), velocity=int(rng.integers(0, 128)), time=int(rng.integers(0, 500)))
            if rng.random() < 0.2:  # past mido's own check of the field
                msg.__dict__[str(rng.choice(["time", "note", "velocity", "channel"]))] = odd()
            track.append(msg)
        mid.tracks.append(track)
        obj = mid
    else:
        obj = seeds[int(rng.integers(len(seeds)))]  # valid bytes, odd options
    options = {}
    if rng.random() < 0.5:
        key = str(rng.choice(["channels", "sample_rate", "loudness", "gain_db", "peak", "chunk_seconds", "context_seconds", "bpm", "max_seconds"]))
        options[key] = odd()
    return obj, options


# ---------------------------------------------------------------------------------------------
# The page's endpoints
# ---------------------------------------------------------------------------------------------

PAGE_NAMES = ["tune.mid", "Шопен — ноктюрн.mid", "夜.mid", 'q"uote.mid', "a;b.mid", "x" * 300 + ".mid", "s.musicxml", "s.mxl", "s.krn", "s.mei", ""]


def page_case(client, rng: np.random.Generator, seeds: list[bytes], scores: list[tuple[str, bytes]]) -> str:
    """One request to the page (``serve.create_app`` through Starlette's test client, its upload
    limit 64 KiB): -> "<status>", or "UNEXPECTED ..." for a 500 or an error that is not one JSON line."""
    method = "POST" if rng.random() < 0.8 else str(rng.choice(["GET", "PUT", "DELETE", "OPTIONS"]))
    path = "/api/render" if rng.random() < 0.7 else str(rng.choice(["/", "/api/models", "/nope", "/api/render/x", "/%ff"]))
    headers = {}
    if rng.random() < 0.2:  # another site's request, or DNS rebinding: refused
        headers["Host"] = str(rng.choice(["evil.example", "localhost:8000", "127.0.0.1:9", "[::1]:8000", ""]))
    if rng.random() < 0.3:
        headers["Origin"] = str(rng.choice(["http://127.0.0.1:8000", "http://127.0.0.1:8000", "http://evil.example", "null", "file://"]))
    kind = int(rng.integers(0, 6))
    kw = {}
    if kind <= 2:  # an upload: mutated MIDI or score, named anything
        name = PAGE_NAMES[int(rng.integers(len(PAGE_NAMES)))]
        if name.endswith((".musicxml", ".mxl", ".krn", ".mei")):
            suffix = "." + name.rsplit(".", 1)[1]
            seed = next(d for s, d in scores if s == suffix)
            data = mutate_score(suffix, seed, rng)
        else:
            data = mutate(seeds[int(rng.integers(len(seeds)))], rng)
        kw["files"] = {"midi": (name, data, "application/octet-stream")}
        kw["data"] = {"model": str(rng.choice(["tiny", "tiny", "nope", ""]))}
    elif kind == 3:  # form fields only
        kw["data"] = {str(rng.choice(["example", "model", "midi", "x"])): str(rng.choice(["0", "3", "4", "-1", "x", "", "１"]))}
    elif kind == 4:  # over the upload limit
        kw["files"] = {"midi": ("big.mid", bytes(int(rng.integers(65537, 300_000))), "audio/midi")}
    else:  # a broken body
        kw["content"] = bytes(rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8))
        headers["Content-Type"] = str(rng.choice(["multipart/form-data; boundary=x", "multipart/form-data", "application/json", "text/plain"]))
    r = client.request(method, path, headers=headers, **kw)
    if r.status_code >= 500:
        return f"UNEXPECTED {r.status_code}: {r.text[:200]}"
    if r.status_code >= 400 and r.headers.get("content-type", "").startswith("application/json"):
        message = r.json().get("error", "")
        if not message or "\n" in message:
            return f"UNEXPECTED {r.status_code} without a one-line error: {r.text[:200]}"
    return str(r.status_code)
