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
    from .dataset import Cache, find_sources, prepare, select_subset

    cfg = load_config(args.config, _render_overrides(args) + args.set)
    input_dir = Path(args.input)
    try:
        sources = find_sources(input_dir, column=args.column)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from e
    sources = select_subset(sources, limit=args.limit, max_hours=args.max_hours)
    if not sources:
        raise UserError(f"{input_dir}: no MIDI files found")
    print(f"preparing {len(sources)} file(s) from {input_dir} with {args.jobs} job(s)", file=sys.stderr)
    name = args.name or input_dir.resolve().name
    cache_dir = prepare(
        sources, Path(args.out), cfg, name=name, jobs=args.jobs, progress=_progress("prepare"),
        max_seconds=args.max_seconds, verify=args.verify,
    )  # fmt: skip
    cache = Cache(cache_dir)
    for piece in cache.pieces:
        for w in piece.get("warnings", []):
            _warn(w)
        if piece.get("clipped_samples"):
            _warn(f"{piece['file']}: the reference render clipped {piece['clipped_samples']} sample(s)")
    for s in cache.skipped:
        _warn(f"skipped {s['file']}: {s['reason']}")
    print(cache_dir)
    _print_summary(cache)
    return 0


def _render_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if getattr(args, "soundfont", None):
        out.append(f"render.soundfont={json.dumps(str(args.soundfont))}")
    if getattr(args, "program", None) is not None:
        out.append(f"render.program={args.program}")
    if getattr(args, "sample_rate", None) is not None:
        out.append(f"features.sample_rate={args.sample_rate}")
    if getattr(args, "preset", None) is not None:
        out.append(f"features.preset={args.preset}")
    return out


