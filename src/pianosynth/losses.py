"""Spectral and time-domain losses and distances. Each loss is an nn.Module returning one number.

Conventions shared by every spectral term here (and by ``pianosynth evaluate``): a periodic Hann
window, magnitudes of ``torch.stft`` on audio in [-1, 1], and natural logs of ``|STFT| + 1e-5``
(``MultiResolutionSTFTDistance`` can instead floor its logs a set level below full scale).
"""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_EPS = 1e-5
METRIC_FLOOR_DB = -80.0  # the published floored MR-STFT's log floor, below a full-scale sinusoid's peak bin


class STFTMag(nn.Module):
    """Magnitude spectrogram with a registered Hann window.

    y: (batch, samples) -> (batch, bins, frames)
    """

    def __init__(self, n_fft: int, hop: int | None = None):
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop or n_fft // 4
        self.register_buffer("window", torch.hann_window(n_fft, periodic=True), persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            y, self.n_fft, self.hop, window=self.window, center=True, pad_mode="constant", return_complex=True
        )
        return spec.abs()


class MSELoss(nn.Module):
    """Time-domain mean squared error (the report's baseline loss).

    pred, target: (batch, samples) -> scalar
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean((pred - target) ** 2)


class LogMagLoss(nn.Module):
    """The report's log-magnitude spectrogram loss: mean |log(|P|+eps) - log(|T|+eps)|.

    pred, target: (batch, samples) -> scalar
    """

    def __init__(self, n_fft: int = 1024, hop: int | None = None):
        super().__init__()
        self.stft = STFTMag(n_fft, hop)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p, t = self.stft(pred), self.stft(target)
        return torch.mean(torch.abs(torch.log(p + LOG_EPS) - torch.log(t + LOG_EPS)))


def noise_magnitude(window: torch.Tensor, level_dbfs: float) -> float:
    """RMS |STFT| per bin of white noise whose RMS is ``level_dbfs`` (Parseval: E|X_k|^2 =
    a^2 * sum(window^2) for noise of RMS a). A floor for denominators that measure the target's
    size, so that a silent crop (a rest, a piece's end) is compared with a quiet signal, not with
    zero: spectral convergence over such a crop was 10^8 and more, from rounding noise."""
    return 10 ** (level_dbfs / 20) * float(torch.sqrt((window**2).sum()))


def full_scale_peak(window: torch.Tensor) -> float:
    """|STFT| of a full-scale sinusoid (amplitude 1) at its peak bin, for a window centred on a
    bin's frequency: ``sum(window) / 2``, which is ``n_fft / 4`` for a periodic Hann window."""
    return float(window.sum()) / 2


class MultiResolutionSTFTDistance(nn.Module):
    """Spectral convergence + mean absolute log-magnitude difference, averaged over FFT sizes.

    For each size n (hop n/4):  SC = ||T| - |P||_F / ||T||_F  and
    LM = mean |log(|T|+eps_n) - log(|P|+eps_n)|; the distance is the mean over sizes of SC + LM.
    With ``per_example=True`` it returns one value per batch item (SC over each item's own norm).

    ``floor_db=None`` (the default, and what training uses) takes eps_n = 1e-5 at every size. A
    ``floor_db`` such as -80 takes eps_n = 10^(floor_db/20) * full_scale_peak(window_n), i.e.
    ``1e-4 * n / 4`` for -80 dB with a Hann window: bins far below hearing then count as equal.
    With 1e-5, a 16-bit file's rounding noise sits about 25 dB above the floor in every bin, so
    the log term partly measures whether two systems share a noise floor (issue 14).

    ``sc_floor_dbfs=None`` (the default, and what ``evaluate`` publishes) divides SC by the
    target's own norm, which is about zero on a silent crop. A level such as -60 floors that norm
    at the norm of white noise of that RMS (``noise_magnitude``), so silent crops give finite
    numbers; training and its validation use it. Crops louder than the floor are unchanged.

    pred, target: (batch, samples) -> scalar, or (batch,)
    """

    def __init__(
        self,
        fft_sizes: tuple[int, ...] = (512, 1024, 2048),
        per_example: bool = False,
        floor_db: float | None = None,
        sc_floor_dbfs: float | None = None,
    ):
        super().__init__()
        self.stfts = nn.ModuleList(STFTMag(n) for n in fft_sizes)
        self.per_example = per_example
        self.floor_db = floor_db
        # the floor of SC's denominator per bin, in |STFT| units, per FFT size (0: none)
        self.sc_floor = [0.0 if sc_floor_dbfs is None else noise_magnitude(s.window, sc_floor_dbfs) for s in self.stfts]
        # eps per FFT size, in |STFT| units (the STFT of a size-n window grows with n)
        self.log_eps = [
            LOG_EPS if floor_db is None else 10 ** (floor_db / 20) * full_scale_peak(s.window) for s in self.stfts
        ]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        dims = (1, 2) if self.per_example else (0, 1, 2)
        for stft, eps, floor in zip(self.stfts, self.log_eps, self.sc_floor):
            p, t = stft(pred), stft(target)
            bins = t.numel() // (t.shape[0] if self.per_example else 1)  # elements in each norm
            norm = torch.sqrt(torch.sum(t**2, dim=dims)).clamp_min(max(1e-12, floor * bins**0.5))
            sc = torch.sqrt(torch.sum((t - p) ** 2, dim=dims)) / norm
            lm = torch.mean(torch.abs(torch.log(t + eps) - torch.log(p + eps)), dim=dims)
            total = total + sc + lm
        return total / len(self.stfts)


def fft_sizes_for(sample_rate: int, base: tuple[int, ...] = (512, 1024, 2048)) -> tuple[int, ...]:
    """FFT sizes for a sample rate: ``base`` at 16 kHz, doubled for each whole doubling of the rate
    above it (22.05 and 24 kHz keep 512, 1024, 2048; 44.1 and 48 kHz take 1024, 2048, 4096), so
    that each size spans about the same time at any rate (issue 18)."""
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    scale = 2 ** max(0, math.floor(math.log2(sample_rate / 16000) + 1e-9))
    return tuple(n * scale for n in base)


def per_channel_distance(distance: MultiResolutionSTFTDistance, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A per-example distance taken on each channel on its own, then averaged over channels.

    pred, target: (batch, channels, samples) -> (batch,)
    """
    if pred.shape != target.shape or pred.dim() != 3:
        raise ValueError(f"expected two (batch, channels, samples) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if not distance.per_example:
        raise ValueError("per_channel_distance needs a distance built with per_example=True")
    b, c, n = pred.shape
    return distance(pred.reshape(b * c, n), target.reshape(b * c, n)).reshape(b, c).mean(dim=1)


def _level_differences(
    pred: torch.Tensor, target: torch.Tensor, n_fft: int, range_db: float, floor_db: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each STFT bin's inter-channel level difference error in dB, ``|ILD_pred - ILD_target|``,
    and the mask of the bins one hears (see ``interchannel_level_error``).

    pred, target: (batch, 2, samples) -> (batch, bins, frames) twice
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[1] != 2:
        raise ValueError(f"expected two (batch, 2, samples) tensors of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    window = torch.hann_window(n_fft, periodic=True, device=pred.device, dtype=pred.dtype)
    eps = 10 ** (floor_db / 20) * full_scale_peak(window)
    b, _, n = pred.shape

    def mag(y: torch.Tensor) -> torch.Tensor:
        s = torch.stft(y.reshape(b * 2, n), n_fft, n_fft // 4, window=window, center=True, pad_mode="constant", return_complex=True)
        return s.abs().reshape(b, 2, *s.shape[1:])  # (batch, 2, bins, frames)

    p, t = mag(pred), mag(target)
    p, t = p.clamp_min(eps), t.clamp_min(eps)
    ild_p = 20 * torch.log10(p[:, 0] / p[:, 1])  # (batch, bins, frames)
    ild_t = 20 * torch.log10(t[:, 0] / t[:, 1])
    level = t.amax(dim=1)  # the target's louder channel, (batch, bins, frames)
    peak = level.amax(dim=1, keepdim=True)  # each frame's peak bin, (batch, 1, frames)
    heard = (level >= peak * 10 ** (-range_db / 20)) & (level > eps)
    return (ild_p - ild_t).abs(), heard


def interchannel_level_error(
    pred: torch.Tensor, target: torch.Tensor, n_fft: int = 2048, range_db: float = 60.0, floor_db: float = -80.0
) -> torch.Tensor:
    """Mean inter-channel level difference error in dB (issue 18).

    For each STFT bin (periodic Hann window of ``n_fft``, hop n_fft/4) the level difference is
    ``ILD = 20 log10(max(|L|, eps) / max(|R|, eps))``, with eps the floor of the floored MR-STFT
    (``floor_db`` below a full-scale sinusoid's peak bin, ``1e-4 * n_fft / 4`` at -80 dB): a
    channel below the floor counts as at the floor, so that a silent channel costs a bounded
    error, while levels above it count exactly (an added eps, as in the MR-STFT's log term,
    would shrink the level differences of every bin a few dB above the floor). The error is the
    mean of ``|ILD_pred - ILD_target|`` over the bins where the target's louder channel is within
    ``range_db`` of its frame's peak bin (over both channels) and above that floor: the bins one
    hears. A mono signal (ILD 0 everywhere) scores the mean |ILD| of the target; against two
    independent noises of equal level that is ``10 log10(e) * 2 ln 2 =
    20 log10 2 = 6.02 dB`` (each bin's power is exponential, the log of a ratio of two independent
    unit exponentials is logistic, and its mean absolute value is 2 ln 2). NaN where no bin
    qualifies (a silent target).

    pred, target: (batch, 2, samples) -> (batch,)
    """
    error, heard = _level_differences(pred, target, n_fft, range_db, floor_db)
    count = heard.sum(dim=(1, 2))
    total = torch.where(heard, error, torch.zeros_like(error)).sum(dim=(1, 2))
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))


class InterchannelLevelLoss(nn.Module):
    """The inter-channel level difference error that ``evaluate`` publishes, as a training term
    for a stereo model (issue 19): the mean of ``|ILD_pred - ILD_target|`` over the heard bins of
    the whole batch, in nepers (dB / 8.69, the scale of the log-magnitude terms), taken at each
    of ``fft_sizes``. Per-channel spectral terms see each channel's error as a whole; this one
    sees only what differs between the channels, the stereo image. A batch with no heard bin
    (silence) gives 0.

    pred, target: (batch, 2, samples) -> scalar
    """

    paired = True  # WeightedLoss hands it the channels together

    def __init__(self, fft_sizes: tuple[int, ...] = (2048,), range_db: float = 60.0, floor_db: float = METRIC_FLOOR_DB):
        super().__init__()
        self.sizes, self.range_db, self.floor_db = fft_sizes, range_db, floor_db

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for n in self.sizes:
            error, heard = _level_differences(pred, target, n, self.range_db, self.floor_db)
            mean = torch.where(heard, error, torch.zeros_like(error)).sum() / heard.sum().clamp_min(1)
            total = total + mean * (math.log(10) / 20)
        return total / len(self.sizes)


def log_spectral_distance(pred: torch.Tensor, target: torch.Tensor, n_fft: int = 2048) -> torch.Tensor:
    """Log-spectral distance in dB: per STFT frame, the RMS over bins of
    ``10 log10(|T|^2 + eps) - 10 log10(|P|^2 + eps)``, then the mean over frames.

    pred, target: (batch, samples) -> (batch,)
    """
    window = torch.hann_window(n_fft, periodic=True, device=pred.device)

    def power_db(y: torch.Tensor) -> torch.Tensor:
        s = torch.stft(y, n_fft, n_fft // 4, window=window, center=True, pad_mode="constant", return_complex=True)
        return 10 * torch.log10(s.abs() ** 2 + LOG_EPS**2)

    diff = power_db(target) - power_db(pred)  # (batch, bins, frames)
    return torch.sqrt(torch.mean(diff**2, dim=1)).mean(dim=1)


class ComplexSTFTLoss(nn.Module):
    """Phase-sensitive: mean |Re P - Re T| + |Im P - Im T| of the complex STFT, over FFT sizes
    512, 1024 and 2048 (hop size/4), each normalised by the target's mean magnitude so that the
    term does not vanish on quiet audio. Magnitude-only losses are blind to a sign flip or a
    drifting phase; this one is not, which pushes the decoder towards consistent phase from one
    window to the next. ``scale_floor_dbfs`` floors that mean magnitude at white noise of that
    RMS (``noise_magnitude``; None: 1e-7 as before), so that a silent crop gives no huge term.

    pred, target: (batch, samples) -> scalar
    """

    def __init__(self, fft_sizes: tuple[int, ...] = (512, 1024, 2048), scale_floor_dbfs: float | None = None):
        super().__init__()
        self.sizes = fft_sizes
        for n in fft_sizes:
            self.register_buffer(f"window_{n}", torch.hann_window(n, periodic=True), persistent=False)
        self.scale_floor = {
            n: 1e-7 if scale_floor_dbfs is None else noise_magnitude(torch.hann_window(n, periodic=True), scale_floor_dbfs)
            for n in fft_sizes
        }

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for n in self.sizes:
            w = getattr(self, f"window_{n}")
            p = torch.stft(pred, n, n // 4, window=w, center=True, pad_mode="constant", return_complex=True)
            t = torch.stft(target, n, n // 4, window=w, center=True, pad_mode="constant", return_complex=True)
            scale = t.abs().mean().clamp_min(self.scale_floor[n])
            total = total + (torch.mean(torch.abs(p.real - t.real)) + torch.mean(torch.abs(p.imag - t.imag))) / scale
        return total / len(self.sizes)


class L1Loss(nn.Module):
    """Time-domain mean absolute error: phase-sensitive, meant for a low weight.

    pred, target: (batch, samples) -> scalar
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.abs(pred - target))


class FlooredMRSTFTDistance(MultiResolutionSTFTDistance):
    """The MR-STFT distance with its log floor at ``METRIC_FLOOR_DB``: the floored MR-STFT that
    ``evaluate`` publishes, as a training term. Bins far below hearing count as equal, so the
    model's effort goes to what is heard (the grand's error sits in quiet partials, issue 19)."""

    def __init__(self, fft_sizes: tuple[int, ...] = (512, 1024, 2048), sc_floor_dbfs: float | None = None):
        super().__init__(fft_sizes, floor_db=METRIC_FLOOR_DB, sc_floor_dbfs=sc_floor_dbfs)


LOSSES = {
    "mse": MSELoss,
    "l1": L1Loss,
    "logmag": LogMagLoss,
    "mrstft": MultiResolutionSTFTDistance,
    "floored": FlooredMRSTFTDistance,
    "complex": ComplexSTFTLoss,
    "ild": InterchannelLevelLoss,
}


# The terms whose denominators measure the target, and the option that floors them.
FLOOR_OPTIONS = {"mrstft": "sc_floor_dbfs", "floored": "sc_floor_dbfs", "complex": "scale_floor_dbfs"}
# The multi-resolution terms, whose FFT sizes follow the sample rate (fft_sizes_for).
SIZED = ("mrstft", "floored", "complex", "ild")
# Each term that takes (batch, channels, samples) whole has ``paired = True``; the others score
# each channel on its own.


def channels_as_batch(pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, channels, samples) -> (batch * channels, samples), so that every loss and distance
    scores each channel of a stereo model on its own; mono (batch, samples) passes through."""
    return pred.reshape(-1, pred.shape[-1]), y.reshape(-1, y.shape[-1])


class WeightedLoss(nn.Module):
    """A weighted sum of named losses, e.g. ``{"logmag": 1.0, "mse": 100.0}``.

    ``forward`` returns the total; ``last_terms`` keeps each unweighted term for logging.
    ``floor_dbfs`` (None: no floor) floors the terms that divide by the target's size at white
    noise of that level (``FLOOR_OPTIONS``), so silent crops give finite losses. ``sample_rate``
    (None: 16 kHz's sizes) sets the multi-resolution terms' FFT sizes (``fft_sizes_for``), so that
    each spans the same time at 48 kHz as at 16 kHz, as ``evaluate`` measures.
    """

    def __init__(self, weights: dict[str, float], floor_dbfs: float | None = None, sample_rate: int | None = None):
        super().__init__()
        if not weights:
            raise ValueError("at least one loss is needed, e.g. {'logmag': 1.0}")
        unknown = sorted(set(weights) - set(LOSSES))
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown}; known: {sorted(LOSSES)}")
        self.weights = {k: float(v) for k, v in weights.items()}
        floor = lambda k: {FLOOR_OPTIONS[k]: floor_dbfs} if floor_dbfs is not None and k in FLOOR_OPTIONS else {}  # noqa: E731
        sized = lambda k: {"fft_sizes": fft_sizes_for(sample_rate)} if sample_rate and k in SIZED else {}  # noqa: E731
        self.terms = nn.ModuleDict({k: LOSSES[k](**floor(k), **sized(k)) for k in weights})
        self.last_terms: dict[str, float] = {}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """pred, target: (batch, samples), or (batch, channels, samples): each channel is then
        scored as its own example (``channels_as_batch``), except by the paired terms, which
        take the channels together. -> scalar"""
        flat = channels_as_batch(pred, target)
        total = 0.0
        for name, fn in self.terms.items():
            if getattr(fn, "paired", False):
                if pred.dim() != 3 or pred.shape[1] != 2:
                    raise ValueError(f"the loss term {name!r} needs a stereo model's (batch, 2, samples) output, got {tuple(pred.shape)}")
                value = fn(pred, target)
            else:
                value = fn(*flat)
            self.last_terms[name] = float(value.detach())
            total = total + self.weights[name] * value
        return total
