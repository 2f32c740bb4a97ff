"""Issue 20's hostile inputs, each in a fresh process: what answers it, its peak RSS and its time.

    PYTHONPATH=src python benchmarks/trust.py              # prints a markdown table, writes out/trust/results.json
    PYTHONPATH=src python benchmarks/trust.py --calibrate  # synthesize.chunk_bytes against measured peak RSS

Every input is built here from a few bytes (as the tests build them), then handed to the entry
point the probe used: ``Synth.render`` / ``render_to_file`` with the shipped default model (the
voices decoder), or ``read_score``. The peak is the process's ``ru_maxrss`` (imports and the
model included), so it is what a user would see; the target is <= 1.5 GB. The time is from after the
imports to the answer (building the input included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CASE = r"""
import io, json, resource, sys, time, zipfile
from pathlib import Path
import numpy as np
case, tmp, phase = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
if phase == "answer":
    import pretty_midi, partitura, pianosynth.scores, pianosynth.synthesize  # imports are not the answer's time
t0 = time.perf_counter()

def smf(track):
    return b"MThd\0\0\0\6\0\0\0\1\x01\xe0MTrk" + len(track).to_bytes(4, "big") + track

def dense_midi(rate, seconds, note_s):
    path = tmp / "dense.mid"
    if phase == "answer":
        return path  # built by the "build" run in a process of its own
    # note-ons at `rate` a second for `seconds`, each `note_s` long, one track, 480 ticks a beat at 120 bpm (960 ticks a second)
    from pianosynth.midi import Note, Performance, PedalCurve, write_midi
    n = int(rate * seconds)
    notes = [Note(21 + (i * 7) % 88, i / rate, i / rate + note_s, 80) for i in range(n)]
    empty = {k: PedalCurve(np.zeros(0), np.zeros(0)) for k in ("sustain", "sostenuto", "soft")}
    write_midi(Performance(notes, empty, seconds + note_s), path)
    print(json.dumps({"built": str(path)}))
    sys.exit(0)

def mxl_bomb(mib):
    path = tmp / "bomb.mxl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("META-INF/container.xml", '<container><rootfiles><rootfile full-path="s.xml"/></rootfiles></container>')
        with zf.open("s.xml", "w") as f:
            f.write(b"<score-partwise>")
            for _ in range(mib):
                f.write(b"<a/>" * (1 << 18))
    return path

result = {}
try:
    import pianosynth
    from pianosynth.synthesize import load
    if case.startswith("mxl"):
        from pianosynth.scores import read_score
        path = mxl_bomb(int(case[3:]))
        result["input_bytes"] = path.stat().st_size
        read_score(path)
    elif case == "kern4000":
        from pianosynth.scores import read_score
        path = tmp / "wide.krn"
        path.write_text("\t".join(["**kern"] * 4000) + "\n" + "\t".join(["4c"] * 4000) + "\n" + "\t".join(["*-"] * 4000) + "\n")
        result["input_bytes"] = path.stat().st_size
        read_score(path)
    elif case == "tempo0":
        from pianosynth.scores import read_score
        path = tmp / "t.musicxml"
        path.write_text('<score-partwise><part-list><score-part id="P1"><part-name>P</part-name></score-part></part-list><part id="P1"><measure number="1"><attributes><divisions>1</divisions></attributes><direction><direction-type><metronome><beat-unit>quarter</beat-unit><per-minute>0</per-minute></metronome></direction-type><sound tempo="0"/></direction><note><pitch><step>C</step><octave>4</octave></pitch><duration>4</duration><type>whole</type></note></measure></part></score-partwise>')
        read_score(path)
    elif case == "midi590x500":
        path = dense_midi(500, 590, 0.2)
        result["input_bytes"] = path.stat().st_size
        load("default", threads=1).render_to_file(path, tmp / "o.wav")
    elif case == "midi30x900":
        path = dense_midi(900, 30, 0.2)
        result["input_bytes"] = path.stat().st_size
        load("default", threads=1).render_to_file(path, tmp / "o.wav")
    elif case == "prettymidi1e6":
        import pretty_midi
        pm = pretty_midi.PrettyMIDI(); inst = pretty_midi.Instrument(0)
        inst.notes.append(pretty_midi.Note(velocity=80, pitch=60, start=0.0, end=1e6)); pm.instruments.append(inst)
        load("default", threads=1).render(pm)
    elif case == "normal60":  # a generated piece of about a minute: a render within the budget, for scale
        from pianosynth.examples import generate_piece
        from pianosynth.midi import write_midi
        path = tmp / "piece.mid"
        write_midi(generate_piece(seed=0, bars=30), path)
        r = load("default", threads=1).render_to_file(path, tmp / "o.wav")
        result["audio_seconds"] = round(r.seconds, 1)
    result["answer"] = "rendered" if case.startswith(("midi", "normal")) else "read"
