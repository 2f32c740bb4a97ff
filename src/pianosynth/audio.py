"""Float audio at the model's rate -> what a user asked for: level, sample rate, channels, file format.

Everything here works block by block, so that a piece of any length passes through in constant
memory: the loudness of a piece is measured while it is synthesized (``LoudnessMeter``), the gain
is chosen from that measurement (``choose_gain``), and the second pass resamples
(``Resampler``) and writes (``open_writer``). Nothing neural here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .render import to_int16

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


class OutputError(ValueError):
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


class LoudnessMeter:
    """Integrated loudness (LUFS) and sample peak of mono audio fed in blocks of any size.

    The K-weighting filters are pyloudnorm's (its ``IIRfilter``, the same coefficients its
    ``Meter`` uses) run with carried state, and the gating follows BS.1770-4 as pyloudnorm does:
    400 ms blocks every 100 ms, an absolute gate at -70 LUFS and a relative gate 10 LU below the
    mean of the blocks above it. Only one mean square per 100 ms is kept (36,000 numbers for an
    hour), so memory does not grow with the audio. Agrees with ``pyloudnorm.Meter`` on a whole
    signal (tested).
    """

    def __init__(self, sample_rate: int):
        from pyloudnorm.iirfilter import IIRfilter
        from scipy.signal import lfilter_zi

        self.sample_rate = sample_rate
        shelf = IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, sample_rate, "high_shelf")
        high_pass = IIRfilter(0.0, 0.5, 38.0, sample_rate, "high_pass")
        self._filters = [(f.b, f.a) for f in (shelf, high_pass)]
        self._state = [lfilter_zi(b, a) * 0.0 for b, a in self._filters]
        self._step = 0.1 * sample_rate  # samples per 100 ms, maybe fractional (22050 Hz)
        self._sums: list[float] = []  # sum of squares of each finished 100 ms step
        self._partial = 0.0  # sum of squares of the step being filled
        self.samples = 0
        self.peak = 0.0

    def add(self, block: np.ndarray) -> None:
        """block: (samples,) float"""
        from scipy.signal import lfilter

        block = np.asarray(block, dtype=np.float64)
        if len(block) == 0:
            return
        self.peak = max(self.peak, float(np.abs(block).max()))
        y = block
        for i, (b, a) in enumerate(self._filters):
            y, self._state[i] = lfilter(b, a, y, zi=self._state[i])
        sq = y * y
        # step k covers samples [int(k * step), int((k + 1) * step)), as pyloudnorm's blocks do
        pos = 0
        while pos < len(sq):
            need = int((len(self._sums) + 1) * self._step) - self.samples  # samples left in this step
            take = sq[pos : pos + need]
            self._partial += float(take.sum())
            pos += len(take)
            self.samples += len(take)
            if len(take) == need:
                self._sums.append(self._partial)
                self._partial = 0.0

    def loudness(self) -> float:
        """Integrated loudness in LUFS of everything added so far; -inf for silence or audio
        shorter than one 400 ms block."""
        sums = list(self._sums)
        # pyloudnorm counts round((seconds - 0.4) / 0.1) + 1 blocks: a last step at least half
        # full ends one more block, its missing samples counted as silence
        if self.samples - int(len(sums) * self._step) >= self._step / 2:
            sums.append(self._partial)
        sums = np.asarray(sums)
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

    ``loudness_lufs`` and ``peak`` are the mono signal's; a stereo file with the same signal in both
    channels measures 10 log10(2) = 3.01 LU louder (BS.1770 sums the channels' power), which the
    target accounts for.
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
    """Streaming band-limited resampling with soxr (its "HQ" quality), mono.

    Upsampling adds nothing above the input's Nyquist frequency: the output holds the model's
    band and silence above it. ``total_out`` trims or pads the end so that the output has exactly
    ``round(n * out_rate / in_rate)`` samples for ``n`` input samples.
    """

    def __init__(self, in_rate: int, out_rate: int, n_in: int):
        import soxr

        self.identity = in_rate == out_rate
        self.stream = None if self.identity else soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality="HQ")
        self.total_out = n_in if self.identity else round(n_in * out_rate / in_rate)
        self.done = 0

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """block: (samples,) float32 -> (samples * out/in, roughly) float32"""
        y = block if self.identity else self.stream.resample_chunk(np.ascontiguousarray(block, dtype=np.float32), last=last)
        y = y[: max(0, self.total_out - self.done)]
        if last and self.done + len(y) < self.total_out:
            y = np.concatenate([y, np.zeros(self.total_out - self.done - len(y), np.float32)])
        self.done += len(y)
        return y


def pcm_block(a: np.ndarray, subtype: str) -> np.ndarray:
    """What to hand soundfile for one block. 16-bit PCM is rounded as ``prepare`` stores the
    reference (``render.to_int16``: round(x * 32767)), not by libsndfile's own conversion, so a
    user's file holds what ``evaluate`` scores (``evaluate.as_pcm16``)."""
    if subtype == "PCM_16":
        return to_int16(a)[0]
    return np.clip(a, -1.0, 1.0).astype(np.float32)
