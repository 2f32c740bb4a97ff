"""The report's decoder: a linear head emitting the audio samples of each frame."""

from __future__ import annotations

import torch
from torch import nn

from .common import overlap_add


class FramesDecoder(nn.Module):
    """The report's decoder: a linear head emitting the audio samples of each frame.

    ``window="rect"``: ``hop_samples`` samples per frame, concatenated.
    ``window="ola"``: ``2 * hop_samples`` samples per frame, shaped by a periodic Hann window and
    overlap-added at hop ``hop_samples``. Periodic Hann windows at 50% overlap sum to exactly 1,
    so the head is free to produce any waveform while neighbouring frames blend instead of
    meeting at a hard edge::

        frame t-1:  ___/‾‾‾‾\\___
        frame t:        ___/‾‾‾‾\\___
        samples:      |  t-1 |  t   |      each frame's window is centred on its own hop

    h: (batch, frames, in_channels) -> y: (batch, frames * hop_samples)
    """

    def __init__(self, in_channels: int, hop_samples: int, window: str = "ola"):
        super().__init__()
        if window not in ("rect", "ola"):
            raise ValueError(f"window must be 'rect' or 'ola', got {window!r}")
        if window == "ola" and hop_samples % 2:
            raise ValueError(f"the ola window needs an even hop_samples, got {hop_samples}")
        self.hop = hop_samples
        self.window = window
        self.proj = nn.Linear(in_channels, hop_samples * (2 if window == "ola" else 1))
        if window == "ola":
            self.register_buffer("hann", torch.hann_window(2 * hop_samples, periodic=True), persistent=False)

    def forward(self, h: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = h.shape
        frames = self.proj(h)  # (batch, frames, hop) or (batch, frames, 2 * hop)
        if self.window == "rect":
            return frames.reshape(b, t * self.hop)
        return overlap_add(frames * self.hann, self.hop)
