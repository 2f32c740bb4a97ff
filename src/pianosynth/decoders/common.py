"""Signal pieces shared by the decoders: overlap-add, a centred inverse STFT, the keyboard, an
amplitude nonlinearity and reproducible noise phases."""

from __future__ import annotations

import math

import torch
from torch import nn


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


def istft_two_hops(spec: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """``istft_centred`` for frames of two hops (n_fft = 2 hop), without torch.istft's general
    overlap-add (``unfold_backward``, most of its time at these sizes): every sample lies under
    two frames, so its overlap-add is one addition, the same in any order, and the window's
    envelope is the same sum of two squares; the inverse FFTs are the same calls.

    spec: (batch, frames, hop + 1) complex -> (batch, frames * hop)
    """
    b, t, _ = spec.shape
    # istft_centred's extra frame at the end, and its centring: its output sample m is sample
    # m + hop + hop // 2 of the overlap-add of the t + 1 frames, frame j starting at j hop
    frames = torch.fft.irfft(torch.nn.functional.pad(spec, (0, 0, 0, 1)), n=2 * hop) * window  # (b, t + 1, 2 hop)
    first, second = frames[..., :hop], frames[..., hop:]
    y = torch.cat([first[:, 1:] + second[:, :-1], second[:, -1:]], dim=1).reshape(b, (t + 1) * hop)  # from sample hop on
    w2 = window * window
    env = torch.cat([(w2[:hop] + w2[hop:]).expand(t, hop), w2[hop:][None]]).reshape(-1)  # the same, for the window
    lo = hop // 2
    return y[:, lo : lo + t * hop] / env[lo : lo + t * hop]


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
