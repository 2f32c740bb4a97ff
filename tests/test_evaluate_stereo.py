"""The stereo evaluation of issue 18: floored MR-STFT per channel and on the mid, the inter-channel
level error, level matching, and the path that brings every system to stereo at the cache's rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, needs_fluidsynth

from pianosynth.evaluate import (
    Clip,
    System,
    channels_first,
    match_level,
    mixdown,
    resample,
    spectral_metrics,
    stereo_metrics,
    stereo_scores,
    system_output,
    system_outputs,
    to_stereo,
)
from pianosynth.losses import MultiResolutionSTFTDistance, fft_sizes_for, interchannel_level_error, per_channel_distance

SR = 48000


def noise(seconds=2.0, seed=0, sr=SR, level=0.1) -> np.ndarray:
    """White noise under a slow envelope (so the loudness contour is not flat). (samples,)"""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    env = 1 + 0.5 * np.sin(np.linspace(0, 6 * np.pi, n))
    return (rng.standard_normal(n) * env * level).astype(np.float32)


def spaced_pair(seconds=2.0, sr=SR) -> np.ndarray:
    """A stereo signal with a level difference that changes over bins and time: one source heard
    louder on the left, another louder on the right, a third in both. (2, samples)"""
    a, b, c = noise(seconds, 1, sr), noise(seconds, 2, sr), noise(seconds, 3, sr, level=0.03)
    return np.stack([a + 0.3 * b + c, 0.4 * a + b + c]).astype(np.float32)


def test_fft_sizes_follow_the_rate():
    assert fft_sizes_for(16000) == (512, 1024, 2048)
    assert fft_sizes_for(22050) == fft_sizes_for(24000) == (512, 1024, 2048)
    assert fft_sizes_for(44100) == fft_sizes_for(48000) == (1024, 2048, 4096)
    with pytest.raises(ValueError):
        fft_sizes_for(0)


def test_a_signal_against_itself_scores_zero():
    ref = spaced_pair()
    out, row = stereo_scores(ref.copy(), ref, SR)
    assert row["mrstft_floor80_lr"] == 0.0 and row["mrstft_floor80_mid"] == 0.0 and row["ild_db"] == 0.0
    assert row["gain_db"] == pytest.approx(0.0, abs=1e-6)
    assert row["loudness_r_mid"] == pytest.approx(1.0)
    assert math.isnan(row["note_f1_mid"])  # no transcriber asked for
    np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_per_channel_distance_is_the_mean_of_the_channels_own():
    distance = MultiResolutionSTFTDistance(fft_sizes_for(SR), per_example=True, floor_db=-80)
    ref, out = spaced_pair(), spaced_pair()[::-1].copy()  # the channels swapped
    r, o = torch.from_numpy(ref)[None], torch.from_numpy(out)[None]
    both = per_channel_distance(distance, o, r)
    each = [float(distance(o[:, c], r[:, c])[0]) for c in range(2)]
    assert float(both[0]) == pytest.approx(np.mean(each), rel=1e-6)
    assert float(both[0]) > 0.1
    # the mid of a channel swap is the same signal: the mid column cannot see it
    assert stereo_metrics(out, ref, SR)["mrstft_floor80_mid"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError):
        per_channel_distance(MultiResolutionSTFTDistance(per_example=False), o, r)


@pytest.mark.parametrize("g", [0.5, 0.25])
def test_a_mono_copy_has_the_level_error_of_the_references_level_difference(g):
    # the right channel is the left at gain g: the level difference is 20 log10(1/g) in every bin,
    # and a mono copy, with none, misses it by that; the -80 dB floor changes it only in the few
    # bins where the right channel falls below it
    left = noise(level=0.3)
    ref = np.stack([left, g * left])
    mono = to_stereo(mixdown(ref.T)[None])
    expected = abs(20 * math.log10(g))
    r, m = torch.from_numpy(ref)[None], torch.from_numpy(mono)[None]
    assert float(interchannel_level_error(m, r, floor_db=-200)[0]) == pytest.approx(expected, abs=1e-3)
    assert stereo_metrics(mono, ref, SR)["ild_db"] == pytest.approx(expected, abs=0.01)
    # and a copy with the right level difference has none
    assert stereo_metrics(ref.copy(), ref, SR)["ild_db"] == 0.0


def test_a_mono_copy_of_two_independent_noises_misses_6_dB():
    # Each bin's power is exponential; the log of the ratio of two independent ones is logistic, of
    # mean absolute value 2 ln 2: 10 log10(e) * 2 ln 2 = 20 log10 2 = 6.02 dB, what a mono copy
    # scores, with or without the -80 dB floor (at this level hardly a bin falls below it).
    rng = np.random.default_rng(0)
    ref = torch.from_numpy((rng.standard_normal((1, 2, 4 * SR)) * 0.3).astype(np.float32))
    mono = ref.mean(dim=1, keepdim=True).expand(-1, 2, -1).contiguous()
    unfloored = float(interchannel_level_error(mono, ref, n_fft=2048, floor_db=-200)[0])
    floored = float(interchannel_level_error(mono, ref, n_fft=2048)[0])
    assert unfloored == pytest.approx(20 * math.log10(2), abs=0.05)
    assert floored == pytest.approx(unfloored, abs=0.01)


def test_the_level_error_counts_only_bins_within_60_dB_of_their_frames_peak():
    # A tone louder on the left, and noise 70 dB below it louder on the right: the noise's bins
    # fall outside the 60 dB range, so a copy of the tone alone scores the same as the full signal.
    t = np.arange(2 * SR) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    hiss = noise(level=0.5 * 10 ** (-70 / 20), seed=5)
    ref = np.stack([tone + 0.1 * hiss, 0.5 * tone + hiss])
    tone_only = np.stack([tone, 0.5 * tone])
    assert stereo_metrics(tone_only, ref, SR)["ild_db"] == pytest.approx(0.0, abs=0.1)
    assert stereo_metrics(np.stack([tone, tone]), ref, SR)["ild_db"] == pytest.approx(20 * math.log10(2), abs=0.1)
    assert math.isnan(stereo_metrics(ref, np.zeros_like(ref), SR)["ild_db"])  # nothing heard in the reference


@pytest.mark.parametrize("gain", [0.1, 0.5, 3.0])
def test_a_gain_does_not_move_the_level_matched_scores(gain):
    ref = spaced_pair()
    out = 0.8 * spaced_pair()[:, ::-1].copy() + 0.2 * ref  # near the reference, not equal
    _, base = stereo_scores(out, ref, SR)
    _, scaled = stereo_scores(gain * out, ref, SR)
    assert scaled["gain_db"] == pytest.approx(base["gain_db"] - 20 * math.log10(gain), abs=1e-4)
    for key in ("mrstft_floor80_lr", "mrstft_floor80_mid", "ild_db", "loudness_r_mid"):
        assert scaled[key] == pytest.approx(base[key], rel=1e-4), key
    assert base["mrstft_floor80_lr"] > 0.05
    # whereas the mono columns, which are not level matched, do move
    assert spectral_metrics(gain * out.mean(0), ref.mean(0)) != spectral_metrics(out.mean(0), ref.mean(0))


def test_match_level_gives_the_references_rms_and_leaves_silence():
    ref = spaced_pair()
    out, gain_db = match_level(0.25 * ref, ref)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7)
    assert gain_db == pytest.approx(20 * math.log10(4))
    silent = np.zeros_like(ref)
    out, gain_db = match_level(silent, ref)
    assert gain_db == 0.0 and not out.any()


def test_shapes_channels_first_stereo_and_mixdown():
    stereo = spaced_pair(0.1).T  # (samples, 2), as render.render and the cache give it
    assert channels_first(stereo).shape == (2, stereo.shape[0])
    assert channels_first(stereo[:, 0]).shape == (1, stereo.shape[0])
    np.testing.assert_array_equal(to_stereo(channels_first(stereo[:, 0])), np.stack([stereo[:, 0]] * 2))
    np.testing.assert_allclose(mixdown(stereo), stereo.mean(axis=1))
    with pytest.raises(ValueError):
        to_stereo(np.zeros((3, 10), np.float32))
    with pytest.raises(ValueError):
        channels_first(np.zeros((2, 2, 2), np.float32))
    # resampling works along the last axis, channel by channel
    both = resample(channels_first(stereo), SR, 16000)
    np.testing.assert_allclose(both[1], resample(np.ascontiguousarray(stereo[:, 1]), SR, 16000), atol=1e-6)


def test_every_system_reaches_stereo_at_the_caches_rate():
    """A 16 kHz mono system is resampled and copied into both channels; a stereo system at the
    cache's rate keeps its channels; the mono columns see the mid at 16 kHz, as before."""
    clip = Clip(0, {}, 0.0, 1.0)
    mono16 = noise(1.0, sr=16000)
    stereo48 = spaced_pair(1.0).T.copy()
    a = System("16 kHz mono", "model", lambda c: (mono16, 0.5), 16000)
    b = System("48 kHz stereo", "baseline", lambda c: (stereo48, 0.0), SR)
    m16, st, compute_s = system_outputs(a, clip, SR)
    assert compute_s == 0.5 and st.shape == (2, SR) and m16.shape == (16000,)
    np.testing.assert_array_equal(st[0], st[1])
    np.testing.assert_array_equal(m16, system_output(a, clip)[0])
    m16, st, _ = system_outputs(b, clip, SR)
    assert st.shape == (2, SR) and not np.array_equal(st[0], st[1])
    np.testing.assert_allclose(st, np.round(stereo48.T * 32767) / 32767, atol=1e-7)  # the 16-bit path
    np.testing.assert_allclose(m16, resample(mixdown(np.round(stereo48 * 32767) / 32767), SR, 16000), atol=1e-6)
    assert system_outputs(b, clip)[1] is None  # a mono evaluation makes no stereo


