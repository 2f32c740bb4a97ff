"""The network: a recurrent encoder over feature frames and a decoder from states to waveform.

The report's system is ``encoder = BiRNN`` and ``decoder = frames``: a linear head that emits the
audio of each time window, the ``[examples, time windows, audio samples]`` matrix, joined into a
waveform. Decoders are looked up by name in ``DECODERS`` so that others can stand beside it.

Long inputs go through ``PianoSynth.synthesize``, which runs overlapping chunks with enough left and
right context for the bidirectional RNN and crossfades them, so memory does not grow with length.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class Encoder(nn.Module):
    """A stacked (bi)directional recurrent network over feature frames.

    x: (batch, frames, in_channels) -> h: (batch, frames, hidden * directions)
    """

    def __init__(self, in_channels: int, cell: str, layers: int, hidden: int, bidirectional: bool, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if not 1 <= layers <= 4:
            raise ValueError(f"layers must be 1 to 4, got {layers}")
        if hidden <= 0 or in_channels <= 0:
            raise ValueError(f"hidden and in_channels must be positive, got {hidden} and {in_channels}")
        self.rnn = CELLS[cell](
            in_channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_channels = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return h


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

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        frames = self.proj(h)  # (batch, frames, hop) or (batch, frames, 2 * hop)
        if self.window == "rect":
            return frames.reshape(b, t * self.hop)
        halves = (frames * self.hann).reshape(b, t, 2, self.hop)
        y = h.new_zeros(b, t + 1, self.hop)
        y[:, :t] = y[:, :t] + halves[:, :, 0]
        y[:, 1:] = y[:, 1:] + halves[:, :, 1]  # (batch, frames + 1, hop)
        # frame t's window starts half a hop before its own samples
        return y.reshape(b, (t + 1) * self.hop)[:, self.hop // 2 : self.hop // 2 + t * self.hop]


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

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, t, _ = h.shape
        log_mag, re, im = self.proj(h).chunk(3, dim=-1)  # each (batch, frames, bins)
        mag = torch.exp(log_mag.clamp(max=6.0))
        norm = torch.sqrt(re**2 + im**2 + 1e-9)
        spec = torch.complex(mag * re / norm, mag * im / norm).transpose(1, 2)  # (batch, bins, frames)
        # istft centres frame t on sample t * hop; pad one frame so that the half hop after the last
        # centre exists, then shift by half a hop so frame t is centred on its own samples
        spec = torch.nn.functional.pad(spec, (0, 1))
        y = torch.istft(spec, self.n_fft, self.hop, window=self.window, center=True, length=(t + 1) * self.hop)
        return y[:, self.hop // 2 : self.hop // 2 + t * self.hop]


def _frames(in_channels: int, hop_samples: int, window: str) -> nn.Module:
    return FramesDecoder(in_channels, hop_samples, window=window)


def _istft(in_channels: int, hop_samples: int, window: str) -> nn.Module:
    return ISTFTDecoder(in_channels, hop_samples)


# name -> factory(in_channels, hop_samples, window); `window` only shapes the frames decoder
DECODERS = {"frames": _frames, "istft": _istft}


class PianoSynth(nn.Module):
    """Feature frames -> waveform.

    x: (batch, frames, in_channels) float in 0..1 -> y: (batch, frames * hop_samples)
    """

    def __init__(
        self,
        in_channels: int,
        hop_samples: int,
        cell: str = "gru",
        layers: int = 2,
        hidden: int = 256,
        bidirectional: bool = True,
        decoder: str = "frames",
        window: str = "ola",
        dropout: float = 0.0,
    ):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.in_channels = in_channels
        self.hop_samples = hop_samples
        self.encoder = Encoder(in_channels, cell, layers, hidden, bidirectional, dropout)
        self.decoder = DECODERS[decoder](self.encoder.out_channels, hop_samples, window=window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x of shape (batch, frames, {self.in_channels}), got {tuple(x.shape)}")
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def synthesize(
        self,
        x: torch.Tensor,
        chunk_frames: int = 1024,
        context_frames: int = 256,
        crossfade_frames: int = 16,
        batch_chunks: int = 8,
    ) -> Iterator[torch.Tensor]:
        """Synthesizes a sequence of any length in overlapping chunks, yielding audio blocks.

        Each chunk's core of ``chunk_frames`` frames is run inside a window with up to
        ``context_frames`` of real input on each side (the bidirectional RNN's view of past and
        future). Windows never reach past the sequence (at the ends they slide inwards), so the
        first and last frames see what a whole-sequence pass sees. Neighbouring cores are
        crossfaded over ``crossfade_frames`` with a raised-cosine ramp. ``batch_chunks`` windows,
        all of one length, run through the RNN together. Memory depends on these sizes, not on
        the length of the input::

            window k:   [ context | core k | context ]
            window k+1:            [ context | core k+1 | context ]
            output:     ... core k ><fade>< core k+1 ...

        x: (frames, in_channels) -> yields (samples,) blocks whose concatenation is
        (frames * hop_samples,).
        """
        if x.dim() != 2 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x of shape (frames, {self.in_channels}), got {tuple(x.shape)}")
        if crossfade_frames > context_frames:
            raise ValueError("crossfade_frames must not exceed context_frames")
        n, hop = x.shape[0], self.hop_samples
        n_chunks = max(1, math.ceil(n / chunk_frames))
        span = min(n, chunk_frames + 2 * context_frames)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, crossfade_frames * hop + 2)[1:-1])
        pending = x.new_zeros(0)  # the previous chunk's output past its core, to fade out
        for first in range(0, n_chunks, batch_chunks):
            chunks = range(first, min(n_chunks, first + batch_chunks))
            starts = [max(0, min(k * chunk_frames - context_frames, n - span)) for k in chunks]
            y = self(torch.stack([x[s : s + span] for s in starts]))  # (chunks, span * hop)
            for k, lo in zip(chunks, starts):
                core_lo, core_hi = k * chunk_frames, min(n, (k + 1) * chunk_frames)
                tail_hi = min(core_hi + crossfade_frames, lo + span)
                seg = y[k - first, (core_lo - lo) * hop : (tail_hi - lo) * hop]
                if len(pending):
                    fade_in = ramp[: len(pending)]
                    head = seg[: len(pending)] * fade_in + pending * (1 - fade_in)
                    seg = torch.cat([head, seg[len(pending) :]])
                core = (core_hi - core_lo) * hop
                pending = seg[core:]
                yield seg[:core]


def build_model(model_cfg, feature_cfg) -> PianoSynth:
    """The model a config describes (configs stay outside the model's signature)."""
    return PianoSynth(
        in_channels=feature_cfg.n_channels,
        hop_samples=feature_cfg.hop_samples,
        cell=model_cfg.cell,
        layers=model_cfg.layers,
        hidden=model_cfg.hidden,
        bidirectional=model_cfg.bidirectional,
        decoder=model_cfg.decoder,
        window=model_cfg.window,
        dropout=model_cfg.dropout,
    )
