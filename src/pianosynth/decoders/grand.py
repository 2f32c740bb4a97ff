"""Stereo voices for a sampled concert grand (issue 19), synthesized by inverse FFT.

The ``voices`` decoder's idea (one onset-locked voice per note, docs/voices.md), scaled to 48 kHz
stereo and hundreds of partials:

- **Stereo.** Each partial has its own level, decay and onset phase in every channel, and is
  played by ``strings`` slightly detuned strings (a unison pair beats, and each microphone of a
  spaced pair hears its own mix of the two; with two decay rates per channel the inter-channel
  level of a partial moves in time, as measured in the grand's samples). Noise bands have a level
  per channel and their own pseudo-random phases per channel.
- **Priors from the instrument.** A sampled grand plays each recording on its own key and one key
  either side, replayed up to a semitone faster or slower (``keys_per_zone``): a key's partial
  frequencies and decay rates are its zone's, scaled by the replay ratio, and its pattern of
  levels and phases is the zone's. Velocity picks one of 16 recorded layers (Salamander's upper
  bounds, ``LAYER_BOUNDS``), so levels have a step per layer on top of a smooth velocity gain.
- **Partials per key** up to where the reference holds energy above the floor:
  ``estimate_voices`` reads that off onset-aligned averages of the performances, per channel.
- **Attack and release.** The voice starts at its onset sample at full level (the frame holding
  the onset is gated in time: nothing before it). After the release every partial falls at its
  own learned rate, started from a damped key's ``ampeg_release`` of 1 s or an undamped key's 5 s
  (keys above MIDI 88); a key-release noise (its own bands, level set by the velocity and
  lowered 2 dB per second the key was held, as the sampler's ``rt_decay=2``) sounds from the
  release; the sustain pedal acts through the note table's releases and the encoder's view.
- **Synthesis** by ``spectral.InverseFFTSynth``: all voices and partials of a channel go into
  one spectrum per frame on the piece's own frame grid (frame f centred on sample f * hop), one
  inverse FFT per frame and channel. The frame that holds a voice's onset is rendered on its own
  (one inverse FFT per voice) and gated at the onset sample. A voice frame depends only on its
  place in the piece and the conditioning there, so blocks join exactly.

The amplitude of string s of partial j in channel c, in a frame t seconds after the onset and
t_off after the release (0 before it)::

    log a = L[z, c, s, j] + V[z, layer, c, j] + g log(velocity / 127) + net_c(log f_j)
            - ratio * d[z, c, s, j] * t - r[z, j] * t_off

with z the key's zone, ``ratio`` its replay ratio, and ``net`` a small network (key, velocity,
times, the encoder's conditioning) giving a smooth correction over log frequency per channel.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..features import NOTE_BLOCK
from .common import KEYS, LOWEST_KEY, istft_two_hops, typical_inharmonicity
from .spectral import InverseFFTSynth
from .voices import FLOOR, band_matrix, fit_key_partials

# Salamander Grand Piano V3's 16 velocity layers: each layer's upper bound (issue 18)
LAYER_BOUNDS = (26, 34, 36, 43, 46, 50, 56, 64, 72, 80, 88, 96, 104, 112, 120, 127)
INAUDIBLE = 1e-7  # -140 dB of full scale: a partial below it in every channel and string is not synthesized
LAST_DAMPED_MIDI = 88  # keys above have no dampers on the Yamaha C5 (ampeg_release=5 there)


def layer_of_velocity() -> torch.Tensor:
    """(128,) int64: velocity -> its layer 0..15."""
    v = torch.arange(128)
    return torch.searchsorted(torch.tensor(LAYER_BOUNDS), v, right=False).clamp(max=len(LAYER_BOUNDS) - 1)


class GrandDecoder(nn.Module):
    """Encoder states + note table -> stereo waveform (see the module docstring).

    h: (batch, frames, in_channels), notes: (batch, notes, 4) int64 rows (key, velocity, onset,
    release), onsets and releases in samples from the first frame (negative: started before),
    key -1 for padding -> y: (batch, channels, frames * hop_samples)
    """

    needs_notes = True

    def __init__(
        self,
        in_channels: int,
        hop_samples: int,
        sample_rate: int,
        channels: int = 2,
        partials: int = 192,
        strings: int = 2,
        bands: int = 32,
        shape_bands: int = 16,
        cond_channels: int = 32,
        hidden: int = 128,
        keys_per_zone: int = 3,
        max_voice_seconds: float = 10.0,
        taps: int = 8,
    ):
        super().__init__()
        if hop_samples % NOTE_BLOCK:
            raise ValueError(f"the grand decoder needs hop_samples divisible by {NOTE_BLOCK}, got {hop_samples}")
        if channels < 1 or partials < 1 or strings < 1 or bands < 2 or shape_bands < 2 or keys_per_zone not in (1, 3):
            raise ValueError(
                "channels, partials and strings must be >= 1, bands and shape_bands >= 2 and keys_per_zone 1 or 3, "
                f"got {channels}, {partials}, {strings}, {bands}, {shape_bands}, {keys_per_zone}"
            )
        if max_voice_seconds <= 0:
            raise ValueError(f"max_voice_seconds must be positive, got {max_voice_seconds}")
        self.hop, self.sample_rate, self.channels = hop_samples, sample_rate, channels
        self.partials, self.strings, self.bands, self.shape_bands = partials, strings, bands, shape_bands
        self.max_voice_seconds = max_voice_seconds
        self.inaudible = INAUDIBLE  # synthesis leaves out partials quieter than this (0: none)
        self.synth = InverseFFTSynth(hop_samples, sample_rate, taps)
        self.n_fft = self.synth.n_fft  # the partials' frames
        # frames that a block of the piece renders on either side of its own (model.synthesize_voices)
        # for its samples to equal the whole piece's: a partials' frame spans a hop either side of
        # its centre; the noise's output is shifted by one and a half hops (``istft_two_hops``), so
        # a block's last half hop takes the noise frame of grid frame hi + 2, whose row reads the
        # conditioning at its own frame, one further. Two was not enough (tests/test_grand_voices.py).
        self.margin_frames = 3
        # the noise's inverse STFT: two hops under a Hann window, so a band's burst spreads one hop
        # either side of its frame (the bands are smooth in frequency: 31 Hz bins are plenty)
        self.noise_fft = 2 * hop_samples

        # keys and zones: zone z's recording sits on key keys_per_zone * z (A0, C1, D#1, ... C8)
        keys = torch.arange(KEYS)
        zone = torch.div(keys + keys_per_zone // 2, keys_per_zone, rounding_mode="floor")
        zones = int(zone.max()) + 1
        self.zones = zones
        self.register_buffer("zone", zone, persistent=False)
        self.register_buffer("ratio", 2.0 ** ((keys - keys_per_zone * zone).float() / 12.0), persistent=False)
        self.register_buffer("layer", layer_of_velocity(), persistent=False)
        undamped = keys + LOWEST_KEY > LAST_DAMPED_MIDI
        self.register_buffer("undamped", undamped, persistent=False)
        zkeys = torch.arange(zones) * keys_per_zone
        self.register_buffer("f0_nominal", 440.0 * 2.0 ** ((zkeys + LOWEST_KEY - 69) / 12.0))  # (zones,)
        self.register_buffer("j", torch.arange(1, partials + 1, dtype=torch.float32))
        # partials used per zone (measured by estimate_voices; saved with the model)
        self.register_buffer("partial_count", torch.full((zones,), partials, dtype=torch.long))

        layers, C, S, P = len(LAYER_BOUNDS), channels, strings, partials
        self.log_b = nn.Parameter(torch.log(typical_inharmonicity(zkeys)))
        self.detune = nn.Parameter(torch.zeros(zones))  # tens of cents
        self.string_detune = nn.Parameter(torch.zeros(zones, S, P))  # cents, each string against the partial
        self.phase = nn.Parameter(torch.zeros(zones, C, S, P))  # radians at the onset
        self.level = nn.Parameter(torch.full((zones, C, S, P), -6.0))  # log amplitude at velocity 127
        self.layer_level = nn.Parameter(torch.zeros(zones, layers, C, P))  # each recorded layer's step
        self.velocity_gain = nn.Parameter(torch.tensor(2.0))  # log a grows with g log(v / 127)
        self.decay = nn.Parameter(torch.zeros(zones, C, S, P))  # softplus: nepers per second
        self.release = nn.Parameter(torch.zeros(zones, P))  # softplus: nepers per second after the release
        self.key_emb = nn.Embedding(KEYS, 16)
        self.cond = nn.Linear(in_channels, cond_channels)
        n_in = 16 + 2 + 8 + cond_channels
        self.net = nn.Sequential(
            nn.Linear(n_in, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, hidden), nn.LeakyReLU(0.1),
            nn.Linear(hidden, C * (shape_bands + bands)),
        )  # fmt: skip
        self.noise_rates = nn.Linear(18, 2 * bands)  # noise decay before and after the release
        self.release_noise = nn.Parameter(torch.full((KEYS, C, bands), -9.0))  # log band level at velocity 127
        self.release_noise_rate = nn.Parameter(torch.full((bands,), math.log(math.expm1(20.0))))
        self.global_noise = nn.Linear(cond_channels, C * bands)
        with torch.no_grad():
            self.net[-1].weight.mul_(0.1)
            self.net[-1].bias.zero_()
            self.net[-1].bias.view(C, shape_bands + bands)[:, shape_bands:].fill_(-7.0)  # noise starts quiet
            self.noise_rates.weight.mul_(0.1)
            self.noise_rates.bias[:bands].fill_(math.log(math.expm1(3.0)))
            self.noise_rates.bias[bands:].fill_(math.log(math.expm1(15.0)))
            self.global_noise.bias.fill_(-9.0)
            self.reset_decays()
        self.register_buffer("bands_to_bins", band_matrix(bands, self.noise_fft // 2 + 1, sample_rate), persistent=False)
        self.register_buffer("shape_centres", torch.log(torch.tensor(np.geomspace(20.0, sample_rate / 2, shape_bands), dtype=torch.float32)), persistent=False)
        self.register_buffer("window", torch.hann_window(self.noise_fft, periodic=True), persistent=False)
        self._phasors: torch.Tensor | None = None  # noise_phasors, made on first use
        self._kept: tuple | None = None  # (what they were computed from, tables): see tables

    def noise_phasors(self, device: torch.device) -> torch.Tensor:
        """Unit phasors of the noise, (NOISE_PERIOD, bins) complex, pseudo-random phases drawn
        once from a generator of fixed seed (hashing every frame and bin anew, as
        ``common.noise_phase`` does, took as long as all the partials). Frame n of channel c of
        a piece reads row (n + NOISE_CHANNEL_SHIFT c) mod NOISE_PERIOD, so the channels' noises
        differ and every block of a piece reads the same phases as a whole pass."""
        table = self._phasors
        if table is None or table.device != device:
            gen = torch.Generator().manual_seed(19)
            phase = 2 * math.pi * torch.rand(NOISE_PERIOD, self.noise_fft // 2 + 1, generator=gen)
            table = torch.view_as_complex(torch.stack([torch.cos(phase), torch.sin(phase)], dim=-1)).to(device)
            self._phasors = table
        return table

    def tables(self) -> dict[str, torch.Tensor]:
        """What every voice reads from the parameters alone: frequencies (keys, S, P), partials
        per key (keys,), the network's interpolation (keys, P) twice, and the per-(zone, partial)
        tables of levels, layer steps, decays, releases and phases as ``_log_amplitudes`` and
        ``_partials`` index them. While gradients are recorded (training) they are computed anew
        on each call. Without them (synthesis) they are kept, with every key's inverse-FFT
        kernels, until a parameter or buffer changes (their storage and version counters are
        the key), so the blocks of a piece do not recompute them: the same values either way."""
        grad = torch.is_grad_enabled()
        if not grad:
            stamp = tuple((t.data_ptr(), t._version) for t in itertools.chain(self.parameters(), self.buffers()))
            kept = self._kept
            if kept is not None and kept[0] == stamp:
                return kept[1]
        C, S = self.channels, self.strings
        freqs = self.frequencies()  # (keys, S, P)
        below = (freqs.detach().amax(dim=1) < 0.45 * self.sample_rate).sum(dim=1)  # (keys,)
        lo, frac = _interpolation(torch.log(freqs[:, 0].detach().clamp_min(1.0)), self.shape_centres)
        tables = {
            "freqs": freqs,
            "counts": torch.minimum(self.partial_count.index_select(0, self.zone), below),
            "lo": lo, "frac": frac,
            "level": self.level.permute(0, 3, 1, 2).reshape(-1, C, S),
            "step": self.layer_level.permute(0, 1, 3, 2).reshape(-1, C),
            "decay": nn.functional.softplus(self.decay).permute(0, 3, 1, 2).reshape(-1, C, S),
            "release": nn.functional.softplus(self.release).reshape(-1),
            "phase": self.phase.permute(0, 3, 1, 2).reshape(-1, C, S),
        }  # fmt: skip
        if not grad:
            tables["kernels"] = self.synth.kernels(freqs.reshape(-1))  # every key's, rows (key S + s) P + p
            self._kept = (stamp, tables)
        return tables

    @torch.no_grad()
    def reset_decays(self) -> None:
        """Starting decays from the physics of strings: higher partials die faster (about
        0.3 + f / 1 kHz nepers per second for the first string, a third of it for the second,
        the aftersound), releases from the sampler's 1 s (damped) or 5 s (undamped) envelope."""
        f = self.frequencies_zone()[:, None, :].detach()  # (zones, 1, P) of string 0
        d = 0.3 + f / 1000.0
        for s in range(self.strings):
            self.decay[:, :, s] = _softplus_inverse(d * (1.0 if s == 0 else 0.3))
        zone_undamped = torch.zeros(self.zones, dtype=torch.bool).index_fill(0, self.zone[self.undamped], True)
        self.release.copy_(_softplus_inverse(torch.where(zone_undamped, 1.4, 7.0))[:, None].expand_as(self.release))

    # -----------------------------------------------------------------------------------------
    # Frequencies
    # -----------------------------------------------------------------------------------------

    def frequencies_zone(self) -> torch.Tensor:
        """Each zone's recording's partial frequencies (before the strings' detune), (zones, P)."""
        f0 = self.f0_nominal * 2.0 ** (self.detune * 10.0 / 1200.0)
        return self.j[None, :] * f0[:, None] * torch.sqrt(1 + torch.exp(self.log_b)[:, None] * self.j[None, :] ** 2)

    def frequencies(self) -> torch.Tensor:
        """Every key's string frequencies in Hz, (keys, strings, partials): its zone's, replayed
        at the key's ratio."""
        fz = self.frequencies_zone()[:, None, :] * 2.0 ** (self.string_detune / 1200.0)  # (zones, S, P)
        return fz[self.zone] * self.ratio[:, None, None]

    @torch.no_grad()
    def init_from_data(self, est: "VoiceEstimate") -> None:
        """Tuning, inharmonicity, per-channel onset phases and levels, and partial counts from
        ``estimate_voices``: each zone takes its recorded key's values (or, where that key had
        too few notes, a neighbour in the zone that had more)."""
        C = self.channels
        if est.phase.shape[1] != C:
            raise ValueError(f"the estimate has {est.phase.shape[1]} channels, the decoder {C}")
        P = min(self.partials, est.phase.shape[2])
        keys = torch.arange(KEYS)
        for z in range(self.zones):
            members = keys[self.zone == z].tolist()
            best = max(members, key=lambda k: (int(est.used[k]), -abs(k - members[len(members) // 2])))
            r = float(self.ratio[best])
            self.detune[z] = 1200.0 / 10.0 * math.log2(est.f0_hz[best] / r / float(self.f0_nominal[z]))
            self.log_b[z] = math.log(max(float(est.b[best]), 1e-6))
            for s in range(self.strings):
                self.phase[z, :, s, :P] = torch.as_tensor(est.phase[best, :, :P], dtype=torch.float32)
                # the strings share the measured level: their sum at the onset is that level
                level = torch.as_tensor(est.level[best, :, :P], dtype=torch.float32).clamp_min(1e-7)
                self.level[z, :, s, :P] = torch.log(level / self.strings)
        # partials above the floor: the most any key of the zone showed; zones whose keys had too
        # few notes take the nearest measured zone's count
        measured = torch.tensor([
            max((int(est.count[m]) for m in keys[self.zone == z].tolist() if est.used[m] >= 3), default=-1)
            for z in range(self.zones)
        ])  # fmt: skip
        have = torch.nonzero(measured >= 0)[:, 0]
        if len(have):
            near = have[(torch.arange(self.zones)[:, None] - have[None, :]).abs().argmin(dim=1)]
            self.partial_count.copy_(measured[near].clamp(1, self.partials))
        self.reset_decays()

    # -----------------------------------------------------------------------------------------
    # Voices
    # -----------------------------------------------------------------------------------------

    def condition(self, h: torch.Tensor) -> torch.Tensor:
        """Encoder states -> the small conditioning each voice reads. (b, t, c) -> (b, t, cond)."""
        return self.cond(h)

    def voice_end(self, onset: torch.Tensor, release: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        """The sample after which a voice is never computed: ``max_voice_seconds`` after the onset,
        or 1.5 s after the release of a damped key (its level has fallen by its release rate),
        6 s after that of an undamped one, whichever is first."""
        sr = self.sample_rate
        after = torch.full_like(release, round(1.5 * sr))
        if key is not None:
            after = torch.where(self.undamped[key.clamp(0, KEYS - 1)].to(release.device), round(6.0 * sr), after)
        return torch.minimum(onset + round(self.max_voice_seconds * sr), release + after)

    def forward(self, h: torch.Tensor, offset: torch.Tensor | None = None, notes: torch.Tensor | None = None) -> torch.Tensor:
        if notes is None:
            raise ValueError("the grand decoder needs the note table (notes=...)")
        return self.render(self.condition(h), notes, offset)

    def render(self, c: torch.Tensor, notes: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """Conditioning + note table -> audio.

        c: (batch, frames, cond), notes: (batch, notes, 4), offset: (batch,) index of the first
        frame in the whole piece (the noise's phases use it) -> (batch, channels, frames * hop)
        """
        b, t, _ = c.shape
        hop, sr, C = self.hop, self.sample_rate, self.channels
        dev = c.device
        notes = notes.to(dev)
        vb, vi = torch.nonzero(notes[..., 0] >= 0, as_tuple=True)  # (voices,)
        key, vel, on, rel = notes[vb, vi].unbind(-1)
        end = self.voice_end(on, rel, key)

        # grid frames f = 0..t (centred on f hop) from the one holding the onset, f_h = floor(on / hop)
        f_h = torch.div(on, hop, rounding_mode="floor")
        f_lo = f_h.clamp(min=0)
        f = f_lo[:, None] + torch.arange(t + 1, device=dev)[None, :]  # (voices, t + 1)
        alive = (f <= t) & ((f - 1) * hop <= end[:, None])
        rv, rf = torch.nonzero(alive, as_tuple=True)
        f = f[rv, rf]
        key, vel, on, rel, vb, f_h = key[rv], vel[rv], on[rv], rel[rv], vb[rv], f_h[rv]
        centre = f * hop
        t_on = (centre - on).clamp(min=0).to(c.dtype) / sr  # the onset frame reads t = 0
        t_off = (centre - rel).clamp(min=0).to(c.dtype) / sr
        held = (rel - on).clamp(min=0).to(c.dtype) / sr

        tables = self.tables()
        shape, log_noise = self._network(c, vb, key, vel, f, t_on, t_off, held)
        noise = torch.exp(log_noise.clamp(max=4.0))  # (rows, C, bands)
        # only the partials each key plays: one item per (row, partial)
        counts = tables["counts"].index_select(0, key)  # (rows,)
        ir = torch.repeat_interleave(torch.arange(len(key), device=dev), counts)
        ip = torch.arange(len(ir), device=dev) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        log_amp = self._log_amplitudes(tables, shape, key, vel, t_on, t_off, ir, ip)
        amp = torch.exp(log_amp.clamp(max=4.0))  # (items, C, S)
        # a released frame whose partials sum below the floor in every channel (and whose bands
        # are all below it) is dropped
        total = amp.detach().new_zeros(len(key), C).index_add_(0, ir, amp.detach().sum(dim=2))
        dead = (centre > rel) & (total.amax(dim=1) < FLOOR) & (noise.detach().amax(dim=(1, 2)) < FLOOR)
        if bool(dead.any()):
            live = ~dead[ir]
            ir, ip, amp = ir[live], ip[live], amp[live]
        if self.inaudible > 0 and not torch.is_grad_enabled():
            # synthesis only: an item below ``inaudible`` in every channel and string is left out
            # of the spectrum (about a third of a piece's items, each at most -140 dB of full
            # scale; together they moved a generated minute by -106 dB of its peak, docs/speed.md)
            loud = amp.amax(dim=(1, 2)) >= self.inaudible
            if not bool(loud.all()):
                ir, ip, amp = ir[loud], ip[loud], amp[loud]
        out = self._partials(tables, amp, ir, ip, key, on, vb, f, f_h, b, t)
        return out + self._noise(c, noise, vb, f, offset, b, t)

    def partials_per_key(self) -> torch.Tensor:
        """How many partials each key plays: its zone's measured count, less those a learned B
        or tuning would push above 0.45 of the sample rate. (keys,) int64"""
        with torch.no_grad():
            return self.tables()["counts"]

    def _network(self, c, vb, key, vel, f, t_on, t_off, held) -> tuple[torch.Tensor, torch.Tensor]:
        """The network's smooth level correction of each (voice, frame) row, (rows, C, G) at G
        log-frequency centres, and the log-amplitudes of its noise bands, (rows, C, bands)."""
        C, G, nb, t = self.channels, self.shape_bands, self.bands, c.shape[1]
        dt = c.dtype
        v = vel.to(dt) / 127.0
        emb = torch.cat([self.key_emb(key), v[:, None], torch.log(v)[:, None]], dim=1)  # (rows, 18)
        released = (t_off > 0).to(dt)
        time = torch.stack(
            [t_on, torch.log1p(t_on / 0.005), torch.log1p(t_on / 0.05), torch.log1p(t_on / 0.5),
             released, t_off, torch.log1p(t_off / 0.005), torch.log1p(t_off / 0.05)], dim=1,
        )  # fmt: skip
        frame = f.clamp(0, t - 1)
        # index_select: its backward adds rows in order (bit-identical gradients, see voices.py)
        cond = c.reshape(-1, c.shape[-1]).index_select(0, vb * t + frame)
        out = self.net(torch.cat([emb, time, cond], dim=1)).view(-1, C, G + nb)
        shape, bands = out[..., :G], out[..., G:]
        rates = nn.functional.softplus(self.noise_rates(emb))
        d_n, r_n = rates[:, :nb], rates[:, nb:]
        log_noise = bands - (d_n * t_on[:, None] + r_n * t_off[:, None])[:, None, :]
        # the key-release noise: from the release on, quieter the longer the key was held (rt_decay 2 dB/s)
        rel_noise = (
            self.release_noise.index_select(0, key) + (self.velocity_gain * torch.log(v))[:, None, None]
            - (math.log(10) / 20 * 2.0 * held)[:, None, None]
            - (nn.functional.softplus(self.release_noise_rate)[None, :] * t_off[:, None])[:, None, :]
        )  # fmt: skip
        rel_noise = rel_noise.masked_fill(~(t_off > 0)[:, None, None], -30.0)
        return shape, 0.5 * torch.logaddexp(2 * log_noise, 2 * rel_noise)  # powers add

    def _log_amplitudes(self, tables, shape, key, vel, t_on, t_off, ir, ip) -> torch.Tensor:
        """Log-amplitudes of each item (row ``ir``, partial ``ip``) in every channel and string,
        (items, C, S) (see the module docstring)."""
        z = self.zone[key][ir]
        layer = self.layer[vel.clamp(0, 127)][ir]
        log_v = torch.log(vel.to(shape.dtype) / 127.0)[ir]
        zp = z * self.partials + ip  # row of the (zones * P, ...) tables
        level = tables["level"].index_select(0, zp)  # (items, C, S)
        step = tables["step"].index_select(0, (z * len(LAYER_BOUNDS) + layer) * self.partials + ip)  # (items, C)
        decay = tables["decay"].index_select(0, zp)  # (items, C, S)
        release = tables["release"].index_select(0, zp)  # (items,)
        # the network's correction at each partial's log frequency: linear between the two
        # nearest of its G centres
        lo, frac = tables["lo"], tables["frac"]
        kp = key[ir] * self.partials + ip
        lo, frac = lo.reshape(-1).index_select(0, kp), frac.reshape(-1).index_select(0, kp)  # (items,)
        G = self.shape_bands
        flat = shape.reshape(-1, G)  # (rows * C, G)
        at = (ir * self.channels)[:, None] + torch.arange(self.channels, device=ir.device)  # (items, C)
        base = (at * G + lo[:, None]).reshape(-1)
        corr = flat.reshape(-1).index_select(0, base).view(-1, self.channels) * (1 - frac)[:, None]
        corr = corr + flat.reshape(-1).index_select(0, base + 1).view(-1, self.channels) * frac[:, None]  # (items, C)
        ratio = self.ratio.index_select(0, key[ir])
        return (
            level + (step + (self.velocity_gain * log_v)[:, None] + corr)[:, :, None]
            - decay * (ratio * t_on[ir])[:, None, None] - (release * t_off[ir])[:, None, None]
        )  # fmt: skip

    def _partials(self, tables, amp, ir, ip, key, on, vb, f, f_h, b, t) -> torch.Tensor:
        """Every item's strings into one spectrum per (example, channel, frame); the two frames
        that overlap the block holding a voice's onset into spectra of their own each, gated at
        the onset. amp: (items, C, S) -> (batch, C, t * hop)"""
        hop, sr, C, S, P = self.hop, self.sample_rate, self.channels, self.strings, self.partials
        dev = amp.device
        freqs = tables["freqs"]  # (keys, S, P)
        # phase at the frame's centre: the onset phase + 2 pi f (centre - onset) / sr (float64 cycles)
        f_item = freqs.detach().permute(0, 2, 1).reshape(-1, S).index_select(0, key[ir] * P + ip)  # (items, S)
        since = (f * hop - on).double().index_select(0, ir)
        cycles = since[:, None] * f_item.double() / sr
        cycles = (cycles - torch.floor(cycles)).to(amp.dtype)
        phase = tables["phase"].index_select(0, self.zone[key][ir] * P + ip)  # (items, C, S)
        theta = 2 * math.pi * cycles[:, None, :] + phase
        # the two frames that overlap the block holding the onset, [f_h hop, (f_h + 1) hop), are
        # rendered each in a spectrum of its own and gated at the onset sample
        head = (f == f_h) | (f == f_h + 1)
        n_grid = b * (t + 1)
        heads = torch.nonzero(head, as_tuple=True)[0]
        slot = vb * (t + 1) + f  # (rows,): the grid frame, or a head's own slot
        slot[heads] = n_grid + torch.arange(len(heads), device=dev)
        # one kernel per string and partial, shared by all the frames and channels that play it:
        # of each key present while training, of every key (kept) in synthesis
        if "kernels" in tables:
            kernels, kslot = tables["kernels"], key[ir]
        else:
            present, which = torch.unique(key, return_inverse=True)
            kernels, kslot = self.synth.kernels(freqs.index_select(0, present).reshape(-1)), which[ir]
        kidx = ((kslot * S)[:, None] + torch.arange(S, device=dev)) * P + ip[:, None]  # (items, S)
        spec = self.synth.spectrum(
            amp.transpose(1, 2), theta.transpose(1, 2), slot.index_select(0, ir)[:, None], n_grid + len(heads),
            kernels, kidx, channels=C,
        )  # (slots, C, bins)
        frames = self.synth.frames(spec)  # (slots, C, 2 hop)
        grid = frames[:n_grid].view(b, t + 1, C, 2 * hop).transpose(1, 2)
        y = self.synth.overlap_add(grid).reshape(b * C, t * hop)  # (b C, t hop)
        if len(heads):
            fh = f[heads]
            q = torch.arange(2 * hop, device=dev)
            gate = ((fh - 1) * hop)[:, None] + q[None, :] >= on[heads][:, None]  # (heads, 2 hop)
            parts = (frames[n_grid:] * gate[:, None, :].to(frames.dtype)).view(len(heads), C, 2, hop)
            block = fh[:, None] + torch.tensor([-1, 0], device=dev)  # each half's block of hop samples
            inside = (block >= 0) & (block < t)  # (heads, 2)
            idx = ((vb[heads] * C)[:, None, None] + torch.arange(C, device=dev)[None, :, None]) * t + block[:, None, :]  # (heads, C, 2)
            keep = inside[:, None, :].expand(-1, C, -1)
            blocks = y.view(b * C * t, hop).index_add(0, idx[keep], parts[keep])
            y = blocks.view(b * C, t * hop)
        return y.view(b, C, t * hop)

    def _noise(self, c, noise, vb, f, offset, b, t) -> torch.Tensor:
        """Filtered noise per channel: every voice's band powers summed in its frame, plus the
        global bands, shaped by an inverse STFT with each channel's own phases. -> (b, C, t hop)"""
        C, nb = self.channels, self.bands
        frame = f - 1  # grid frame f is centred on f hop: the noise frame that holds it starts there
        inside = (frame >= 0) & (frame < t)
        power = torch.exp(2 * self.global_noise(c).clamp(max=4.0)).view(b, t, C, nb).permute(0, 2, 1, 3)  # (b, C, t, bands)
        rows = ((vb * C)[:, None] + torch.arange(C, device=c.device)) * t + frame[:, None]  # (rows, C)
        flat = power.reshape(b * C * t, nb).index_add(0, rows[inside].reshape(-1), (noise[inside] ** 2).reshape(-1, nb))
        mag = torch.sqrt(flat.view(b * C, t, nb) + 1e-20) @ self.bands_to_bins  # (b C, t, bins)
        # each channel's own phases, a fixed function of the absolute frame (``noise_phasors``)
        base = torch.zeros(b, dtype=torch.long, device=c.device) if offset is None else offset.to(c.device).long()
        frame_no = base[:, None, None] + torch.arange(t, device=c.device)[None, None, :] + NOISE_CHANNEL_SHIFT * torch.arange(C, device=c.device)[None, :, None]
        table = self.noise_phasors(c.device)
        phasors = table.index_select(0, torch.remainder(frame_no, len(table)).reshape(-1)).view(b * C, t, -1)
        # (real and imaginary parts scaled apart: a broadcast over a last dimension of 2 is slow)
        spec = torch.complex(phasors.real * mag, phasors.imag * mag)
        y = istft_two_hops(spec, self.hop, self.window)  # istft_centred's numbers, n_fft = 2 hop
        return y.view(b, C, t * self.hop)


NOISE_PERIOD = 2048  # frames: the noise's phases repeat every 33 s at 62.5 frames per second
NOISE_CHANNEL_SHIFT = 1531  # frames: channel c reads the table this much further on per channel


def _softplus_inverse(y: torch.Tensor | float) -> torch.Tensor:
    y = torch.as_tensor(y, dtype=torch.float32)
    return y + torch.log(-torch.expm1(-y))


def _interpolation(x: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation from values at ``centres`` (G,) to points ``x`` (...), held flat
    outside: the lower centre's index in 0..G-2 and the weight of the one above it. -> (...), (...)"""
    g = len(centres)
    x = x.clamp(float(centres[0]), float(centres[-1]))
    i = torch.searchsorted(centres, x.contiguous()).clamp(1, g - 1)
    lo, hi = centres[i - 1], centres[i]
    return i - 1, (x - lo) / (hi - lo)


# ---------------------------------------------------------------------------------------------
# Starting values from the performances
# ---------------------------------------------------------------------------------------------


@dataclass
class VoiceEstimate:
    """What ``estimate_voices`` reads off the performances, per key (88) and channel (C)."""

    f0_hz: np.ndarray  # (88,) tuning
    b: np.ndarray  # (88,) inharmonicity
    phase: np.ndarray  # (88, C, partials) radians at the onset
    level: np.ndarray  # (88, C, partials) amplitude at velocity 127 in the onset-aligned average
    count: np.ndarray  # (88,) partials whose level is within floor_db of the key's strongest
    used: np.ndarray  # (88,) notes averaged


def estimate_voices(
    pieces, sample_rate: int, partials: int = 192, seconds: float = 0.25, max_notes: int = 64, floor_db: float = -80.0
) -> VoiceEstimate:
    """Every key's tuning, inharmonicity, and per-channel phases and levels of its partials, read
    off performances: ``voices.estimate_partials``' onset-aligned averages (where a key's own
    waveform adds up and the other notes average away), taken per channel. f0 and B are fitted
    on the channels' sum; each partial's phase and level in each channel come from the projection
    of that channel's average on the partial's frequency. ``count`` is the number of partials up
    to the last one whose level stands above the average's noise and within ``floor_db`` of the
    key's strongest: where the reference holds energy above the floor.

    Args:
        pieces: iterable of (audio (channels, samples) or (samples,) float, notes (n, 4) int64).
    """
    n = int(seconds * sample_rate)
    sums: np.ndarray | None = None
    used = np.zeros(KEYS, int)
    for audio, notes in pieces:
        audio = np.asarray(audio, dtype=np.float64)
        audio = audio[None] if audio.ndim == 1 else audio
        if sums is None:
            sums = np.zeros((KEYS, audio.shape[0], n))
        for key, vel, on, rel in np.asarray(notes):
            if used[key] >= max_notes or rel - on < n or on + n > audio.shape[1] or on < 0:
                continue
            sums[key] += audio[:, on : on + n] / (vel / 127.0) ** 2
            used[key] += 1
    C = 1 if sums is None else sums.shape[1]
    sums = np.zeros((KEYS, C, n)) if sums is None else sums
    keys = np.arange(KEYS)
    f0_nom = 440.0 * 2.0 ** ((keys + LOWEST_KEY - 69) / 12.0)
    b_typ = typical_inharmonicity(torch.arange(KEYS)).numpy().astype(np.float64)
    f0, b = f0_nom.copy(), b_typ.copy()
    phase = np.zeros((KEYS, C, partials))
    level = np.zeros((KEYS, C, partials))
    count = np.zeros(KEYS, int)
    fitted = np.zeros(KEYS, bool)
    window = np.hanning(n)
    m = np.arange(n)
    for key in keys[used >= 3]:
        y = sums[key] / used[key]  # (C, n)
        fit = fit_key_partials(y.sum(axis=0), sample_rate, f0_nom[key], b_typ[key], partials)
        if fit is not None:
            f0[key], b[key], fitted[key] = fit
    if fitted.any():  # keys without enough notes: the nearest fitted key's detune and B
        have = keys[fitted]
        for key in keys[~fitted]:
            near = have[np.argmin(np.abs(have - key))]
            f0[key], b[key] = f0_nom[key] * f0[near] / f0_nom[near], b[near]
    for key in keys[used >= 3]:
        y = sums[key] / used[key]
        j = np.arange(1, partials + 1)
        f = j * f0[key] * np.sqrt(1 + b[key] * j * j)
        below = f < 0.45 * sample_rate
        basis = np.exp(-2j * np.pi * np.outer(m, f) / sample_rate)
        proj = (y * window) @ basis  # (C, partials)
        phase[key] = np.angle(proj * 2j)  # sin(w m + phi) projects onto e^{-i w m} as e^{i phi} / 2i
        level[key] = 2 * np.abs(proj) / window.sum() * below
        # the average's own noise: the projection halfway between neighbouring partials
        mid = np.exp(-2j * np.pi * np.outer(m, f + 0.5 * f0[key]) / sample_rate)
        noise = 2 * np.abs((y * window) @ mid).max(axis=0) / window.sum()
        strongest = level[key].max(axis=0)
        ok = (strongest > 3 * noise) & (strongest >= strongest.max() * 10 ** (floor_db / 20)) & below
        count[key] = int(np.nonzero(ok)[0].max()) + 1 if ok.any() else 0
    return VoiceEstimate(f0, b, phase, level, count, used)