# ---------------------------------------------------------------------------------------------
# A whole stereo evaluation and its page, on systems made in the test
# ---------------------------------------------------------------------------------------------


def _stereo_systems() -> list[System]:
    """A 48 kHz stereo reference (band-limited to 8 kHz), the same 10x quieter, its mid at 16 kHz
    (mono), and silence."""

    def ref(clip):
        rng = np.random.default_rng(clip.index)
        return resample(spaced_pair(clip.seconds, sr=16000), 16000, SR).T * np.float32(0.5 + rng.random()), 0.0

    def quiet(clip):
        return 0.1 * ref(clip)[0], 0.0

    def mono16(clip):
        return resample(mixdown(ref(clip)[0]), SR, 16000), 0.0

    return [
        System("reference (stereo)", "reference", ref, SR),
        System("the reference, 20 dB quieter", "baseline", quiet, SR),
        System("its mid at 16 kHz", "baseline", mono16, 16000),
        System("silence", "baseline", lambda clip: (np.zeros(int(clip.seconds * 16000), np.float32), 0.0), 16000),
    ]


@pytest.fixture(scope="module")
def stereo_page(tmp_path_factory):
    from pianosynth.evaluate import score_systems

    out = tmp_path_factory.mktemp("stereo") / "eval"
    clips = [Clip(i, {"file": f"piece{i}.mid"}, 0.0, 2.0) for i in range(2)]
    result = score_systems(_stereo_systems(), clips, lambda clip: [], out, "tiny-grand", "test", stereo_sr=SR)
    return result, out


