"""MIDI reading and the pitch-encoding matrix, checked frame by frame on hand-placed notes."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cc, note, tempo, write_events

from pianosynth.config import FeatureConfig
from pianosynth.features import (
    HELD,
    ONSET,
    VELOCITY,
    AlignmentError,
    check_alignment,
    compute_features,
    dequantize,
    n_frames_for,
    quantize,
)
from pianosynth.midi import MidiError, read_midi

# 16 kHz, hop 160: 100 frames per second, so 1 frame = 10 ms and times map to frames by eye.
CFG = FeatureConfig(sample_rate=16000, hop_samples=160, preset="performance", tail_seconds=0.0)


def test_tempo_change_moves_note_times(tmp_path):
    # 120 bpm for the first beat (0.5 s), then 60 bpm: the second beat lasts 1.0 s.
    events = tempo(0, 120) + tempo(480, 60) + note(1, 0, 480, 60) + note(1, 480, 960, 62) + note(1, 960, 1200, 64)
    perf = read_midi(write_events(tmp_path / "t.mid", events))
    times = [(n.pitch, round(n.start_s, 6), round(n.end_s, 6)) for n in perf.notes]
    assert times == [(60, 0.0, 0.5), (62, 0.5, 1.5), (64, 1.5, 2.0)]


def test_onset_and_held_frames_exact(tmp_path):
    events = tempo(0, 120) + tempo(480, 60) + note(1, 0, 480, 60, 100) + note(1, 480, 960, 62, 64)
    perf = read_midi(write_events(tmp_path / "t.mid", events))
    x = compute_features(perf, CFG)
    assert x.shape == (150, CFG.n_channels)  # ends at 1.5 s = 150 frames, no tail
    k60, k62 = 60 - 21, 62 - 21
    assert np.flatnonzero(x[:, ONSET.start + k60]).tolist() == [0]
    assert np.flatnonzero(x[:, ONSET.start + k62]).tolist() == [50]
    assert np.flatnonzero(x[:, HELD.start + k60]).tolist() == list(range(0, 50))
    assert np.flatnonzero(x[:, HELD.start + k62]).tolist() == list(range(50, 150))
    np.testing.assert_allclose(x[0:50, VELOCITY.start + k60], 100 / 127)
    np.testing.assert_allclose(x[50:150, VELOCITY.start + k62], 64 / 127)
    # no other key has anything
    others = np.delete(x[:, :264], [k60, k62, 88 + k60, 88 + k62, 176 + k60, 176 + k62], axis=1)
    assert not others.any()


def test_repeated_overlapping_note_keeps_both_onsets(tmp_path):
    # Key 60 struck at 0 s and again at 0.25 s before any note-off; one note-off at 0.5 s and a
    # spurious second one at 0.75 s. Both strikes must survive as onsets.
    events = (
        tempo(0, 120)
        + [(1, 0, note(1, 0, 0, 60)[0][2])]
        + [(1, 240, note(1, 0, 0, 60, 80)[0][2])]
        + [(1, 480, note(1, 0, 0, 60)[1][2]), (1, 720, note(1, 0, 0, 60)[1][2])]
    )
    perf = read_midi(write_events(tmp_path / "r.mid", events))
    assert [(round(n.start_s, 3), round(n.end_s, 3), n.velocity) for n in perf.notes] == [
        (0.0, 0.5, 100),
        (0.25, 0.5, 80),
    ]
    x = compute_features(perf, CFG)
    k = 60 - 21
    assert np.flatnonzero(x[:, ONSET.start + k]).tolist() == [0, 25]
    assert np.flatnonzero(x[:, HELD.start + k]).tolist() == list(range(0, 50))
    # the later strike's velocity takes over from its onset on
    np.testing.assert_allclose(x[0:25, VELOCITY.start + k], 100 / 127)
    np.testing.assert_allclose(x[25:50, VELOCITY.start + k], 80 / 127)


def test_re_strike_at_note_off_tick(tmp_path):
    events = tempo(0, 120) + note(1, 0, 480, 60) + note(1, 480, 960, 60)
    perf = read_midi(write_events(tmp_path / "s.mid", events))
    x = compute_features(perf, CFG)
    assert np.flatnonzero(x[:, ONSET.start + 39]).tolist() == [0, 50]
    assert np.flatnonzero(x[:, HELD.start + 39]).tolist() == list(range(100))


def test_pedal_curves(tmp_path):
    # sustain down at 0.1 s, half at 0.3 s, up at 0.6 s; sostenuto at 0.2 s; soft full from 0.
    events = (
        tempo(0, 120)
        + note(1, 0, 960, 60)
        + cc(1, 96, 64, 127)
        + cc(1, 288, 64, 64)
        + cc(1, 576, 64, 0)
        + cc(1, 192, 66, 100)
        + cc(1, 0, 67, 127)
    )
    perf = read_midi(write_events(tmp_path / "p.mid", events))
    sustain = perf.pedals["sustain"]
    np.testing.assert_allclose(sustain.times_s, [0.1, 0.3, 0.6])
    np.testing.assert_allclose(sustain.at(np.array([0.0, 0.1, 0.2, 0.35, 0.7])), [0, 1, 1, 64 / 127, 0])
    x = compute_features(perf, CFG)
    sus, sos, soft = x[:, 264], x[:, 265], x[:, 266]
    np.testing.assert_allclose(sus[:10], 0)
    np.testing.assert_allclose(sus[10:30], 1)
    np.testing.assert_allclose(sus[30:60], 64 / 127)
    np.testing.assert_allclose(sus[60:], 0)
    assert np.flatnonzero(sos).tolist() == list(range(20, 100))
    np.testing.assert_allclose(soft, 1)
    # the sustain pedal must not extend the held channel
    assert np.flatnonzero(x[:, HELD.start + 39]).tolist() == list(range(100))


def test_score_preset_has_176_binary_channels(simple_midi):
    cfg = FeatureConfig(sample_rate=16000, hop_samples=160, preset="score", tail_seconds=0.0)
    x = compute_features(read_midi(simple_midi), cfg)
    assert x.shape == (100, 176)
    assert set(np.unique(x).tolist()) == {0.0, 1.0}


def test_type0_and_type1_agree(tmp_path):
    events = tempo(0, 100) + note(1, 0, 240, 60, 90) + note(2, 120, 480, 72, 30, channel=1)
    a = read_midi(write_events(tmp_path / "a.mid", events, midi_type=1))
    b = read_midi(write_events(tmp_path / "b.mid", events, midi_type=0))
    key = lambda p: [(n.pitch, round(n.start_s, 6), round(n.end_s, 6), n.velocity) for n in p.notes]  # noqa: E731
    assert key(a) == key(b)
    assert len(a.notes) == 2  # two tracks and two channels merged


def test_out_of_range_notes_dropped_and_counted(tmp_path):
    events = tempo(0, 120) + note(1, 0, 480, 60) + note(1, 0, 480, 10) + note(1, 0, 480, 120)
    perf = read_midi(write_events(tmp_path / "o.mid", events))
    assert [n.pitch for n in perf.notes] == [60]
    assert perf.out_of_range == 2
    assert any("2 note(s) outside" in w for w in perf.warnings)


def test_drum_channel_skipped_and_reported(tmp_path):
    events = tempo(0, 120) + note(1, 0, 480, 60) + note(1, 0, 480, 38, channel=9)
    perf = read_midi(write_events(tmp_path / "d.mid", events))
    assert [n.pitch for n in perf.notes] == [60]
    assert perf.drum_notes == 1
    assert any("drum" in w for w in perf.warnings)


def test_drum_only_empty_and_corrupt_midi_raise(tmp_path):
    drums = write_events(tmp_path / "drums.mid", tempo(0, 120) + note(1, 0, 480, 38, channel=9))
    with pytest.raises(MidiError, match="only drum notes"):
        read_midi(drums)
    no_notes = write_events(tmp_path / "nonotes.mid", tempo(0, 120) + cc(1, 0, 64, 127))
    with pytest.raises(MidiError, match="no notes"):
        read_midi(no_notes)
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    with pytest.raises(MidiError, match="empty file"):
        read_midi(empty)
    corrupt = tmp_path / "corrupt.mid"
    corrupt.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage")
    with pytest.raises(MidiError, match="not a readable MIDI file"):
        read_midi(corrupt)
    with pytest.raises(MidiError, match="no such file"):
        read_midi(tmp_path / "missing.mid")


def test_quantize_round_trip_is_exact(simple_midi):
    x = compute_features(read_midi(simple_midi), CFG)
    np.testing.assert_array_equal(dequantize(quantize(x)), x)


@pytest.mark.parametrize("sample_rate", [16000, 22050, 24000, 44100])
def test_frames_times_hop_is_whole_audio(simple_midi, sample_rate):
    cfg = FeatureConfig(sample_rate=sample_rate, hop_samples=256, tail_seconds=0.5)
    perf = read_midi(simple_midi)
    n = n_frames_for(perf, cfg)
    # 1.0 s of notes + 0.5 s tail, rounded up to whole frames
    assert n == -(-round(1.5 * sample_rate) // 256)
    check_alignment(n, n * 256, 256)
    with pytest.raises(AlignmentError, match="misaligned"):
        check_alignment(n, n * 256 + 1, 256)
