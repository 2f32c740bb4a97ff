"""Issue 20: bounded work for every input and entry point, the page as a local service, no user
file touched. One test per cause, each building its input in the test."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import free_port

from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi
from test_reliability import tiny_checkpoint

BASE_URL = "http://127.0.0.1:8000"


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", "model.hidden=64")


@pytest.fixture(scope="module")
def tune(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("tune") / "tune.mid"
    write_midi(generate_piece(seed=3, bars=2), path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def client(tiny_model):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from pianosynth.serve import create_app

    with TestClient(create_app(models={"tiny": tiny_model}, max_upload_bytes=20_000, threads=1), base_url=BASE_URL) as c:
        yield c


def test_a_cross_site_post_is_refused(client, tune):
    files = {"midi": ("tune.mid", tune, "audio/midi")}
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
                    {"Host": "evil.example"}, {"Host": "rebound.example:8000"}, {"Sec-Fetch-Site": "cross-site"}):  # fmt: skip
        r = client.post("/api/render", files=files, headers=headers)
        assert r.status_code == 403 and r.json()["error"].startswith("refused"), (headers, r.text)
    assert client.get("/api/models", headers={"Host": "evil.example"}).status_code == 403  # DNS rebinding reads nothing
    same = client.post("/api/render", files=files, headers={"Origin": BASE_URL, "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200, same.text
    assert client.post("/api/render", files=files, headers={"Host": "localhost:8000"}).status_code == 200


def test_a_file_name_outside_latin_1_downloads(client, tune):
    from urllib.parse import unquote

    r = client.post("/api/render", files={"midi": ("Шопен — ноктюрн 夜.mid", tune, "audio/midi")})
    assert r.status_code == 200, r.text
    header = r.headers["content-disposition"]
    header.encode("latin-1")  # what an HTTP header must be
    assert unquote(header.split("filename*=UTF-8''")[1]) == "Шопен — ноктюрн 夜.wav"
    assert 'filename="' in header and header.split('filename="')[1].split('"')[0].endswith(".wav")


def test_every_error_of_the_page_is_one_json_line(client):
    bad = [
        client.post("/api/render", content=b"--x\r\nnot a form", headers={"Content-Type": "multipart/form-data; boundary=x"}),
        client.post("/api/render", content=b"\xff" * 100, headers={"Content-Type": "multipart/form-data"}),
        client.post("/api/render", files={"midi": ("t.mid", b"MThd\0\0\0\6\0\0\0\1\x01\xe0MTrk\0\0\0\4\0\xff\x2f\0", "audio/midi")}),
        client.post("/api/render", data={"example": "-1"}),
    ]
    for r in bad:
        assert 400 <= r.status_code < 500 and "\n" not in r.json()["error"], r.text


def _serve(app, port: int):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    return server, thread


def test_a_chunked_upload_over_the_limit_stops_early_without_filling_the_disk(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("uvicorn")
    import tempfile

    from pianosynth.serve import create_app

    spool = tmp_path / "spool"  # where a spooled upload would land
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    port = free_port()
    server, thread = _serve(create_app(models={"tiny": tiny_model}, max_upload_bytes=20_000, port=port), port)
    sent, answer = 0, b""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = b'--b\r\nContent-Disposition: form-data; name="midi"; filename="x.mid"\r\n\r\n'
        sock.sendall(
            b"POST /api/render HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (port, len(head), head)
        )
        chunk = b"%x\r\n%s\r\n" % (65536, b"\0" * 65536)
        try:
            for _ in range(16384):  # 1 GB if nobody stops it
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the server answered and closed while we were still sending: the point
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, socket.timeout):
            pass  # the answer may be lost to the reset; the bytes sent are what matters
        sock.close()
        assert sent < 64 * 2**20, f"the server read {sent / 2**20:.0f} MiB of a 20 kB limit"
        assert answer == b"" or (answer.startswith(b"HTTP/1.1 413") and b"over the limit" in answer), answer
        assert sum(p.stat().st_size for p in spool.rglob("*") if p.is_file()) == 0
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_client_that_disconnects_stops_its_render(tiny_model, tmp_path):
    pytest.importorskip("uvicorn")
    from pianosynth.serve import create_app

    long_piece = tmp_path / "long.mid"
    write_midi(generate_piece(seed=0, bars=120), long_piece)  # ~5 min of music: many chunks
    port = free_port()
    app = create_app(models={"tiny": tiny_model}, max_upload_bytes=2**20, threads=1, port=port)
    server, thread = _serve(app, port)
    try:
        data = long_piece.read_bytes()
        form = (b'--b\r\nContent-Disposition: form-data; name="midi"; filename="long.mid"\r\n\r\n' + data + b"\r\n--b--\r\n")
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /api/render HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, len(form)) + form
        )
        deadline = time.time() + 120
        while time.time() < deadline and not any(j.done_s > 0 for j in app.state.jobs.running()):
            time.sleep(0.02)
        (job,) = app.state.jobs.running()
        assert job.done_s > 0, "the render did not start"
        sock.close()  # the visitor closes the tab
        assert job.wait(60), "the render went on after its client had gone"
        assert job.state == "cancelled" and job.done_s < job.total_s
        assert app.state.jobs.running() == []  # the next visitor is not told "busy"
    finally:
        server.should_exit = True
        thread.join(10)


# ---------------------------------------------------------------------------------------------
# No user file touched
# ---------------------------------------------------------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return dead.pid


def test_a_users_file_that_looks_like_an_old_temporary_name_survives(tmp_path, tiny_model):
    from pianosynth.synthesize import synthesize_file

    song = tmp_path / "song.mid"
    write_midi(generate_piece(seed=1, bars=1), song)
    pid = _dead_pid()
    users = [tmp_path / ".thesis.tmp1999.docx", tmp_path / f".song.wav.tmp{pid}.wav", tmp_path / f".notes.raw{pid}",
             tmp_path / f".x.{pid}.pianosynth-tmp.txt"]  # fmt: skip
    for i, path in enumerate(users):
        path.write_bytes(b"the user's own %d" % i)
    synthesize_file(song, tmp_path / "song.wav", model_path=tiny_model, threads=1)
    for i, path in enumerate(users):
        assert path.read_bytes() == b"the user's own %d" % i
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([p.name for p in users] + ["song.mid", "song.wav"])


def test_temporary_names_are_unpredictable_and_a_planted_symlink_is_never_followed(tmp_path):
    import os

    from pianosynth.fileio import TEMP_MARKER, atomic_write, remove_stale_temps, temp_path

    names = {temp_path(tmp_path / "out.wav", ".wav").name for _ in range(20)}
    assert len(names) == 20 and all(TEMP_MARKER in n and n.endswith(".wav") for n in names)
    for n in names:
        (tmp_path / n).unlink()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    # plant symlinks under every name the old scheme would use, and under our marker with a dead pid
    pid = _dead_pid()
    for planted in (f".out.txt.tmp{os.getpid()}", f".out.txt.{pid}.{TEMP_MARKER}abcdef12"):
        (tmp_path / planted).symlink_to(victim)
    atomic_write(tmp_path / "out.txt", lambda p: p.write_text("new"))
    assert (tmp_path / "out.txt").read_text() == "new" and victim.read_text() == "precious"
    assert remove_stale_temps(tmp_path) == []  # a symlink is never ours to remove
    assert victim.read_text() == "precious"
    # a failing writer leaves nothing of ours behind, and nothing else is removed
    with pytest.raises(RuntimeError):
        atomic_write(tmp_path / "bad.txt", lambda p: (_ for _ in ()).throw(RuntimeError("boom")))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["victim.txt", "out.txt", f".out.txt.tmp{os.getpid()}", f".out.txt.{pid}.{TEMP_MARKER}abcdef12"]
    )


def test_a_finished_file_has_the_mode_a_new_file_gets_and_a_replaced_one_keeps_its_own(tmp_path):
    import os
    import stat

    from pianosynth.fileio import atomic_write

    def mode(path):
        return stat.S_IMODE(os.stat(path).st_mode)

    previous = os.umask(0o022)
    try:
        atomic_write(tmp_path / "song.wav", lambda p: p.write_bytes(b"x"))
        assert mode(tmp_path / "song.wav") == 0o644  # readable by the user's other programs, as open() makes it
        os.umask(0o027)
        atomic_write(tmp_path / "group.wav", lambda p: p.write_bytes(b"x"))
        assert mode(tmp_path / "group.wav") == 0o640
        os.chmod(tmp_path / "song.wav", 0o600)  # the user's own choice for an existing file
        atomic_write(tmp_path / "song.wav", lambda p: p.write_bytes(b"y"))
        assert mode(tmp_path / "song.wav") == 0o600 and (tmp_path / "song.wav").read_bytes() == b"y"
    finally:
        os.umask(previous)


# ---------------------------------------------------------------------------------------------
# The budget: every input bounded before the work grows
# ---------------------------------------------------------------------------------------------


def smf(track: bytes, division: int = 480) -> bytes:
    return b"MThd\0\0\0\6\0\0\0\1" + division.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + track


def test_a_midi_file_with_more_notes_than_the_budget_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    import pretty_midi

    from pianosynth.midi import Limits, MidiError, read_midi

    n = 250_000  # 1 tick apart with running status: 0.75 MB, 10 minutes at 480 ticks per beat
    ons = b"\x00\x90\x3c\x40" + bytes([1, 60, 64]) * (n - 1)
    path = tmp_path / "dense.mid"
    path.write_bytes(smf(ons + bytes([1, 60, 0]) * n + b"\x00\xff\x2f\x00"))

    def never(*a, **k):
        raise AssertionError("parsed a file over the budget")

    monkeypatch.setattr(pretty_midi, "PrettyMIDI", never)
    with pytest.raises(MidiError, match=r"note-ons: 250,000, over the limit of 200,000 \(raise it with --limit notes=N\)"):
        read_midi(path)
    pedals = b"\x00\xb0\x40\x7f" + bytes([1, 64, 0, 1, 64, 127]) * 5000  # a pedal storm: 10,001 events, no notes
    path.write_bytes(smf(pedals + b"\x00\x90\x3c\x40\x10\x3c\x00\x00\xff\x2f\x00"))
    with pytest.raises(MidiError, match=r"more than 4,000 MIDI events \(4 per note of --limit notes; raise it with --limit notes=N\)"):
        read_midi(path, limits=Limits(notes=1000))


def test_the_midi_event_count_is_mido_s():
    import io

    import mido

    from pianosynth.midi import count_midi_events

    data = smf(b"\x00\x90\x3c\x40\x10\x3e\x40\x00\xff\x51\x03\x07\xa1\x20\x05\xb0\x40\x7f\x00\xc0\x05\x10\x90\x3c\x00\x00\xf0\x02\x01\xf7\x00\xff\x2f\x00")
    mid = mido.MidiFile(file=io.BytesIO(data))
    msgs = list(mid.tracks[0])
    assert count_midi_events(data) == (sum(m.type == "note_on" and m.velocity > 0 for m in msgs), len(msgs)) == (2, 8)


def test_notes_sounding_at_once_are_bounded():
    from pianosynth.midi import Limits, MidiError, Note, Performance, check_limits

    notes = [Note(21 + i % 88, i * 0.002, 5.0, 64) for i in range(1100)]  # 500 onsets a second, all held
    with pytest.raises(MidiError, match=r"<midi>: notes sounding at once at 2.2 s: 1,100, over the limit of 1,024 \(raise it with --limit polyphony=N\)"):
        check_limits(Performance(notes, {}, 5.0))
    check_limits(Performance(notes, {}, 5.0), limits=Limits(polyphony=1100))


def _zip(path: Path, members: dict[str, object]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, content in members.items():
            with zf.open(name, "w") as f:
                for chunk in content if not isinstance(content, bytes) else [content]:
                    f.write(chunk)
    return path


CONTAINER = b'<?xml version="1.0"?><container><rootfiles><rootfile full-path="score.xml"/></rootfiles></container>'


def test_an_mxl_zip_bomb_stops_at_the_unpacked_limit(tmp_path, monkeypatch):
    from pianosynth import scores
    from pianosynth.scores import ScoreError, read_score

    chunk = b"<a/>" * (1 << 18)  # 1 MiB of elements
    bomb = _zip(tmp_path / "bomb.mxl", {"META-INF/container.xml": CONTAINER, "score.xml": (chunk for _ in range(100))})
    assert bomb.stat().st_size < 200_000  # ~100 kB that unpack to 100 MiB
    monkeypatch.setattr(scores, "_read_in_child", lambda *a, **k: (_ for _ in ()).throw(AssertionError("partitura ran")))
    with pytest.raises(ScoreError, match=r"score.xml unpacks to more than 64 MiB, over the limit of 64 MiB \(raise it with --limit score_mib=N\)"):
        read_score(bomb)


def test_xml_elements_and_kern_spines_are_counted_before_partitura_reads_them(tmp_path):
    from pianosynth.midi import Limits
    from pianosynth.scores import ScoreError, read_score

    xml = tmp_path / "many.musicxml"
    xml.write_bytes(b"<score-partwise>" + b"<a/>" * 5000 + b"</score-partwise>")
    with pytest.raises(ScoreError, match=r"XML elements: at least 5,001, over the limit of 1,000 \(raise it with --limit xml_elements=N\)"):
        read_score(xml, limits=Limits(xml_elements=1000))
    mxl = _zip(tmp_path / "many.mxl", {"META-INF/container.xml": CONTAINER, "score.xml": xml.read_bytes()})
    with pytest.raises(ScoreError, match="xml_elements"):
        read_score(mxl, limits=Limits(xml_elements=1000))
    kern = tmp_path / "wide.krn"  # 4,000 spines in 52 kB
    kern.write_text("\t".join(["**kern"] * 4000) + "\n" + "\t".join(["4c"] * 4000) + "\n" + "\t".join(["*-"] * 4000) + "\n")
    with pytest.raises(ScoreError, match=r"spines: 4,000, over the limit of 64 \(raise it with --limit kern_spines=N\)"):
        read_score(kern)


def musicxml(tempo: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<score-partwise version="3.1"><part-list><score-part id="P1"><part-name>P</part-name></score-part></part-list>
<part id="P1"><measure number="1"><attributes><divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time></attributes>
<direction placement="above"><direction-type><metronome><beat-unit>quarter</beat-unit><per-minute>{tempo}</per-minute></metronome></direction-type><sound tempo="{tempo}"/></direction>
<note><pitch><step>C</step><octave>4</octave></pitch><duration>4</duration><type>whole</type></note></measure></part></score-partwise>
""".encode()


