"""What Python's garbage collector costs a whole ``pianosynth synthesize`` of the 5-minute piece
(``whole_process.py``'s: ``examples.generate_piece(seed=0, bars=120, bpm=96.0)``), and what
``gc.freeze()`` after the model is loaded would save: the command line run in this process
(``cli.main``), with ``gc.callbacks`` counting each generation's collections and timing them.

    python benchmarks/collector.py [--repeats 2]

Each repeat runs the command as it is, then with ``gc.freeze()`` called after ``synthesize.load``
returns (everything the imports and the model made taken out of the collector's passes). Not a
test: only the counts and seconds of one run are compared.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path

from pianosynth import cli, synthesize
from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    count, spent, started = [0, 0, 0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]

    def watch(phase: str, info: dict) -> None:
        g = info["generation"]
        if phase == "start":
            started[g] = time.perf_counter()
        else:
            count[g] += 1
            spent[g] += time.perf_counter() - started[g]

    load = synthesize.load

    def load_then_freeze(*a, **k):
        synth = load(*a, **k)
        gc.freeze()
        return synth

    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "piece5.mid"
        write_midi(generate_piece(seed=0, bars=120, bpm=96.0), midi)
        gc.callbacks.append(watch)
        for _ in range(args.repeats):
            for frozen in (False, True):
                count[:], spent[:] = [0, 0, 0], [0.0, 0.0, 0.0]
                synthesize.load = load_then_freeze if frozen else load
                t = time.perf_counter()
                try:
                    cli.main(["synthesize", str(midi), "-o", str(Path(tmp) / "out.wav"), "--force"])
                finally:
                    synthesize.load = load
                    gc.unfreeze()
                wall = time.perf_counter() - t
                print(f"{'gc.freeze() after the load' if frozen else 'as it is                 '}: {wall:.2f} s in all; "
                      f"collections by generation {count}, {sum(spent):.3f} s in them "
                      f"({', '.join(f'{s:.3f}' for s in spent)})")  # fmt: skip
        gc.callbacks.remove(watch)


if __name__ == "__main__":
    main()
