"""Phase-aware frame decoder: a log-magnitude and a phase per STFT bin, then an inverse STFT."""

from __future__ import annotations

import torch
from torch import nn

from .common import istft_centred


class ISTFTDecoder(nn.Module):
    """Phase-aware decoder (Vocos, Siuzdak 2023): per frame, a log-magnitude and a phase for every
    STFT bin, turned into a waveform by an inverse STFT with a Hann window and overlap-add.

    The phase is the angle of a 2-vector the head predicts (atan2, without computing the angle:
    the vector is normalised), so it has no wrap-around discontinuity to learn. Frame t is
    centred on the middle of its own hop. The magnitude's exponent is clamped so that an early,
    wild prediction cannot overflow.

    h: (batch, frames, in_channels) -> y: (batch, frames * hop_samples)
    """

    def __init__(self, in_channels: int, hop_samples: int, n_fft: int | None = None):
        super().__init__()
        self.hop = hop_samples
        self.n_fft = n_fft or 4 * hop_samples
        if self.n_fft < 2 * hop_samples or self.n_fft % 2:
            raise ValueError(f"n_fft must be even and at least 2 * hop_samples, got {self.n_fft}")
        self.bins = self.n_fft // 2 + 1
        self.proj = nn.Linear(in_channels, 3 * self.bins)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    def forward(self, h: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        log_mag, re, im = self.proj(h).chunk(3, dim=-1)  # each (batch, frames, bins)
        mag = torch.exp(log_mag.clamp(max=6.0))
        norm = torch.sqrt(re**2 + im**2 + 1e-9)
        spec = torch.complex(mag * re / norm, mag * im / norm)
        return istft_centred(spec, self.n_fft, self.hop, self.window)
