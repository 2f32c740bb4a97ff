"""The network and the losses: numbers worked out by hand, and the same thing computed two ways."""

from __future__ import annotations

import math

import pytest
import torch

from pianosynth.losses import (
    ComplexSTFTLoss,
    L1Loss,
    LogMagLoss,
    MSELoss,
    MultiResolutionSTFTDistance,
    WeightedLoss,
    log_spectral_distance,
)
from pianosynth.decoders import FramesDecoder
from pianosynth.model import PianoSynth


def tiny(**kw) -> PianoSynth:
    torch.manual_seed(0)
    args = dict(in_channels=12, hop_samples=16, cell="gru", layers=2, hidden=24, bidirectional=True)
    args.update(kw)
    return PianoSynth(**args)


@pytest.mark.parametrize("window", ["rect", "ola"])
def test_frames_decoder_shape_and_ola_windows_sum_to_one(window):
    dec = FramesDecoder(in_channels=4, hop_samples=8, window=window)
    with torch.no_grad():
        dec.proj.weight.zero_()
        dec.proj.bias.fill_(1.0)  # every frame emits all ones
    y = dec(torch.zeros(2, 10, 4))
    assert y.shape == (2, 80)
    if window == "rect":
        assert torch.equal(y, torch.ones(2, 80))
    else:
        # periodic Hann at 50% overlap sums to 1 wherever two windows overlap: everywhere but the
        # outer half hops, where only one window reaches
        torch.testing.assert_close(y[:, 4:76], torch.ones(2, 72))
        hann = torch.hann_window(16, periodic=True)
        torch.testing.assert_close(y[0, :4], hann[4:8])  # the first window's rising half alone


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2, 3, 4])
def test_every_cell_and_depth_maps_frames_to_samples(cell, layers):
    model = tiny(cell=cell, layers=layers, hidden=8)
    y = model(torch.rand(3, 7, 12))
    assert y.shape == (3, 7 * 16)


def test_invalid_arguments_say_what_was_expected():
    with pytest.raises(ValueError, match="cell must be one of"):
        tiny(cell="transformer")
    with pytest.raises(ValueError, match="layers must be 1 to 4"):
        tiny(layers=5)
    with pytest.raises(ValueError, match="decoder must be one of"):
        tiny(decoder="wavenet")
    with pytest.raises(ValueError, match=r"expected x of shape \(batch, frames, 12\)"):
        tiny()(torch.rand(2, 5, 11))


@pytest.mark.parametrize("bidirectional", [True, False])
def test_future_frames_change_the_past_only_when_bidirectional(bidirectional):
    model = tiny(bidirectional=bidirectional).eval()
    x = torch.rand(1, 40, 12)
    x2 = x.clone()
    x2[:, 30:] = torch.rand(1, 10, 12)  # change only frames 30..39
    with torch.no_grad():
        y, y2 = model(x), model(x2)
    hop = 16
    # samples of frames 0..28 (the ola window of frame 29 reaches half a hop into frame 30)
    past = slice(0, 29 * hop)
    changed = (y[:, past] - y2[:, past]).abs().max().item()
    if bidirectional:
        assert changed > 1e-4
    else:
        assert changed == 0.0


@pytest.mark.parametrize("decoder", ["frames", "istft", "ddsp"])
def test_gradients_reach_every_parameter(decoder):
    model = tiny(decoder=decoder)
    loss = WeightedLoss({"logmag": 1.0, "mse": 1.0})(model(torch.rand(2, 20, 12)), torch.randn(2, 320))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_batched_equals_one_by_one():
    model = tiny().eval()
    x = torch.rand(3, 25, 12)
    with torch.no_grad():
        batched = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("decoder", ["frames", "istft", "ddsp"])
@pytest.mark.parametrize("frames", [1, 37, 300, 1001])
def test_chunked_synthesis_matches_whole_sequence(frames, decoder):
    model = tiny(decoder=decoder).eval()
    torch.manual_seed(1)
    x = (torch.rand(frames, 12) > 0.8).float()
    with torch.no_grad():
        whole = model(x[None])[0]
    chunked = torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=48, crossfade_frames=8, batch_chunks=3)))
    assert chunked.shape == whole.shape
    assert (chunked - whole).abs().max() <= 1e-3 * whole.abs().max()