except Exception as e:
    result["answer"] = f"{type(e).__name__}: {' '.join(str(e).split())}"
result["seconds"] = round(time.perf_counter() - t0, 1)
result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print(json.dumps(result))
"""

CALIBRATE = r"""
import resource, sys, time, numpy as np, torch
torch.set_num_threads(1)
from pianosynth.synthesize import load, chunk_bytes
from pianosynth.midi import Note, Performance, PedalCurve, write_midi, Limits
from pianosynth.features import compute_features, compute_notes
s = load("default", threads=1)
rate, secs, dur, path = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rng = np.random.default_rng(0)
starts = np.sort(rng.uniform(0, secs, int(rate * secs)))
notes = [Note(int(rng.integers(21, 109)), float(t), float(t + dur), 80) for t in starts]
perf = Performance(notes, {k: PedalCurve(np.zeros(0), np.zeros(0)) for k in ("sustain", "sostenuto", "soft")}, secs + dur)
write_midi(perf, path)
fc = s.config.features
x = compute_features(perf, fc, quantized=True)
estimate = chunk_bytes(s.model, len(x), compute_notes(perf, fc, len(x) * fc.hop_samples), round(30 * fc.frame_rate), round(2 * fc.frame_rate)) / 2**20
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s.render(path, limits=Limits(chunk_mib=1e6))
print(f"{rate:g} notes/s of {dur:g} s for {secs:g} s: estimate {estimate:.0f} MiB, peak RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024:.0f} MiB")
"""

CASES = {
    "mxl25": "a 25 kB .mxl unpacking to 25 MiB of XML elements (under the unpacked limit; the element count refuses it)",
    "mxl100": "a ~100 kB .mxl unpacking to 100 MiB (the probe's 98 KB case)",
    "kern4000": "a 52 kB **kern score with 4,000 spines",
    "tempo0": "a MusicXML score with a tempo of 0",
    "midi590x500": "590 s at 500 notes/s, 0.2 s notes (the probe's 1.8 MB MIDI)",
    "midi30x900": "30 s at 900 notes/s, 0.2 s notes",
    "prettymidi1e6": "a PrettyMIDI with one note of 10^6 s",
    "normal60": "a generated piece of 30 bars (a render within the budget, for scale)",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/trust")
    p.add_argument("--only", nargs="*", default=None, help="case names (default: all)")
    p.add_argument("--calibrate", action="store_true", help="chunk_bytes' estimate against the measured growth of peak RSS")
    args = p.parse_args()
    import tempfile

    if args.calibrate:
        for rate, secs, dur in ((100, 10, 0.2), (400, 10, 0.2), (50, 20, 2.0)):
            with tempfile.TemporaryDirectory() as tmp:
                out = subprocess.run([sys.executable, "-c", CALIBRATE, str(rate), str(secs), str(dur), f"{tmp}/p.mid"], capture_output=True, text=True, timeout=1800)
                print(out.stdout.strip() or out.stderr.strip()[-300:])
        return

    rows = []
    for name, what in CASES.items():
        if args.only and name not in args.only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            if name.startswith("midi"):  # a dense MIDI file is built in a process of its own first
                subprocess.run([sys.executable, "-c", CASE, name, tmp, "build"], capture_output=True, text=True, timeout=3600)
            t = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CASE, name, tmp, "answer"], capture_output=True, text=True, timeout=1800)
            lines = out.stdout.strip().splitlines()
            row = json.loads(lines[-1]) if lines else {"answer": f"crashed: {out.stderr.strip()[-300:]}"}
            row.update(case=name, input=what, wall_seconds=round(time.perf_counter() - t, 1))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "results.json").write_text(json.dumps(rows, indent=1))
    print("| Input | Answer | Peak RSS | Time |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['answer'][:160]} | {r.get('peak_rss_mib', '?')} MiB | {r.get('seconds', '?')} s |")


if __name__ == "__main__":
    main()
