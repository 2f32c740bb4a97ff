"""Evaluation metrics, the clip choice, the whole evaluation on a tiny cache, and the page in a browser."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CHROMIUM, needs_fluidsynth

from pianosynth.config import Config, FeatureConfig
from pianosynth.dataset import Cache, find_sources, prepare
from pianosynth.evaluate import (
    Clip,
    System,
    as_pcm16,
    choose_clips,
    evaluate,
    frame_rms_db,
    loudness_correlation,
    onset_f1,
    spectral_metrics,
    system_output,
)
from pianosynth.examples import write_demo_midi
from pianosynth.midi import Note
from pianosynth.render import to_int16

SR = 16000


def noise(seconds=2.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # white noise under a slow envelope, so the loudness contour is not flat
    env = 0.2 + 0.15 * np.sin(np.linspace(0, 6 * np.pi, int(seconds * SR)))
    return (rng.standard_normal(int(seconds * SR)) * env).astype(np.float32)


def test_identical_audio_scores_perfectly():
    a = noise()
    m = spectral_metrics(a, a)
    assert m["mrstft"] == 0.0 and m["lsd"] == 0.0
    assert loudness_correlation(a, a) == pytest.approx(1.0)
    notes = [Note(60, 0.1, 0.5, 80), Note(64, 0.6, 0.9, 70)]
    assert onset_f1(notes, [(n.start_s, n.end_s, n.pitch) for n in notes]) == 1.0


def test_note_f1_by_hand():
    ref = [Note(60, 0.0, 0.5, 80), Note(62, 1.0, 1.5, 80), Note(64, 2.0, 2.5, 80), Note(65, 3.0, 3.5, 80)]
    # one exact, one 40 ms late (inside 50 ms), one 80 ms late (outside), one wrong pitch, one extra
    est = [(0.0, 0.5, 60), (1.04, 1.5, 62), (2.08, 2.5, 64), (3.0, 3.5, 66), (4.0, 4.2, 70)]
    # 2 matches: precision 2/5, recall 2/4, F1 = 2PR/(P+R) = 4/9
    assert onset_f1(ref, est) == pytest.approx(4 / 9)
    assert onset_f1(ref, []) == 0.0
    assert math.isnan(onset_f1([], est))


@pytest.mark.parametrize("gain", [0.5, 2.0])
def test_gain_moves_the_distances_as_documented(gain):
    # docs/evaluation.md: a gain g gives spectral convergence |1 - g| and log-magnitude |ln g| at
    # every FFT size (bins far above 1e-5), LSD 20 |log10 g| dB, and leaves loudness r at 1.
    a = noise()
    m = spectral_metrics(gain * a, a)
    assert m["mrstft"] == pytest.approx(abs(1 - gain) + abs(math.log(gain)), abs=3e-3)
    assert m["lsd"] == pytest.approx(20 * abs(math.log10(gain)), abs=2e-2)
    assert loudness_correlation(gain * a, a) == pytest.approx(1.0, abs=1e-6)


def test_distances_grow_steadily_with_noise():
    a = noise()
    rng = np.random.default_rng(1)
    n = rng.standard_normal(len(a)).astype(np.float32)
    levels = [0.0, 0.003, 0.01, 0.03, 0.1, 0.3]
    mr = [spectral_metrics(a + lv * n, a)["mrstft"] for lv in levels]
    lsd = [spectral_metrics(a + lv * n, a)["lsd"] for lv in levels]
    r = [loudness_correlation(a + lv * n, a) for lv in levels]
    assert mr == sorted(mr) and lsd == sorted(lsd) and r == sorted(r, reverse=True)
    assert mr[0] == 0 < mr[1] and r[-1] < 0.99


def piano_like(seconds=3.0, gain=1.0, decay=1.0) -> np.ndarray:
    """Four notes of 15 decaying harmonics each, dampers at 2.2 s, then silence: mostly bins
    far below full scale, as in piano music."""
    t = np.arange(int(seconds * SR)) / SR
    dampers = np.clip((2.2 - t) / 0.05, 0, 1)
    y = np.zeros_like(t)
    for onset_s, pitch in [(0.0, 60), (0.5, 64), (1.0, 67), (1.5, 72)]:
        f0_hz, tt = 440 * 2 ** ((pitch - 69) / 12), t - onset_s
        for h in range(1, 16):
            y += (tt >= 0) * dampers * 0.1 / h * np.exp(-tt * decay * (1 + h / 4)) * np.sin(2 * np.pi * h * f0_hz * tt)
    return (gain * y).astype(np.float32)


def test_inaudible_noise_cannot_move_the_floored_distance():
    # Issue 14: white noise at -96 dBFS (about a 16-bit file's rounding noise) added to a
    # system's output moves the floored distance by less than 0.01; the unfloored one, which
    # counts bins down to 1e-5, moves by tenths, so the test can tell the two apart.
    ref = as_pcm16(piano_like())
    out = piano_like(gain=0.9, decay=1.2)  # close to the reference, not equal
    noise = (np.random.default_rng(0).standard_normal(len(out)) * 10 ** (-96 / 20)).astype(np.float32)
    clean, noisy = spectral_metrics(out, ref), spectral_metrics(out + noise, ref)
    assert abs(noisy["mrstft_floor80"] - clean["mrstft_floor80"]) < 0.01
    assert abs(noisy["mrstft"] - clean["mrstft"]) > 0.2
    # and the floor keeps the order: the near miss is far closer than silence under both
    silence = spectral_metrics(np.zeros_like(ref), ref)
    assert silence["mrstft_floor80"] > 5 * clean["mrstft_floor80"] and silence["mrstft"] > 5 * clean["mrstft"]


def test_every_system_reaches_the_metrics_as_a_16_bit_file(tmp_path):
    # A model's float output and the 16-bit file holding it (written as prepare writes the
    # reference) score identically, because system_output quantises every system the same way;
    # the reference, already 16-bit, passes through unchanged.
    clip = Clip(0, {}, 0.0, 3.0)
    ref_audio = to_int16(piano_like())[0].astype(np.float32) / 32767
    out = piano_like(gain=0.9, decay=1.2)
    path = tmp_path / "model.wav"
    import soundfile as sf

    sf.write(path, to_int16(out)[0], SR, subtype="PCM_16")
    ref = System("reference", "reference", lambda c: (ref_audio, 0.0), SR)
    as_float = System("model, float", "model", lambda c: (out, 0.0), SR)
    as_file = System("model, 16-bit file", "model", lambda c: (sf.read(path, dtype="int16")[0] / 32767, 0.0), SR)
    r16 = system_output(ref, clip)[0]
    np.testing.assert_array_equal(r16, ref_audio)
    a, b = system_output(as_float, clip)[0], system_output(as_file, clip)[0]
    np.testing.assert_array_equal(a, b)
    assert spectral_metrics(a, r16) == spectral_metrics(b, r16)
    assert spectral_metrics(a, r16) != spectral_metrics(out, r16)  # the raw float output would not


def test_silence_has_no_loudness_correlation_and_rms_is_in_db():
    assert math.isnan(loudness_correlation(np.zeros(SR, np.float32), noise(1.0)))
    full = np.ones(SR, np.float32)
    np.testing.assert_allclose(frame_rms_db(full), 20 * np.log10(1 + 1e-5), rtol=1e-6)
    assert len(frame_rms_db(full)) == 20  # 50 ms frames


def test_our_mrstft_agrees_with_auraloss():
    auraloss = pytest.importorskip("auraloss")
    a, b = noise(seed=0), noise(seed=1)
    ours = spectral_metrics(a, b)["mrstft"]
    theirs = auraloss.freq.MultiResolutionSTFTLoss(
        fft_sizes=[512, 1024, 2048], hop_sizes=[128, 256, 512], win_lengths=[512, 1024, 2048],
        w_sc=1.0, w_log_mag=1.0, w_lin_mag=0.0, w_phs=0.0, eps=1e-10,
    )(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None])  # fmt: skip
    # same terms; they differ only in edge padding and in max(|X|, 1e-5) versus |X| + 1e-5
    assert ours == pytest.approx(float(theirs), rel=0.02)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny cache whose files all land in one split, and a 1-step model trained on it."""
    from pianosynth.config import load_config
    from pianosynth.train import train

    root = tmp_path_factory.mktemp("ev")
    write_demo_midi(root / "midi", count=3, bars=2)
    cache_dir = prepare(find_sources(root / "midi"), root / "c", Config(features=FeatureConfig(hop_samples=128)), name="t")
    cfg = load_config(None, ["model.hidden=8", "model.layers=1", "train.steps=1", "train.batch_size=2",
                             "train.example_seconds=0.5", "train.valid_examples=1"])  # fmt: skip
    result = train(cfg, cache_dir, runs_root=root / "runs")
    return Cache(cache_dir), result.run_dir / "last.pt", root


