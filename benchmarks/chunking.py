"""How far chunked synthesis is from one whole-sequence pass, for several chunk and context sizes.

    python benchmarks/chunking.py --cache cache/asap-e630115312 [--model CKPT] [--seconds 90]

Takes the first ``--seconds`` of the first piece of the cache's test split, runs the model over it
in one pass and chunked, and prints the MR-STFT distance between the two (and the largest sample
difference), next to the model's own distance from the reference audio of the same excerpt.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from pianosynth.dataset import Cache
from pianosynth.features import dequantize
from pianosynth.losses import MultiResolutionSTFTDistance
from pianosynth.synthesize import default_model_path
from pianosynth.checkpoint import model_from_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args()
    model, cfg = model_from_checkpoint(args.model or default_model_path())
    cache = Cache(args.cache)
    piece = cache.split("test")[0]
    feats, audio = cache.load(piece)
    n = min(len(feats), round(args.seconds * cfg.features.frame_rate))
    x = torch.from_numpy(dequantize(np.asarray(feats[:n])))
    ref = torch.from_numpy(audio[: n * cfg.features.hop_samples].astype("float32") / 32767)
    mr = MultiResolutionSTFTDistance()
    with torch.no_grad():
        whole = model(x[None])[0]
    print(f"{piece['file']}, first {n / cfg.features.frame_rate:.1f} s; model to reference: {float(mr(whole[None], ref[None])):.3f}")
    fr = cfg.features.frame_rate
    for chunk_s, context_s in ((16, 4), (30, 4), (30, 2), (30, 1), (8, 2)):
        y = torch.cat(list(model.synthesize(x, round(chunk_s * fr), round(context_s * fr), round(0.25 * fr))))
        print(f"chunks {chunk_s} s, context {context_s} s: MR-STFT to the whole pass {float(mr(y[None], whole[None])):.4f}, "
              f"largest sample difference {float((y - whole).abs().max()):.5f}")  # fmt: skip


if __name__ == "__main__":
    main()
