"""The whole process, start-up included, of pianosynth and the samplers on the same MIDI files,
side by side: wall time and CPU time (medians of ``--repeats``), peak resident memory, and for
pianosynth the time to its first synthesized sample. On a loaded machine, compare CPU times: wall
times then measure the load as much as the programs.

    python benchmarks/whole_process.py                      # 10 s, 5 min and 59 min pieces, 3 repeats
    python benchmarks/whole_process.py --minutes 0.1667 5 --repeats 3

Each piece is generated (``examples.generate_piece``, 96 bpm), or given with ``--midi``. Every
system is a fresh process, run in turn within each repeat, so a load on the machine falls on all
of them alike; peak RSS and CPU time (user + system, all threads) come from ``wait4``. Systems:

- ``python -m pianosynth synthesize piece.mid -o out.wav --threads T`` at its default output (the shipped
  models, routed by program, at their own rate and channels);
- the same with ``--model`` of the shipped 16 kHz piano (``registry``: program 0, 16 kHz,
  performance preset);
- with ``--baseline CHECKOUT``, the default again from another checkout's ``src`` (e.g. a
  ``git worktree`` of an earlier commit, sharing this environment's packages): before and after;
- FluidSynth with FluidR3 as ``render.py`` calls it, at 16 kHz and at 48 kHz (its file renderer
  always writes two channels), 16-bit WAV;
- sfizz playing the grand reference through ``render.render`` (``render.source: sfizz``), when
  this installation has it and the grand's samples are present; otherwise it is skipped, and
  the table says so.

The time to the first sample is taken inside a pianosynth process (the Python API, default
models): from the process's start (``/proc/self/stat``, 10 ms ticks) to the first call of the
render's ``progress`` callback, which comes when the model hands over its first block; that
process then exits. It is given in wall time and in the process's CPU time (user + system),
which a loaded machine inflates far less. ``import torch`` alone is timed in its own processes, so
the set-up beyond it is the difference. After each piece it prints the machine's other load
while the piece's runs went on: the CPU seconds the whole machine spent busy (``/proc/stat``, the
hypervisor's steal included) less those of the runs themselves. pianosynth runs on two threads
and FluidSynth on one, so a load shifts the ratios against pianosynth. Not a test: on a shared
machine only numbers measured in one run are compared.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pianosynth.config import RenderConfig
from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi
from pianosynth.registry import shipped

# Runs inside a child: the seconds from the process's start to the first synthesized sample.
FIRST_SAMPLE = """
import os, sys
def since_start():
    ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
    uptime = float(open("/proc/uptime").read().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")
def first_sample(done, total):
    import resource
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(since_start(), usage.ru_utime + usage.ru_stime, flush=True)
    os._exit(0)  # the rest of the render is timed by the whole-process runs
import pianosynth
synth = pianosynth.load(sys.argv[3] or None, threads=int(sys.argv[4]))
synth.render_to_file(sys.argv[1], sys.argv[2], force=True, progress=first_sample)
print("nan nan")
"""

SFIZZ = """
import sys
from pianosynth.config import FeatureConfig, RenderConfig
from pianosynth.midi import read_midi
from pianosynth.render import render
import soundfile as sf
perf = read_midi(sys.argv[1], max_seconds=None)
fc = FeatureConfig(sample_rate=48000, channels=2)
y = render(perf, RenderConfig(source="sfizz"), fc, int((perf.end_s + 1.0) * 48000))
sf.write(sys.argv[2], y, 48000, subtype="PCM_16")  # (samples, 2)
"""


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (every process, and what the
    hypervisor took: /proc/stat's user, nice, system, irq, softirq and steal), or nan off Linux.
    Less the seconds of the runs themselves, what other processes took while they ran: on a
    shared machine the ratios move with it (docs/speed.md)."""
    try:
        fields = open("/proc/stat").readline().split()[1:]
    except OSError:
        return float("nan")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str, float]:
    """Runs a command; returns (wall seconds, peak RSS in MB, its stdout, CPU seconds: user + system)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd[:4])} failed: {err.read().decode()[-500:]}")
        cpu = usage.ru_utime + usage.ru_stime
        return elapsed, usage.ru_maxrss / 1024, out.read().decode(), cpu  # ru_maxrss is in KiB on Linux


def sfizz_available() -> str | None:
    """None if the grand reference can be rendered here, else why not (one line)."""
    try:
        from pianosynth.render import check_renderer

        check_renderer(RenderConfig(source="sfizz"))
    except Exception as e:  # an older installation, no pysfizz, or no samples: all mean "skip"
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return None


def piano16() -> str:
    """The shipped 16 kHz piano's name."""
    for name, info in shipped().items():
        if info.program == 0 and info.sample_rate == 16000 and info.preset == "performance":
            return name
    raise SystemExit("no shipped 16 kHz piano")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10 / 60, 5.0, 59.0])
    parser.add_argument("--midi", default=None, help="one MIDI file instead of the generated pieces")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], help="systems to leave out (names as printed)")
    parser.add_argument("--imports-only", action="store_true", help="time the imports and stop")
    parser.add_argument(
        "--baseline", default=None, metavar="CHECKOUT",
        help="also run the default from another checkout of pianosynth (its src/ first on PYTHONPATH), "
        "e.g. a `git worktree` of an earlier commit: before and after, side by side in one run",
    )  # fmt: skip
    args = parser.parse_args()
    py = sys.executable
    ours = [py, "-m", "pianosynth"]  # this checkout's code, as the console script runs it
    baseline_env = None
    if args.baseline:
        src = Path(args.baseline).resolve() / "src"
        if not (src / "pianosynth" / "__init__.py").is_file():
            raise SystemExit(f"--baseline {args.baseline}: no src/pianosynth there")
        baseline_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *filter(None, [os.environ.get("PYTHONPATH")])])}
    fluidsynth = shutil.which("fluidsynth")
    sfizz_missing = sfizz_available()
    piano = piano16()
    imports = {}
    for module in ("pianosynth", "torch", "pianosynth.synthesize"):
        code = f"import time; t, c = time.perf_counter(), time.process_time(); import {module}; print(time.perf_counter() - t, time.process_time() - c)"
        runs = [[float(v) for v in run_measured([py, "-c", code])[2].split()] for _ in range(args.repeats)]
        imports[module] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    torch_s, torch_cpu = imports["torch"]
    print(", ".join(f"import {m}: {w:.3f} s ({c:.3f} s CPU)" for m, (w, c) in imports.items()) + f" (in-process, medians of {args.repeats})")
    if args.imports_only:
        return
    print(f"--threads {args.threads}")
    if sfizz_missing:
        print(f"sfizz (grand reference) skipped: {sfizz_missing}")
    pieces = [(Path(args.midi), None)] if args.midi else [(None, m) for m in args.minutes]
    with tempfile.TemporaryDirectory() as tmp:
        for midi, minutes in pieces:
            if midi is None:
                midi = Path(tmp) / f"piece{minutes:g}.mid"
                bars = max(1, round(minutes * 60 / (4 * 60 / 96)))
                write_midi(generate_piece(seed=0, bars=bars, bpm=96.0), midi)
            def synthesize(out: str, *options: str) -> list[str]:
                return [*ours, "synthesize", str(midi), "-o", f"{tmp}/{out}", *options, "--threads", str(args.threads), "--force"]

            systems = {"pianosynth default": synthesize("ours.wav"), f"pianosynth --model {piano}": synthesize("ours16.wav", "--model", piano)}
            if fluidsynth:
                for rate in (16000, 48000):
                    systems[f"fluidsynth FluidR3 {rate // 1000} kHz"] = [
                        fluidsynth, "-n", "-i", "-q", "-R", "0", "-C", "0", "-g", str(RenderConfig().gain), "-r", str(rate),
                        "-T", "wav", "-F", f"{tmp}/fs{rate}.wav", RenderConfig().soundfont, str(midi),
                    ]  # fmt: skip
            if not sfizz_missing:
                systems["sfizz grand 48 kHz"] = [py, "-c", SFIZZ, str(midi), f"{tmp}/sfizz.wav"]
            if args.baseline:
                systems["pianosynth default, baseline"] = synthesize("base.wav")  # run with baseline_env
            systems = {k: v for k, v in systems.items() if k not in args.skip}
            envs = {"pianosynth default, baseline": baseline_env} if args.baseline else {}
            times: dict[str, list[float]] = {k: [] for k in systems}
            cpus: dict[str, list[float]] = {k: [] for k in systems}
            rss: dict[str, float] = {k: 0.0 for k in systems}
            first: list[tuple[float, float]] = []
            ours_cpu, busy0, clock0 = 0.0, machine_busy_seconds(), time.perf_counter()
            for _ in range(args.repeats):
                for name, cmd in systems.items():
                    t, r, _, c = run_measured(cmd, envs.get(name))
                    times[name].append(t)
                    cpus[name].append(c)
                    rss[name] = max(rss[name], r)
                    ours_cpu += c
                t, _, out, c = run_measured([py, "-c", FIRST_SAMPLE, str(midi), f"{tmp}/first.wav", "", str(args.threads)])
                first.append(tuple(float(v) for v in out.strip().splitlines()[-1].split()))
                ours_cpu += c
            others = machine_busy_seconds() - busy0 - ours_cpu  # CPU seconds of every other process meanwhile
            span = time.perf_counter() - clock0
            import soundfile as sf

            info = sf.info(f"{tmp}/ours.wav")
            fs16 = statistics.median(times.get("fluidsynth FluidR3 16 kHz", [float("nan")]))
            fs48 = statistics.median(times.get("fluidsynth FluidR3 48 kHz", [float("nan")]))
            print(f"\n{midi.name}: {info.duration / 60:.2f} min; pianosynth default writes {info.samplerate} Hz, "
                  f"{info.channels} channel(s); medians of {args.repeats}")  # fmt: skip
            c16 = statistics.median(cpus.get("fluidsynth FluidR3 16 kHz", [float("nan")]))
            c48 = statistics.median(cpus.get("fluidsynth FluidR3 48 kHz", [float("nan")]))
            print(f"{'system':34s} {'wall s':>8s} {'x fs16':>7s} {'x fs48':>7s} {'CPU s':>8s} {'x fs16':>7s} {'x fs48':>7s} {'peak RSS MB':>12s}")
            for name in systems:
                m, c = statistics.median(times[name]), statistics.median(cpus[name])
                print(f"{name:34s} {m:8.2f} {m / fs16:7.2f} {m / fs48:7.2f} {c:8.2f} {c / c16:7.2f} {c / c48:7.2f} {rss[name]:12.0f}")
            f, c = statistics.median(w for w, _ in first), statistics.median(c for _, c in first)
            print(f"pianosynth default, first sample after {f:.2f} s from the process's start ({f - torch_s:+.2f} s beyond "
                  f"import torch), {c:.2f} s of CPU ({c - torch_cpu:+.2f} s beyond import torch's)")  # fmt: skip
            if not math.isnan(others):  # /proc/stat was there
                print(f"the machine's other load during these runs: {others:.1f} CPU s in {span:.1f} s "
                      f"({others / span:.2f} of {os.cpu_count()} cores busy with other processes, on average)")


if __name__ == "__main__":
    main()
