"""The fuzz benchmark of issues 11 and 20: seeded mutations of MIDI files, scores (MusicXML, .mxl,
MEI, **kern), the API's object inputs and options, and requests to the page, each case with a
time and a memory limit; and peak memory against piece length.

    python benchmarks/fuzz.py --cases 10000            # fuzz; writes out/fuzz/results.json
    python benchmarks/fuzz.py --memory                 # peak RSS against piece length

Cases run in worker processes (``--workers``, one case at a time each) under ``RLIMIT_AS`` (``--memory-mib``): an allocation past it raises
MemoryError there, counted as "over memory". Each case has ``--seconds``: past it the worker's
timer raises, counted as "over time"; a worker that does not answer within the limit + 10 s is
killed, counted as a hang, and a fresh one takes the next case. Case ``i`` is a pure function of
``i`` (tests/mutator.py), so any failure is reproduced with ``--first i --cases 1``.

Targets, by case number ``i % 10`` (``TARGETS``):

- 0-3 **midi**: read_midi -> compute_features -> compute_notes on a mutated MIDI file; every
  ``--synth-every``-th case also runs synthesize_file with a tiny untrained model and checks that a
  failure leaves no file; every ``--cli-every``-th runs ``pianosynth synthesize`` in-process with
  one number option set to a random bad or good value, and expects exit 0, 1 or 2 and no traceback.
  Both render under a budget of SYNTH_MAX_SECONDS of audio (``--max-seconds``), so that the time
  limit of a case bounds a render the budget allows rather than the budget's whole hour.
- 4-6 **score**: read_score -> features -> notes on a mutated MusicXML, .mxl (now and then a zip
  bomb), MEI or **kern score (``mutator.mutate_score``); only ScoreError/MidiError may escape.
  partitura reads in a child process of read_score's own, under ``Limits.score_seconds`` set to
  half the case's ``--seconds`` (``score_limits``), so that its limit, not the case's, stops a
  slow reading. The child's memory is its own (``Limits.score_memory_mib``, within the worker's
  ``--memory-mib``, which it inherits), not in the worker's peak RSS.
- 7-8 **api**: ``Synth.render`` (the tiny model) on an input of any type, PrettyMIDI and mido
  objects with odd field values among them, and odd option values (``mutator.api_input``); only
  MidiError and OutputError may escape. Rendered under the MIDI target's budget of
  SYNTH_MAX_SECONDS of audio: ``max_seconds`` is set to it where the case gives none, no limit
  (None) or a longer one (``api_budget``), as the CLI case does for ``--max-seconds``.
- 9 **page**: a request to the page (``serve.create_app`` with the tiny model, through Starlette's
  test client): random method, path, Host and Origin, a mutated MIDI or score upload, an
  oversized one, odd form fields or a broken multipart body; every answer must be below 500 and
  an error must be one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

SYNTH_MAX_SECONDS = 120  # the synthesis budget of a case (--max-seconds, the API's max_seconds): its time limit must cover a render this long
TARGETS = ["midi"] * 4 + ["score"] * 3 + ["api"] * 2 + ["page"]
CLI_OPTIONS = ["--threads", "--chunk-seconds", "--context-seconds", "--normalize", "--max-seconds"]
CLI_VALUES = ["nan", "inf", "-inf", "-1", "0", "1e6", "1e308", "0.5", "3", "-0", "1e-300"]


class CaseTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise CaseTimeout


def api_budget(options: dict) -> dict:
    """An API case's options with ``max_seconds`` at most SYNTH_MAX_SECONDS: a case without one,
    with None (no limit) or with a longer one renders under that budget, since a render the
    default hour allows is slow, not a fault (cases 3017, 3817, 4977: mutated MIDI bytes of 2,370
    s). Odd values (NaN, inf, negative, a string, True) stay: they must be refused."""
    value = options.get("max_seconds")
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > SYNTH_MAX_SECONDS):
        return {**options, "max_seconds": SYNTH_MAX_SECONDS}
    return options


def score_limits(args):
    """The budget of a score case (and of the page's): ``Limits.score_seconds`` half the case's
    time limit, so that a slow partitura is stopped by read_score's own limit (a refusal)."""
    from pianosynth.midi import Limits

    return Limits(score_seconds=args.seconds / 2)


def worker(args) -> None:
    """Reads case numbers on stdin, answers one JSON line per case on stdout."""
    import numpy as np
    from mutator import api_input, features_case, mutate, mutate_score, outcome_class, page_case, score_case, score_seeds, seed_files
    from starlette.testclient import TestClient
    from test_reliability import tiny_checkpoint

    import pianosynth
    from pianosynth import cli
    from pianosynth.audio import OutputError
    from pianosynth.config import FeatureConfig
    from pianosynth.midi import MidiError
    from pianosynth.serve import create_app
    from pianosynth.synthesize import synthesize_file

    # answers go to the real stdout; anything a library or the CLI prints goes to stderr instead
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    limit = args.memory_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    seeds = seed_files()
    scores = score_seeds()
    fc = FeatureConfig()
    tmp = Path(tempfile.mkdtemp(prefix="pianosynth-fuzz-"))
    model = tiny_checkpoint(tmp / "m.pt")
    synth = pianosynth.load(model, threads=1)
    limits = score_limits(args)
    client = TestClient(create_app(models={"tiny": model}, max_upload_bytes=65536, max_seconds=60, threads=1, limits=limits), base_url="http://127.0.0.1:8000", raise_server_exceptions=False)
    client.__enter__()
    out_dir = tmp / "out"
    out_dir.mkdir()
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        i = int(line)
        rng = np.random.default_rng(i)
        target = TARGETS[i % len(TARGETS)]
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, args.seconds)
        result = {"case": i, "target": target}
        try:
            if target == "midi":
                data = mutate(seeds[i % len(seeds)], rng)
                midi_case(i, rng, data, result, args, tmp, out_dir, model, fc, features_case, outcome_class, synthesize_file, cli, MidiError)
            elif target == "score":
                suffix, data = scores[(i // len(TARGETS)) % len(scores)]
                result["score"] = f"{suffix} " + score_case(suffix, mutate_score(suffix, data, rng), tmp, fc, limits=limits)
            elif target == "api":
                obj, options = api_input(rng, seeds)
                options = api_budget(options)
                try:
                    synth.render(obj, **options)
                    result["api"] = "ok"
                except (MidiError, OutputError) as e:
                    result["api"] = f"refused {type(e).__name__}: " + outcome_class(str(e))
            else:
                result["page"] = page_case(client, rng, seeds, scores)
        except CaseTimeout:
            result["error"] = "over time"
        except MemoryError:
            result["error"] = "over memory"
        except Exception as e:  # the point of a fuzzer: record whatever escapes
            result["error"] = f"unexpected {type(e).__name__}: {' '.join(str(e).split())[:200]}"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        result["seconds"] = time.perf_counter() - started
        result["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result), file=answers, flush=True)


def midi_case(i, rng, data, result, args, tmp, out_dir, model, fc, features_case, outcome_class, synthesize_file, cli, MidiError) -> None:
    """The MIDI target (issue 11's cases, numbered as before within the MIDI cases)."""
    result["features"] = features_case(data, tmp / "case.mid", fc)
    if args.synth_every and i % args.synth_every == 0:
        out = out_dir / "o.wav"
        if out.exists():
            out.unlink()  # the previous case's output
        try:
            synthesize_file(tmp / "case.mid", out, model_path=model, threads=1, force=True, max_seconds=SYNTH_MAX_SECONDS)
            result["synthesize"] = "ok"
        except MidiError as e:
            result["synthesize"] = "refused: " + outcome_class(str(e))
            if out.exists():
                out.unlink()
                result["synthesize"] = "left a file"
        left = [p.name for p in out_dir.glob(".*")]
        if left:
            result["synthesize"] = f"left temporary files {left}"
    if args.cli_every and i % args.cli_every == 0:
        option = CLI_OPTIONS[int(rng.integers(len(CLI_OPTIONS)))]
        value = CLI_VALUES[int(rng.integers(len(CLI_VALUES)))]
        if option == "--max-seconds" and value in ("1e6", "1e308"):
            value = str(SYNTH_MAX_SECONDS)  # the case's budget: a longer one is a slow render, not a fault
        err = io.StringIO()
        argv = ["synthesize", str(tmp / "case.mid"), "-o", str(out_dir / "c.wav"), "--model", str(model), "--force",
                "--max-seconds", str(SYNTH_MAX_SECONDS), option, value]  # fmt: skip
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = cli.main(argv)
            except SystemExit as e:  # argparse: a value that is not a number at all
                code = e.code
        text = err.getvalue()
        ok = code in (0, 1, 2) and "Traceback" not in text
        result["cli"] = f"exit {code}" if ok else f"UNEXPECTED exit {code}: {text.strip()[-200:]}"


def start_worker(args) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--seconds", str(args.seconds), "--memory-mib", str(args.memory_mib),
           "--synth-every", str(args.synth_every), "--cli-every", str(args.cli_every)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    ready = json.loads(proc.stdout.readline() or "{}")  # imports and the tiny model, untimed
    if not ready.get("ready"):
        raise RuntimeError(f"the fuzz worker did not start: {proc.stderr.read()[-2000:]}")
    threading.Thread(target=_drain, args=(proc,), daemon=True).start()
    return proc


def _drain(proc: subprocess.Popen) -> None:
    """Keeps the last lines of a worker's stderr (for the report of a crash) without blocking it."""
    proc.stderr_tail = collections.deque(maxlen=20)
    for line in proc.stderr:
        proc.stderr_tail.append(line.rstrip())


def fuzz(args) -> dict:
    """Hands case numbers to ``--workers`` worker processes, one case at a time each, and counts
    their answers; a worker silent for the case's limit + 10 s is killed (a hang) and replaced."""
    import select

    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in ("features", "synthesize", "cli", "score", "api", "page", "error")}
    targets: collections.Counter = collections.Counter()
    peak_rss = 0.0
    failures, slowest = [], []
    workers = [start_worker(args) for _ in range(args.workers)]
    busy: dict[int, tuple[int, float]] = {}  # worker index -> (case, sent at)
    started = time.time()
    done = 0
    todo = iter(range(args.first, args.first + args.cases))
    exhausted = False

    def record(r: dict) -> None:
        nonlocal peak_rss, slowest
        targets[r.get("target", "midi")] += 1
        peak_rss = max(peak_rss, r.get("maxrss_mib", 0.0))
        for key in ("features", "synthesize", "cli", "score", "api", "page"):
            if key in r:
                counts[key][r[key].split(":")[0] if key in ("synthesize", "cli", "page") else r[key][:90]] += 1
        if "error" in r:
            counts["error"][r["error"].split(":")[0]] += 1
            failures.append(r)
        elif any(str(r.get(k, "")).startswith(("UNEXPECTED", "left")) for k in ("synthesize", "cli", "page")):
            failures.append(r)
        slowest = sorted(slowest + [(r["seconds"], r["case"])], reverse=True)[:5]

    while True:
        for w in range(len(workers)):  # give every idle worker its next case
            if w in busy or exhausted:
                continue
            if args.budget_minutes and time.time() - started > args.budget_minutes * 60:
                exhausted = True
                break
            i = next(todo, None)
            if i is None:
                exhausted = True
                break
            workers[w].stdin.write(f"{i}\n")
            workers[w].stdin.flush()
            busy[w] = (i, time.time())
        if not busy:
            break
        ready, _, _ = select.select([workers[w].stdout for w in busy], [], [], 1.0)
        for w in list(busy):
            i, sent = busy[w]
            proc = workers[w]
            if proc.stdout in ready:
                line = proc.stdout.readline()
                if line:
                    del busy[w]
                    done += 1
                    record(json.loads(line))
                    if done % 1000 == 0:
                        print(f"{done} cases, {len(failures)} failures, {time.time() - started:.0f} s", file=sys.stderr)
                    continue
                kind = "crash"
            elif time.time() - sent > args.seconds + 10:
                kind = "hang"
            else:
                continue
            proc.kill()
            status = proc.wait()
            counts["error"][kind] += 1
            tail = [t for t in getattr(proc, "stderr_tail", []) if "warn" not in t.lower()][-3:]
            failures.append({"case": i, "error": f"{kind} (worker exit {status})", "stderr": tail})
            del busy[w]
            done += 1
            workers[w] = start_worker(args)
    for proc in workers:
        proc.stdin.close()
        proc.wait()
    return {
        "cases": done, "first": args.first, "workers": args.workers, "seconds_per_case_limit": args.seconds,
        "memory_mib_limit": args.memory_mib, "wall_seconds": round(time.time() - started, 1), "targets": dict(targets),
        "peak_rss_mib": round(peak_rss, 1), "outcomes": {k: dict(v) for k, v in counts.items()},
        "failures": failures[:50], "failure_count": len(failures), "slowest_cases": slowest,
    }  # fmt: skip


MEMORY_SCRIPT = """
import resource, sys, time
from pianosynth.config import FeatureConfig
from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi, read_midi, MidiError
from pianosynth.features import compute_features, compute_notes
perf = generate_piece(seed=0, bars=int(sys.argv[1]))
write_midi(perf, sys.argv[2])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    p = read_midi(sys.argv[2], max_seconds=float(sys.argv[3]))
    x = compute_features(p, FeatureConfig()); n = compute_notes(p, FeatureConfig(), len(x) * 256)
    out = f"{p.end_s:.0f} s, {x.nbytes / 2**20:.1f} MiB of features"
except MidiError as e:
    out = "refused: " + str(e).split(": ", 1)[1][:60]
print(out, "|", round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024), "|", round(time.perf_counter() - t, 2))
"""


def memory(args) -> list[dict]:
    """Peak RSS growth of read_midi + features + notes against piece length (fresh process each)."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for bars in (25, 100, 400, 1600):
            for limit in (3600.0,):
                cmd = [sys.executable, "-c", MEMORY_SCRIPT, str(bars), f"{tmp}/p.mid", str(limit)]
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                text = out.stdout.strip() or out.stderr.strip().splitlines()[-1]
                what, rss, secs = (text.split(" | ") + ["", ""])[:3]
                rows.append({"bars": bars, "result": what, "peak_rss_growth_mib": rss, "seconds": secs})
                print(rows[-1], file=sys.stderr)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", type=int, default=10000)
    p.add_argument("--first", type=int, default=0, help="number of the first case")
    p.add_argument("--seconds", type=float, default=20.0, help="time limit per case")
    p.add_argument("--memory-mib", type=int, default=3072, help="address-space limit of the worker (RLIMIT_AS)")
    p.add_argument("--synth-every", type=int, default=20)
    p.add_argument("--cli-every", type=int, default=10)
    p.add_argument("--budget-minutes", type=float, default=0, help="stop starting cases after this long (0: none)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each running one case at a time")
    p.add_argument("--memory", action="store_true", help="measure peak memory against piece length instead")
    p.add_argument("--out", default="out/fuzz")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.memory:
        result = {"memory": memory(args)}
        (out / "memory.json").write_text(json.dumps(result, indent=1))
    else:
        result = fuzz(args)
        (out / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