def test_chunked_synthesis_needs_its_context():
    # With too little context the chunks disagree with the whole pass: the test above can fail.
    model = tiny().eval()
    x = (torch.rand(400, 12) > 0.8).float()
    with torch.no_grad():
        whole = model(x[None])[0]
    chunked = torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=1, crossfade_frames=1)))
    assert (chunked - whole).abs().max() > 1e-3 * whole.abs().max()


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def test_losses_are_zero_on_identical_inputs():
    y = torch.randn(2, 4096)
    for loss in (MSELoss(), L1Loss(), LogMagLoss(), MultiResolutionSTFTDistance(), ComplexSTFTLoss(),
                 WeightedLoss({"mse": 1, "logmag": 2})):  # fmt: skip
        assert float(loss(y, y)) == 0.0
    assert torch.equal(log_spectral_distance(y, y), torch.zeros(2))


def test_mse_by_hand():
    pred = torch.zeros(1, 4)
    target = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    assert float(MSELoss()(pred, target)) == pytest.approx((1 + 1 + 4 + 0) / 4)


def test_half_amplitude_by_hand():
    # White noise at unit scale: every STFT bin is far above 1e-5, so halving the amplitude
    # gives spectral convergence exactly 0.5, log-magnitude difference ln 2 in every bin, and a
    # log-spectral distance of 10 log10(4) dB.
    torch.manual_seed(0)
    target = torch.randn(2, 16000)
    pred = 0.5 * target
    mr = MultiResolutionSTFTDistance()
    assert float(mr(pred, target)) == pytest.approx(0.5 + math.log(2), abs=2e-3)
    assert float(LogMagLoss()(pred, target)) == pytest.approx(math.log(2), abs=2e-3)
    torch.testing.assert_close(log_spectral_distance(pred, target), torch.full((2,), 10 * math.log10(4)), atol=1e-2, rtol=0)
    per = MultiResolutionSTFTDistance(per_example=True)(pred, target)
    assert per.shape == (2,)


