"""Note-level voices (issue 9): the note table, one voice's partials, chunked == whole, the floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import needs_fluidsynth

from pianosynth.config import FeatureConfig, RenderConfig
from pianosynth.decoders import voices as voices_mod
from pianosynth.decoders.voices import VoicesDecoder, estimate_partials
from pianosynth.features import compute_notes, event_ticks, note_samples
from pianosynth.midi import Note, Performance, PedalCurve
from pianosynth.model import PianoSynth
from pianosynth.reverb import Reverb

FC = FeatureConfig(sample_rate=16000, hop_samples=256)


def at(t_s: float) -> int:
    """The sample where the reference starts an event at t_s seconds."""
    return int(note_samples(event_ticks([t_s]), 16000)[0])


def pedal(*events: tuple[float, int]) -> PedalCurve:
    return PedalCurve(np.array([t for t, _ in events], float), np.array([v / 127 for _, v in events], float))


# ---------------------------------------------------------------------------------------------
# The note table
# ---------------------------------------------------------------------------------------------


def test_note_clock_matches_fluidsynth_measurements():
    # measured on FluidSynth 2.3.1, 16 kHz: the first sample of a note-on at t is 0, the next is
    # not, so the voice starts at (first non-zero sample - 1)
    measured = {0.1: 1665, 0.1003: 1729, 0.1041: 1729, 0.2345: 3841, 0.5: 8065, 0.77777: 12545, 1.01: 16257}
    got = note_samples(event_ticks(list(measured)), 16000)
    assert got.tolist() == [v - 1 for v in measured.values()]
    assert (got % 64 == 0).all()


@needs_fluidsynth
def test_note_clock_against_a_fresh_render():
    from pianosynth.render import render

    rng = np.random.default_rng(3)
    for t in rng.uniform(0.05, 1.5, 5):
        perf = Performance([Note(60, float(t), float(t) + 0.2, 90)], {}, float(t) + 0.2)
        audio = render(perf, RenderConfig(), FC, 32000)
        assert int(np.argmax(np.abs(audio) > 0)) == at(float(t)) + 1, t


def table(notes, pedals=None, n_samples=64000):
    perf = Performance(notes, pedals or {}, max(n.end_s for n in notes))
    return compute_notes(perf, FC, n_samples)


def test_note_table_plain_notes_sorted_on_the_grid():
    t = table([Note(64, 0.5, 0.9, 50), Note(60, 0.1, 0.3, 100)])
    assert t.tolist() == [[39, 100, at(0.1), at(0.3)], [43, 50, at(0.5), at(0.9)]]
    assert at(0.1) == 1664 and at(0.3) == 4864  # (0.1 s: measured; 0.3 s: tick 576 -> 300 ms -> block 76)


def test_a_restruck_key_releases_its_previous_voice():
    # pretty_midi pairs one note-off with both notes, so both end at 1.0 s
    t = table([Note(60, 0.0, 1.0, 80), Note(60, 0.5, 1.0, 90)])
    assert t[0, 3] == at(0.5) and t[1, 3] == at(1.0)


def test_restrike_under_the_sustain_pedal():
    sustain = pedal((0.0, 127), (2.0, 0))
    t = table([Note(60, 0.1, 0.2, 80), Note(60, 0.6, 0.7, 90)], {"sustain": sustain})
    assert t[0, 3] == at(0.6) and t[1, 3] == at(2.0)


def test_sustain_holds_a_note_released_while_it_is_down():
    held = table([Note(60, 0.1, 0.3, 80)], {"sustain": pedal((0.2, 127), (0.8, 0))})
    assert held[0, 3] == at(0.8)
    # a pedal pressed after the note-off does nothing to it; a half value (63) is not down
    late = table([Note(60, 0.1, 0.3, 80)], {"sustain": pedal((0.35, 127), (0.8, 0))})
    assert late[0, 3] == at(0.3)
    half = table([Note(60, 0.1, 0.3, 80)], {"sustain": pedal((0.2, 63), (0.8, 0))})
    assert half[0, 3] == at(0.3)
    # at the same tick the controller acts first: pedal up at the note-off releases it there
    same = table([Note(60, 0.1, 0.3, 80)], {"sustain": pedal((0.2, 127), (0.3, 0))})
    assert same[0, 3] == at(0.3)


def test_score_preset_note_table_has_one_velocity():
    """The score preset (the report's input) has no velocities: the note table has one velocity.
    Its releases are the performance preset's (pedals, where a file has them, and re-strikes)."""
    notes = [Note(60, 0.1, 0.3, 30), Note(60, 0.5, 0.9, 120), Note(64, 0.1, 0.2, 90)]
    perf = Performance(notes, {"sustain": pedal((0.0, 127), (2.0, 0))}, 0.9)
    score = compute_notes(perf, FeatureConfig(sample_rate=16000, hop_samples=256, preset="score"), 64000)
    performance = compute_notes(perf, FC, 64000)
    assert set(score[:, 1].tolist()) == {64}
    assert sorted(performance[:, 1].tolist()) == [30, 90, 120]
    assert np.array_equal(score[:, [0, 2, 3]], performance[:, [0, 2, 3]])
    assert sorted(score[:, 3].tolist()) == [at(0.5), at(2.0), at(2.0)]  # a re-strike; held by the pedal


def test_sostenuto_holds_only_the_keys_down_when_it_is_pressed():
    sost = pedal((0.2, 127), (1.0, 0))
    t = table([Note(60, 0.1, 0.5, 80), Note(64, 0.3, 0.5, 80), Note(67, 0.2, 0.4, 80)], {"sostenuto": sost})
    by_key = {int(r[0]) + 21: r for r in t}
    assert by_key[60][3] == at(1.0)  # down at the press: held until the sostenuto goes up
    assert by_key[64][3] == at(0.5)  # pressed after it: released at its note-off
    assert by_key[67][3] == at(0.4)  # note-on at the press's tick: the controller came first


def test_sostenuto_release_under_sustain_waits_for_sustain():
    t = table(
        [Note(60, 0.1, 0.5, 80)],
        {"sostenuto": pedal((0.2, 127), (1.0, 0)), "sustain": pedal((0.9, 127), (1.5, 0))},
    )
    assert t[0, 3] == at(1.5)


def test_a_pedal_never_lifted_releases_at_the_end():
    t = table([Note(60, 0.1, 0.3, 80)], {"sustain": pedal((0.0, 127))}, n_samples=48000)
    assert t[0, 3] == 48000


# ---------------------------------------------------------------------------------------------
# One voice
# ---------------------------------------------------------------------------------------------


def constant_decoder(log_amp: float, partials: int = 12, hop: int = 256) -> VoicesDecoder:
    """A decoder whose every partial has amplitude exp(log_amp) at all times, and no noise."""
    dec = VoicesDecoder(8, hop, 16000, partials=partials, bands=4, cond_channels=4, hidden=8)
    with torch.no_grad():
        last = dec.net[-1]
        last.weight.zero_()
        last.bias[:partials] = log_amp
        last.bias[partials:] = -40.0  # noise bands off
        dec.rates.weight.zero_()
        dec.rates.bias.fill_(-60.0)  # no decay: softplus(-60) ~ 1e-26
        dec.global_noise.weight.zero_()
        dec.global_noise.bias.fill_(-40.0)
    return dec


def test_one_voice_is_its_partial_sum_from_its_onset():
    partials, f0, b = 12, 1100.0, 4e-4
    dec = constant_decoder(math.log(0.05), partials)
    rng = np.random.default_rng(0)
    phase = rng.uniform(-math.pi, math.pi, (88, partials))
    f0s = 440.0 * 2.0 ** ((np.arange(88) + 21 - 69) / 12.0)
    key = 56  # MIDI 77, nominal 698.5 Hz; tuned to f0 here
    f0s[key] = f0
    dec.init_from_data(f0s, np.full(88, b), phase)
    t, onset = 40, 1024 + 64
    notes = torch.tensor([[[key, 100, onset, 10**6]]])
    with torch.no_grad():
        y = dec.render(torch.zeros(1, t, 4), notes)[0].double().numpy()
    j = np.arange(1, partials + 1)
    f = j * f0 * np.sqrt(1 + b * j * j)  # stretched partials, worked out here, not by the decoder
    f = f[f < 0.95 * 8000]
    assert len(f) == 6  # 1100 Hz stretched: j = 7 lands at 7838 Hz > 7600 Hz
    n = np.arange(t * 256) - onset
    expected = 0.05 * np.sin(2 * np.pi * np.outer(n, f) / 16000 + phase[key, : len(f)]).sum(axis=1)
    expected[n < 0] = 0.0
    assert np.abs(y[:onset]).max() < 1e-9  # nothing before the onset (the noise bands are at -350 dB)
    assert np.abs(y - expected).max() < 2e-4
    assert abs(y[onset] - 0.05 * np.sin(phase[key, : len(f)]).sum()) < 2e-4  # the onset phase


def test_a_voice_depends_only_on_its_onset():
    dec = constant_decoder(math.log(0.05))
    with torch.no_grad():
        a = dec.render(torch.zeros(1, 30, 4), torch.tensor([[[40, 90, 512, 10**6]]]))[0]
        b = dec.render(torch.zeros(1, 30, 4), torch.tensor([[[40, 90, 512 + 64 * 37, 10**6]]]))[0]
    shift = 64 * 37
    assert torch.allclose(a[512 : 512 + 4096], b[512 + shift : 512 + shift + 4096], atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Chunks and the floor
# ---------------------------------------------------------------------------------------------


def random_notes(n: int, frames: int, hop: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    onset = np.sort(rng.integers(0, frames * hop // 64, n)) * 64
    release = onset + rng.integers(1, 40, n) * 64
    return torch.tensor(np.stack([rng.integers(0, 88, n), rng.integers(20, 127, n), onset, release], 1))


def loud_model(hop: int = 256) -> PianoSynth:
    torch.manual_seed(0)
    model = PianoSynth(12, hop, hidden=8, layers=1, decoder="voices").eval()
    with torch.no_grad():
        model.decoder.net[-1].bias.fill_(-3.0)
        model.decoder.global_noise.bias.fill_(-4.0)
    return model


def test_chunked_voices_equal_one_whole_pass():
    model, frames, hop = loud_model(), 300, 256
    x = torch.rand(frames, 12)
    notes = random_notes(60, frames, hop, seed=1)
    with torch.no_grad():
        whole = model(x[None], None, notes[None])[0]
    # context covering the whole input: every window's conditioning is the whole pass's, so what
    # is tested is that the voice blocks join exactly
    chunked = torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=frames, crossfade_frames=8, notes=notes)))
    assert chunked.shape == whole.shape
    assert whole.abs().max() > 0.05
    assert (chunked - whole).abs().max() < 1e-5
    threaded = torch.cat(list(model.synthesize(x, chunk_frames=50, context_frames=frames, crossfade_frames=8, notes=notes, workers=2)))
    assert (threaded - whole).abs().max() < 1e-5
    # with short context the conditioning differs near the seams, a little
    short = torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=16, crossfade_frames=8, notes=notes)))
    assert (short - whole).abs().max() < 0.1 * whole.abs().max()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_the_encoder_split_by_direction_on_threads_equals_its_forward(cell):
    from concurrent.futures import ThreadPoolExecutor

    from pianosynth.model import Encoder

    torch.manual_seed(0)
    enc = Encoder(12, cell, layers=2, hidden=16, bidirectional=True).eval()
    x = torch.rand(5, 70, 12)
    keys = list(enc.state_dict())
    with torch.no_grad():
        whole = enc(x)
        with ThreadPoolExecutor(4) as pool:
            for groups in (1, 2, 8) * 4:  # again and again: the tasks run at once on 4 threads
                split = enc.forward_split(x, pool, groups)
                assert split.shape == whole.shape
                assert (split - whole).abs().max() < 1e-5 * whole.abs().max()
                # time-major in and out (the conditioning's windows): the same numbers
                major = enc.forward_split(x.transpose(0, 1).contiguous(), pool, groups, time_major=True)
                assert major.shape == (70, 5, whole.shape[-1])
                assert torch.equal(major.transpose(0, 1), split)
    assert list(enc.state_dict()) == keys  # its one-way helpers are not registered: checkpoints unchanged
    torch.manual_seed(1)
    drawn = torch.rand(3)
    torch.manual_seed(1)
    with torch.no_grad(), ThreadPoolExecutor(2) as pool:
        enc.forward_split(x, pool)
    assert torch.equal(torch.rand(3), drawn)  # no random numbers drawn: synthesis leaves the generator alone