def test_a_stereo_evaluation_scores_level_matched_and_keeps_the_mono_columns(stereo_page):
    import soundfile as sf

    result, out = stereo_page
    s = result["summary"]
    assert result["stereo"] is True and result["sample_rate"] == SR
    ref, quiet, mono, silence = (s[x["name"]] for x in result["systems"])
    assert ref["mrstft_floor80_lr"]["mean"] == 0.0 and ref["ild_db"]["mean"] == 0.0
    # 20 dB quieter: level matched, only 16-bit rounding is left; the mono columns see the level
    assert quiet["gain_db"]["mean"] == pytest.approx(20.0, abs=0.01)
    # (its 16-bit rounding noise, raised 20 dB, sits just above the floor where the reference is empty)
    assert quiet["mrstft_floor80_lr"]["mean"] < 0.05 and quiet["ild_db"]["mean"] < 0.1
    assert quiet["mrstft"]["mean"] > 2.0
    # the mid played in both channels: exact in the mono columns; in stereo, since the channels
    # are partly independent, the mid holds less power than they do, so level matching raises it
    # (then its mid is too loud by that gain), and each channel and the level differences are off
    assert mono["mrstft"]["mean"] < 0.01 and mono["gain_db"]["mean"] > 0.5
    assert mono["mrstft_floor80_mid"]["mean"] < 0.5 * mono["mrstft_floor80_lr"]["mean"]
    assert mono["ild_db"]["mean"] > 3.0
    assert silence["mrstft_floor80_lr"]["mean"] > mono["mrstft_floor80_lr"]["mean"]
    assert silence["gain_db"]["mean"] == 0.0  # nothing to scale
    table = (out / "metrics.md").read_text()
    assert table.count("\n| ") == 2 * (len(result["systems"]) + 2)  # two tables: header, separator, rows
    assert "Stereo at 48 kHz" in table and "one gain per clip" in table
    for clip in result["clips"]:
        for si in range(len(result["systems"])):
            info = sf.info(str(out / "audio" / f"{clip['name']}_s{si}.wav"))
            assert (info.samplerate, info.channels, info.frames) == (SR, 2, 2 * SR)
    page = (out / "index.html").read_text()
    assert "one gain per clip" in page and "<script" not in page and "http" not in page
    assert page.count("<table") == 2 and page.count("<audio") == 2 * len(result["systems"])




