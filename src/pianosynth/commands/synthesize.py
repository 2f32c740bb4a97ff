"""`pianosynth synthesize` and `pianosynth demo`: MIDI or scores into audio files (or stdout)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError, limits, warn


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

    out_lufs = result.loudness_lufs  # measured on the file written
    level = f"{out_lufs:.1f} LUFS, peak {result.peak:.3f}" if math.isfinite(out_lufs) else "silent"
    return (
        f"{result.seconds:.1f} s at {result.sample_rate} Hz, {result.channels} channel(s), {level} "
        f"(gain {result.gain_db:+.1f} dB), in {result.compute_seconds:.1f} s ({result.realtime_factor:.0f}x real time)"
    )


def cmd_synthesize(args: argparse.Namespace) -> int:
    """One input to one output (a file, or stdout with -o -), or a batch: many inputs, one bar."""
    import tempfile
    import time

    from ..audio import subtype_for
    from ..batch import plan
    from ..synthesize import load

    inputs, stdin = args.inputs, args.inputs == ["-"]
    if "-" in inputs and not stdin:
        raise UserError("'-' (MIDI from stdin) must be the only input")
    if args.output is not None and args.out_dir is not None:
        raise UserError("give -o for one output or --out-dir for several, not both")
    if args.output is not None and (len(inputs) != 1 or Path(inputs[0]).is_dir()):
        raise UserError("-o names one output file; for several inputs or a folder use --out-dir")
    if stdin and args.output is None:
        raise UserError("reading MIDI from stdin needs -o FILE, or -o - to write the audio to stdout")
    if args.output == "-" and args.plot:
        raise UserError("--plot needs an output file, not stdout")
    if args.skip_existing and args.force:
        raise UserError("--skip-existing and --force contradict each other")
    options = dict(
        sample_rate=args.sample_rate, channels=args.channels, chunk_seconds=args.chunk_seconds,
        context_seconds=args.context_seconds, max_seconds=args.max_seconds, bpm=args.bpm, limits=limits(args), **_level(args),
    )  # fmt: skip
    if args.output is not None:
        stdout_suffix = "." + (args.format or "wav")  # -o - writes --format (default WAV)
        target = Path(args.output) if args.output != "-" else Path("stdout" + stdout_suffix)
        if args.format is not None and args.output != "-" and target.suffix.lower() != "." + args.format:
            raise UserError(f"-o {args.output} and --format {args.format} disagree; give the file a .{args.format} suffix, or leave --format out")
        subtype_for(target, args.bits)  # a bad suffix fails before the model loads
        jobs = None
    else:
        jobs = plan(inputs, args.out_dir, "." + (args.format or "wav"))
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
                    result = synth.render_to_file(source, Path(tmp) / ("out" + stdout_suffix), **kwargs)
                    with open(result.path, "rb") as f:
                        _copy_to_stdout(f)
            else:
                result = synth.render_to_file(source, output, force=args.force, plot=args.plot, **kwargs)
        for m in result.messages:
            print(m, file=sys.stderr)
        for w in result.warnings:
            warn(w)
        if output != "-":
            print(result.path)
            if result.plot:
                print(result.plot)
        print(_describe(result), file=sys.stderr)
        return 0

    from tqdm import tqdm

    from ..config import ConfigError
    from ..midi import MidiError
    from ..synthesize import SynthesisError

    written, skipped, failed, audio_s, t0 = 0, 0, [], 0.0, time.perf_counter()
    with tqdm(jobs, desc="synthesize", unit="file", dynamic_ncols=True, file=sys.stderr, disable=None) as bar:
        for job in bar:
            if job.output.exists() and args.skip_existing:
                skipped += 1
                continue
            try:
                result = synth.render_to_file(job.source, job.output, force=args.force, bits=args.bits, plot=args.plot, **options)
            except (MidiError, SynthesisError, ConfigError, ValueError, OSError) as e:
                failed.append((job.source, " ".join(str(e).split())))
                continue
            except KeyboardInterrupt:  # say what is on disk: the outputs listed above are whole
                bar.close()
                print(f"interrupted: {written} output(s) written before it (listed above), the one for {job.source} was not", file=sys.stderr)
                return EXIT_INTERRUPTED
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
    except BrokenPipeError:  # the reader went away (e.g. `| head`): the audio was not all delivered
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush is quiet
        raise UserError("stdout was closed before all the audio was written (broken pipe)") from None




def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: synthesize a piece the project generates itself with the default model."""
    from ..examples import generate_piece
    from ..midi import write_midi
    from ..synthesize import can_plot, synthesize_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    midi = out / "demo.mid"
    write_midi(generate_piece(seed=args.seed, bars=args.bars), midi)
    print(f"wrote a generated piece to {midi}", file=sys.stderr)
    plot = can_plot()
    result = synthesize_file(midi, out / "demo.wav", model_path=args.model, force=True, plot=plot)
    for w in result.warnings:
        warn(w)
    print(result.path)
    if plot:
        print(result.plot)
    else:
        print("no spectrogram: matplotlib is not installed (pip install 'pianosynth[plot]')", file=sys.stderr)
    print(f"{result.seconds:.1f} s of audio at {result.sample_rate} Hz, {result.loudness_lufs:.1f} LUFS, peak {result.peak:.3f} (of the file)", file=sys.stderr)
    return 0
