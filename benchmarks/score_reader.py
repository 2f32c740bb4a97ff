"""What reading a score in a child process costs (issue 20): ``read_score`` (partitura in a child
process bounded by ``Limits.score_seconds`` and ``score_memory_mib``) against partitura in the
calling process (``scores._load_score``, as read_score did before), each in a fresh process.

    PYTHONPATH=src python benchmarks/score_reader.py                      # the test seeds (4 formats)
    PYTHONPATH=src python benchmarks/score_reader.py a.musicxml b.mxl    # other scores

For each score and way, ``--repeats`` fresh processes; each reads the score twice and reports
the first read (partitura's import included: a process's first score) and the second (a batch's
or the page's next score). Medians; the answers of the two ways are checked to be identical.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ONE = r"""
import json, sys, time
from pathlib import Path
from pianosynth.midi import Limits
from pianosynth.scores import _load_score, _unpack_mxl, read_score
way, path, tmp = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def read():
    if way == "child":
        return read_score(path)
    import partitura  # noqa: F401  # the import read_score used to pay in the calling process
    source = _unpack_mxl(path, tmp, Limits(), str(path)) if path.suffix == ".mxl" else path
    return _load_score(source, str(path), None)

times = []
for _ in range(2):
    t = time.perf_counter()
    perf = read()
    times.append(time.perf_counter() - t)
notes = [[n.pitch, n.start_s, n.end_s, n.velocity] for n in perf.notes]
print(json.dumps({"first": times[0], "second": times[1], "notes": notes, "end_s": perf.end_s}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scores", nargs="*", help="score files (default: tests/mutator.py's seeds)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(s) for s in args.scores]
        if not files:
            sys.path.insert(0, str(ROOT / "tests"))
            from mutator import mxl_bytes, score_seeds

            for suffix, data in score_seeds():
                files.append(Path(tmp) / f"seed{suffix}")
                files[-1].write_bytes(mxl_bytes(data) if suffix == ".mxl" else data)
        print("| Score | Notes | First read: in-process / child | Next read: in-process / child |")
        print("|---|---|---|---|")
        for f in files:
            runs: dict[str, list[dict]] = {"in-process": [], "child": []}
            for _ in range(args.repeats):
                for way in runs:
                    out = subprocess.run([sys.executable, "-c", ONE, way, str(f), tmp], capture_output=True, text=True, check=True)
                    runs[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
            a, b = runs["in-process"][0], runs["child"][0]
            assert (a["notes"], a["end_s"]) == (b["notes"], b["end_s"]), f"{f}: the child's answer differs"

            def med(way: str, key: str) -> float:
                return statistics.median(r[key] for r in runs[way])

            print(
                f"| {f.name} | {len(a['notes'])} | {med('in-process', 'first'):.2f} / {med('child', 'first'):.2f} s "
                f"| {med('in-process', 'second'):.2f} / {med('child', 'second'):.2f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