def _print_summary(cache) -> None:
    s = cache.summary()
    fc = cache.features
    print(
        f"cache {cache.dir}\n"
        f"  features: {fc.preset} preset, {fc.n_channels} channels, {fc.sample_rate} Hz, "
        f"hop {fc.hop_samples} ({fc.frame_rate:g} frames/s)\n"
        f"  render: {Path(cache.render.soundfont).name} program {cache.render.program}"
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

    from .config import load_config
    from .train import train

    fixed = sorted({kv.split("=", 1)[0] for kv in args.set if kv.split(".", 1)[0] in ("features", "render")})
    if fixed:
        raise UserError(f"--set {', '.join(fixed)}: features and render settings come from the cache; set them on prepare")
    cfg = load_config(args.config, args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = args.name or (Path(args.config).stem if args.config else "run")
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


def cmd_synthesize(args: argparse.Namespace) -> int:
    from .synthesize import synthesize_file

    result = synthesize_file(
        args.input, args.output, model_path=args.model, force=args.force, normalize=args.normalize,
        plot=args.plot, chunk_seconds=args.chunk_seconds, context_seconds=args.context_seconds, threads=args.threads,
        max_seconds=args.max_seconds,
    )  # fmt: skip
    for w in result.warnings:
        _warn(w)
    print(result.path)
    if result.plot:
        print(result.plot)
    print(f"{result.seconds:.1f} s at {result.sample_rate} Hz, peak {result.peak:.3f}", file=sys.stderr)
    return 0


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

    from .dataset import Cache
    from .evaluate import evaluate

    logging.getLogger().setLevel(logging.ERROR)  # basic-pitch announces every backend it lacks
    cache = Cache(args.cache)
    models = list(args.model)
    if not models and not args.no_default_model:
        from .synthesize import default_model_path

        models = [str(default_model_path())]
    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.force:
        raise UserError(f"{out} already holds an evaluation; pass --force to overwrite it")
    result = evaluate(
        cache, models, out, split=args.split, clips=args.clips, seconds=args.seconds,
        baselines=not args.no_baselines, transcribe=not args.no_transcribe,
        progress=lambda m: print(m, file=sys.stderr), model_names=args.name or None,
    )  # fmt: skip
    from .evaluate import metrics_table

    print(metrics_table(result))
    print(out / "index.html")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .train import export_checkpoint

    if Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output} exists; pass --force to overwrite it")
    state = export_checkpoint(args.checkpoint, args.output)
    print(f"{args.output}: step {state['step']}, best valid MR-STFT {state['best_valid']:.4f}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------


# Every number the CLI takes: option dest -> (kind, lowest, highest), checked in main before any
# work, so a bad value is one line naming the option, the value and what is allowed (issue 11).
NUMBER_OPTIONS = {
    "jobs": (int, 1, 256), "limit": (int, 1, None), "max_hours": (float, 0, None), "program": (int, 0, 127),
    "threads": (int, 1, 1024), "normalize": (float, 0, 1), "chunk_seconds": (float, 0, 3600),
    "context_seconds": (float, 0, 600), "seed": (int, 0, None), "bars": (int, 1, 10000), "clips": (int, 1, 100000),
    "seconds": (float, 0, 86400), "max_seconds": (float, 0, None),
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
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(
        prog="pianosynth", description="Neural piano synthesis from MIDI.", formatter_class=fmt
    )
    parser.add_argument("--version", action="version", version=f"pianosynth {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prepare", help="MIDI folder -> features + reference audio cache", formatter_class=fmt)
    p.add_argument("input", help="folder of MIDI files (searched recursively); ASAP's splits.csv is used if present")
    p.add_argument("--out", default="cache", help="folder that holds cache folders")
    p.add_argument("--name", default=None, help="cache folder name prefix (default: input folder name)")
    p.add_argument("--config", default=None, help="YAML config (features and render sections are used)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. features.hop_samples=128")
    p.add_argument("--jobs", type=int, default=1, help="parallel worker processes")
    p.add_argument("--limit", type=int, default=None, help="take at most N files (deterministic subset)")
    p.add_argument("--max-hours", type=float, default=None, help="take files until this many hours (deterministic subset)")
    p.add_argument("--column", default="performance_midi", help="splits.csv column naming the files (performance_midi or score_midi)")
    p.add_argument("--soundfont", default=None, help="SoundFont for the reference audio (default: FluidR3_GM)")
    p.add_argument("--program", type=int, default=None, help="General MIDI program for every note (default 0, grand piano)")
    p.add_argument("--sample-rate", type=int, default=None, help="16000, 22050, 24000 or 44100 (default from config)")
    p.add_argument("--preset", choices=["score", "performance"], default=None, help="feature channels (default from config)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="skip pieces longer than this")
    p.add_argument("--verify", action="store_true", help="also check every cached array against its hash; redo pieces that fail")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("info", help="summarise a prepared cache", formatter_class=fmt)
    p.add_argument("cache", help="a cache folder made by prepare")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("train", help="train a model on a prepared cache", formatter_class=fmt)
    p.add_argument("--cache", required=True, help="a cache folder made by prepare")
    p.add_argument("--config", default="configs/base.yaml" if Path("configs/base.yaml").is_file() else None, help="YAML config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. model.cell=lstm")
    p.add_argument("--runs", default="runs", help="folder that holds run folders")
    p.add_argument("--name", default=None, help="run name prefix (default: the config file's name)")
    p.add_argument("--run-dir", default=None, help="exact run folder (default: RUNS/NAME-HASH)")
    p.add_argument("--restart", action="store_true", help="start over instead of resuming the run's last checkpoint")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("synthesize", help="MIDI -> audio with a trained model", formatter_class=fmt)
    p.add_argument("input", help="MIDI file")
    p.add_argument("-o", "--output", required=True, help="output .wav or .flac")
    p.add_argument("--model", default=None, help="checkpoint (default: the model shipped in the package)")
    p.add_argument("--plot", action="store_true", help="also write a spectrogram PNG next to the audio")
    p.add_argument("--normalize", type=float, default=None, metavar="PEAK", help="scale the output to this peak, e.g. 0.95")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.add_argument("--chunk-seconds", type=float, default=30.0, help="audio per chunk of the chunked synthesis")
    p.add_argument("--context-seconds", type=float, default=2.0, help="context on each side of a chunk")
    p.add_argument("--threads", type=int, default=None, help="CPU threads, each synthesizing its share of the chunks (default: torch's count)")
    p.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="refuse pieces longer than this")
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("demo", help="synthesize a generated piece with the shipped model", formatter_class=fmt)
    p.add_argument("--out", default="out/demo", help="output folder (demo.mid, demo.wav, demo.png)")
    p.add_argument("--model", default=None, help="checkpoint (default: the model shipped in the package)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated piece")
    p.add_argument("--bars", type=int, default=8, help="length of the generated piece in bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", help="metrics against baselines on fixed clips, and a listening page", formatter_class=fmt)
    p.add_argument("--model", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the shipped model)")
    p.add_argument("--name", action="append", default=[], help="display name for each --model, in order")
    p.add_argument("--cache", required=True, help="a cache folder made by prepare")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="split to take clips from")
    p.add_argument("--clips", type=int, default=12, help="number of clips")
    p.add_argument("--seconds", type=float, default=30.0, help="seconds per clip")
    p.add_argument("--out", default="out/evaluate", help="output folder (metrics.json, metrics.md, index.html)")
    p.add_argument("--no-baselines", action="store_true", help="skip silence, sine, MuseScore and velocity-64 baselines")
    p.add_argument("--no-transcribe", action="store_true", help="skip basic-pitch note F1 (faster)")
    p.add_argument("--no-default-model", action="store_true", help="with no --model, evaluate only the baselines")
    p.add_argument("--force", action="store_true", help="overwrite an earlier evaluation in --out")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="slim a checkpoint for shipping (drops optimizer state)", formatter_class=fmt)
    p.add_argument("checkpoint", help="a checkpoint written by train (last.pt or best.pt)")
    p.add_argument("-o", "--output", required=True, help="where to write the slim checkpoint")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    import logging

    from .config import ConfigError
    from .dataset import CacheError
    from .midi import MidiError
    from .render import RenderError
    from .evaluate import EvaluationError
    from .synthesize import SynthesisError
    from .train import TrainingError

    parser = build_parser()
    args = parser.parse_args(argv)
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
    except (UserError, ConfigError, MidiError, RenderError, CacheError, SynthesisError, TrainingError, EvaluationError) as e:
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