@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_the_stereo_page_plays_stereo_at_48_kHz_in_a_real_browser(stereo_page):
    """Chromium loads every player, and decodes every file as two channels of 2 s; the files'
    own rate is 48 kHz (checked above); served over HTTP, since fetch() cannot read file:// URLs."""
    import functools
    import http.server
    import threading

    playwright = pytest.importorskip("playwright.sync_api")
    result, out = stereo_page
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"http://127.0.0.1:{server.server_address[1]}/index.html")
            page.wait_for_function("Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)", timeout=30000)
            audio = page.eval_on_selector_all("audio", "els => els.map(a => [a.readyState, a.duration])")
            decoded = page.evaluate(
                """async () => Promise.all(Array.from(document.querySelectorAll('audio')).map(async a => {
                    const bytes = await (await fetch(a.getAttribute('src'))).arrayBuffer();
                    const buffer = await new OfflineAudioContext(2, 48000, 48000).decodeAudioData(bytes);
                    return [buffer.numberOfChannels, buffer.duration];
                }))"""
            )
            images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
            rows = page.eval_on_selector_all("table tr", "els => els.length")
            browser.close()
    finally:
        server.shutdown()
    n = len(result["systems"])
    assert len(audio) == len(decoded) == 2 * n
    assert all(state >= 1 and duration == pytest.approx(2.0, abs=0.01) for state, duration in audio)
    assert all(channels == 2 and duration == pytest.approx(2.0, abs=0.01) for channels, duration in decoded)
    assert images and all(done and width > 0 for done, width in images)
    assert rows == 2 * (1 + n)  # two tables, each a header and a row per system


class QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request lines in pytest's output
        pass


@needs_fluidsynth
def test_a_render_up_to_the_clips_end_equals_the_whole_render_there(tmp_path):
    """The baselines render each piece only up to the end of its last clip (the notes that start
    before it): on that stretch, the audio is the whole render's, sample for sample."""
    from pianosynth.config import Config, FeatureConfig
    from pianosynth.dataset import Cache, find_sources, prepare
    from pianosynth.evaluate import _Pieces
    from pianosynth.examples import write_demo_midi

    write_demo_midi(tmp_path / "midi", count=1, bars=4)
    cache = Cache(prepare(find_sources(tmp_path / "midi"), tmp_path / "c", Config(features=FeatureConfig(hop_samples=128)), name="t"))
    piece = cache.pieces[0]
    until_s = round(piece["seconds"] / 2, 2)
    perf = _Pieces(cache).perf(piece)
    assert any(n.start_s >= until_s for n in perf.notes) and any(n.start_s < until_s for n in perf.notes)
    whole = _Pieces(cache).rendered(piece, cache.render, 64)
    part = _Pieces(cache, {piece["file"]: until_s}).rendered(piece, cache.render, 64)
    n = int(math.ceil(until_s * cache.features.sample_rate))
    assert len(part) == n < len(whole)
    np.testing.assert_array_equal(part, whole[:n])
    assert np.abs(whole[:n]).max() > 0.01


