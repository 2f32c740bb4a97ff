"""Float audio at the model's rate -> what a user asked for: level, sample rate, channels, file format.

Everything here works block by block, so that a piece of any length passes through in constant
memory: the loudness of a piece is measured while it is synthesized (``LoudnessMeter``), the gain
is chosen from that measurement (``choose_gain``), and the second pass resamples
(``Resampler``) and writes (``AudioWriter``). Audio is (channels, samples) throughout; mono is
one channel. Nothing neural here, and nothing that costs a second to import: the K-weighting
runs in numpy (``BlockFilter``), not through scipy.signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PianosynthError

# The default level: EBU R128's -23 LUFS under a -1 dBFS sample-peak ceiling. The reference renders
# of ASAP pieces have a peak 17 to 27 dB above their loudness (median 21 dB, measured by
# benchmarks/loudness.py), so -23 LUFS leaves most pieces under the ceiling without a limiter,
# while -16 LUFS would push nearly every piece into it.
DEFAULT_LOUDNESS_LUFS = -23.0
PEAK_CEILING_DBFS = -1.0
MIN_LOUDNESS_LUFS = -70.0  # BS.1770's absolute gate: nothing quieter can be measured
SAMPLE_RATE_RANGE = (8000, 192000)  # output rates accepted (any integer in between)

# file suffix -> (soundfile format, {bits: subtype}); "float" is 32-bit IEEE float
FORMATS = {
    ".wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    ".flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}),
    ".ogg": ("OGG", {}),  # Vorbis: lossy, no bit depth
}
BITS = ("16", "24", "float")


class OutputError(PianosynthError, ValueError):
    """An output option that cannot be honoured (unknown format, bad rate, bad level)."""


def subtype_for(path: str | Path, bits: str | None) -> tuple[str, str]:
    """The soundfile (format, subtype) for ``path``'s suffix and ``bits`` (None: 16 for PCM)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise OutputError(f"{path}: output must end in {', '.join(FORMATS)}")
    fmt, subtypes = FORMATS[suffix]
    if fmt == "OGG":
        if bits is not None:
            raise OutputError(f"{path}: Ogg Vorbis is lossy and has no bit depth; leave out --bits")
        return fmt, "VORBIS"
    bits = bits or "16"
    if bits not in subtypes:
        raise OutputError(f"{path}: {suffix} holds {' or '.join(subtypes)} bits, not {bits}")
    return fmt, subtypes[bits]


def check_sample_rate(sample_rate: int) -> int:
    lo, hi = SAMPLE_RATE_RANGE
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not lo <= sample_rate <= hi:
        raise OutputError(f"sample rate must be an integer from {lo} to {hi} Hz, got {sample_rate!r}")
    return int(sample_rate)


def check_channels(channels: int) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels not in (1, 2):
        raise OutputError(f"channels must be 1 or 2, got {channels!r}")
    return channels


# ---------------------------------------------------------------------------------------------
# Loudness (ITU-R BS.1770-4), measured block by block
# ---------------------------------------------------------------------------------------------


def as_channels(block: np.ndarray) -> np.ndarray:
    """Audio as the library holds it: (samples,) is one channel -> (channels, samples)."""
    block = np.asarray(block)
    if block.ndim == 1:
        return block[None]
    if block.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (channels, samples), got shape {block.shape}")
    return block


def k_weighting(sample_rate: int) -> list[tuple[list[float], list[float]]]:
    """The two biquads of BS.1770's K-weighting at any rate: [(b, a) of the +4 dB high shelf at
    1500 Hz (Q 1/sqrt 2), (b, a) of the 38 Hz high pass (Q 0.5)], designed with the RBJ "Audio EQ
    Cookbook" formulas. These are pyloudnorm's ``K-weighting`` parameters, so every level the
    project measured before (with pyloudnorm) stays the same. (The standard's own 48 kHz table,
    which libebur128 reproduces, reads white noise 0.04 LU louder at 48 kHz and 0.12 LU at 16 kHz,
    benchmarks/kweighting.py.)"""
    w0 = 2 * math.pi * 1500.0 / sample_rate
    amp, cos = 10 ** (4.0 / 40), math.cos(2 * math.pi * 1500.0 / sample_rate)
    alpha = math.sin(w0) / (2 / math.sqrt(2))
    root = 2 * math.sqrt(amp) * alpha
    shelf = (
        [amp * ((amp + 1) + (amp - 1) * cos + root), -2 * amp * ((amp - 1) + (amp + 1) * cos), amp * ((amp + 1) + (amp - 1) * cos - root)],
        [(amp + 1) - (amp - 1) * cos + root, 2 * ((amp - 1) - (amp + 1) * cos), (amp + 1) - (amp - 1) * cos - root],
    )
    w0 = 2 * math.pi * 38.0 / sample_rate
    cos, alpha = math.cos(w0), math.sin(w0) / (2 * 0.5)
    high_pass = ([(1 + cos) / 2, -(1 + cos), (1 + cos) / 2], [1 + alpha, -2 * cos, 1 - alpha])
    return [shelf, high_pass]


