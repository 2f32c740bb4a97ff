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
