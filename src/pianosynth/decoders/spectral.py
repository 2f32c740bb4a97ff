"""Inverse-FFT synthesis of sinusoids (Rodet & Depalle, "Spectral envelopes and inverse FFT
synthesis", AES 1992): a cost per partial that does not grow with the sample rate.

Per-sample sinusoids cost samples x partials x voices. Here every partial of every voice adds a
few bins to one spectrum per frame, and one inverse FFT per frame (and channel) turns the sum
into samples:

- a sinusoid of constant amplitude and frequency under a window ``w`` has the window's transform
  ``W`` shifted to its frequency as its spectrum. With a 4-term Blackman-Harris window (side lobes
  92 dB down) almost all of ``W`` lies in its main lobe, 8 bins wide, so a partial is ``taps``
  bins per frame: the exact values of ``W`` at those bins (``window_transform``, the closed form
  of the window's DTFT), scaled by the partial's complex amplitude;
- the inverse FFT of the summed spectrum is the sum of the windowed sinusoids, up to what the
  lobe's truncation leaves out. Dividing by ``w`` and multiplying by a triangle of half-width
  ``hop`` gives frames that overlap-add at hop ``hop`` to sinusoids whose amplitudes ramp
  linearly from one frame centre to the next; the phases are exact at every frame centre, so
  frames of one partial join without a seam. Only the middle half of the ``n_fft = 4 hop`` window
  is used, where ``w`` is above 0.217, so the division raises the truncation error by 14 dB at
  most.

Frame ``f`` is centred on sample ``f * hop`` and spans ``[(f - 1) hop, (f + 1) hop)``::

    frame f-1   /\\
    frame f        /\\
    frame f+1         /\\       (triangles: the synthesis window; they sum to one)
               ---+--+--+--+--> samples
                (f-1)h f h (f+1)h

The per-frame cost is ``taps`` complex multiply-adds per partial (plus, for the few partials
within ``taps / 2`` bins of 0 Hz, their negative-frequency lobe) and one inverse FFT of
``4 hop`` samples, i.e. ``4 log2(4 hop)`` operations per output sample whatever the number of
partials. Everything is differentiable in the amplitudes, phases and frequencies (the latter
through ``W``'s shape within a frame).

Measured against per-sample sinusoids (docs/grand.md, "The learned grand"; tests/test_grand_voices.py
holds the error bound).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# 4-term Blackman-Harris (Harris 1978): side lobes at -92 dB, main lobe +-4 bins
BLACKMAN_HARRIS = (0.35875, 0.48829, 0.14128, 0.01168)


def centred_window(n_fft: int) -> torch.Tensor:
    """The Blackman-Harris window centred on sample 0 in the FFT's circular order: entry ``n`` (and
    ``n - n_fft`` for n >= n_fft / 2) is ``sum_m a_m cos(2 pi m n / n_fft)``; entry n_fft / 2 (the
    lone sample of an even window) is 0, so the window is even and its transform real. (n_fft,)"""
    n = torch.arange(n_fft, dtype=torch.float64)
    n = torch.where(n >= n_fft // 2, n - n_fft, n)
    w = sum(a * torch.cos(2 * math.pi * m * n / n_fft) for m, a in enumerate(BLACKMAN_HARRIS))
    w[n_fft // 2] = 0.0
    return w


def _dirichlet(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``sum_{|n| < n_fft / 2} exp(-2 pi i x n / n_fft) = sin(pi x L / N) / sin(pi x / N)`` with
    L = n_fft - 1 terms; x in bins, |x| < n_fft. Its limit L at x = 0 is taken where |x| is tiny."""
    small = x.abs() < 1e-4
    safe = torch.where(small, torch.ones_like(x), x)
    d = torch.sin(math.pi * safe * (n_fft - 1) / n_fft) / torch.sin(math.pi * safe / n_fft)
    return torch.where(small, torch.full_like(x, n_fft - 1.0), d)


