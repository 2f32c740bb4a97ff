"""Scores in (issue 13): small MusicXML written inside the tests -> notes, velocities, pedals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pianosynth.scores import DYNAMICS, GRACE_SECONDS, HAIRPIN_STEP, PEDAL_CHANGE_SECONDS, ScoreError, read_score
from pianosynth.synthesize import read_performance

pytest.importorskip("partitura")

STEPS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def note(pitch: str, quarters: int, tie: str | None = None, accent: bool = False, staccato: bool = False, chord: bool = False, grace: bool = False) -> str:
    """One <note> at divisions=1 (a quarter = 1): pitch like "C4" or "F#5"."""
    step, alter, octave = pitch[0], {"#": 1, "b": -1}.get(pitch[1], 0), pitch[-1]
    ties = "".join(f'<tie type="{t}"/>' for t in (tie.split("+") if tie else []))
    tieds = "".join(f'<tied type="{t}"/>' for t in (tie.split("+") if tie else []))
    arts = "".join(a for a, on in (("<accent/>", accent), ("<staccato/>", staccato)) if on)
    notations = tieds + (f"<articulations>{arts}</articulations>" if arts else "")
    kind = {1: "quarter", 2: "half", 3: "half", 4: "whole"}[quarters]
    return (
        "<note>" + ("<grace/>" if grace else "") + ("<chord/>" if chord else "")
        + f"<pitch><step>{step}</step>" + (f"<alter>{alter}</alter>" if alter else "") + f"<octave>{octave}</octave></pitch>"
        + ("" if grace else f"<duration>{quarters}</duration>") + ties + "<voice>1</voice>"
        + f"<type>{'eighth' if grace else kind}</type>" + ("<dot/>" if quarters == 3 else "")
        + (f"<notations>{notations}</notations>" if notations else "") + "</note>"
    )  # fmt: skip


def direction(inner: str, sound: str = "") -> str:
    return f'<direction placement="below"><direction-type>{inner}</direction-type>{sound}</direction>'


def dynamics(mark: str) -> str:
    return direction(f"<dynamics><{mark}/></dynamics>")


def words(text: str) -> str:
    return direction(f"<words>{text}</words>")


def metronome(bpm: int) -> str:
    return direction(f"<metronome><beat-unit>quarter</beat-unit><per-minute>{bpm}</per-minute></metronome>", f'<sound tempo="{bpm}"/>')


def pedal(kind: str) -> str:
    return direction(f'<pedal type="{kind}" line="yes"/>')


def wedge(kind: str) -> str:
    return direction(f'<wedge type="{kind}"/>')


REPEAT_END = '<barline location="right"><bar-style>light-heavy</bar-style><repeat direction="backward"/></barline>'


def musicxml(measures: list[str], time: str = "4/4") -> str:
    beats, beat_type = time.split("/")
    body = []
    for i, content in enumerate(measures):
        attrs = f"<attributes><divisions>1</divisions><time><beats>{beats}</beats><beat-type>{beat_type}</beat-type></time><clef><sign>G</sign><line>2</line></clef></attributes>" if i == 0 else ""
        body.append(f'<measure number="{i + 1}">{attrs}{content}</measure>')
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<score-partwise version="3.1">'
        '<part-list><score-part id="P1"><part-name>Piano</part-name></score-part></part-list>'
        f'<part id="P1">{"".join(body)}</part></score-partwise>'
    )


def write(tmp_path: Path, measures: list[str], name: str = "score.musicxml", **kw) -> Path:
    path = tmp_path / name
    path.write_text(musicxml(measures, **kw))
    return path


def test_repeat_tie_dynamics_accent_and_pedal(tmp_path):
    score = write(tmp_path, [
        metronome(120) + dynamics("p") + pedal("start") + note("C4", 1) + note("E4", 1, accent=True) + note("G4", 2) + pedal("stop") + REPEAT_END,
        dynamics("f") + note("A4", 4, tie="start"),
        note("A4", 2, tie="stop") + note("B4", 2),
    ])  # fmt: skip
    perf = read_performance(score)
    got = [(n.pitch, round(n.start_s, 3), round(n.end_s, 3), n.velocity) for n in perf.notes]
    p, f = DYNAMICS["p"], DYNAMICS["f"]
    once = [(60, 0.0, 0.5, p), (64, 0.5, 1.0, p + 16), (67, 1.0, 2.0, p)]
    # the repeat plays bar 1 twice; the tie makes one A4 of 6 quarters (3 s at quarter = 120)
    assert got == once + [(n, s + 2.0, e + 2.0, v) for n, s, e, v in once] + [(69, 4.0, 7.0, f), (71, 7.0, 8.0, f)]
    sus = perf.pedals["sustain"]
    # down for bar 1, changed (lifted briefly) where the repeat restarts it, up at the end of bar 1
    np.testing.assert_allclose(sus.times_s, [0.0, 2.0, 2.0 + PEDAL_CHANGE_SECONDS, 4.0])
    np.testing.assert_allclose(sus.values, [1.0, 0.0, 1.0, 0.0])
    assert perf.end_s == pytest.approx(8.0)


def test_crescendo_sforzando_staccato_grace_and_tempo_words(tmp_path):
    score = write(tmp_path, [
        words("Andante") + dynamics("p") + wedge("crescendo") + note("C4", 1) + note("D4", 1) + note("E4", 1) + note("F4", 1) + wedge("stop"),
        dynamics("f") + note("G4", 1, staccato=True) + dynamics("sf") + note("A4", 1) + note("B4", 2),
        dynamics("p") + wedge("diminuendo") + note("C5", 4) + wedge("stop"),
        note("D5", 1, grace=True) + note("C5", 4),
    ])  # fmt: skip
    perf = read_performance(score)
    beat = 60 / 80  # Andante: 80 quarters a minute
    main = [n for n in perf.notes if n.pitch != 74]
    assert [round(n.start_s / beat, 6) for n in main] == [0, 1, 2, 3, 4, 5, 6, 8, 12]
    vel = [n.velocity for n in main]
    p, f = DYNAMICS["p"], DYNAMICS["f"]
    # the crescendo ramps from p towards the f that ends it, one quarter at a time
    assert vel[:4] == [round(p + (f - p) * k / 4) for k in range(4)]
    assert vel[4:7] == [f, f + 24, f]  # sf raises one chord only
    assert vel[7] == p and vel[8] == p - HAIRPIN_STEP  # a diminuendo with no mark after it: one step down
    staccato = main[4]
    assert staccato.end_s - staccato.start_s == pytest.approx(beat / 2)
    grace = next(n for n in perf.notes if n.pitch == 74)
    assert grace.start_s == pytest.approx(12 * beat - GRACE_SECONDS) and grace.end_s == pytest.approx(12 * beat)
    # --bpm replaces the score's tempo
    fixed = read_performance(score, bpm=60)
    assert [round(n.start_s, 6) for n in fixed.notes if n.pitch != 74] == [0, 1, 2, 3, 4, 5, 6, 8, 12]


def test_ritardando_slows_and_a_tempo_restores(tmp_path):
    score = write(tmp_path, [
        metronome(60) + note("C4", 1) + note("C4", 1) + words("rit.") + note("C4", 1) + note("C4", 1),
        note("C4", 1) + note("C4", 1) + note("C4", 1) + note("C4", 1),
        words("a tempo") + note("C4", 1) + note("C4", 1),
    ])  # fmt: skip
    starts = np.array([n.start_s for n in read_performance(score).notes])
    gaps = np.diff(starts)
    assert gaps[0] == pytest.approx(1.0)
    assert np.all(np.diff(gaps[1:8]) > 0)  # each beat of the ritardando longer than the one before
    assert gaps[8] == pytest.approx(1.0)  # a tempo
    # a rit. where the score also gives a tempo (<sound tempo>, as notation programs write their
    # own reading of it) is that tempo, not slowed further
    score = write(tmp_path, [metronome(60) + note("C4", 1) + note("C4", 1) + words("rit.") + metronome(40) + note("C4", 1) + note("C4", 1),
                             note("C4", 1) + note("C4", 1)], name="marked.musicxml")  # fmt: skip
    gaps = np.diff([n.start_s for n in read_performance(score).notes])
    np.testing.assert_allclose(gaps, [1.0, 1.0, 1.5, 1.5, 1.5])


def test_compressed_musicxml_and_other_suffixes_go_through_the_same_reader(tmp_path):
    import zipfile

    text = musicxml([metronome(60) + dynamics("mf") + note("C4", 4)])
    mxl = tmp_path / "s.mxl"
    with zipfile.ZipFile(mxl, "w") as z:
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container><rootfiles><rootfile full-path="s.musicxml"/></rootfiles></container>')
        z.writestr("s.musicxml", text)
    xml = tmp_path / "s.xml"
    xml.write_text(text)
    for path in (mxl, xml):
        (n,) = read_performance(path).notes
        assert (n.pitch, n.start_s, n.end_s, n.velocity) == (60, 0.0, 4.0, DYNAMICS["mf"])
    # bytes with a score's name take the same path
    (n,) = read_performance(xml.read_bytes(), name="upload.musicxml").notes
    assert n.end_s == 4.0


def test_unreadable_score_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.musicxml"
    bad.write_text("<score-partwise><part id='P1'><measure>not music")
    with pytest.raises(ScoreError) as err:
        read_score(bad)
    assert str(err.value).startswith(str(bad)) and "\n" not in str(err.value)
    empty = write(tmp_path, ["<note><rest/><duration>4</duration><voice>1</voice><type>whole</type></note>"], name="rests.musicxml")
    with pytest.raises(ScoreError, match="no notes"):
        read_score(empty)
    proc = subprocess.run(
        [sys.executable, "-m", "pianosynth", "synthesize", str(bad), "-o", str(tmp_path / "x.wav")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: not a score partitura can read")
    assert not (tmp_path / "x.wav").exists()


def test_the_api_renders_a_score_at_the_bpm_asked(tmp_path):
    import pianosynth
    from pianosynth.features import n_frames_for

    score = write(tmp_path, [metronome(120) + dynamics("f") + note("C4", 2) + note("G4", 2)])
    synth = pianosynth.load(threads=1)
    fc = synth.config.features
    for bpm, seconds in ((None, 2.0), (60, 4.0)):
        perf = read_performance(score, bpm=bpm)
        assert perf.end_s == pytest.approx(seconds)
        audio, sr = synth.render(score, bpm=bpm, loudness=None)
        assert audio.shape == (fc.channels, n_frames_for(perf, fc) * fc.hop_samples) and np.abs(audio).max() > 1e-3


def test_folders_yield_scores_but_a_plain_xml_only_when_named(tmp_path):
    from pianosynth.batch import plan

    write(tmp_path, [note("C4", 4)], name="a.musicxml")
    write(tmp_path, [note("C4", 4)], name="b.xml")
    assert [j.source.name for j in plan([tmp_path], None, ".wav")] == ["a.musicxml"]
    assert [j.output.name for j in plan([tmp_path / "b.xml"], None, ".wav")] == ["b.wav"]


def test_humdrum_kern_and_mei_take_the_same_path(tmp_path):
    import partitura

    krn = tmp_path / "s.krn"
    krn.write_text("**kern\n*M4/4\n*MM60\n=1\n4c\n4e\n2g\n==\n*-\n")  # tempo 60: a quarter is 1 s
    assert [(n.pitch, n.start_s, n.end_s) for n in read_performance(krn).notes] == [(60, 0.0, 1.0), (64, 1.0, 2.0), (67, 2.0, 4.0)]
    mei = tmp_path / "s.mei"
    partitura.save_mei(partitura.load_score(str(write(tmp_path, [note("C4", 2) + note("E4", 2)]))), str(mei))
    assert [(n.pitch, n.start_s, n.end_s) for n in read_performance(mei, bpm=60).notes] == [(60, 0.0, 2.0), (64, 2.0, 4.0)]