def _split(cache: Cache) -> str:
    return cache.pieces[0]["split"]


@needs_fluidsynth
def test_clips_are_deterministic_and_inside_their_pieces(tiny):
    cache, _, _ = tiny
    a = choose_clips(cache, _split(cache), 5, 2.0)
    b = choose_clips(cache, _split(cache), 5, 2.0)
    assert [(c.piece["file"], c.start_s) for c in a] == [(c.piece["file"], c.start_s) for c in b]
    assert len(a) == 5
    for c in a:
        assert 0 <= c.start_s and c.start_s + c.seconds <= c.piece["seconds"] + 1e-6


@needs_fluidsynth
def test_evaluate_writes_metrics_and_a_page(tiny):
    cache, ckpt, root = tiny
    out = root / "eval"
    result = evaluate(cache, [ckpt], out, split=_split(cache), clips=2, seconds=2.0, transcribe=True, model_names=["tiny"])
    names = [s["name"] for s in result["systems"]]
    assert names[0].startswith("reference") and any(n.startswith("tiny") for n in names) and "silence" in names
    ref = result["summary"][names[0]]
    assert ref["mrstft"]["mean"] == 0.0 and ref["mrstft_floor80"]["mean"] == 0.0
    assert ref["loudness_r"]["mean"] == pytest.approx(1.0)
    assert ref["note_f1"]["mean"] > 0.5  # basic-pitch hears the reference's notes
    assert result["summary"]["silence"]["note_f1"]["mean"] == 0.0
    for metric in ("mrstft", "mrstft_floor80"):
        assert result["summary"]["silence"][metric]["mean"] > result["summary"]["FluidR3 grand, every velocity 64"][metric]["mean"]
    model_row = result["summary"][names[-1]]
    assert model_row["speed"]["mean"] > 0
    table = (out / "metrics.md").read_text()
    assert "MR-STFT, floor −80 dB" in table and "MR-STFT, floor −80 dB" in (out / "index.html").read_text()
    assert table.count("\n| ") == len(names) + 2  # header, separator, one row per system
    page = (out / "index.html").read_text()
    assert "<script" not in page and "http" not in page
    assert page.count("<audio") == 2 * len(names)
    for clip in result["clips"]:
        assert (out / "img" / f"{clip['name']}_roll.png").is_file()