def window_transform(x: torch.Tensor, n_fft: int) -> torch.Tensor:
    """The DTFT of ``centred_window(n_fft)`` at ``x`` bins from its centre (real: the window is
    even): ``a0 D(x) + sum_{m>=1} a_m / 2 (D(x - m) + D(x + m))``. Any shape."""
    out = BLACKMAN_HARRIS[0] * _dirichlet(x, n_fft)
    for m, a in enumerate(BLACKMAN_HARRIS[1:], start=1):
        out = out + 0.5 * a * (_dirichlet(x - m, n_fft) + _dirichlet(x + m, n_fft))
    return out


class InverseFFTSynth(nn.Module):
    """Sinusoids by inverse FFT and overlap-add (see the module docstring).

    hop: frame spacing in samples (the n_fft is 4 hop); taps: bins per partial per frame (even;
    8 covers Blackman-Harris's main lobe).
    """

    def __init__(self, hop: int, sample_rate: int, taps: int = 8):
        super().__init__()
        if hop < 4 or taps < 2 or taps % 2:
            raise ValueError(f"hop must be >= 4 and taps even and >= 2, got hop {hop}, taps {taps}")
        self.hop, self.sample_rate, self.taps = hop, sample_rate, taps
        self.n_fft = 4 * hop
        self.bins = self.n_fft // 2 + 1
        w = centred_window(self.n_fft)
        n = torch.arange(-hop, hop, dtype=torch.float64)
        tri = 1.0 - n.abs() / hop
        # the frame's middle 2 hop samples, n = -hop .. hop-1: undo the analysis window, apply the triangle
        synth = tri / w[n.long() % self.n_fft]
        self.register_buffer("synthesis_window", synth.float(), persistent=False)
        self._kept_by_tap: tuple | None = None  # _by_tap's transposed kernels, and what they came from

    def kernel(self, freqs_hz: torch.Tensor, negative: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``taps`` bins nearest to each frequency and the window transform's values there.

        freqs_hz: (...) -> bins (..., taps) int64, weights (..., taps) float; bins outside
        0..n_fft/2 get weight 0 (and a valid index). With ``negative``, the same for the
        frequency's negative image at ``-freqs_hz`` (what a real sinusoid near 0 Hz adds to the
        lowest bins)."""
        fb = freqs_hz * (self.n_fft / self.sample_rate)
        centre = -fb if negative else fb
        first = torch.floor(centre.detach()).long() - self.taps // 2 + 1
        k = first[..., None] + torch.arange(self.taps, device=fb.device)
        w = window_transform(k.to(fb.dtype) - centre[..., None], self.n_fft)
        # (-1)^k delays the inverse FFT's output by n_fft / 2: the frame's centre lands in the
        # middle of it, so its 2 hop samples are one slice (``frames``)
        sign = 1.0 - 2.0 * torch.remainder(k, 2).to(w.dtype)
        valid = (k >= 0) & (k < self.bins)
        return k.clamp(0, self.bins - 1), w * sign * valid.to(w.dtype)

    def kernels(self, freqs_hz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Both lobes of each partial, computed once and shared by every frame that plays it.

        freqs_hz: (partials,) -> bins, weights (2 partials, taps): partial i's positive lobe in
        row i and its negative-frequency image in row partials + i; and ``near_zero``
        (partials,) bool: whether that image reaches the positive bins (the partial lies within
        taps/2 + 1 bins of 0 Hz), the only ones whose image is added.
        """
        bins, w = self.kernel(freqs_hz)
        nb, nw = self.kernel(freqs_hz, negative=True)
        near_zero = freqs_hz.detach() * (self.n_fft / self.sample_rate) < self.taps // 2 + 1
        return torch.cat([bins, nb]), torch.cat([w, nw]), near_zero

    def spectrum(
        self, amp: torch.Tensor, phase: torch.Tensor, slot: torch.Tensor, n_slots: int,
        kernels: tuple[torch.Tensor, torch.Tensor, torch.Tensor], index: torch.Tensor,
        channels: int | None = None, chunk: int = 1 << 17,
    ) -> torch.Tensor:
        """Sums sinusoids into one spectrum per slot (a slot is one frame).

        amp, phase, slot, index: one entry per sinusoid in one frame (any shape; they broadcast):
        its amplitude, its phase at the frame's centre in radians (``a sin(2 pi f t + phase)``
        with t = 0 there), its slot in 0..n_slots-1 and its partial's row in ``kernels``. With
        ``channels``, amp and phase carry a last dimension of that many channels, which share the
        entry's slot and frequency (one gather of the kernel serves them all).
        -> (n_slots, n_fft / 2 + 1) complex, or (n_slots, channels, n_fft / 2 + 1)
        """
        C = channels or 1
        if channels is None:
            amp, phase = amp[..., None], phase[..., None]
        # (torch.broadcast_shapes would import sympy, seconds at first use)
        lead = torch.broadcast_tensors(amp[..., 0], phase[..., 0], slot, index)[0].shape
        amp, phase = amp.expand(*lead, C).reshape(-1, C), phase.expand(*lead, C).reshape(-1, C)
        slot, index = slot.expand(lead).reshape(-1), index.expand(lead).reshape(-1)
        bins, w, near_zero = kernels
        if not (torch.is_grad_enabled() and (amp.requires_grad or phase.requires_grad or w.requires_grad)):
            spec = self._summed(amp, phase, slot, index, n_slots, kernels)
            return spec if channels is not None else spec[:, 0]
        # a sin(x + phase) = a/2 e^{i(phase - pi/2)} e^{ix} + its conjugate at -f
        ri = torch.stack([torch.sin(phase), -torch.cos(phase)], dim=-1) * (0.5 * amp)[..., None]  # (entries, C, 2)
        flat = _Lobes.apply(ri, w, bins, index, slot, n_slots * self.bins, self.bins, chunk)  # (n, C, 2)
        low = torch.nonzero(near_zero[index], as_tuple=True)[0]
        if len(low):  # the negative images: conjugate coefficients on the kernels' second half
            conj = ri[low] * torch.tensor([1.0, -1.0], dtype=ri.dtype, device=ri.device)
            flat = flat + _Lobes.apply(conj, w, bins, index[low] + len(near_zero), slot[low], n_slots * self.bins, self.bins, chunk)
        spec = flat.view(n_slots, self.bins, C, 2).transpose(1, 2).contiguous()
        spec = torch.view_as_complex(spec)  # (n_slots, C, bins)
        return spec if channels is not None else spec[:, 0]

    def _summed(self, amp, phase, slot, index, n_slots: int, kernels) -> torch.Tensor:
        """``spectrum`` where no gradient is asked for (synthesis): the same terms, summed one tap
        and one channel at a time over every entry, so that each step is a long vector operation
        (per entry, the ``taps`` x channels products were operations on vectors of 2 to 8
        numbers). Only the order of the sums differs from ``_Lobes``: float32 rounding, about
        1e-7 of the spectrum (tests/test_grand_voices.py holds the bound).

        amp, phase: (entries, C); slot, index: (entries,) -> (n_slots, C, bins) complex, a view
        """
        bins, w, near_zero = kernels
        bins_t, w_t = self._by_tap(bins, w)  # (taps, kernels)
        half = 0.5 * amp.t()  # (C, entries)
        z = torch.complex(torch.sin(phase.t()) * half, -torch.cos(phase.t()) * half)  # a/2 e^{i(phase - pi/2)}
        out = torch.zeros(z.shape[0], n_slots * self.bins, dtype=z.dtype, device=z.device)
        base = slot * self.bins
        terms = [(z, index, base)]
        low = torch.nonzero(near_zero.index_select(0, index), as_tuple=True)[0]
        if len(low):  # the negative images: conjugate coefficients on the kernels' second half
            terms.append((z[:, low].conj(), index[low] + len(near_zero), base[low]))
        for coef, k, first in terms:
            for tap in range(self.taps):
                pos = first + bins_t[tap].index_select(0, k)
                w_k = w_t[tap].index_select(0, k)
                for c in range(len(coef)):
                    out[c].index_add_(0, pos, coef[c] * w_k)
        return out.view(-1, n_slots, self.bins).transpose(0, 1)

    def _by_tap(self, bins: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernels' tables transposed to (taps, kernels), kept while the same tables (the
        same objects, unchanged) come back: a decoder keeps its kernels between blocks."""
        kept = self._kept_by_tap
        if kept is not None and kept[0] is bins and kept[1] is w and kept[2] == (bins._version, w._version):
            return kept[3], kept[4]
        bins_t, w_t = bins.t().contiguous(), w.t().contiguous()
        self._kept_by_tap = (bins, w, (bins._version, w._version), bins_t, w_t)
        return bins_t, w_t

    def frames(self, spec: torch.Tensor) -> torch.Tensor:
        """Spectra -> windowed frames of 2 hop samples (n = -hop .. hop-1 around the centre).
        spec: (..., bins) complex -> (..., 2 hop)"""
        x = torch.fft.irfft(spec, n=self.n_fft)  # sample n at index n + n_fft / 2 (``kernel``'s sign)
        half = self.n_fft // 2
        return x[..., half - self.hop : half + self.hop] * self.synthesis_window

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames 0..F centred on samples 0, hop, ..., F hop -> the F hop samples [0, F hop).
        frames: (..., F + 1, 2 hop) -> (..., F * hop)"""
        first, second = frames[..., : self.hop], frames[..., self.hop :]
        y = second[..., :-1, :] + first[..., 1:, :]  # (..., F, hop): block b = frame b's second half + frame b+1's first
        return y.reshape(*y.shape[:-2], -1)