def test_a_learned_room_streams_like_one_whole_convolution():
    """With a learned room (issue 12) the blocks of a long piece join exactly: each block's
    reverberation is carried into the next ones. The room trains (its parameters get gradients)
    and a dry model's checkpoint has no room in it."""
    model, frames, hop = loud_model(), 300, 256
    model.reverb = Reverb(16000, seconds=0.5)
    x = torch.rand(frames, 12)
    notes = random_notes(60, frames, hop, seed=1)
    with torch.no_grad():
        dry = model.decoder(model.encoder(x[None]), None, notes[None])[0]
        whole = model(x[None], None, notes[None])[0]
    assert (whole - dry).abs().max() > 0.01  # the room is heard
    chunked = torch.cat(list(model.synthesize(x, chunk_frames=64, context_frames=frames, crossfade_frames=8, notes=notes)))
    assert (chunked - whole).abs().max() < 1e-4
    # the ringing continues past a note's end: the room's tail after silence
    quiet = torch.zeros(frames * hop)
    quiet[1000] = 1.0
    out = model.reverb(quiet[None])[0]
    assert out[1000 + 4000 : 1000 + 5000].abs().max() > 1e-4 and out[:1000].abs().max() < 1e-6  # causal (FFT round-off only)
    model.train()
    model(x[None], None, notes[None]).pow(2).mean().backward()
    assert model.reverb.log_gain.grad.abs().sum() > 0 and model.reverb.log_tau.grad.abs().sum() > 0
    assert not any(k.startswith("reverb") for k in loud_model().state_dict())


