"""Pedal behaviour of a model against the reference (FluidSynth, FluidR3), on MIDI made for it (issue 13).

Each case is a few notes and controller events, written once as MIDI (``midi.write_midi``) and
rendered twice: by the reference (``render.render``, as ``prepare`` renders its targets) and by
the model (``Synth.render`` at the model's own level, ``loudness=None``). The level of each
render is measured in fixed windows (mean square, in dB relative to full scale) and the two are
tabled side by side in docs/pedals.md (the block between the ``pedals`` markers).

    python benchmarks/pedals.py                       # the shipped model, writes docs/pedals.md
    python benchmarks/pedals.py --model runs/x/best.pt --no-doc
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_block import replace_block  # noqa: E402

from pianosynth.config import FeatureConfig, RenderConfig  # noqa: E402
from pianosynth.features import n_frames_for  # noqa: E402
from pianosynth.midi import Note, PedalCurve, Performance, write_midi  # noqa: E402

KEY, VELOCITY = 60, 80  # C4, mezzo-forte
END_S = 4.5  # every case lasts this long (a soft-pedal "0" event there), so every window fits
FLOOR_DB = -120.0  # the level of digital silence in the tables


@dataclass
class Case:
    name: str
    what: str  # the events, in words
    notes: list[tuple[int, float, float, int]]  # (key, start s, end s, velocity)
    pedals: dict[str, list[tuple[float, int]]]  # pedal -> [(time s, CC value 0..127)]
    windows: list[tuple[str, float, float]]  # (label, start s, end s)

    def performance(self) -> Performance:
        curves = {p: PedalCurve(np.zeros(0), np.zeros(0)) for p in ("sustain", "sostenuto", "soft")}
        events = {**self.pedals, "soft": self.pedals.get("soft", []) + [(END_S, 0)]}
        for pedal, ev in events.items():
            curves[pedal] = PedalCurve(np.array([t for t, _ in ev], float), np.array([v / 127 for _, v in ev], float))
        return Performance([Note(k, s, e, v) for k, s, e, v in self.notes], curves, END_S)


def cases() -> list[Case]:
    """The cases of docs/pedals.md. A note of KEY at VELOCITY, 0-1 s unless said."""
    one = [(KEY, 0.0, 1.0, VELOCITY)]
    after_off = ("0.3-1.2 s after note-off", 1.3, 2.2)
    after_lift = ("0.3-1.2 s after pedal-up", 3.3, 4.2)
    attack = ("attack, 0.05-0.3 s", 0.05, 0.3)
    out = [
        Case("no pedal", "note 0-1 s", one, {}, [attack, after_off]),
        Case("sustain", "note 0-1 s; CC64 127 at 0.5 s, 0 at 3.0 s", one, {"sustain": [(0.5, 127), (3.0, 0)]}, [after_off, after_lift]),
    ]
    for v in (32, 63, 64, 96, 127):
        out.append(Case(f"half pedal {v}", f"note 0-1 s; CC64 {v} at 0.5 s, 0 at 3.0 s", one, {"sustain": [(0.5, v), (3.0, 0)]}, [after_off]))
    out += [
        Case("sostenuto, key down at the press", "note 0-1 s; CC66 127 at 0.5 s, 0 at 3.0 s", one,
             {"sostenuto": [(0.5, 127), (3.0, 0)]}, [after_off, after_lift]),
        Case("sostenuto, key struck after the press", "CC66 127 at 0.5 s; note 1.0-2.0 s; CC66 0 at 4.0 s",
             [(KEY, 1.0, 2.0, VELOCITY)], {"sostenuto": [(0.5, 127), (4.0, 0)]}, [("0.3-1.2 s after note-off", 2.3, 3.2)]),
        Case("no pedal, struck at 1 s", "note 1.0-2.0 s (for the row above)", [(KEY, 1.0, 2.0, VELOCITY)], {},
             [("0.3-1.2 s after note-off", 2.3, 3.2)]),
        Case("soft pedal off", "notes C3, C4, C5 at velocity 40, 80, 110, 0.5 s each", [(48, 0.1, 0.6, 40), (60, 0.6, 1.1, 80), (72, 1.1, 1.6, 110)],
             {}, [("0.1-1.8 s", 0.1, 1.8)]),
        Case("soft pedal on", "the same with CC67 127 from 0 s", [(48, 0.1, 0.6, 40), (60, 0.6, 1.1, 80), (72, 1.1, 1.6, 110)],
             {"soft": [(0.0, 127)]}, [("0.1-1.8 s", 0.1, 1.8)]),
        Case("re-strike under sustain", "CC64 127 at 0 s; note 0.1-0.5 s, again 1.0-1.4 s; CC64 0 at 3.0 s",
             [(KEY, 0.1, 0.5, VELOCITY), (KEY, 1.0, 1.4, VELOCITY)], {"sustain": [(0.0, 127), (3.0, 0)]},
             [("0.5-1.0 s (first note, pedalled)", 0.5, 1.0), ("1.05-1.3 s (re-struck)", 1.05, 1.3),
              ("1.7-2.6 s (both up, pedalled)", 1.7, 2.6), after_lift]),
        Case("single strike under sustain", "CC64 127 at 0 s; note 1.0-1.4 s; CC64 0 at 3.0 s (for the row above)",
             [(KEY, 1.0, 1.4, VELOCITY)], {"sustain": [(0.0, 127), (3.0, 0)]},
             [("1.05-1.3 s (struck)", 1.05, 1.3), ("1.7-2.6 s (up, pedalled)", 1.7, 2.6), after_lift]),
        # does the re-strike release the old voice? Strike again at velocity 1, which adds nothing
        Case("re-strike at velocity 1 under sustain", "CC64 127 at 0 s; note 0.1-0.5 s, again at velocity 1 1.0-1.4 s; CC64 0 at 3.0 s",
             [(KEY, 0.1, 0.5, VELOCITY), (KEY, 1.0, 1.4, 1)], {"sustain": [(0.0, 127), (3.0, 0)]}, [("1.7-2.6 s (both up, pedalled)", 1.7, 2.6)]),
        Case("first strike alone under sustain", "CC64 127 at 0 s; note 0.1-0.5 s; CC64 0 at 3.0 s (for the row above)",
             [(KEY, 0.1, 0.5, VELOCITY)], {"sustain": [(0.0, 127), (3.0, 0)]}, [("1.7-2.6 s (both up, pedalled)", 1.7, 2.6)]),
    ]  # fmt: skip
    return out


def level_db(audio: np.ndarray, sample_rate: int, t0: float, t1: float) -> float:
    """Mean-square level of audio[t0:t1] in dB relative to full scale (FLOOR_DB for silence)."""
    seg = np.asarray(audio[int(round(t0 * sample_rate)) : int(round(t1 * sample_rate))], dtype=np.float64)
    return max(FLOOR_DB, 10 * np.log10(np.mean(seg**2) + 1e-30)) if len(seg) else FLOOR_DB


def render_reference(perf: Performance, fc: FeatureConfig) -> np.ndarray:
    from pianosynth.render import render

    return render(perf, RenderConfig(), fc, n_frames_for(perf, fc) * fc.hop_samples)


def measure(case: Case, synth, folder: Path) -> list[tuple[str, float, float]]:
    """(window, reference dB, model dB) for each of the case's windows."""
    perf = case.performance()
    fc = synth.config.features
    ref = render_reference(perf, fc)
    midi = folder / f"{case.name.replace(' ', '_').replace(',', '')}.mid"
    write_midi(perf, midi)
    audio, sr = synth.render(midi, loudness=None)
    model = audio[0]
    return [(label, level_db(ref, fc.sample_rate, a, b), level_db(model, sr, a, b)) for label, a, b in case.windows]


