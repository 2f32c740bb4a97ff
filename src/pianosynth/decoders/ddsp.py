"""A differentiable piano on the frame clock: 88 keys of inharmonic partials and filtered noise."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import KEYS, LOWEST_KEY, exp_sigmoid, istft_centred, noise_phase, overlap_add, typical_inharmonicity


class DDSPDecoder(nn.Module):
    """A differentiable piano (DDSP, Engel et al. 2020; DDSP-Piano, Renault et al. 2022): for each
    of the 88 keys, partials k = 1, 2, ... at the stretched frequencies of a stiff string,
    f_k = k * f0 * sqrt(1 + B * k^2), plus filtered noise for the hammer and everything else.

    The network gives every partial's amplitude in every frame (so attack, decay, damping and
    the pedal's ring are all its to learn) and the noise's magnitude in every STFT bin. B and a
    fine tuning (in cents) are learned per key. Each partial is a sinusoid whose phase runs on
    from the start of the sequence, so phase is coherent by construction; ``offset`` says how
    many frames into the sequence the input starts, so that chunks of a long piece agree.

    Partials are kept up to ``max_partials`` per key and below 95% of Nyquist. The sum is computed
    frame by frame as a matrix product: with a frame's amplitudes ``a``, its window ``w`` and the
    partials' phases ``theta`` at the window's start, the frame's samples are
    ``w[m] * sum_j a_j * sin(theta_j + omega_j * m)``
    ``= w[m] * ((a * sin(theta)) @ cos(omega m) + (a * cos(theta)) @ sin(omega m))``,
    and Hann-windowed frames at 50% overlap are added up (linear-in-window amplitude glide).
    Gradients reach the frequencies through ``omega * m`` within a frame only; the phase carried
    from the start is computed from detached frequencies, in float64, so that it stays exact
    for hours of audio.

    h: (batch, frames, in_channels) -> y: (batch, frames * hop_samples)
    """

    def __init__(self, in_channels: int, hop_samples: int, sample_rate: int, max_partials: int = 48, n_fft: int | None = None):
        super().__init__()
        if hop_samples % 2:
            raise ValueError(f"the ddsp decoder needs an even hop_samples, got {hop_samples}")
        self.hop, self.sample_rate = hop_samples, sample_rate
        self.n_fft = n_fft or 4 * hop_samples
        keys = torch.arange(KEYS)
        f0 = 440.0 * 2.0 ** ((keys + LOWEST_KEY - 69) / 12.0)
        b = typical_inharmonicity(keys)
        k = torch.arange(1, max_partials + 1, dtype=torch.float32)
        freqs = k[None, :] * f0[:, None] * torch.sqrt(1 + b[:, None] * k[None, :] ** 2)  # (keys, partials)
        key_idx, part_idx = torch.nonzero(freqs < 0.95 * sample_rate / 2, as_tuple=True)
        self.register_buffer("f0", f0)
        self.register_buffer("partial_key", key_idx)
        self.register_buffer("partial_k", k[part_idx])
        self.log_b = nn.Parameter(torch.log(b))
        self.detune = nn.Parameter(torch.zeros(KEYS))  # tens of cents (so that Adam's steps are a fraction of a cent)
        self.amp = nn.Linear(in_channels, len(key_idx))
        self.noise = nn.Linear(in_channels, self.n_fft // 2 + 1)
        with torch.no_grad():  # start near silence
            self.amp.bias.fill_(-5.0)
            self.noise.bias.fill_(-5.0)
        self.register_buffer("hann", torch.hann_window(2 * hop_samples, periodic=True), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    @property
    def n_partials(self) -> int:
        return len(self.partial_key)

    def frequencies(self) -> torch.Tensor:
        """Each partial's frequency in Hz, (partials,)."""
        key = self.partial_key
        f0 = self.f0[key] * 2.0 ** (self.detune[key] * 10.0 / 1200.0)
        k = self.partial_k
        return k * f0 * torch.sqrt(1 + torch.exp(self.log_b[key]) * k**2)

    def forward(self, h: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        t = h.shape[1]
        hop, sr = self.hop, self.sample_rate
        freqs = self.frequencies()
        alive = (freqs < 0.5 * sr).to(h.dtype).detach()  # a learned B may push a partial past Nyquist
        amps = exp_sigmoid(self.amp(h)) * alive  # (batch, frames, partials)

        # phase (in cycles, float64) of every partial where each frame's window starts
        cps = freqs.detach().double() / sr  # cycles per sample
        starts = torch.arange(t, dtype=torch.float64, device=h.device) * hop - hop // 2
        cyc = torch.remainder(starts[:, None] * cps[None, :], 1.0) * (2 * math.pi)  # (frames, partials)
        sin_t, cos_t = torch.sin(cyc).to(h.dtype), torch.cos(cyc).to(h.dtype)
        if offset is not None and bool((offset != 0).any()):
            off = offset.to(h.device, torch.float64)[:, None] * hop * cps[None, :]
            off = torch.remainder(off, 1.0) * (2 * math.pi)  # (batch, partials)
            so, co = torch.sin(off).to(h.dtype)[:, None], torch.cos(off).to(h.dtype)[:, None]
            sin_t, cos_t = sin_t * co + cos_t * so, cos_t * co - sin_t * so  # angle sum, (batch, frames, partials)

        omega_m = (2 * math.pi / sr) * freqs[:, None] * torch.arange(2 * hop, device=h.device, dtype=h.dtype)
        basis = torch.cat([torch.cos(omega_m), torch.sin(omega_m)]) * self.hann  # (2 * partials, 2 * hop)
        frames = torch.cat([amps * sin_t, amps * cos_t], dim=-1) @ basis  # (batch, frames, 2 * hop)
        harmonic = overlap_add(frames, hop)

        mag = exp_sigmoid(self.noise(h))  # (batch, frames, bins)
        noise = istft_centred(torch.polar(mag, noise_phase(mag.shape, offset, h.device).to(h.dtype)), self.n_fft, hop, self.window)
        return harmonic + noise
