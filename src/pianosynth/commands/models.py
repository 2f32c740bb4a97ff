"""`pianosynth export` and `pianosynth models`: shipping a checkpoint, and the list of shipped models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import UserError, warn


def cmd_export(args: argparse.Namespace) -> int:
    from ..checkpoint import export_checkpoint

    if (args.output is None) == (args.name is None):
        raise UserError("give -o FILE for a slim copy, or --name NAME to ship it in the models folder")
    if args.name is None and (args.results or args.system or args.default or args.data):
        raise UserError("--results, --system, --data and --default go with --name (figures and the default are kept in the models folder's index)")
    if args.name is not None:
        from ..registry import add_model

        info = add_model(
            args.checkpoint, args.name, folder=args.models_dir, results=args.results, system=args.system, force=args.force,
            default=args.default, data=args.data,
        )  # fmt: skip
        print(info.path)
        figures = f"MR-STFT {info.figure('mrstft')}, loudness r {info.figure('loudness_r')}, note F1 {info.figure('note_f1')}"
        print(f"{info.name}{' (default)' if info.default else ''}: {info.instrument} (program {info.program}), {info.sample_rate} Hz, {info.preset}, {info.bytes / 1e6:.1f} MB; {figures}", file=sys.stderr)
        return 0
    if Path(args.output).exists() and not args.force:
        raise UserError(f"{args.output} exists; pass --force to overwrite it")
    state = export_checkpoint(args.checkpoint, args.output)
    print(f"{args.output}: step {state['step']}, best valid MR-STFT {state['best_valid']:.4f}", file=sys.stderr)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from ..registry import check, listing, models_dir, shipped

    folder = Path(args.models_dir) if args.models_dir else models_dir()
    models = shipped(folder)
    if args.json:
        rows = [
            {"name": m.name, "default": m.default, "file": str(m.path), "instrument": m.instrument, "program": m.program, "family": m.family,
             "soundfont": m.soundfont, "sample_rate": m.sample_rate, "preset": m.preset, "decoder": m.decoder,
             "bytes": m.bytes, "figures": m.figures, "data": m.data, "reference_credit": m.reference_credit}
            for m in models.values()
        ]  # fmt: skip
        print(json.dumps(rows, indent=1))
    else:
        print(listing(models) if models else f"no models in {folder}")
    for problem in check(folder):
        warn(problem)
    return 0
