"""Issue 20: bounded work for every input and entry point, the page as a local service, no user
file touched. One test per cause, each building its input in the test."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_chunked_upload_over_the_limit_stops_early_without_filling_the_disk(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("uvicorn")
    import tempfile

    from pianosynth.serve import create_app

    spool = tmp_path / "spool"  # where a spooled upload would land
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    port = _free_port()
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
    port = _free_port()
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
