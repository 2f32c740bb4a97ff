"""A learned room: the reverberation that recordings carry and a dry synthesizer lacks.

A recording of a piano (issue 12) is the instrument heard through a room. The voices decoder gives
each note its own partials and noise, which is the instrument; the room's late reverberation is
shared by every note and is linear, so it is one impulse response applied to the whole output.

The impulse response is modelled the way late reverberation behaves, not as free taps (which a
spectral loss trains slowly and noisily): fixed white noise split into ``bands`` log-spaced
frequency bands, each band with a learned gain and a learned exponential decay::

    ir(t) = sum_k  gain_k * exp(-t / tau_k) * noise_k(t) / sqrt(sample_rate * tau_k / 2)
    out   = dry + ir * dry                                   (* : convolution, via FFT)

with the bands summing to unit-power white noise, so ``gain_k`` is the ratio of reverberant to direct
amplitude in band k and each band's RT60 is ``6.91 * tau_k``. There are ``2 * bands`` parameters.
They are stored as logs divided by ``RATE`` (Adam moves a parameter by about the learning rate per
step whatever its gradient, and these few must travel further than the network's weights). The
noise comes from a fixed seed and is not stored in checkpoints. The dry path stays as it is, so a
model started from a dry one begins close to where it was (the gains start at -12 dB).

Streaming (``Reverb.stream``): blocks of a long piece are convolved one by one and each block's
tail is carried into the next ones, so the joined output equals one whole convolution.
"""

from __future__ import annotations

import math
from typing import Iterable, Iterator

import torch
from torch import nn

NOISE_SEED = 20261126
RATE = 10.0  # the reverb's parameters move RATE times faster than the rest (see the module docstring)


class Reverb(nn.Module):
    """out = x + x * ir (a learned, band-wise exponentially decaying noise impulse response).

    x: (batch, samples) -> (batch, samples); the reverberation of the last samples past the end
    is cut (``forward``) or carried (``stream``).
    """

    def __init__(self, sample_rate: int, seconds: float = 1.0, bands: int = 12, f_min: float = 40.0):
        super().__init__()
        if not 0 < seconds <= 10:
            raise ValueError(f"reverb seconds must be in (0, 10], got {seconds}")
        self.sample_rate = sample_rate
        self.length = max(2, round(seconds * sample_rate))
        gen = torch.Generator().manual_seed(NOISE_SEED)
        noise = torch.randn(self.length, generator=gen)
        spec = torch.fft.rfft(noise)
        freqs = torch.fft.rfftfreq(self.length, 1 / sample_rate)
        edges = torch.logspace(math.log10(f_min), math.log10(sample_rate / 2), bands + 1)
        edges[0], edges[-1] = 0.0, sample_rate  # the lowest and highest bands take the rest
        parts = [torch.fft.irfft(spec * ((freqs >= lo) & (freqs < hi)), n=self.length) for lo, hi in zip(edges[:-1], edges[1:])]
        # the bands sum to unit-power white noise, so each one is that noise's share in its band
        self.register_buffer("noise", torch.stack(parts) / noise.std(), persistent=False)  # (bands, length)
        self.register_buffer("t", torch.arange(self.length) / sample_rate, persistent=False)
        self.log_gain = nn.Parameter(torch.full((bands,), math.log(0.25) / RATE))
        self.log_tau = nn.Parameter(torch.full((bands,), math.log(0.5 / 6.91) / RATE))  # RT60 0.5 s to start

    def gain(self) -> torch.Tensor:
        """(bands,) reverberant / direct amplitude per band."""
        return (self.log_gain * RATE).exp()

    def tau(self) -> torch.Tensor:
        """(bands,) seconds for each band's envelope to fall by 1/e."""
        return (self.log_tau * RATE).exp()

    def rt60(self) -> torch.Tensor:
        """(bands,) seconds for each band to fall by 60 dB."""
        return 6.91 * self.tau()

    def impulse_response(self) -> torch.Tensor:
        """(length,) the room's response, without the direct sound."""
        tau = self.tau()[:, None]
        env = self.gain()[:, None] * torch.exp(-self.t[None] / tau) / torch.sqrt(self.sample_rate * tau / 2)
        return (env * self.noise).sum(0)

    def wet(self, x: torch.Tensor, ir: torch.Tensor | None = None) -> torch.Tensor:
        """x * ir, whole: (batch, samples) -> (batch, samples + length - 1)."""
        ir = self.impulse_response() if ir is None else ir
        n = x.shape[-1] + self.length - 1
        size = 1 << (n - 1).bit_length()
        return torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(ir, size), size)[..., :n]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.wet(x)[..., : x.shape[-1]]

    @torch.no_grad()
    def stream(self, blocks: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The reverberated blocks of one long signal, each as long as it came in."""
        ir = self.impulse_response()
        tail = torch.zeros(0)
        for y in blocks:
            wet = self.wet(y[None], ir)[0]
            if len(tail) < len(wet):
                tail = torch.cat([tail, tail.new_zeros(len(wet) - len(tail))])
            tail = tail + wet
            yield y + tail[: len(y)]
            tail = tail[len(y) :]