def test_the_floored_distance_floors_80_db_below_a_full_scale_sinusoid():
    # The floor at each FFT size n is 1e-4 * sum(hann_n) / 2 = 1e-4 * n / 4; worked out a second
    # way, it is 1e-4 times the peak |STFT| of a full-scale sinusoid centred on a bin.
    sizes = (512, 1024, 2048)
    floored = MultiResolutionSTFTDistance(sizes, floor_db=-80.0)
    assert floored.log_eps == pytest.approx([1e-4 * n / 4 for n in sizes], rel=1e-6)
    assert MultiResolutionSTFTDistance(sizes).log_eps == [1e-5] * 3  # the default is unchanged
    for n, eps in zip(sizes, floored.log_eps):
        t = torch.arange(8 * n) / n
        sine = torch.cos(2 * math.pi * 10 * t)[None]  # amplitude 1, at bin 10
        peak = float(torch.stft(sine, n, n // 4, window=torch.hann_window(n), return_complex=True).abs()[0, 10, 4])
        assert 20 * math.log10(eps / peak) == pytest.approx(-80.0, abs=1e-3)


def test_weighted_loss_is_the_weighted_sum_of_its_terms():
    torch.manual_seed(0)
    pred, target = torch.randn(2, 2048), torch.randn(2, 2048)
    combo = WeightedLoss({"mse": 3.0, "logmag": 0.5})
    expected = 3.0 * MSELoss()(pred, target) + 0.5 * LogMagLoss()(pred, target)
    torch.testing.assert_close(combo(pred, target), expected)
    assert set(combo.last_terms) == {"mse", "logmag"}
    with pytest.raises(ValueError, match="unknown loss"):
        WeightedLoss({"l7": 1.0})


def test_the_floored_training_term_is_the_published_metric_at_the_rates_sizes():
    # "floored" in train.loss is evaluate's mrstft_floor80; at 48 kHz every multi-resolution term
    # takes fft_sizes_for(48000) (1024, 2048, 4096), as evaluate measures the grand; 16 kHz keeps
    # the sizes that every earlier model trained with.
    from pianosynth.losses import METRIC_FLOOR_DB, fft_sizes_for

    torch.manual_seed(0)
    pred, target = 0.01 * torch.randn(2, 9600), 0.01 * torch.randn(2, 9600)
    at48 = WeightedLoss({"floored": 1.0, "mrstft": 1.0, "complex": 1.0}, sample_rate=48000)
    for name in ("floored", "mrstft"):
        assert [s.n_fft for s in at48.terms[name].stfts] == [1024, 2048, 4096] == list(fft_sizes_for(48000))
    assert at48.terms["complex"].sizes == (1024, 2048, 4096)
    metric = MultiResolutionSTFTDistance((1024, 2048, 4096), floor_db=METRIC_FLOOR_DB)
    torch.testing.assert_close(at48.terms["floored"](pred, target), metric(pred, target))
    assert float(at48.terms["floored"](pred, target)) < float(at48.terms["mrstft"](pred, target))  # quiet bins count less
    at16 = WeightedLoss({"mrstft": 1.0}, sample_rate=16000)
    assert [s.n_fft for s in at16.terms["mrstft"].stfts] == [512, 1024, 2048]


def test_distance_grows_with_noise():
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 16000)
    target = (0.3 * torch.sin(2 * math.pi * 440 * t))[None]
    noise = torch.randn_like(target)
    mr = MultiResolutionSTFTDistance()
    d = [float(mr(target + level * noise, target)) for level in (0.0, 0.001, 0.01, 0.1)]
    assert d == sorted(d) and d[0] == 0.0 and d[-1] > d[1]


def test_phase_losses_see_what_magnitude_losses_miss():
    # A sign flip keeps every STFT magnitude: logmag and MR-STFT are blind to it, the phase-aware
    # terms are not. Complex STFT L1 of -y against y is 2 * (mean|Re| + mean|Im|) / mean|T|.
    torch.manual_seed(0)
    y = torch.randn(2, 8000)
    assert float(LogMagLoss()(-y, y)) == 0.0
    assert float(MultiResolutionSTFTDistance()(-y, y)) == 0.0
    assert float(L1Loss()(-y, y)) == pytest.approx(float(2 * y.abs().mean()))
    loss = ComplexSTFTLoss(fft_sizes=(512,))
    t = torch.stft(y, 512, 128, window=torch.hann_window(512), center=True, pad_mode="constant", return_complex=True)
    expected = 2 * (t.real.abs().mean() + t.imag.abs().mean()) / t.abs().mean()
    assert float(loss(-y, y)) == pytest.approx(float(expected), rel=1e-5)


def test_istft_decoder_shapes_and_validation():
    from pianosynth.decoders import ISTFTDecoder

    dec = ISTFTDecoder(in_channels=4, hop_samples=16)
    assert dec.n_fft == 64 and dec(torch.rand(3, 10, 4)).shape == (3, 160)
    with pytest.raises(ValueError, match="n_fft must be even"):
        ISTFTDecoder(4, 16, n_fft=20)


# ---------------------------------------------------------------------------------------------
# the ddsp decoder
# ---------------------------------------------------------------------------------------------


def one_partial(dec, key: int, k: int, logit: float = 3.0) -> float:
    """Silences every partial but the k-th of ``key`` and the noise; returns that partial's
    amplitude."""
    from pianosynth.decoders.common import exp_sigmoid

    j = int(((dec.partial_key == key) & (dec.partial_k == k)).nonzero())
    with torch.no_grad():
        dec.amp.weight.zero_()
        dec.amp.bias.fill_(-60.0)
        dec.amp.bias[j] = logit
        dec.noise.weight.zero_()
        dec.noise.bias.fill_(-60.0)
    return float(exp_sigmoid(torch.tensor(logit)))


def test_ddsp_partials_are_stretched_by_inharmonicity():
    from pianosynth.decoders import DDSPDecoder
    from pianosynth.decoders.common import typical_inharmonicity

    sr, hop = 16000, 64
    dec = DDSPDecoder(in_channels=4, hop_samples=hop, sample_rate=sr)
    key, k = 48, 7  # A4 (440 Hz), 7th partial
    one_partial(dec, key, k)
    with torch.no_grad():
        y = dec(torch.zeros(1, sr // hop * 4, 4))[0]  # 4 s: 0.25 Hz FFT bins
    spec = torch.fft.rfft(y * torch.hann_window(len(y)))
    peak_hz = float(spec.abs().argmax()) * sr / len(y)
    b = float(typical_inharmonicity(torch.tensor(key)))
    stretched = k * 440.0 * math.sqrt(1 + b * k * k)
    assert b > 1e-4 and stretched - 7 * 440.0 > 5.0  # far enough from the harmonic to tell apart
    assert peak_hz == pytest.approx(stretched, abs=0.3)


@pytest.mark.parametrize("offset", [0, 3, 123457])
def test_ddsp_phase_runs_on_from_the_sequence_start(offset):
    # A constant amplitude gives exactly one sinusoid, a * sin(omega * s), whatever the frame
    # boundaries: the Hann windows sum to 1 and every frame continues the phase of the one before.
    # With an offset of o frames, the same sinusoid starts o * hop samples later in its cycle.
    from pianosynth.decoders import DDSPDecoder

    sr, hop = 16000, 32
    dec = DDSPDecoder(in_channels=4, hop_samples=hop, sample_rate=sr)
    a = one_partial(dec, 60, 2)
    freq = float(dec.frequencies().detach()[int(((dec.partial_key == 60) & (dec.partial_k == 2)).nonzero())])
    with torch.no_grad():
        y = dec(torch.zeros(1, 50, 4), torch.tensor([offset]))[0].double()
    s = torch.arange(len(y), dtype=torch.float64) + offset * hop
    expected = a * torch.sin(2 * math.pi * torch.remainder(freq * s / sr, 1.0))
    inner = slice(hop, len(y) - hop)  # the outer half hops have only one window
    torch.testing.assert_close(y[inner], expected[inner], atol=2e-4 * a, rtol=0)


def test_ddsp_keeps_partials_below_nyquist():
    from pianosynth.decoders import DDSPDecoder

    for sr in (16000, 44100):
        dec = DDSPDecoder(in_channels=4, hop_samples=64, sample_rate=sr, max_partials=48)
        f = dec.frequencies().detach()
        assert float(f.max()) < 0.95 * sr / 2
        assert int((dec.partial_key == 0).sum()) == 48  # A0 gets all its partials
        # C8 (4186 Hz, B = 10**-1.7): partial k at k * 4186 * sqrt(1 + B k^2) = 4228, 8700, 13640,
        # 19230, 25624 Hz; below 7600 Hz only the first, below 20947.5 Hz the first four
        assert int((dec.partial_key == 87).sum()) == (1 if sr == 16000 else 4)


def test_how_many_chunks_run_together_and_on_how_many_threads_does_not_change_the_output():
    model = tiny(decoder="istft").eval()
    x = (torch.rand(700, 12) > 0.8).float()
    outs = [
        torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=32, crossfade_frames=8, max_batch_frames=m, workers=w)))
        for m, w in ((1, 1), (500, 1), (10**6, 1), (500, 2), (10**6, 3))  # one window per batch, a few, all; threads
    ]
    for y in outs[1:]:
        torch.testing.assert_close(y, outs[0], atol=1e-5, rtol=1e-4)