class _Lobes(torch.autograd.Function):
    """``out[slot_e * n_bins + bins[index_e, t]] += ri[e] * w[index_e, t]``, in chunks of entries,
    without keeping the (entries, taps) products for the backward pass: it recomputes them chunk
    by chunk (they would take ``taps`` times the coefficients' memory).

    ri: (entries, C, 2) real and imaginary parts per channel; w: (kernels, taps); bins:
    (kernels, taps) int64; index, slot: (entries,) int64 -> (n_out, C, 2)
    """

    @staticmethod
    def forward(ctx, ri, w, bins, index, slot, n_out: int, n_bins: int, chunk: int):
        c = ri.shape[1]
        # one complex number per (bin, channel): index_add_ over slices of (c, 2) floats pays a
        # slice's set-up per index, a flat complex one adds in a tight loop; either way the sum at
        # every output element is taken in the entries' order, so the result is the same
        out = torch.zeros(n_out * c, dtype=torch.complex64 if ri.dtype == torch.float32 else torch.complex128, device=ri.device)
        lanes = torch.arange(c, device=ri.device)
        ri = ri.contiguous()
        for e0 in range(0, len(ri), chunk):
            e = slice(e0, e0 + chunk)
            k = index[e]
            pos = (slot[e] * n_bins)[:, None] + bins.index_select(0, k)  # (n, taps)
            prod = ri[e].view(-1, 1, 2 * c) * w.index_select(0, k)[:, :, None]  # (n, taps, 2 c)
            out.index_add_(0, (pos[..., None] * c + lanes).view(-1), torch.view_as_complex(prod.view(-1, c, 2)).view(-1))
        out = torch.view_as_real(out).view(n_out, c, 2)
        ctx.save_for_backward(ri, w, bins, index, slot)
        ctx.n_bins, ctx.chunk = n_bins, chunk
        return out

    @staticmethod
    def backward(ctx, grad):
        ri, w, bins, index, slot = ctx.saved_tensors
        n_bins, chunk = ctx.n_bins, ctx.chunk
        grad_ri = torch.zeros_like(ri) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros_like(w) if ctx.needs_input_grad[1] else None
        for e0 in range(0, len(ri), chunk):
            e = slice(e0, e0 + chunk)
            k = index[e]
            pos = (slot[e] * n_bins)[:, None] + bins[k]
            g = grad[pos]  # (chunk, taps, C, 2)
            if grad_ri is not None:
                grad_ri[e] = (g * w[k][..., None, None]).sum(dim=1)
            if grad_w is not None:
                # index_add: entries in order, so the gradient is the same on every run
                grad_w.index_add_(0, k, (g * ri[e, None]).sum(dim=(-1, -2)))
        return grad_ri, grad_w, None, None, None, None, None, None