def test_a_sfizz_render_up_to_the_clips_end_equals_the_whole_render_there(tmp_path, monkeypatch):
    """The same for the grand's renderer, sfizz, at 48 kHz stereo, with the tiny synthetic grand
    of tests/test_grand.py (never the real samples)."""
    from types import SimpleNamespace

    from test_grand import write_tiny_grand

    from pianosynth import grand
    from pianosynth.config import FeatureConfig, RenderConfig
    from pianosynth.evaluate import _Pieces
    from pianosynth.examples import write_demo_midi
    from pianosynth.render import close_sfizz

    pytest.importorskip("pysfizz")
    write_tiny_grand(tmp_path / "grand")
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(tmp_path / "grand"))
    [path] = write_demo_midi(tmp_path / "midi", count=1, bars=4)
    fc, rc = FeatureConfig(sample_rate=SR, hop_samples=384, channels=2, note_clock="sfizz"), RenderConfig(source="sfizz")
    cache = SimpleNamespace(features=fc, render=rc, dir=tmp_path)  # what _Pieces reads of a cache
    try:
        perf = _Pieces(cache).perf({"file": "a.mid", "path": str(path)})
        piece = {"file": "a.mid", "path": str(path), "frames": int((perf.end_s + 1) * fc.frame_rate)}
        until_s = round(perf.end_s / 2, 2)
        assert any(n.start_s >= until_s for n in perf.notes) and any(n.start_s < until_s for n in perf.notes)
        whole = _Pieces(cache).rendered(piece, rc, 64)
        part = _Pieces(cache, {"a.mid": until_s}).rendered(piece, rc, 64)
    finally:
        close_sfizz()
    n = int(math.ceil(until_s * SR))
    assert part.shape == (n, 2) and whole.shape[1] == 2 and n < len(whole)
    np.testing.assert_array_equal(part, whole[:n])
    assert np.abs(whole[:n]).max() > 0.01


def test_evaluate_on_a_tiny_grand_cache_reports_every_baseline(tmp_path, monkeypatch):
    """prepare a 48 kHz stereo cache of the tiny synthetic grand (its samples twice as loud on the
    left: a level difference of 20 log10 2 = 6.02 dB in every bin), then evaluate it with every
    baseline of issue 18."""
    from test_grand import write_tiny_grand

    from pianosynth import grand
    from pianosynth.config import load_config
    from pianosynth.dataset import Cache, find_sources, prepare
    from pianosynth.evaluate import evaluate
    from pianosynth.examples import write_demo_midi
    from pianosynth.render import close_sfizz

    pytest.importorskip("pysfizz")
    write_tiny_grand(tmp_path / "grand")
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(tmp_path / "grand"))
    write_demo_midi(tmp_path / "midi", count=3, bars=2)
    cfg = load_config(None, grand.GRAND_OVERRIDES + ["features.tail_seconds=0.2"])
    try:
        cache = Cache(prepare(find_sources(tmp_path / "midi"), tmp_path / "cache", cfg, name="g"))
        split = cache.pieces[0]["split"]
        result = evaluate(cache, [], tmp_path / "eval", split=split, clips=1, seconds=1.5, transcribe=False)
    finally:
        close_sfizz()
    names = [s["name"] for s in result["systems"]]
    assert names[:7] == [
        "reference (Salamander grand, sfizz)", "silence", "sine (pretty_midi)", "Salamander grand, every velocity 64",
        "Salamander grand, sfizz, mixed to mono", "FluidR3 grand (FluidSynth)", "MuseScore General grand (FluidSynth)",
    ]  # fmt: skip
    assert names[7].startswith("shipped 16 kHz model") and len(names) == 8
    assert result["stereo"] and result["sample_rate"] == 48000
    s = result["summary"]
    assert s[names[0]]["mrstft_floor80_lr"]["mean"] == 0.0 and s[names[0]]["ild_db"]["mean"] == 0.0
    mono = s["Salamander grand, sfizz, mixed to mono"]
    # the mono columns already hear the mid: only its own 16-bit rounding, below the floor, is left
    assert mono["mrstft_floor80"]["mean"] < 1e-3
    # (below 6.02 dB: this instrument's one partial leaves many counted bins a few dB above the
    # floor, where the right channel, 6 dB down, counts as at the floor)
    assert 4.0 < mono["ild_db"]["mean"] < 6.03 and mono["mrstft_floor80_mid"]["mean"] < mono["mrstft_floor80_lr"]["mean"]
    # the same samples at other velocities keep the level difference; a 16 kHz mono model cannot
    assert s["Salamander grand, every velocity 64"]["ild_db"]["mean"] < 1.0
    assert s[names[7]]["ild_db"]["mean"] > 4.0
    for name in names[1:]:
        assert s[name]["mrstft_floor80_lr"]["mean"] > 0, name
    assert "Stereo at 48 kHz" in (tmp_path / "eval" / "metrics.md").read_text()