class BlockFilter:
    """A cascade of biquads run over blocks of any size, per channel, with numpy only, exactly
    (to float64 rounding) as a sample-by-sample recursion would.

    A per-sample recursion in Python is far too slow, and scipy's ``lfilter`` costs a second of
    import (scipy.signal pulls scipy.stats). So the cascade becomes one state-space system
    (state s, m numbers: s' = A s + B x, y = C s + D x) and runs on sub-blocks of ``L`` samples.
    Inside a sub-block the output is a matrix product, y = T x + O s (T: the impulse response as
    an L x L lower-triangular Toeplitz matrix), and the state moves on by s' = P s + u with
    P = A^L and u = G x. The states of consecutive sub-blocks are that recursion again, solved the
    same way over groups of ``L`` sub-blocks, and the groups' states by the next level up, so no
    Python loop runs per sample::

        samples  |x x ... x|x x ... x| ...   sub-blocks of L:  y = T x + O s
        states   s0 ------ s1 ------ s2 ...   groups of L:      s_i = P^i s_0 + sum_j<i P^(i-1-j) u_j

    x: (channels, samples) -> (channels, samples) float64
    """

    L = 32

    def __init__(self, sections: list[tuple[list[float], list[float]]], channels: int = 1):
        a_mat, b_vec, c_vec, d = np.zeros((0, 0)), np.zeros(0), np.zeros(0), 1.0
        for b, a in sections:  # each section in transposed direct form II, then in series
            b0, b1, b2 = (v / a[0] for v in b)
            a1, a2 = a[1] / a[0], a[2] / a[0]
            a_s, b_s = np.array([[-a1, 1.0], [-a2, 0.0]]), np.array([b1 - a1 * b0, b2 - a2 * b0])
            m = len(b_vec)
            a_new = np.zeros((m + 2, m + 2))
            a_new[:m, :m], a_new[m:, :m], a_new[m:, m:] = a_mat, np.outer(b_s, c_vec), a_s
            a_mat, b_vec = a_new, np.concatenate([b_vec, b_s * d])
            c_vec, d = np.concatenate([b0 * c_vec, [1.0, 0.0]]), b0 * d
        L = self.L
        powers = _matrix_powers(a_mat, L + 1)  # A^0 .. A^L
        h = np.array([d] + [c_vec @ powers[i] @ b_vec for i in range(L - 1)])  # impulse response
        lag = np.arange(L)[:, None] - np.arange(L)[None, :]
        self.T = np.where(lag >= 0, h[np.clip(lag, 0, None)], 0.0)  # (L, L)
        self.O = np.stack([c_vec @ powers[i] for i in range(L)])  # (L, m): the state's share of y
        self.G = np.stack([powers[L - 1 - j] @ b_vec for j in range(L)], axis=1)  # (m, L)
        self.A_pow = powers  # A^r, for a last, partial sub-block
        self._levels: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._p = powers[L]  # the step matrix of the first level of states
        self.state = np.zeros((channels, len(b_vec)))

    def _level(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Level i of the state recursion s' = Q s + u (Q = P^(L^i)) over groups of L steps:
        (Q^0..Q^(L-1) stacked, W: each step's state from the group's earlier inputs, W_end: the
        next group's first state from this group's inputs, Q^L)."""
        while len(self._levels) <= i:
            q = self._levels[-1][3] if self._levels else self._p
            L, m = self.L, len(q)
            q_pow = _matrix_powers(q, L + 1)
            w = np.zeros((L, m, L, m))
            for a in range(L):
                for b in range(a):
                    w[a, :, b, :] = q_pow[a - 1 - b]
            w_end = np.concatenate([q_pow[L - 1 - b] for b in range(L)], axis=1)  # (m, L * m)
            self._levels.append((np.stack(q_pow[:L]), w.reshape(L * m, L * m), w_end, q_pow[L]))
        return self._levels[i]

    def _scan(self, u: np.ndarray, s: np.ndarray, level: int = 0) -> np.ndarray:
        """The state before each step of s' = Q s + u (Q of ``level``), starting from s.
        u: (channels, steps, m), s: (channels, m) -> (channels, steps, m)"""
        chans, k, m = u.shape
        q_pow, w, w_end, _ = self._level(level)
        L = self.L
        groups = -(-k // L)
        ug = np.zeros((chans, groups * L, m))
        ug[:, :k] = u
        ug = ug.reshape(chans, groups, L * m)
        firsts = s[:, None] if groups == 1 else self._scan(ug @ w_end.T, s, level + 1)  # (chans, groups, m)
        states = np.einsum("iab,cgb->cgia", q_pow, firsts) + (ug @ w.T).reshape(chans, groups, L, m)
        return states.reshape(chans, groups * L, m)[:, :k]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        chans, n = x.shape
        L = self.L
        k, r = divmod(n, L)
        y = np.empty((chans, n))
        s = self.state
        if k:
            xs = x[:, : k * L].reshape(chans, k, L)
            u = xs @ self.G.T  # (chans, k, m): each sub-block's input carried to its end
            states = self._scan(u, s)
            y[:, : k * L] = (xs @ self.T.T + states @ self.O.T).reshape(chans, k * L)
            s = states[:, k - 1] @ self.A_pow[L].T + u[:, k - 1]  # after the last whole sub-block
        if r:
            tail = x[:, k * L :]
            y[:, k * L :] = tail @ self.T[:r, :r].T + s @ self.O[:r].T
            s = s @ self.A_pow[r].T + tail @ self.G[:, L - r :].T
        self.state = s
        return y


def _matrix_powers(a: np.ndarray, n: int) -> list[np.ndarray]:
    """[a^0, a^1, ..., a^(n-1)]"""
    out = [np.eye(len(a))]
    for _ in range(n - 1):
        out.append(out[-1] @ a)
    return out


class LoudnessMeter:
    """Integrated loudness (LUFS) and sample peak of audio fed in blocks of any size, mono or
    multichannel (BS.1770 sums the channels' mean squares, each with weight 1 for left and right).

    The K-weighting is BS.1770's own (``k_weighting``), run with carried state by ``BlockFilter``
    in numpy; the gating follows BS.1770-4 as pyloudnorm does: 400 ms blocks every 100 ms, an
    absolute gate at -70 LUFS and a relative gate 10 LU below the mean of the blocks above it. Only
    one mean square per 100 ms is kept (36,000 numbers for an hour), so memory does not grow with
    the audio. Agrees with ``pyloudnorm.Meter`` to 1e-6 LU on tones, noise and a render (tested).
    """

    SLICE = 1 << 16  # numbers (samples x channels) K-weighted at a time

    def __init__(self, sample_rate: int, channels: int = 1, weighting: bool = True):
        """``weighting`` False: count samples and the peak only (``loudness`` is then nan)."""
        self.sample_rate, self.channels = sample_rate, channels
        self._filter = BlockFilter(k_weighting(sample_rate), channels) if weighting else None
        self._step = 0.1 * sample_rate  # samples per 100 ms, maybe fractional (22050 Hz)
        self._sums: list[float] = []  # sum of squares of each finished 100 ms step
        self._partial = 0.0  # sum of squares of the step being filled
        self.samples = 0
        self.peak = 0.0

    def add(self, block: np.ndarray) -> None:
        """block: (channels, samples), or (samples,) for one channel"""
        block = as_channels(block)
        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {block.shape[0]}")
        if block.shape[1] == 0:
            return
        self.peak = max(self.peak, float(np.abs(block).max()))
        if self._filter is None:
            self.samples += block.shape[1]
            return
        # in pieces of about SLICE numbers: the filter's float64 temporaries of a whole render
        # block (196,608 samples a channel for a piece under 20 minutes) outgrew the core's cache
        # and cost twice as much per sample (docs/speed.md, "The meter in cache-sized pieces")
        step = max(1, self.SLICE // self.channels)
        for lo in range(0, block.shape[1], step):
            self._add(block[:, lo : lo + step])

    def _add(self, block: np.ndarray) -> None:
        y = self._filter(block)
        sq = np.einsum("cn,cn->n", y, y)  # (samples,): summed over channels
        # step k covers samples [int(k * step), int((k + 1) * step)), as pyloudnorm's blocks do
        start, end = self.samples, self.samples + len(sq)
        first = len(self._sums) + 1
        bounds = [int(j * self._step) for j in range(first, int(end / self._step) + 2)]
        cuts = [b - start for b in bounds if b <= end]  # ends of the steps finished in this block
        csum = np.concatenate([[0.0], np.cumsum(sq)])
        lo = 0
        for cut in cuts:
            self._sums.append(self._partial + float(csum[cut] - csum[lo]))
            self._partial, lo = 0.0, cut
        self._partial += float(csum[-1] - csum[lo])
        self.samples = end
    @property
    def weighting(self) -> bool:
        return self._filter is not None

    def loudness(self, gain: float = 1.0) -> float:
        """Integrated loudness in LUFS of everything added so far; -inf for silence or audio
        shorter than one 400 ms block. ``gain``: that of the same audio scaled by ``gain`` (the
        K-weighting is linear, so each block's mean square scales by gain²; the gates are applied
        after the scaling, as a meter of the scaled audio would)."""
        if self._filter is None:
            return math.nan
        sums = list(self._sums)
        # pyloudnorm counts round((seconds - 0.4) / 0.1) + 1 blocks: a last step at least half
        # full ends one more block, its missing samples counted as silence
        if self.samples - int(len(sums) * self._step) >= self._step / 2:
            sums.append(self._partial)
        sums = np.asarray(sums) * (gain * gain)
        n_blocks = len(sums) - 3
        if n_blocks <= 0:
            return -math.inf
        z = (sums[:-3] + sums[1:-2] + sums[2:-1] + sums[3:]) / (0.4 * self.sample_rate)  # (blocks,)
        with np.errstate(divide="ignore"):
            lk = -0.691 + 10 * np.log10(z)
        above = z[lk >= -70.0]
        if len(above) == 0:
            return -math.inf
        relative = -0.691 + 10 * np.log10(above.mean()) - 10.0
        gated = z[(lk > relative) & (lk > -70.0)]
        if len(gated) == 0:
            return -math.inf
        return float(-0.691 + 10 * np.log10(gated.mean()))


# ---------------------------------------------------------------------------------------------
# The level
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """How loud the output is: exactly one of a loudness target (the default), a fixed gain,
    a peak to normalise to, or the model's own level (all None)."""

    loudness_lufs: float | None = DEFAULT_LOUDNESS_LUFS  # integrated loudness target, under the ceiling
    gain_db: float | None = None  # a fixed gain instead
    peak: float | None = None  # scale so the sample peak is this (0 < peak <= 1) instead

    def __post_init__(self) -> None:
        given = [k for k in ("loudness_lufs", "gain_db", "peak") if getattr(self, k) is not None]
        if len(given) > 1:
            raise OutputError(f"choose one of loudness, gain and peak normalisation, got {' and '.join(given)}")
        for key in given:
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OutputError(f"{key} must be a finite number, got {value!r}")
        if self.loudness_lufs is not None and not MIN_LOUDNESS_LUFS < self.loudness_lufs < 0:
            raise OutputError(f"loudness must be between {MIN_LOUDNESS_LUFS:g} and 0 LUFS, got {self.loudness_lufs}")
        if self.peak is not None and not 0 < self.peak <= 1:
            raise OutputError(f"peak must be above 0 and at most 1, got {self.peak}")
        if self.gain_db is not None and abs(self.gain_db) > 100:
            raise OutputError(f"gain must be within ±100 dB, got {self.gain_db}")

    @classmethod
    def raw(cls) -> "Level":
        """The model's own level, unchanged."""
        return cls(loudness_lufs=None)


def choose_gain(level: Level, loudness_lufs: float, peak: float, channels: int = 1) -> tuple[float, list[str]]:
    """The linear gain for the second pass, and warnings (the ceiling kept the target out of reach).

    ``loudness_lufs`` and ``peak`` are measured on the signal as it will be written (``synthesize``
    meters its mix with the output's channels). ``channels`` > 1 says that a mono measurement is
    to be copied into that many channels: the copy measures 10 log10(channels) LU louder (BS.1770
    sums the channels' power), which the target accounts for.
    """
    if level.gain_db is not None:
        return 10 ** (level.gain_db / 20), []
    if level.peak is not None:
        return (level.peak / peak if peak > 0 else 1.0), []
    if level.loudness_lufs is None or not math.isfinite(loudness_lufs) or peak <= 0:
        return 1.0, []
    out_lufs = loudness_lufs + 10 * math.log10(channels)
    gain = 10 ** ((level.loudness_lufs - out_lufs) / 20)
    ceiling = 10 ** (PEAK_CEILING_DBFS / 20)
    if gain * peak > ceiling:
        gain = ceiling / peak
        reached = out_lufs + 20 * math.log10(gain)
        return gain, [
            f"loudness {reached:.1f} LUFS, not {level.loudness_lufs:g}: the peak ceiling of "
            f"{PEAK_CEILING_DBFS:g} dBFS came first (pass --loudness lower, or --gain DB)"
        ]
    return gain, []


# ---------------------------------------------------------------------------------------------
# Rate, channels, file
# ---------------------------------------------------------------------------------------------


class Resampler:
    """Streaming band-limited resampling with soxr (its "HQ" quality), of any number of channels.

    Upsampling adds nothing above the input's Nyquist frequency: the output holds the model's
    band and silence above it. ``total_out`` trims or pads the end so that the output has exactly
    ``round(n * out_rate / in_rate)`` samples for ``n`` input samples.
    """

    def __init__(self, in_rate: int, out_rate: int, n_in: int, channels: int = 1):
        import soxr

        self.identity, self.channels = in_rate == out_rate, channels
        self.stream = None if self.identity else soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")
        self.total_out = n_in if self.identity else round(n_in * out_rate / in_rate)
        self.done = 0

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """block: (channels, samples), or (samples,) for one channel -> the same layout at the
        output rate, float32"""
        block = np.asarray(block, dtype=np.float32)
        x = as_channels(block)
        if x.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {x.shape[0]}")
        if self.identity:
            y = x
        else:  # soxr takes (samples, channels)
            y = self.stream.resample_chunk(np.ascontiguousarray(x.T if self.channels > 1 else x[0]), last=last)
            y = y.T if self.channels > 1 else y[None]
        y = y[:, : max(0, self.total_out - self.done)]
        if last and self.done + y.shape[1] < self.total_out:
            y = np.concatenate([y, np.zeros((x.shape[0], self.total_out - self.done - y.shape[1]), np.float32)], axis=1)
        self.done += y.shape[1]
        return y if block.ndim == 2 else y[0]


def match_channels(block: np.ndarray, channels: int) -> np.ndarray:
    """(c, samples) -> (channels, samples): a mono block spread to every channel, a multichannel
    block to mono as the mean of its channels (BS.1770's mid), anything else unchanged."""
    c = block.shape[0]
    if c == channels:
        return block
    if c == 1:
        return np.broadcast_to(block, (channels, block.shape[1]))
    if channels == 1:
        return block.mean(axis=0, keepdims=True, dtype=np.float32)
    raise OutputError(f"cannot make {channels} channels from {c}")


def pcm_block(a: np.ndarray, subtype: str) -> np.ndarray:
    """What to hand soundfile for one block. a: (channels, samples) float, or (samples,) ->
    (samples, channels), or (samples,). 16-bit PCM is rounded as ``prepare`` stores the reference
    (``render.to_int16``: round(x * 32767)), not by libsndfile's own conversion, so a user's file
    holds what ``evaluate`` scores (``evaluate.as_pcm16``)."""
    from .render import to_int16  # render imports soundfile and subprocess; the meter needs neither

    out = to_int16(a)[0] if subtype == "PCM_16" else np.clip(a, -1.0, 1.0).astype(np.float32)
    return out.T if out.ndim == 2 else out


class AudioWriter:
    """A sound file written block by block: (channels, samples) float blocks in, clipped to
    [-1, 1] and converted once (``pcm_block``), so writing a signal in any number of blocks gives
    the same file as writing it in one (tested). ``write`` returns the samples as a reader gets
    them back as float: exact for 16-bit PCM (n / 32768, as soundfile and sox scale it) and float,
    within 24-bit rounding for 24-bit, the input to the codec for Vorbis. That is what ``synthesize`` measures and reports."""

    def __init__(self, path: str | Path, sample_rate: int, channels: int, fmt: str, subtype: str):
        import soundfile as sf

        self.file = sf.SoundFile(path, "w", samplerate=sample_rate, channels=channels, format=fmt, subtype=subtype)
        self.channels, self.subtype = channels, subtype

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        self.file.close()

    @property
    def scale(self) -> float:
        """What ``write`` returns, against its input where nothing clips: 16-bit PCM is stored as
        round(x * 32767) and read back as n / 32768, the other subtypes as given."""
        return 32767.0 / 32768.0 if self.subtype == "PCM_16" else 1.0

    def write(self, block: np.ndarray) -> np.ndarray:
        """block: (channels, samples) float -> (channels, samples) float32, as written"""
        block = as_channels(block)
        if block.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got {block.shape[0]}")
        data = pcm_block(block, self.subtype)  # (samples, channels)
        self.file.write(data)
        if self.subtype == "PCM_16":
            return data.T.astype(np.float32) / np.float32(32768.0)  # as readers scale it (soundfile, sox)
        return data.T