def table(results: list[tuple[Case, list]]) -> str:
    rows = ["| case | events | window | reference (dB) | model (dB) | model − reference (dB) |", "| --- | --- | --- | ---: | ---: | ---: |"]
    for case, levels in results:
        for label, ref, mod in levels:
            rows.append(f"| {case.name} | {case.what} | {label} | {ref:.1f} | {mod:.1f} | {mod - ref:+.1f} |")
    return "\n".join(rows)


def effects(results: list[tuple[Case, list]]) -> str:
    """The differences that answer each question: pedal against no pedal, on against off."""
    lv = {(c.name, label): (r, m) for c, levels in results for label, r, m in levels}
    after = "0.3-1.2 s after note-off"
    rows = ["| effect | reference (dB) | model (dB) | model − reference (dB) |", "| --- | ---: | ---: | ---: |"]

    def add(what: str, a: tuple[float, float], b: tuple[float, float]) -> None:
        r, m = a[0] - b[0], a[1] - b[1]
        rows.append(f"| {what} | {r:+.1f} | {m:+.1f} | {m - r:+.1f} |")

    none = lv[("no pedal", after)]
    add("sustain: after note-off, pedal down against no pedal", lv[("sustain", after)], none)
    add("sustain: after pedal-up against after note-off without pedal", lv[("sustain", "0.3-1.2 s after pedal-up")], none)
    for v in (32, 63, 64, 96, 127):
        add(f"CC64 = {v}: after note-off, against no pedal", lv[(f"half pedal {v}", after)], none)
    add("sostenuto, key down at the press: after note-off, against no pedal", lv[("sostenuto, key down at the press", after)], none)
    add("sostenuto, key struck after the press: after note-off, against no pedal",
        lv[("sostenuto, key struck after the press", after)], lv[("no pedal, struck at 1 s", after)])  # fmt: skip
    add("soft pedal: on against off", lv[("soft pedal on", "0.1-1.8 s")], lv[("soft pedal off", "0.1-1.8 s")])
    add("re-strike under sustain: re-struck against a single strike", lv[("re-strike under sustain", "1.05-1.3 s (re-struck)")],
        lv[("single strike under sustain", "1.05-1.3 s (struck)")])  # fmt: skip
    add("re-strike under sustain: ringing after both notes, against a single strike",
        lv[("re-strike under sustain", "1.7-2.6 s (both up, pedalled)")], lv[("single strike under sustain", "1.7-2.6 s (up, pedalled)")])  # fmt: skip
    add("re-strike at velocity 1 under sustain: ringing, against the first strike alone (0: the old voice goes on)",
        lv[("re-strike at velocity 1 under sustain", "1.7-2.6 s (both up, pedalled)")],
        lv[("first strike alone under sustain", "1.7-2.6 s (both up, pedalled)")])  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fluidr3", help="checkpoint or shipped model name (default: fluidr3, the model of the FluidR3 reference these cases are measured against)")
    parser.add_argument("--doc", default=str(Path(__file__).resolve().parents[1] / "docs" / "pedals.md"), help="markdown file to update")
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    import torch

    import pianosynth

    torch.set_num_threads(1)
    synth = pianosynth.load(args.model, threads=1)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pianosynth-pedals-") as tmp:
        results = [(c, measure(c, synth, Path(tmp))) for c in cases()]
    body = (
        f"Model: `{synth.source.name}` ({synth.config.model.decoder} decoder); reference: FluidSynth with "
        f"`{Path(RenderConfig().soundfont).name}`; {synth.sample_rate} Hz; measured in {time.perf_counter() - t0:.0f} s.\n\n"
        "Levels (mean square in each window, dB relative to full scale; "
        f"{FLOOR_DB:.0f} dB is digital silence):\n\n{table(results)}\n\nEffects (differences of the levels above):\n\n{effects(results)}"
    )
    print(body)
    if not args.no_doc:
        replace_block(Path(args.doc), "pedals", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
