"""Speed of the grand's stereo voices (inverse-FFT synthesis) against today's per-sample voices,
measured side by side in one process (issue 19, "a synthesis that scales").

    python benchmarks/grand_synthesis.py [--midi FILE] [--seconds 60] [--threads 2] [--repeats 3]

Three measurements, each the best of ``--repeats``:

1. **Sinusoids alone.** ``--partials`` constant-frequency partials for one second at 48 kHz,
   as per-sample sinusoids (the ``voices`` decoder's way: a windowed cosine/sine basis per frame
   times the partials' coefficients, ``VoicesDecoder._basis``) and by inverse FFT
   (``spectral.InverseFFTSynth`` with ``--taps`` bins per partial), with the error of each
   against exact float64 sinusoids in dB. A thousand partials is 20 voices of 50.
2. **Whole models, in process** (``PianoSynth.synthesize``: encoder, conditioning and voices;
   ``--threads`` worker threads of one torch thread each) on the first ``--seconds`` of a
   performance: the grand decoder at 48 kHz stereo (hop 768) and the ``voices`` decoder at
   16 kHz mono (hop 256, as shipped) and at 48 kHz mono (hop 768). Untrained weights: speed
   does not depend on what they learned, except through how many partials each key plays and how
   soon released voices fall below the floor; the grand's partial counts are set to the
   bandwidths the issue measured on the grand's samples (A0 190 partials, C2 74, C4 29, C6 9,
   log-interpolated between, 4 above C6), with ``--all-partials`` for its worst case; once with
   two strings per partial (the recipe's) and once with one.
Printed as multiples of real time (seconds of audio per second of wall clock).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from pianosynth.config import FeatureConfig
from pianosynth.decoders.common import KEYS
from pianosynth.decoders.grand import GrandDecoder
from pianosynth.decoders.spectral import InverseFFTSynth
from pianosynth.features import compute_features, compute_notes, n_frames_for
from pianosynth.midi import read_midi
from pianosynth.model import PianoSynth

DEFAULT_MIDI = Path(__file__).resolve().parents[1] / "../shared/data/asap/Chopin/Ballades/1/Ali01.mid"
# bandwidths measured on the grand's samples (issue 19, "Bandwidth"): key index -> partials
MEASURED_PARTIALS = {0: 190, 15: 74, 39: 29, 63: 9}


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def sinusoids(partials: int, repeats: int, taps: list[int]) -> None:
    sr, hop, seconds = 48000, 768, 1.0
    frames = int(seconds * sr / hop)
    rng = np.random.default_rng(0)
    f = np.sort(rng.uniform(30, 15000, partials))
    phi = rng.uniform(-math.pi, math.pi, partials)
    centres = np.arange(frames + 1) * hop
    amp = 0.01 * np.exp(-centres[:, None] / sr * rng.uniform(0.5, 5, partials))
    n = np.arange(frames * hop)
    exact = sum(np.interp(n, centres, amp[:, i]) * np.sin(2 * np.pi * f[i] * n / sr + phi[i]) for i in range(partials))

    # per-sample: every frame is [a sin, a cos] @ a (2 P, 2 hop) windowed basis, overlap-added
    q = torch.arange(2 * hop, dtype=torch.float32)
    hann = torch.hann_window(2 * hop, periodic=True)
    ft = torch.tensor(f, dtype=torch.float32)
    basis = torch.cat([torch.cos(2 * math.pi / sr * ft[:, None] * q), torch.sin(2 * math.pi / sr * ft[:, None] * q)]) * hann
    # frame m starts at (m - 1) hop; Hann frames at 50% overlap interpolate the amplitude (not linearly)
    start = (np.arange(frames + 1) - 1) * hop
    theta = torch.tensor(np.remainder(phi + 2 * np.pi * np.outer(start, f) / sr, 2 * np.pi), dtype=torch.float32)
    a = torch.tensor(amp, dtype=torch.float32)

    def per_sample():
        coef = torch.cat([a * torch.sin(theta), a * torch.cos(theta)], dim=1)
        fr = coef @ basis  # (frames + 1, 2 hop)
        y = torch.zeros((frames + 2) * hop)
        y[: (frames + 1) * hop] += fr[:, :hop].reshape(-1)
        y[hop : (frames + 2) * hop] += fr[:, hop:].reshape(-1)
        return y[hop : (frames + 1) * hop]

    theta_c = torch.tensor(np.remainder(phi + 2 * np.pi * np.outer(centres, f) / sr, 2 * np.pi), dtype=torch.float32)
    slot = torch.arange(frames + 1)[:, None]
    index = torch.arange(partials)[None, :]

    def inverse_fft(taps: int):
        synth = InverseFFTSynth(hop, sr, taps=taps)
        kernels = synth.kernels(torch.tensor(f, dtype=torch.float32))

        def run():
            spec = synth.spectrum(a, theta_c, slot, frames + 1, kernels, index)
            return synth.overlap_add(synth.frames(spec))

        return run

    inner = slice(hop, (frames - 1) * hop)
    systems = [("per-sample sinusoids", per_sample)] + [(f"inverse FFT, {t} taps", inverse_fft(t)) for t in taps]
    for name, fn in systems:
        y = fn().double().numpy()
        err = 20 * math.log10(np.sqrt(np.mean((y[inner] - exact[inner]) ** 2)) / np.sqrt(np.mean(exact[inner] ** 2)))
        with torch.no_grad():
            s = best_of(fn, repeats)
        print(f"  {name:22s} {partials:4d} partials, 1 s at 48 kHz: {1000 * s:7.1f} ms ({seconds / s:7.1f} x real time); "
              f"error against exact sinusoids {err:6.1f} dB")  # fmt: skip
    print("  (the per-sample frames use the voices decoder's Hann overlap, whose amplitude ramp is not linear:")
    print("   its error above is the ramp's shape, not round-off)")


def measured_counts() -> torch.Tensor:
    keys = np.arange(KEYS)
    k, p = zip(*sorted(MEASURED_PARTIALS.items()))
    counts = np.exp(np.interp(keys, k, np.log(p)))
    counts[keys > max(k)] = 4
    return torch.tensor(np.round(counts), dtype=torch.long)


def models(midi: Path, seconds: float, threads: int, repeats: int, all_partials: bool) -> None:
    perf = read_midi(midi)
    for label, sr, hop, decoder, channels in (
        ("grand, 48 kHz stereo", 48000, 768, "grand", 2),
        ("grand, 1 string per partial", 48000, 768, "grand", 2),
        ("voices, 16 kHz mono (shipped)", 16000, 256, "voices", 1),
        ("voices, 48 kHz mono", 48000, 768, "voices", 1),
    ):
        fc = FeatureConfig(sample_rate=sr, hop_samples=hop, channels=channels)
        frames = min(n_frames_for(perf, fc), round(seconds * sr / hop))
        x = torch.from_numpy(compute_features(perf, fc, frames)).float()
        notes = compute_notes(perf, fc, frames * hop)
        notes = notes[notes[:, 2] < frames * hop]
        torch.manual_seed(0)
        model = PianoSynth(x.shape[1], hop, hidden=128, decoder=decoder, sample_rate=sr, channels=channels).eval()
        if "1 string" in label:
            model.decoder = GrandDecoder(model.encoder.out_channels, hop, sr, channels=channels, strings=1).eval()
        if decoder == "grand" and not all_partials:
            counts = measured_counts()
            with torch.no_grad():
                for z in range(model.decoder.zones):
                    model.decoder.partial_count[z] = int(counts[model.decoder.zone == z].max())
        audio_s = frames * hop / sr

        def run():
            for _ in model.synthesize(x, notes=notes, workers=threads):
                pass

        s = best_of(run, repeats)
        print(f"  {label:30s} {len(notes):5d} notes, {audio_s:5.1f} s: {s:6.2f} s, {audio_s / s:6.1f} x real time")


def profile(midi: Path, seconds: float) -> None:
    """cProfile of the grand's synthesis on one thread: where its time goes, by stage."""
    import cProfile
    import pstats

    perf = read_midi(midi)
    fc = FeatureConfig(sample_rate=48000, hop_samples=768, channels=2)
    frames = min(n_frames_for(perf, fc), round(seconds * 48000 / 768))
    x = torch.from_numpy(compute_features(perf, fc, frames)).float()
    notes = compute_notes(perf, fc, frames * 768)
    notes = notes[notes[:, 2] < frames * 768]
    torch.manual_seed(0)
    model = PianoSynth(x.shape[1], 768, hidden=128, decoder="grand", sample_rate=48000, channels=2).eval()
    counts = measured_counts()
    with torch.no_grad():
        for z in range(model.decoder.zones):
            model.decoder.partial_count[z] = int(counts[model.decoder.zone == z].max())
    prof = cProfile.Profile()
    prof.enable()
    for _ in model.synthesize(x, notes=notes, workers=1):
        pass
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt
    print(f"profile of the grand, first {seconds:g} s, 1 thread: {total:.2f} s in all")
    for (file, _, name), (_, _, _, cum, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][3]):
        if name in ("conditioning", "render", "_partials", "spectrum", "forward", "_noise", "_log_amplitudes", "_network") and (
            "pianosynth" in file
        ):
            print(f"  {Path(file).name}:{name:18s} {cum:7.2f} s  {100 * cum / total:5.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--midi", type=Path, default=DEFAULT_MIDI)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--partials", type=int, nargs="+", default=[30, 190, 1000])
    parser.add_argument("--taps", type=int, nargs="+", default=[4, 6, 8], help="bins per partial per frame of the inverse FFT")
    parser.add_argument("--all-partials", action="store_true", help="the grand plays 192 partials on every key")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS", help="also profile the grand on this many seconds, 1 thread")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one torch thread per worker thread
    print(f"sinusoids alone (1 torch thread), best of {args.repeats}:")
    for p in args.partials:
        sinusoids(p, args.repeats, args.taps)
    if not args.skip_models:
        print(f"whole models in process, {args.threads} worker thread(s), first {args.seconds:g} s of {args.midi.name}, best of {args.repeats}:")
        models(args.midi, args.seconds, args.threads, args.repeats, args.all_partials)
    if args.profile:
        profile(args.midi, args.profile)


if __name__ == "__main__":
    main()