@needs_fluidsynth
@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_listening_page_in_a_real_browser(tiny):
    playwright = pytest.importorskip("playwright.sync_api")
    cache, ckpt, root = tiny
    out = root / "page"
    evaluate(cache, [ckpt], out, split=_split(cache), clips=2, seconds=2.0, transcribe=False, baselines=False)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--autoplay-policy=no-user-gesture-required"],
        )  # fmt: skip
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.goto((out / "index.html").as_uri())
        page.wait_for_load_state("load")
        page.wait_for_function(
            "Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1)", timeout=30000
        )
        audio = page.eval_on_selector_all("audio", "els => els.map(a => [a.readyState, a.duration])")
        images = page.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth])")
        rows = page.eval_on_selector_all("table tr", "els => els.length")
        page.screenshot(path=str(root / "page.png"), full_page=False)
        browser.close()
    assert audio and all(state >= 1 and duration > 1.9 for state, duration in audio)
    assert images and all(done and width > 0 for done, width in images)
    assert rows == 1 + 2  # header + reference + the model
    assert (root / "page.png").stat().st_size > 10_000


def test_baseline_labels_name_the_caches_instrument():
    """A cache of another instrument labels its reference and baselines with that instrument."""
    from pianosynth.config import RenderConfig
    from pianosynth.evaluate import instrument_label

    assert instrument_label(RenderConfig()) == "FluidR3 grand"
    assert instrument_label(RenderConfig(program=6)) == "FluidR3 Harpsichord"
    assert instrument_label(RenderConfig(program=6), "MuseScore General") == "MuseScore General Harpsichord"


@needs_fluidsynth
def test_flat_velocity_adds_a_row_with_every_velocity_set(tiny):
    """--flat-velocity: a velocity-reading model gets a second row, fed one velocity everywhere (a
    bare score's input), which sounds different from its own row."""
    cache, ckpt, root = tiny
    result = evaluate(cache, [ckpt], root / "flat", split=_split(cache), clips=1, seconds=2.0, transcribe=False,
                      baselines=False, model_names=["tiny"], flat_velocity=20)  # fmt: skip
    names = [s["name"] for s in result["systems"]]
    assert len(names) == 3 and names[2] == names[1] + ", every velocity 20"
    own, flat = (result["summary"][n]["mrstft"]["mean"] for n in names[1:])
    assert own != flat


def test_a_missing_transcriber_says_how_to_install_it(monkeypatch):
    import sys

    from pianosynth.evaluate import BasicPitch, EvaluationError

    monkeypatch.setitem(sys.modules, "basic_pitch", None)  # import basic_pitch raises ImportError
    with pytest.raises(EvaluationError) as e:
        BasicPitch()
    assert "pip install --no-deps basic-pitch==0.4.0" in str(e.value) and "\n" not in str(e.value)
