"""The grand reference (issue 18) measured: sfizz's load time and memory, its speed and accuracy at
several sample qualities, determinism, and the note clock. Numbers for docs/grand.md.

    python benchmarks/grand.py quality --midi ../shared/data/asap/Chopin/Etudes_op_10/4/ADIG02.mid \
        --seconds 60 --qualities 1 4 10
    python benchmarks/grand.py clock

Needs the samples (`pianosynth fetch-grand`) and pysfizz. Each quality runs in its own sfizz
process (render.SfizzProcess), as prepare runs it; the clock study drives pysfizz directly, to
compare block sizes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def floored_mrstft(a: np.ndarray, b: np.ndarray) -> float:
    """Floored (-80 dB) MR-STFT distance at 48 kHz's sizes (1024, 2048, 4096), per channel,
    averaged. a, b: (samples, 2)."""
    import torch

    from pianosynth.losses import MultiResolutionSTFTDistance

    dist = MultiResolutionSTFTDistance(fft_sizes=(1024, 2048, 4096), floor_db=-80.0)
    return float(np.mean([float(dist(torch.from_numpy(a[None, :, c].copy()), torch.from_numpy(b[None, :, c].copy()))) for c in range(2)]))


def cmd_quality(args) -> None:
    from pianosynth.config import RenderConfig
    from pianosynth.grand import N_REGIONS
    from pianosynth.midi import read_midi
    from pianosynth.render import SfizzProcess, check_sfizz, sfizz_events

    sr = 48000
    perf = read_midi(args.midi)
    perf.notes = [n for n in perf.notes if n.start_s < args.seconds]
    for curve in perf.pedals.values():
        keep = curve.times_s < args.seconds
        curve.times_s, curve.values = curve.times_s[keep], curve.values[keep]
    n = int((args.seconds + 1) * sr)
    events = sfizz_events(perf, sr)
    sfz = check_sfizz()
    print(f"{args.midi}: first {args.seconds:g} s, {len(perf.notes)} notes; load average {os.getloadavg()[0]:.2f}")
    renders = {}
    for q in args.qualities:
        cfg = RenderConfig(source="sfizz", sfizz_quality=q)
        proc = SfizzProcess(sfz, sr, cfg.sfizz_quality, cfg.sfizz_voices, N_REGIONS)
        times = []
        outs = []
        for _ in range(2):
            t = time.perf_counter()
            outs.append(proc.render(events, n))
            times.append(time.perf_counter() - t)
        proc.close()
        renders[q] = outs[0]
        same = np.array_equal(outs[0], outs[1])
        print(
            f"quality {q:2d}: load {proc.load_seconds:5.1f} s, peak RSS {proc.peak_rss_bytes / 2**30:.2f} GiB; "
            f"render {min(times):6.1f} s = {n / sr / min(times):5.2f}x real time; second render identical: {same}; "
            f"peak {np.abs(outs[0]).max():.3f}; load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    if args.fresh:
        q = args.qualities[0]
        cfg = RenderConfig(source="sfizz", sfizz_quality=q)
        proc = SfizzProcess(sfz, sr, cfg.sfizz_quality, cfg.sfizz_voices, N_REGIONS)
        again = proc.render(events, n)
        proc.close()
        diff = np.abs(again - renders[q]).max()
        print(f"quality {q}: a fresh process renders it identically: {np.array_equal(again, renders[q])} (max difference {diff:.2e})")
    best = max(args.qualities)
    for q in args.qualities:
        if q != best:
            print(f"quality {q} against {best}: floored MR-STFT per channel {floored_mrstft(renders[q], renders[best]):.5f}")


def cmd_clock(args) -> None:
    """Where a note's first sample falls, and how its waveform depends on where in sfizz's block
    it starts: the grand's C4, velocity 100, started at delay d of a block against delay 0."""
    from pysfizz import _sfizz

    from pianosynth.render import check_sfizz

    sfz = check_sfizz()
    for block in args.blocks:
        synth = _sfizz.Synth(48000, block)
        synth.enable_freewheeling()
        synth.set_sample_quality(1)
        t = time.perf_counter()
        synth.load_sfz_file(str(sfz))
        print(f"block {block}: loaded in {time.perf_counter() - t:.1f} s")

        def note(delay: int) -> np.ndarray:
            synth.all_sound_off()
            for _ in range(3):
                synth.render_block()
            out = []
            for b in range(-(-args.samples // block) + 3):
                if b == 2:
                    synth.note_on(delay, 60, 100)
                out.append(np.stack(synth.render_block(), axis=1))
            return np.concatenate(out)[2 * block :]  # from the start of the note's block

        ref = note(0)
        peak = np.abs(ref).max()
        for delay in sorted({1, 7, block // 2, block - 1}):
            x = note(delay)
            nz = np.flatnonzero(np.abs(x).max(axis=1) > 0)
            m = args.samples - block
            diff = np.abs(x[delay : delay + m] - ref[:m]).max()
            print(
                f"  delay {delay:4d}: first non-zero sample at {nz[0] if len(nz) else None} "
                f"(0 before it: {bool(np.all(x[:delay] == 0))}); against delay 0 shifted: max difference "
                f"{diff:.2e} = {20 * np.log10(max(diff, 1e-12) / peak):.0f} dB under the peak"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("quality", help="load time, memory, speed, determinism and accuracy per sample quality")
    p.add_argument("--midi", required=True)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 4, 10])
    p.add_argument("--fresh", action="store_true", help="also render the first quality again in a fresh process")
    p.set_defaults(func=cmd_quality)
    p = sub.add_parser("clock", help="the note clock and the block-phase dependence")
    p.add_argument("--blocks", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--samples", type=int, default=48000)
    p.set_defaults(func=cmd_clock)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