@pytest.mark.parametrize("tempo", ["0", "1000000000", "inf"])
def test_a_score_tempo_of_0_or_1e9_or_inf_is_refused(tmp_path, tempo):
    from pianosynth.scores import ScoreError, read_score

    path = tmp_path / "t.musicxml"
    path.write_bytes(musicxml(tempo))
    with pytest.raises(ScoreError, match=r"quarter notes per minute .*outside 1..1000 \(give the piece a tempo with --bpm\)"):
        read_score(path)
    assert read_score(path, bpm=90).notes[0].end_s == pytest.approx(4 * 60 / 90)
    path.write_bytes(musicxml("60"))
    assert read_score(path).notes[0].end_s == pytest.approx(4.0)


def test_a_score_read_past_its_time_limit_is_stopped_and_its_child_process_is_gone(tmp_path, monkeypatch):
    """partitura reads a score in a child process (scores._read_in_child); one still running at
    limits.score_seconds (here a child made to sleep) is killed and reaped: one line naming the
    limit and how to raise it."""
    import os
    import signal
    import subprocess

    from pianosynth import scores
    from pianosynth.midi import Limits

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self)

    monkeypatch.setattr(subprocess, "Popen", Recorded)
    monkeypatch.setattr(scores, "_CHILD_CODE", "import time; time.sleep(600)")
    path = tmp_path / "t.musicxml"
    path.write_bytes(musicxml("60"))
    t = time.monotonic()
    with pytest.raises(scores.ScoreError) as caught:
        scores.read_score(path, limits=Limits(score_seconds=1))
    assert time.monotonic() - t < 30
    assert str(caught.value) == f"{path}: partitura was still reading it after 1 s, the limit; stopped (raise it with --limit score_seconds=N)"
    (child,) = started
    assert child.returncode == -signal.SIGKILL  # killed, and waited for
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)