def test_the_level_difference_term_is_the_published_error_in_nepers_and_teaches_the_image():
    # "ild" in train.loss is evaluate's ild_db (one FFT size, one example) divided by 20 / ln 10;
    # a stereo model's other terms still score each channel on its own, and descending the term
    # alone moves a right channel's gain to the reference's level difference.
    from pianosynth.losses import InterchannelLevelLoss, interchannel_level_error

    torch.manual_seed(0)
    left = 0.1 * torch.randn(1, 9600)
    target = torch.stack([left, 0.5 * left + 0.02 * torch.randn(1, 9600)], dim=1)  # (1, 2, n)
    pred = torch.stack([left, left], dim=1)
    term = InterchannelLevelLoss((2048,))
    expected = float(interchannel_level_error(pred, target, n_fft=2048)[0]) * math.log(10) / 20
    assert float(term(pred, target)) == pytest.approx(expected, rel=1e-5)
    assert float(term(target, target)) == 0.0

    combo = WeightedLoss({"floored": 1.0, "ild": 0.5}, sample_rate=48000)
    assert combo.terms["ild"].sizes == (1024, 2048, 4096)
    flat = WeightedLoss({"floored": 1.0}, sample_rate=48000)
    torch.testing.assert_close(
        combo(pred, target), flat(pred.reshape(2, -1), target.reshape(2, -1)) + 0.5 * combo.terms["ild"](pred, target)
    )
    with pytest.raises(ValueError, match="stereo"):
        combo(pred.reshape(2, -1), target.reshape(2, -1))

    log_gain = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([log_gain], lr=0.05)
    for _ in range(150):
        out = torch.stack([left, torch.exp(log_gain) * left], dim=1)
        loss = term(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert 20 * math.log10(math.exp(float(log_gain.detach()))) == pytest.approx(20 * math.log10(0.5), abs=1.0)
    assert float(loss.detach()) < 0.5 * expected
