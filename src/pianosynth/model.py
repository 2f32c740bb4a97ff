"""The network: a recurrent encoder over feature frames and a decoder from states to waveform.

The report's system is ``encoder = BiRNN`` and ``decoder = frames``: a linear head that emits the
audio of each time window, the ``[examples, time windows, audio samples]`` matrix, joined into a
waveform. Decoders are looked up by name in ``DECODERS`` so that others can stand beside it.

Long inputs go through ``PianoSynth.synthesize``, which runs overlapping chunks with enough left and
right context for the bidirectional RNN and crossfades them, so memory does not grow with length.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
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


def overlap_add(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Overlap-adds windowed frames of ``2 * hop`` samples at hop ``hop``, frame t centred on the
    middle of its own hop (its window starts half a hop before its own samples).

    frames: (batch, frames, 2 * hop) -> (batch, frames * hop)
    """
    b, t, _ = frames.shape
    halves = frames.reshape(b, t, 2, hop)
    y = frames.new_zeros(b, t + 1, hop)
    y[:, :t] = y[:, :t] + halves[:, :, 0]
    y[:, 1:] = y[:, 1:] + halves[:, :, 1]  # (batch, frames + 1, hop)
    return y.reshape(b, (t + 1) * hop)[:, hop // 2 : hop // 2 + t * hop]


def istft_centred(spec: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Inverse STFT of one spectrum per frame, frame t centred on the middle of its own hop.

    spec: (batch, frames, bins) complex -> (batch, frames * hop)
    """
    t = spec.shape[1]
    # istft centres frame t on sample t * hop; pad one frame so that the half hop after the last
    # centre exists, then shift by half a hop so frame t is centred on its own samples
    spec = torch.nn.functional.pad(spec.transpose(1, 2), (0, 1))
    y = torch.istft(spec, n_fft, hop, window=window, center=True, length=(t + 1) * hop)
    return y[:, hop // 2 : hop // 2 + t * hop]


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


LOWEST_KEY = 21  # MIDI note of A0, the piano's lowest key
KEYS = 88


def typical_inharmonicity(keys: torch.Tensor) -> torch.Tensor:
    """A grand piano's inharmonicity coefficient B for keys 0..87 (A0..C8): log10 B flat at -3.8
    through the wound bass strings up to A2 (key 24), then rising linearly to -1.7 at C8. This
    follows the measured range (about 1e-4 in the bass to 1e-2 and above in the top octave,
    Fletcher, Blackham & Stratton 1962) and is only a starting point: the decoder learns B per key.
    """
    log10_b = -3.8 + (2.1 / 63) * (keys.float() - 24).clamp(min=0)
    return 10.0**log10_b


def exp_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """DDSP's positive, bounded amplitude nonlinearity: 2 * sigmoid(x) ** ln(10) + 1e-7."""
    return 2.0 * torch.sigmoid(x) ** math.log(10.0) + 1e-7


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


def noise_phase(shape: tuple[int, int, int], offset: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """Pseudo-random phases in [0, 2 pi) for (batch, frames, bins), a fixed function of the
    absolute frame (``offset`` + frame) and the bin: noise that is the same on every run and in
    every chunk of a long piece. The classic ``fract(sin(a * frame + b * bin) * 43758.5453)`` hash,
    in float64.
    """
    b, t, n = shape
    frame = torch.arange(t, dtype=torch.float64, device=device)[None, :, None]
    if offset is not None:
        frame = frame + offset.to(device, torch.float64)[:, None, None]
    bins = torch.arange(n, dtype=torch.float64, device=device)[None, None, :]
    x = torch.sin(torch.remainder(frame * 12.9898 + bins * 78.233, 2 * math.pi)) * 43758.5453
    return (2 * math.pi * torch.remainder(x, 1.0)).expand(b, t, n)


def _frames(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return FramesDecoder(in_channels, hop_samples, window=window)


def _istft(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return ISTFTDecoder(in_channels, hop_samples)


def _ddsp(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return DDSPDecoder(in_channels, hop_samples, sample_rate)


# name -> factory(in_channels, hop_samples, sample_rate, window); `window` only shapes the frames
# decoder. A decoder's forward takes (h, offset): offset, (batch,) or None, is the index of each
# input's first frame in the whole sequence (only the ddsp decoder's phases need it).
DECODERS = {"frames": _frames, "istft": _istft, "ddsp": _ddsp}


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
        sample_rate: int = 16000,
    ):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.in_channels = in_channels
        self.hop_samples = hop_samples
        self.encoder = Encoder(in_channels, cell, layers, hidden, bidirectional, dropout)
        self.decoder = DECODERS[decoder](self.encoder.out_channels, hop_samples, sample_rate, window=window)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """``offset``: (batch,) index of each input's first frame in its whole sequence, or None
        for 0 (see ``DECODERS``)."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x of shape (batch, frames, {self.in_channels}), got {tuple(x.shape)}")
        return self.decoder(self.encoder(x), offset)

    @torch.no_grad()
    def synthesize(
        self,
        x: torch.Tensor,
        chunk_frames: int = 1024,
        context_frames: int = 256,
        crossfade_frames: int = 16,
        batch_chunks: int | None = None,
        max_batch_frames: int = 32768,
        workers: int = 1,
    ) -> Iterator[torch.Tensor]:
        """Synthesizes a sequence of any length in overlapping chunks, yielding audio blocks.

        Each chunk's core of ``chunk_frames`` frames is run inside a window with up to
        ``context_frames`` of real input on each side (the bidirectional RNN's view of past and
        future). Windows never reach past the sequence (at the ends they slide inwards), so the
        first and last frames see what a whole-sequence pass sees. Neighbouring cores are
        crossfaded over ``crossfade_frames`` with a raised-cosine ramp. ``batch_chunks`` windows,
        all of one length, run through the RNN together (by default as many as fit in
        ``max_batch_frames`` frames: on a CPU a recurrent step costs about the same for one
        sequence as for ten, so batching is what makes synthesis fast). Memory depends on these
        sizes, not on the length of the input. ``workers`` > 1 splits each batch between that many
        threads (torch releases the GIL inside its kernels; give each one torch thread)::

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
        batch_chunks = batch_chunks or max(1, max_batch_frames // span)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, crossfade_frames * hop + 2)[1:-1])
        pending = x.new_zeros(0)  # the previous chunk's output past its core, to fade out
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for first in range(0, n_chunks, batch_chunks):
                chunks = range(first, min(n_chunks, first + batch_chunks))
                starts = [max(0, min(k * chunk_frames - context_frames, n - span)) for k in chunks]
                windows = torch.stack([x[s : s + span] for s in starts])
                y = self._run_windows(windows, torch.tensor(starts), pool, workers)  # (chunks, span * hop)
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

    def _run_windows(self, windows: torch.Tensor, offsets: torch.Tensor, pool, workers: int) -> torch.Tensor:
        """The model on a batch of windows, split between ``pool``'s threads if there is one."""
        if pool is None:
            return self(windows, offsets)

        def run(part):
            with torch.no_grad():  # grad mode is per thread
                return self(*part)

        parts = [p for p in zip(windows.tensor_split(workers), offsets.tensor_split(workers)) if len(p[0])]
        return torch.cat(list(pool.map(run, parts)))


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
        sample_rate=feature_cfg.sample_rate,
    )