def test_a_score_read_in_its_child_process_is_the_reading_in_this_one_and_memory_is_bounded(tmp_path):
    """The child's answer (JSON) is partitura's reading value for value; past
    limits.score_memory_mib it is one line naming that limit."""
    from mutator import score_seeds

    from pianosynth.midi import Limits
    from pianosynth.scores import ScoreError, _load_score, read_score

    path = tmp_path / "s.musicxml"  # repeat, tie, chord, grace, dynamics, tempo, pedal
    path.write_bytes(score_seeds()[0][1])
    here, child = _load_score(path, str(path), None), read_score(path)
    assert [vars(n) for n in child.notes] == [vars(n) for n in here.notes] and len(here.notes) == 11
    assert (child.end_s, child.warnings) == (here.end_s, here.warnings)
    for key in here.pedals:
        np.testing.assert_array_equal(child.pedals[key].times_s, here.pedals[key].times_s)
        np.testing.assert_array_equal(child.pedals[key].values, here.pedals[key].values)
    assert len(here.pedals["sustain"].times_s) >= 2
    with pytest.raises(ScoreError, match=r"memory limit of 50 MiB \(raise it with --limit score_memory_mib=N\)"):
        read_score(path, limits=Limits(score_memory_mib=50))


def test_a_dense_chunk_is_refused_by_its_memory_before_the_model_runs(monkeypatch, tmp_path):
    import pianosynth
    from pianosynth.midi import Limits, MidiError, Note, Performance, PedalCurve, write_midi
    from pianosynth.synthesize import Synth

    synth = pianosynth.load("default", threads=1)  # voices or grand decoder: memory grows with the voices in a block
    monkeypatch.setattr(Synth, "blocks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("the model ran")))
    notes = [Note(21 + i % 88, i / 900, i / 900 + 0.2, 80) for i in range(27_000)]  # 30 s at 900 notes a second
    pm_path = tmp_path / "dense.mid"
    write_midi(Performance(notes, {k: PedalCurve(np.zeros(0), np.zeros(0)) for k in ("sustain", "sostenuto", "soft")}, 30.2), pm_path)
    with pytest.raises(MidiError, match=r"densest chunk needs about [\d,]+ MiB, over the limit of 768 MiB \(raise it with --limit chunk_mib=N\)"):
        synth.render(pm_path)
    with pytest.raises(AssertionError, match="the model ran"):  # raised, it goes on to the model
        synth.render(pm_path, limits=Limits(chunk_mib=10**6))



# ---------------------------------------------------------------------------------------------
# The API raises only what it documents
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_synth(tiny_model):
    import pianosynth

    return pianosynth.load(tiny_model, threads=1)


def _pm(*notes, program=0):
    import pretty_midi

    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=program)
    for start, end, pitch, velocity in notes:
        inst.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=start, end=end))
    pm.instruments.append(inst)
    return pm


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: None, "midi must be"),
        (lambda: 12, "midi must be"),
        (lambda: [1, 2], "midi must be"),
        (lambda: "no\0such.mid", "no such file"),
        (lambda: _pm((0.0, float("nan"), 60, 80)), "a note's end must be finite"),
        (lambda: _pm((0.0, float("inf"), 60, 80)), "a note's end must be finite"),
        (lambda: _pm((-1.0, 1.0, 60, 80)), "a note's start must be finite and not negative"),
        (lambda: _pm((0.0, 1.0, 60, 1000)), "a note's velocity must be an integer in 0..127, got 1000"),
        (lambda: _pm((0.0, 1.0, 60.5, 80)), "a note's pitch"),
        (lambda: _pm((0.0, 1.0, "C4", 80)), "a note's pitch"),
        (lambda: _pm((0.0, 1.0, 60, 80), program=500), "a program"),
        (lambda: _pm((0.0, 1e6, 60, 80)), "over the limit of 3600 s"),
        (lambda: _pm(*[(0.0, 1.0, 21 + i % 88, 80) for i in range(1500)]), "over the limit of 1000"),
    ],
)
def test_bad_api_input_of_any_type_and_value_is_a_midi_error(tiny_synth, make, words):
    from pianosynth.midi import MidiError

    with pytest.raises(MidiError) as e:
        tiny_synth.render(make())
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_mido_file_with_bad_values_is_a_midi_error(tiny_synth):
    import mido

    from pianosynth.midi import MidiError

    mid = mido.MidiFile()
    track = mido.MidiTrack()
    track.append(mido.Message("note_on", note=60, velocity=64, time=0))
    track[0].time = -5  # what mido cannot write
    mid.tracks.append(track)
    with pytest.raises(MidiError, match="<mido.MidiFile>"):
        tiny_synth.render(mid)


