"""Reads and renders the test split's MusicXML scores with a model (issue 13, docs/scores.md).

For every piece of the test split in ../shared/data/asap/splits.csv that has an
``xml_score.musicxml``, the score is read as ``pianosynth synthesize`` reads it
(``synthesize.read_performance``: partitura, repeats unfolded, tempo and dynamics from the marks)
and synthesized with the model to ``--out``. A failure is recorded with its one-line reason and
the run goes on. The table goes between the ``scores`` markers of docs/scores.md (``--block``).

    python benchmarks/scores.py --out /tmp/scores                  # the shipped model
    python benchmarks/scores.py --out /tmp/scores --no-render      # reading only
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_block import replace_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asap", default=str(ROOT.parent / "shared" / "data" / "asap"), help="the ASAP folder with splits.csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True, help="folder for the audio (one .flac per piece)")
    parser.add_argument("--model", default=None, help="checkpoint or shipped model name (default: the shipped model)")
    parser.add_argument("--no-render", action="store_true", help="read the scores only")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "scores.md"))
    parser.add_argument("--block", default="scores", help="the marked block of --doc to rewrite")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    import torch

    import pianosynth
    from pianosynth.midi import MidiError
    from pianosynth.synthesize import read_performance

    torch.set_num_threads(1)
    asap, out = Path(args.asap), Path(args.out)
    rows = list(csv.DictReader((asap / "splits.csv").open()))
    pieces = sorted({r["piece"] for r in rows if r["split"] == args.split})
    performed = {p: np.median([float(r["seconds"]) for r in rows if r["piece"] == p]) for p in pieces}
    synth = None if args.no_render else pianosynth.load(args.model, threads=1)
    lines = ["| piece | read | notes | score length (s) | performances' median (s) | velocities | sustain-pedal presses | rendered | notes |",
             "| --- | --- | ---: | ---: | ---: | --- | ---: | --- | --- |"]  # fmt: skip
    ok_read = ok_render = 0
    t_all = time.perf_counter()
    for piece in pieces:
        score = asap / piece / "xml_score.musicxml"
        t0 = time.perf_counter()
        try:
            perf = read_performance(score)
        except (MidiError, OSError) as e:
            lines.append(f"| {piece} | **failed** ({time.perf_counter() - t0:.0f} s) | | | {performed[piece]:.0f} | | | | {str(e).replace(str(score), 'score')} |")
            print(piece, "read failed:", e, flush=True)
            continue
        read_s = time.perf_counter() - t0
        ok_read += 1
        vel = np.array([n.velocity for n in perf.notes])
        presses = int(np.sum(perf.pedals["sustain"].values > 0.5))
        notes = "; ".join(w.replace(str(score), "score") for w in perf.warnings)
        rendered = "—"
        if synth is not None:
            target = out / (piece.replace("/", "_") + ".flac")
            try:
                result = synth.render_to_file(score, target, force=True)
                ok_render += 1
                rendered = f"yes, {result.seconds:.0f} s in {result.compute_seconds:.0f} s"
                notes = "; ".join(w.replace(str(score), "score") for w in result.messages + result.warnings)
            except Exception as e:  # noqa: BLE001 - any failure is a finding to record
                rendered = f"**failed**: {type(e).__name__}: {e}"
        lines.append(
            f"| {piece} | yes ({read_s:.0f} s) | {len(perf.notes)} | {perf.end_s:.0f} | {performed[piece]:.0f} | "
            f"{vel.min()}–{vel.max()} (mean {vel.mean():.0f}) | {presses} | {rendered} | {notes} |"
        )
        print(lines[-1], flush=True)
    body = (
        f"{len(pieces)} {args.split}-split pieces; {ok_read} read, "
        + (f"{ok_render} rendered by `pianosynth.load({args.model!r})` (the notes say where it chose a model)" if synth is not None else "rendering skipped")
        + f"; {time.perf_counter() - t_all:.0f} s in all (one CPU thread).\n\n" + "\n".join(lines)
    )
    print(body)
    if not args.no_doc:
        replace_block(Path(args.doc), args.block, body)
    return 0 if ok_read == len(pieces) else 1


if __name__ == "__main__":
    sys.exit(main())
