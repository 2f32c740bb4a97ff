"""Note-level voices: every note gets its own voice, started at its onset, and the sound is their sum.

A frame decoder has to rebuild the whole polyphonic spectrum, phase included, in every frame from
one hidden state. A piano (and the sampler that renders the reference) works otherwise: each
note's sound is a function of its key and velocity, starts at its onset and is shaped by its
release. So here, for each row of the note table (``features.compute_notes``: key, velocity,
onset and release samples on the reference's 64-sample block grid):

- **partials** at the stretched frequencies of a stiff string, ``f_j = j f0 sqrt(1 + B j^2)``,
  with f0 and B per key, each with a learned phase at the onset (DDSP-Piano, Renault et al.,
  DAFx 2022). A voice runs on its own clock, time since its onset, so its waveform is locked to
  the onset: the same key and velocity give the same waveform wherever they fall, as they do in
  the sampler, and waveform-level losses mean something;
- **filtered noise** in ``bands`` bands on a log-frequency scale, for the hammer and for what
  lies between and below the partials;
- the **amplitudes** of both come from one network shared by every key and velocity, fed with
  the key (an embedding), the velocity, the time since the onset, the time since the release and
  the encoder's state at that moment (the report's BiRNN reads the performance: context, pedals,
  sympathetic ring). Each log-amplitude has an explicit exponential decay before the release and
  a faster one after it, ``- d * t_on - r * t_off``, with d and r per partial from the key and the
  velocity, so the tails are exponential by construction and the network shapes the rest.

f0 and B start from the training audio itself (``estimate_partials``: onset-aligned averages of
every key's notes, where the other notes average away) and stay learnable, as do the phases.

Only sounding voices cost compute: a voice's frames are evaluated from its onset until
``max_voice_seconds`` after it or ``release_seconds`` after its release, and a frame after the
release whose every amplitude has fallen below ``floor`` (-100 dB) is dropped. A voice frame
depends only on its own onset and on the conditioning at that moment, so a long piece renders in
blocks that join exactly (``PianoSynth.synthesize``).

Frames: voice frame m is centred on sample ``onset + m * hop`` and spans two hops under a Hann
window (50% overlap sums to 1), except that frame 0 starts at the onset, so nothing sounds before
it and the attack is immediate::

    onset
      |frame 0\\
      |   /frame 1\\
      |       /frame 2\\  ...
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..features import NOTE_BLOCK
from .common import KEYS, LOWEST_KEY, istft_centred, noise_phase, typical_inharmonicity

FLOOR = 1e-5  # -100 dB: a released voice frame quieter than this is dropped


def band_matrix(bands: int, bins: int, sample_rate: int, f_min: float = 20.0) -> torch.Tensor:
    """Triangular interpolation from ``bands`` band levels, centred on a log-frequency scale from
    ``f_min`` to Nyquist, to ``bins`` STFT bins (linear interpolation in log frequency, flat
    outside). Returns (bands, bins)."""
    nyq = sample_rate / 2
    centres = np.geomspace(f_min, nyq, bands)
    freqs = np.linspace(0, nyq, bins)
    log_f = np.log(np.maximum(freqs, f_min))
    log_c = np.log(centres)
    m = np.zeros((bands, bins))
    for i in range(bands):
        onehot = np.zeros(bands)
        onehot[i] = 1.0
        m[i] = np.interp(log_f, log_c, onehot)  # np.interp holds the end values outside
    return torch.tensor(m, dtype=torch.float32)


class VoicesDecoder(nn.Module):
    """Encoder states + note table -> waveform, one voice per note (see the module docstring).

    h: (batch, frames, in_channels), notes: (batch, notes, 4) int64 rows (key, velocity, onset,
    release) with onset and release in samples from the first frame (onsets may be negative:
    voices started before the crop), key -1 for padding -> y: (batch, frames * hop_samples)
    """

    needs_notes = True

    def __init__(
        self,
        in_channels: int,
        hop_samples: int,
        sample_rate: int,
        partials: int = 64,
        bands: int = 32,
        cond_channels: int = 32,
        hidden: int = 128,
        max_voice_seconds: float = 10.0,
        release_seconds: float = 1.0,
        n_fft: int | None = None,
    ):
        super().__init__()
        if hop_samples % NOTE_BLOCK:
            raise ValueError(f"the voices decoder needs hop_samples divisible by {NOTE_BLOCK}, got {hop_samples}")
        if partials < 1 or bands < 2 or hidden < 1 or cond_channels < 1:
            raise ValueError(f"partials, bands, hidden and cond_channels must be positive, got {partials}, {bands}, {hidden}, {cond_channels}")
        if max_voice_seconds <= 0 or release_seconds <= 0:
            raise ValueError(f"max_voice_seconds and release_seconds must be positive, got {max_voice_seconds}, {release_seconds}")
        self.hop, self.sample_rate, self.partials, self.bands = hop_samples, sample_rate, partials, bands
        self.n_fft = n_fft or 4 * hop_samples
        self.margin_frames = self.n_fft // hop_samples + 2  # a block's frames either side (model.synthesize_voices)
        self.max_voice_seconds, self.release_seconds = max_voice_seconds, release_seconds
        keys = torch.arange(KEYS)
        self.register_buffer("f0_nominal", 440.0 * 2.0 ** ((keys + LOWEST_KEY - 69) / 12.0))
        self.register_buffer("k", torch.arange(1, partials + 1, dtype=torch.float32))
        self.log_b = nn.Parameter(torch.log(typical_inharmonicity(keys)))
        self.detune = nn.Parameter(torch.zeros(KEYS))  # tens of cents
        self.phase = nn.Parameter(torch.zeros(KEYS, partials))  # radians at the onset
        self.key_emb = nn.Embedding(KEYS, 16)
        self.cond = nn.Linear(in_channels, cond_channels)
        n_in = 16 + 2 + 4 + 4 + cond_channels
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, partials + bands),
        )  # fmt: skip
        self.rates = nn.Linear(16 + 2, 2 * (partials + bands))  # decay before and after release
        self.global_noise = nn.Linear(cond_channels, bands)  # what no single voice owns
        with torch.no_grad():
            self.net[-1].bias.fill_(-7.0)  # start quiet
            self.rates.weight.mul_(0.1)
            self.rates.bias[: partials + bands].fill_(math.log(math.expm1(1.0)))  # about 9 dB/s
            self.rates.bias[partials + bands :].fill_(math.log(math.expm1(15.0)))  # about 130 dB/s
            self.global_noise.bias.fill_(-9.0)
        self.register_buffer("bands_to_bins", band_matrix(bands, self.n_fft // 2 + 1, sample_rate), persistent=False)
        self.register_buffer("hann", torch.hann_window(2 * hop_samples, periodic=True), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)
        self._bases: dict[int, tuple] = {}  # key -> (what it was computed from, basis); see _basis

    # -----------------------------------------------------------------------------------------
    # Partials
    # -----------------------------------------------------------------------------------------

    def frequencies(self) -> torch.Tensor:
        """Every key's partial frequencies in Hz, (keys, partials)."""
        f0 = self.f0_nominal * 2.0 ** (self.detune * 10.0 / 1200.0)
        return self.k[None, :] * f0[:, None] * torch.sqrt(1 + torch.exp(self.log_b)[:, None] * self.k[None, :] ** 2)

    def partials_per_key(self, freqs: torch.Tensor) -> list[int]:
        """How many of each key's partials lie below 95% of Nyquist (partials are increasing in j)."""
        return (freqs.detach() < 0.95 * self.sample_rate / 2).sum(dim=1).tolist()

    @torch.no_grad()
    def init_from_data(self, f0_hz: np.ndarray, b: np.ndarray, phase: np.ndarray) -> None:
        """Sets tuning, inharmonicity and onset phases from ``estimate_partials``."""
        f0 = torch.as_tensor(f0_hz, dtype=torch.float32)
        self.detune.copy_(1200.0 / 10.0 * torch.log2(f0 / self.f0_nominal))
        self.log_b.copy_(torch.log(torch.as_tensor(b, dtype=torch.float32).clamp_min(1e-6)))
        self.phase.copy_(torch.as_tensor(phase[:, : self.partials], dtype=torch.float32))

    # -----------------------------------------------------------------------------------------
    # Voices
    # -----------------------------------------------------------------------------------------

    def condition(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder states -> the small conditioning each voice reads. (b, t, c) -> (b, t, cond)."""
        return self.cond(h)

    def voice_end(self, onset: torch.Tensor, release: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        """The sample after which a voice is never computed: ``max_voice_seconds`` after the onset
        or ``release_seconds`` after the release, whichever is first (the same for every ``key``)."""
        sr = self.sample_rate
        return torch.minimum(onset + round(self.max_voice_seconds * sr), release + round(self.release_seconds * sr))

    def forward(self, h: torch.Tensor, offset: torch.Tensor | None = None, notes: torch.Tensor | None = None) -> torch.Tensor:
        if notes is None:
            raise ValueError("the voices decoder needs the note table (notes=...)")
        return self.render(self.condition(h), notes, offset)

    def render(self, c: torch.Tensor, notes: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning + note table -> audio.

        c: (batch, frames, cond), notes: (batch, notes, 4), offset: (batch,) index of the first
        frame in the whole piece (only the noise's phases use it) -> (batch, frames * hop)
        """
        b, t, _ = c.shape
        hop, sr, n_p = self.hop, self.sample_rate, self.partials
        dev = c.device
        notes = notes.to(dev)
        vb, vi = torch.nonzero(notes[..., 0] >= 0, as_tuple=True)  # (voices,)
        key, vel, on, rel = notes[vb, vi].unbind(-1)
        end = self.voice_end(on, rel)

        # voice frames that touch [0, t * hop): frame m spans [on + (m - 1) hop, on + (m + 1) hop)
        m_lo = torch.clamp(torch.div(-on, hop, rounding_mode="floor"), min=0)
        span = t + 2
        m = m_lo[:, None] + torch.arange(span, device=dev)[None, :]  # (voices, span)
        centre = on[:, None] + m * hop
        alive = (centre - hop < t * hop) & (centre + hop > 0) & (centre <= end[:, None])
        rv, rm = torch.nonzero(alive, as_tuple=True)  # one row per (voice, frame) that sounds
        m = m[rv, rm]
        centre = centre[rv, rm]
        key, vel, on, rel, vb = key[rv], vel[rv], on[rv], rel[rv], vb[rv]

        log_amp = self._log_amplitudes(c, vb, key, vel, m, centre, rel)  # (rows, partials + bands)
        freqs = self.frequencies()  # (keys, partials)
        above = freqs >= 0.5 * sr  # a learned B may push a partial past Nyquist
        log_amp_p = log_amp[:, :n_p].masked_fill(above[key], -30.0)
        amp = torch.exp(log_amp.clamp(max=4.0))
        amp_p, amp_n = torch.exp(log_amp_p.clamp(max=4.0)), amp[:, n_p:]
        # drop released frames that have died away: the partials' amplitudes sum to less than the
        # floor (so no sample of theirs can reach it) and every noise band is below it
        dead = (centre > rel) & (amp_p.detach().sum(dim=1) < FLOOR) & (amp_n.detach().amax(dim=1) < FLOOR)
        keep = ~dead
        if not bool(keep.all()):
            m, centre, key, vb, amp_p, amp_n = m[keep], centre[keep], key[keep], vb[keep], amp_p[keep], amp_n[keep]

        out = self._partials(amp_p, key, m, centre, vb, freqs, b, t)
        out = out + self._noise(c, amp_n, vb, centre, offset, b, t)
        return out

    def _log_amplitudes(self, c, vb, key, vel, m, centre, rel) -> torch.Tensor:
        """Log-amplitudes of every partial and noise band of each (voice, frame) row. -> (rows, P + bands)"""
        hop, sr, t = self.hop, self.sample_rate, c.shape[1]
        dt = c.dtype
        t_on = (m * hop).to(dt) / sr  # seconds since the onset at the frame's centre
        t_off = (centre - rel).clamp(min=0).to(dt) / sr  # seconds since the release
        v = vel.to(dt) / 127.0
        emb = torch.cat([self.key_emb(key), v[:, None], torch.log(v)[:, None]], dim=1)  # (rows, 18)
        time = torch.stack(
            [t_on, torch.log1p(t_on / 0.005), torch.log1p(t_on / 0.05), torch.log1p(t_on / 0.5),
             (t_off > 0).to(dt), t_off, torch.log1p(t_off / 0.005), torch.log1p(t_off / 0.05)], dim=1,
        )  # fmt: skip
        frame = torch.div(centre, hop, rounding_mode="floor").clamp(0, t - 1)
        # index_select, not c[vb, frame]: its backward adds rows one by one, so gradients are
        # bit-identical from run to run (advanced indexing's backward sums in thread order)
        cond = c.reshape(-1, c.shape[-1]).index_select(0, vb * t + frame)  # (rows, cond)
        shape = self.net(torch.cat([emb, time, cond], dim=1))
        d, r = nn.functional.softplus(self.rates(emb)).chunk(2, dim=1)
        return shape - d * t_on[:, None] - r * t_off[:, None]

    def _partials(self, amp, key, m, centre, vb, freqs, b, t) -> torch.Tensor:
        """Sum of every row's windowed partials, overlap-added at its place. -> (batch, t * hop)"""
        hop, sr, dev, dt = self.hop, self.sample_rate, amp.device, amp.dtype
        counts = self.partials_per_key(freqs)
        # phase (float64, in cycles) of each partial at the start of the row's window
        start = ((m - 1) * hop).double()
        cycles = torch.remainder(start[:, None] * freqs.detach().double()[key] / sr, 1.0)
        theta = (2 * math.pi * cycles).to(dt) + self.phase.index_select(0, key)  # (rows, partials)
        coef_s, coef_c = amp * torch.sin(theta), amp * torch.cos(theta)
        q = torch.arange(2 * hop, device=dev, dtype=dt)
        frames = amp.new_zeros(len(amp), 2 * hop)
        order = torch.argsort(key, stable=True)
        keys_present, per_key = torch.unique_consecutive(key[order], return_counts=True)
        first = 0
        pieces = []
        for k_, n_rows in zip(keys_present.tolist(), per_key.tolist()):
            rows = order[first : first + n_rows]
            first += n_rows
            p = counts[k_]
            if p == 0:
                continue
            pieces.append((rows, torch.cat([coef_s[rows, :p], coef_c[rows, :p]], dim=1) @ self._basis(k_, p, freqs, q)))
        if pieces:
            frames = frames.index_put((torch.cat([r for r, _ in pieces]),), torch.cat([f for _, f in pieces]))
        # frame 0 starts at the onset: nothing before it
        frames = frames * torch.where((m == 0)[:, None] & (q < hop)[None, :], 0.0, 1.0).to(dt)
        return self._overlap_add(frames, centre - hop, vb, b, t, hop)

    def _basis(self, key: int, p: int, freqs: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """One key's windowed cosines and sines over a frame, (2 p, 2 hop): a frame's samples are
        ``[a sin theta, a cos theta] @ basis``, since sin(theta + w q) = sin theta cos w q + cos theta sin w q.
        Without gradients (synthesis) each key's basis is computed once and kept, keyed by its
        frequencies, so new weights never meet an old basis."""
        cache_key = None
        if not torch.is_grad_enabled():
            cache_key = (key, p, q.dtype, tuple(freqs[key, :p].tolist()))
            hit = self._bases.get(key)
            if hit is not None and hit[0] == cache_key:
                return hit[1]
        omega_q = (2 * math.pi / self.sample_rate) * freqs[key, :p, None] * q[None, :]  # (p, 2 hop)
        basis = torch.cat([torch.cos(omega_q), torch.sin(omega_q)]) * self.hann
        if cache_key is not None:
            self._bases[key] = (cache_key, basis)
        return basis

    def _overlap_add(self, frames, starts, vb, b, t, hop) -> torch.Tensor:
        """Adds rows of samples (rows, n) at sample ``starts`` (multiples of NOTE_BLOCK) into each
        example's (t * hop) samples; what falls outside is cut. -> (batch, t * hop)"""
        g = NOTE_BLOCK
        n = frames.shape[1]
        pad = n  # room on both sides for frames that hang over the ends
        blocks = (t * hop + 2 * pad) // g
        first = torch.div(starts + pad, g, rounding_mode="floor")  # (rows,)
        idx = (vb * blocks + first)[:, None] + torch.arange(n // g, device=frames.device)[None, :]  # (rows, n / g)
        out = frames.new_zeros(b * blocks, g)
        out = out.index_add(0, idx.reshape(-1), frames.reshape(-1, g))
        return out.reshape(b, blocks * g)[:, pad : pad + t * hop]

    def _noise(self, c, amp_n, vb, centre, offset, b, t) -> torch.Tensor:
        """Filtered noise: every voice's band powers, summed in the frame that holds the voice
        frame's centre, plus the global bands. -> (batch, t * hop)"""
        hop = self.hop
        frame = torch.div(centre, hop, rounding_mode="floor")
        inside = (frame >= 0) & (frame < t)
        power = torch.exp(2 * self.global_noise(c).clamp(max=4.0))  # (b, t, bands)
        flat = power.reshape(b * t, -1).index_add(0, (vb * t + frame)[inside], amp_n[inside] ** 2)
        mag = torch.sqrt(flat.reshape(b, t, -1) + 1e-20) @ self.bands_to_bins  # (b, t, bins)
        phase = noise_phase(mag.shape, offset, c.device).to(c.dtype)
        return istft_centred(torch.polar(mag, phase), self.n_fft, hop, self.window)


# ---------------------------------------------------------------------------------------------
# Starting values from the training audio
# ---------------------------------------------------------------------------------------------


def estimate_partials(
    pieces, sample_rate: int, partials: int = 64, seconds: float = 0.25, max_notes: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every key's tuning, inharmonicity and onset phases, read off performances.

    The reference starts every note on its block grid and renders the same key alike each time,
    so the onset-aligned average of a key's notes (each scaled by 1 / velocity^2) keeps that key's
    waveform while the other notes sounding at the same time, at unrelated phases, average away.
    On the average's spectrum the partials are found one by one near ``j f0 sqrt(1 + B j^2)``,
    refitting f0 and B by least squares on ``(f_j / j)^2 = f0^2 + f0^2 B j^2`` as they come,
    and each partial's phase at the onset is read from the projection on its frequency.
    Keys with fewer than 3 usable notes take the values of the nearest keys that have them.

    Args:
        pieces: iterable of (audio (samples,) float, notes (n, 4) int64 from compute_notes).
        seconds: length of the average, from the onset (notes released earlier are not used).

    Returns:
        f0_hz (88,), b (88,), phase (88, partials) radians, notes_used (88,) int.
    """
    n = int(seconds * sample_rate)
    sums = np.zeros((KEYS, n))
    used = np.zeros(KEYS, int)
    for audio, notes in pieces:
        audio = np.asarray(audio, dtype=np.float64)
        for key, vel, on, rel in np.asarray(notes):
            if used[key] >= max_notes or rel - on < n or on + n > len(audio) or on < 0:
                continue
            sums[key] += audio[on : on + n] / (vel / 127.0) ** 2
            used[key] += 1
    keys = np.arange(KEYS)
    f0_nom = 440.0 * 2.0 ** ((keys + LOWEST_KEY - 69) / 12.0)
    b_typ = typical_inharmonicity(torch.arange(KEYS)).numpy().astype(np.float64)
    f0, b = f0_nom.copy(), b_typ.copy()
    phase = np.zeros((KEYS, partials))
    fitted = np.zeros(KEYS, bool)
    window = np.hanning(n)
    m = np.arange(n)
    for key in keys[used >= 3]:
        y = sums[key] / used[key]
        fit = fit_key_partials(y, sample_rate, f0_nom[key], b_typ[key], partials)
        if fit is not None:
            f0[key], b[key], fitted[key] = fit
        j = np.arange(1, partials + 1)
        f = j * f0[key] * np.sqrt(1 + b[key] * j * j)
        proj = (y * window) @ np.exp(-2j * np.pi * np.outer(m, f) / sample_rate)  # (partials,)
        phase[key] = np.angle(proj * 2j)  # sin(w m + phi) projects onto e^{-i w m} as e^{i phi} / 2i
    if fitted.any():  # keys without enough notes: the nearest fitted key's detune and B
        have = keys[fitted]
        for key in keys[~fitted]:
            near = have[np.argmin(np.abs(have - key))]
            f0[key] = f0_nom[key] * f0[near] / f0_nom[near]
            b[key] = b[near]
    return f0, b, phase, used


def fit_key_partials(y: np.ndarray, sample_rate: int, f0_nominal: float, b_start: float, partials: int):
    """One key's f0 and B from its onset-aligned average ``y`` (samples,): the partials are found
    one by one near ``j f0 sqrt(1 + B j^2)``, refitting f0 and B by least squares on
    ``(f_j / j)^2 = f0^2 + f0^2 B j^2`` as they come. -> (f0_hz, b, True), or None where fewer
    than 3 partials stood out."""
    n = len(y)
    window = np.hanning(n)
    pad = 16 * n
    nyq = 0.95 * sample_rate / 2
    spec = np.abs(np.fft.rfft(y * window, pad))
    hz = np.fft.rfftfreq(pad, 1 / sample_rate)
    js, fs, ws = [], [], []
    f0_k, b_k = f0_nominal, b_start
    for j in range(1, partials + 1):
        guess = j * f0_k * np.sqrt(1 + b_k * j * j)
        if guess >= nyq:
            break
        lo, hi = np.searchsorted(hz, [guess - 0.3 * f0_k, guess + 0.3 * f0_k])
        if hi - lo < 3:
            continue
        i = lo + int(np.argmax(spec[lo:hi]))
        if i in (lo, hi - 1) or spec[i] < 4 * np.median(spec[lo:hi]):
            continue  # no clear peak here
        a, c_, e = np.log(spec[i - 1 : i + 2] + 1e-30)  # parabolic interpolation of the peak
        delta = 0.5 * (a - e) / (a - 2 * c_ + e) if a - 2 * c_ + e != 0 else 0.0
        js.append(j)
        fs.append(hz[i] + delta * (hz[1] - hz[0]))
        ws.append(spec[i])
        if len(js) >= 3:
            jj, ff, ww = np.array(js, float), np.array(fs), np.sqrt(np.array(ws))
            design = np.stack([np.ones_like(jj), jj**2], axis=1) * ww[:, None]
            sol, *_ = np.linalg.lstsq(design, (ff / jj) ** 2 * ww, rcond=None)
            if sol[0] > 0 and sol[1] >= 0 and abs(np.sqrt(sol[0]) / f0_nominal - 1) < 0.03:
                f0_k, b_k = np.sqrt(sol[0]), max(sol[1] / sol[0], 1e-6)
    return (f0_k, b_k, True) if len(js) >= 3 else None
