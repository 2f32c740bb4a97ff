"""How much a system's output format moves the MR-STFT distance, unfloored and floored (issue 14).

    python benchmarks/output_path.py --cache cache/asap-e630115312 [--model CKPT] [--clips 12] [--seconds 30]

On ``pianosynth evaluate``'s clips of the test split, scores three systems against the stored
16-bit reference, each written four ways: as float; as 16-bit PCM the way ``evaluate`` and
``prepare`` round (``evaluate.as_pcm16``); as 16-bit PCM the way ``synthesize`` writes it
(through libsndfile, read back with soundfile); and with TPDF dither of ±1 LSB before that
rounding. The systems are the model; FluidSynth's own float render of the reference, before
``prepare`` rounded it to 16 bits (a perfect system whose only difference is its output path);
and the MuseScore General baseline, which ``evaluate`` scored as float before issue 14.
Prints a markdown table of mean ± standard deviation over clips.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
import soundfile as sf
import torch

from pianosynth.config import RenderConfig
from pianosynth.dataset import Cache
from pianosynth.evaluate import (
    EVAL_SR,
    MUSESCORE_SOUNDFONT,
    _Pieces,
    as_pcm16,
    choose_clips,
    model_system,
    reference_system,
    resample,
    soundfont_system,
    spectral_metrics,
    system_output,
)
from pianosynth.synthesize import default_model_path


def through_libsndfile(audio: np.ndarray, sr: int) -> np.ndarray:
    """What ``synthesize`` writes (a clipped float block into a PCM_16 WAV), read back as floats."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), sr, format="WAV", subtype="PCM_16")
    buf.seek(0)
    return sf.read(buf, dtype="float32")[0]


def dithered(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """TPDF dither of ±1 LSB (1/32767) added before the rounding."""
    lsb = 1 / 32767
    return as_pcm16(audio + (rng.uniform(-0.5, 0.5, len(audio)) + rng.uniform(-0.5, 0.5, len(audio))) * lsb)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cache = Cache(args.cache)
    pieces = _Pieces(cache)
    ref = reference_system(cache)
    systems = [
        model_system(args.model or default_model_path(), pieces, name="model"),
        soundfont_system(pieces, "reference as FluidSynth's float output", cache.render),
        soundfont_system(pieces, "MuseScore General grand (FluidSynth)", RenderConfig(soundfont=MUSESCORE_SOUNDFONT)),
    ]
    paths = {
        "float": lambda a, sr, rng: a,
        "16-bit, as evaluate rounds": lambda a, sr, rng: as_pcm16(a),
        "16-bit, as synthesize writes (libsndfile)": lambda a, sr, rng: through_libsndfile(a, sr),
        "16-bit with TPDF dither": lambda a, sr, rng: dithered(a, rng),
    }
    scores = {(s.name, p): [] for s in systems for p in paths}
    for clip in choose_clips(cache, "test", args.clips, args.seconds):
        r16 = system_output(ref, clip)[0]
        for system in systems:
            audio = system.render(clip)[0]
            for path, write in paths.items():
                a = resample(write(audio, system.sr, np.random.default_rng(clip.index)), system.sr, EVAL_SR)
                m = spectral_metrics(a, r16)
                scores[(system.name, path)].append((m["mrstft"], m["mrstft_floor80"]))
    print(f"{args.clips} clips of {args.seconds:g} s from the test split of `{cache.dir.name}`; mean ± std over clips.\n")
    print("| system | written as | MR-STFT ↓ | MR-STFT, floor −80 dB ↓ |\n| --- | --- | ---: | ---: |")
    for (name, path), rows in scores.items():
        v = np.array(rows)
        print(f"| {name} | {path} | {v[:, 0].mean():.3f} ± {v[:, 0].std():.3f} | {v[:, 1].mean():.3f} ± {v[:, 1].std():.3f} |")


if __name__ == "__main__":
    main()