@pytest.mark.parametrize(
    "option",
    [{"channels": True}, {"channels": 2.0}, {"channels": "2"}, {"sample_rate": True}, {"loudness": True},
     {"chunk_seconds": True}, {"context_seconds": float("nan")}, {"peak": 2.0}, {"limits": {"notes": 5}},
     {"max_seconds": float("nan")}, {"max_seconds": "x"}, {"bpm": True}, {"bpm": 0}],
)  # fmt: skip
def test_bad_api_options_are_output_errors_even_booleans(tiny_synth, tune, option):
    from pianosynth.audio import OutputError

    with pytest.raises(OutputError):
        tiny_synth.render(tune, **option)


# ---------------------------------------------------------------------------------------------
# The command line: the rest of issue 20's item 8
# ---------------------------------------------------------------------------------------------

SCRIPT = """
import signal, sys
# a shell's background job (`make test &`) starts with SIGINT ignored, and Python then keeps it
# ignored: take Ctrl-C as a terminal's child would (set here, not in a preexec_fn: Python run
# between fork and exec can deadlock in a process with threads)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pianosynth.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _cli(capsys, *argv):
    from pianosynth import cli

    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_score_with_tempo_0_is_one_line_on_the_cli_json_on_the_page_and_a_batch_goes_on(tmp_path, tiny_model, client, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.musicxml").write_bytes(musicxml("0"))
    write_midi(generate_piece(seed=1, bars=1), folder / "b.mid")
    code, out, err = _cli(capsys, "synthesize", str(folder / "a.musicxml"), "--model", str(tiny_model), "--threads", "1")
    assert code == 1 and "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ")
    assert "a tempo of 0 quarter notes per minute" in err and len(err.strip().splitlines()) == 1
    code, out, err = _cli(capsys, "synthesize", str(folder), "--out-dir", str(tmp_path / "out"), "--model", str(tiny_model), "--threads", "1")
    assert code == 1 and "Traceback" not in err
    assert (tmp_path / "out" / "b.wav").is_file() and not (tmp_path / "out" / "a.wav").exists()
    assert "1 written, 0 skipped (existing), 1 failed" in err and "failed: " in err and "a tempo of 0" in err
    r = client.post("/api/render", files={"midi": ("a.musicxml", musicxml("0"), "application/xml")})
    assert r.status_code == 400 and "a tempo of 0 quarter notes per minute" in r.json()["error"]


def test_pianosynth_models_on_a_pt_without_a_config_is_one_line(tmp_path, capsys):
    import torch

    folder = tmp_path / "models"
    folder.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}, "step": 0}, folder / "x.pt")
    code, out, err = _cli(capsys, "models", "--models-dir", str(folder))
    assert code == 1 and "Traceback" not in err and err.strip() == f"error: {folder / 'x.pt'}: not a pianosynth checkpoint (format 1)"


def test_a_broken_pipe_on_stdout_exits_non_zero_without_a_success_line(tmp_path, tiny_model, tune):
    import os
    import subprocess
    import sys

    midi = tmp_path / "tune.mid"
    midi.write_bytes(tune)
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "synthesize", str(midi), "-o", "-", "--model", str(tiny_model), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    head = proc.stdout.read(100)  # `| head -c 100`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(120)
    assert head.startswith(b"RIFF")
    assert proc.returncode == 1, err
    assert "broken pipe" in err and "real time" not in err and "Traceback" not in err


def test_an_interrupted_batch_says_truthfully_what_was_written(tmp_path, tiny_model):
    import os
    import signal
    import subprocess
    import sys

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    write_midi(generate_piece(seed=1, bars=1), folder / "a.mid")
    write_midi(generate_piece(seed=2, bars=1), folder / "b.mid")
    write_midi(generate_piece(seed=0, bars=400), folder / "c.mid")  # long: interrupted while it renders
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "synthesize", str(folder), "--out-dir", str(out), "--model", str(tiny_model),
         "--threads", "1", "--chunk-seconds", "5"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    deadline = time.time() + 180
    while time.time() < deadline and not ((out / "b.wav").exists() and list(scratch.rglob("*.wav"))):
        time.sleep(0.02)
    assert (out / "b.wav").exists(), "the batch did not get to its third file"
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted: 2 output(s) written before it" in err and "no output was written" not in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.wav", "b.wav"]
    assert stdout.split() == [str(out / "a.wav"), str(out / "b.wav")]


# ---------------------------------------------------------------------------------------------
# Recordings: the decoded length, not the header's
# ---------------------------------------------------------------------------------------------


def test_a_truncated_mp3_whose_header_claims_the_full_length_is_skipped_with_its_reason(tmp_path):
    import soundfile as sf

    from pianosynth.dataset import Cache, find_recordings, prepare
    from pianosynth.recordings import RecordingError, read_recording
    from test_recordings import RECORDED, make_pair

    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    folder = tmp_path / "in"
    midi, wav = make_pair(folder, "cut", 1, 0.1)
    make_pair(folder, "good", 2, 0.1)
    audio, sr = sf.read(wav, dtype="float32")
    wav.unlink()
    full = folder / "cut.mp3"
    sf.write(full, audio, sr, format="MP3")
    data = full.read_bytes()
    full.write_bytes(data[: len(data) // 3])  # cut to a third; the header still claims it all
    with sf.SoundFile(full) as f:
        assert f.frames == len(audio)  # what the header claims
    with pytest.raises(RecordingError, match=r"truncated or damaged: the header claims 1\d\.\d s but only [3-5]\.\d s decode"):
        read_recording(full, 16000)
    cache = Cache(prepare(find_recordings(folder), tmp_path / "cache", RECORDED))
    assert [p["file"] for p in cache.pieces] == ["good.mid"]
    assert "truncated or damaged" in {s["file"]: s["reason"] for s in cache.skipped}["cut.mid"]


def test_a_long_kern_score_is_bounded_by_its_tokens(tmp_path):
    from pianosynth.midi import Limits
    from pianosynth.scores import ScoreError, read_score

    kern = tmp_path / "long.krn"
    kern.write_text("**kern\t**kern\n" + "4c\t4C\n" * 3000 + "*-\t*-\n")
    with pytest.raises(ScoreError, match=r"\*\*kern tokens \(elements of the score\): 6,004, over the limit of 1,000 \(raise it with --limit xml_elements=N\)"):
        read_score(kern, limits=Limits(xml_elements=1000))


def test_render_to_file_refuses_an_output_that_is_not_a_file_name(tiny_synth, tune, tmp_path):
    from pianosynth.audio import OutputError

    for bad in (None, 12, "", "a\0b.wav"):
        with pytest.raises(OutputError, match="the output must be a file name"):
            tiny_synth.render_to_file(tune, bad)
    assert list(tmp_path.iterdir()) == []