def test_an_evaluation_stopped_early_keeps_the_clips_it_finished(tmp_path):
    import json

    from pianosynth.evaluate import score_systems

    def flaky(clip):
        if clip.index == 1:
            raise KeyboardInterrupt  # as Ctrl-C during the second clip
        return spaced_pair(clip.seconds).T, 0.0

    systems = [System("reference", "reference", lambda clip: (spaced_pair(clip.seconds).T, 0.0), SR), System("flaky", "baseline", flaky, SR)]
    clips = [Clip(i, {"file": "a.mid"}, 0.0, 0.5) for i in range(3)]
    with pytest.raises(KeyboardInterrupt):
        score_systems(systems, clips, lambda clip: [], tmp_path, "c", "test", stereo_sr=SR)
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert [c["name"] for c in result["clips"]] == ["clip00"] and result["clips_planned"] == 3
    assert result["summary"]["flaky"]["mrstft_floor80_lr"]["n"] == 1
    assert "stopped after 1 of 3" in (tmp_path / "metrics.md").read_text()


def test_a_stereo_model_system_renders_samples_first_in_two_channels(tmp_path):
    """A stereo decoder's (channels, samples) blocks join along time and come back samples first,
    as every reference and baseline does (the first real grand evaluation failed here)."""
    from pianosynth.checkpoint import save_checkpoint
    from pianosynth.config import load_config
    from pianosynth.evaluate import model_system
    from pianosynth.examples import generate_piece
    from pianosynth.model import build_model
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "grand.yaml", ["model.hidden=8", "model.layers=1"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features)
    state = {"format": 1, "version": "test", "config": cfg.to_dict(), "model": model.state_dict(), "step": 0, "best_valid": 1.0, "elapsed_s": 0.0}
    save_checkpoint(tmp_path / "grand2.pt", state)
    perf = generate_piece(seed=0, bars=2)

    class Pieces:
        def perf(self, piece):
            return perf

    system = model_system(tmp_path / "grand2.pt", Pieces(), context_seconds=0.5, threads=2)
    clip = Clip(0, {"file": "x.mid"}, 0.5, 1.0)
    audio, _ = system.render(clip)
    assert audio.shape == (SR, 2) and system.sr == SR
    assert np.abs(audio[:, 0] - audio[:, 1]).max() > 1e-4  # two channels of their own
    _, stereo, _ = system_outputs(system, clip, SR)
    assert stereo.shape == (2, SR)


def test_a_render_up_to_a_clip_stops_near_it_though_a_note_and_the_pedal_are_held_to_the_end():
    """The first full grand evaluation stopped at its tenth clip: FluidSynth rendered a whole
    piece (a pedal and a note held to its end) past the bound set for the shorter render."""
    from pianosynth.evaluate import UNTIL_MARGIN_S, until
    from pianosynth.midi import Note, PedalCurve, Performance

    held = Note(60, 1.0, 600.0, 64)
    pedal = PedalCurve(np.array([0.5, 599.0]), np.array([1.0, 0.0]))
    perf = Performance(notes=[held, Note(62, 2.0, 2.5, 64), Note(64, 50.0, 51.0, 64)], pedals={"sustain": pedal}, end_s=600.0)
    cut = until(perf, 10.0)
    assert [n.pitch for n in cut.notes] == [60, 62]
    assert max(n.end_s for n in cut.notes) == cut.end_s == 10.0 + UNTIL_MARGIN_S
    assert list(cut.pedals["sustain"].times_s) == [0.5]
    assert cut.notes[1] == perf.notes[1]  # what ends before the cut is untouched