def test_dropping_voices_below_the_floor_changes_the_output_by_less_than_the_floor(monkeypatch):
    model, frames, hop = loud_model(), 200, 256
    dec = model.decoder
    with torch.no_grad():
        dec.rates.bias[dec.partials + dec.bands :] = 60.0  # a fast release: about 26 dB per 0.05 s
        dec.rates.bias[: dec.partials + dec.bands] = -60.0
    x = torch.rand(frames, 12)
    notes = random_notes(20, frames, hop, seed=2)
    rows = {}

    def count_rows(self, amp, key, *args):
        rows[self.__class__.__name__] = len(amp)
        return original(self, amp, key, *args)

    original = VoicesDecoder._partials
    monkeypatch.setattr(VoicesDecoder, "_partials", count_rows)
    floor = voices_mod.FLOOR
    with torch.no_grad():
        dropped = model(x[None], None, notes[None])[0]
        kept_rows = rows["VoicesDecoder"]
        monkeypatch.setattr(voices_mod, "FLOOR", 0.0)
        full = model(x[None], None, notes[None])[0]
        all_rows = rows["VoicesDecoder"]
    assert kept_rows < 0.7 * all_rows  # the floor really dropped frames
    assert 0 < (dropped - full).abs().max() <= floor


def test_estimate_partials_finds_a_stretched_key_among_others():
    sr, f0, b = 16000, 220.0 * 2 ** (7 / 1200), 3e-4  # key 36 (A3) 7 cents sharp
    key = 36
    rng = np.random.default_rng(0)
    n_notes, spacing = 12, 8000
    audio = np.zeros(n_notes * spacing + 8000)
    rows = []
    m = np.arange(4000)
    j = np.arange(1, 21)
    fj = j * f0 * np.sqrt(1 + b * j * j)
    phase = rng.uniform(-np.pi, np.pi, 20)
    wave = (np.exp(-m / 8000)[:, None] * 0.02 / j * np.sin(2 * np.pi * np.outer(m, fj) / sr + phase)).sum(1)
    for i in range(n_notes):
        on = i * spacing
        audio[on : on + 4000] += wave
        other = rng.uniform(100, 2000)  # another note at a random pitch and phase each time
        audio[on : on + 4000] += 0.02 * np.sin(2 * np.pi * other * m / sr + rng.uniform(0, 6.3))
        rows.append([key, 127, on, on + 6000])
    f0_est, b_est, ph_est, used = estimate_partials([(audio, np.array(rows))], sr, partials=20, seconds=0.25)
    assert used[key] == n_notes and used.sum() == n_notes
    assert abs(1200 * np.log2(f0_est[key] / f0)) < 0.5  # cents
    assert abs(b_est[key] / b - 1) < 0.1
    wrapped = np.angle(np.exp(1j * (ph_est[key, :5] - phase[:5])))
    assert np.abs(wrapped).max() < 0.1


def test_quantized_features_are_the_stored_form_built_directly():
    from pianosynth.features import compute_features, dequantize, quantize
    from pianosynth.model import as_float

    perf = Performance(
        [Note(60, 0.1, 0.9, 77), Note(64, 0.3, 0.5, 101), Note(60, 0.6, 1.2, 5)],
        {"sustain": pedal((0.2, 100), (0.7, 30)), "sostenuto": pedal((0.4, 127))},
        1.2,
    )
    fc = FeatureConfig(sample_rate=16000, hop_samples=256)
    x = compute_features(perf, fc)
    q = compute_features(perf, fc, quantized=True)
    assert q.dtype == np.uint8 and np.array_equal(q, quantize(x))
    assert np.array_equal(dequantize(q), x)
    assert torch.equal(as_float(torch.from_numpy(q)), torch.from_numpy(x))
