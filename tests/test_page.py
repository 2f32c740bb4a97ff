"""The page does what the CLI does: routing with its warnings, scores in the picker, model and
output choices, progress, a spectrogram and the download; through the job API and in Chromium."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import mido
import pytest
import soundfile as sf
from conftest import CHROMIUM, free_port, note, tempo, write_events

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from starlette.testclient import TestClient  # noqa: E402

from pianosynth.examples import generate_piece  # noqa: E402
from pianosynth.midi import write_midi  # noqa: E402
from pianosynth.serve import create_app  # noqa: E402

BASE_URL = "http://127.0.0.1:8000"
ROOT = Path(__file__).resolve().parents[1]
STRINGS_WARNING = "no shipped model plays program(s) 48 (String Ensemble 1); rendered them as piano"


def two_programs(path: Path) -> Path:
    """A piano (program 0) and a string ensemble (48) together, and a drum note on channel 10."""
    events = tempo(0, 120)
    events += [(1, 0, mido.Message("program_change", program=0, channel=0))]
    events += [(1, 0, mido.Message("program_change", program=48, channel=1))]
    events += note(1, 0, 960, 60, 100, channel=0) + note(1, 480, 1440, 64, 70, channel=0)
    events += note(1, 240, 1900, 55, 80, channel=1) + note(1, 960, 1900, 67, 60, channel=1)
    events += note(1, 0, 120, 36, 100, channel=9)
    return write_events(path, events)


def wait(client, job_id: str, seconds: float = 120) -> dict:
    deadline = time.time() + seconds
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {seconds} s")


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(max_upload_bytes=50_000, max_seconds=60.0, threads=1), base_url=BASE_URL) as c:
        yield c


def test_a_two_program_file_is_routed_with_its_warnings_in_the_chosen_format(client, tmp_path):
    midi = two_programs(tmp_path / "duo.mid")
    info = client.get("/api/models").json()
    assert info["choices"][0]["value"] == "" and "program" in info["choices"][0]["label"]
    assert {".musicxml", ".mxl", ".mei", ".krn", ".mid"} <= set(info["inputs"])
    assert [c["value"] for c in info["choices"][1:]] == info["models"]
    assert any("Harpsichord" in c["label"] for c in info["choices"])
    form = {"format": "flac", "sample_rate": "22050", "channels": "2", "loudness": "-20"}
    r = client.post("/api/jobs", data=form, files={"midi": ("duo.mid", midi.read_bytes(), "audio/midi")})
    assert r.status_code == 202, r.text
    job = wait(client, r.json()["id"])
    assert job["state"] == "done" and job["progress"] == 1.0, job
    assert any(STRINGS_WARNING in w for w in job["warnings"]), job["warnings"]
    assert any("drum" in w for w in job["warnings"]), job["warnings"]
    assert (job["format"], job["sample_rate"], job["channels"], job["spectrogram"]) == ("flac", 22050, 2, True)
    audio = client.get(f"/api/jobs/{job['id']}/audio")
    assert audio.headers["content-type"] == "audio/flac"
    assert "duo.flac" in audio.headers["content-disposition"]
    y, sr = sf.read(io.BytesIO(audio.content))
    assert sr == 22050 and y.shape[1] == 2 and abs(len(y) / sr - job["seconds"]) < 0.01
    png = client.get(f"/api/jobs/{job['id']}/spectrogram")
    assert png.headers["content-type"] == "image/png" and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    # the same file through the CLI's router warns the same
    import pianosynth

    routed = pianosynth.load(threads=1).render_result(midi)
    assert sorted(w.split(": ", 1)[1] for w in routed.warnings) == sorted(w.split(": ", 1)[1] for w in job["warnings"])
    # a named model plays every note: no routing warning
    r = client.post("/api/jobs", data={"model": "default"}, files={"midi": ("duo.mid", midi.read_bytes(), "audio/midi")})
    named = wait(client, r.json()["id"])
    assert named["state"] == "done" and not any(STRINGS_WARNING in w for w in named["warnings"])


def test_a_score_renders_and_bad_options_are_one_line(client, tmp_path):
    score = (
        '<?xml version="1.0" encoding="UTF-8"?><score-partwise version="3.1"><part-list><score-part id="P1">'
        "<part-name>Piano</part-name></score-part></part-list><part id=\"P1\"><measure number=\"1\"><attributes>"
        "<divisions>1</divisions><time><beats>4</beats><beat-type>4</beat-type></time></attributes>"
        + "".join(f"<note><pitch><step>{s}</step><octave>4</octave></pitch><duration>1</duration><type>quarter</type></note>" for s in "CEGC")
        + "</measure></part></score-partwise>"
    )  # fmt: skip
    r = client.post("/api/jobs", files={"midi": ("tune.musicxml", score.encode(), "application/xml")})
    job = wait(client, r.json()["id"])
    assert job["state"] == "done", job
    assert client.get(f"/api/jobs/{job['id']}/audio").headers["content-disposition"].endswith("tune.wav")
    for field, value, says in [
        ("format", "mp3", "format must be one of wav, flac, ogg, got 'mp3'"),
        ("sample_rate", "5", "sample_rate must be an integer from 8000 to 192000 Hz, got '5'"),
        ("channels", "3", "channels must be 1 or 2, got '3'"),
        ("loudness", "loud", "loudness must be a number of LUFS above -70 and at most 0, got 'loud'"),
        ("model", "nope", "unknown model 'nope'"),
    ]:
        bad = client.post("/api/jobs", data={field: value, "example": "0"})
        assert bad.status_code == 400 and bad.json()["error"].startswith(says), bad.text
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404


def test_a_render_can_be_cancelled_from_the_page(client, tmp_path):
    long_piece = tmp_path / "long.mid"
    write_midi(generate_piece(seed=2, bars=16), long_piece)  # some 40 s: within the limit, longer than a cancel takes
    r = client.post("/api/jobs", files={"midi": ("long.mid", long_piece.read_bytes(), "audio/midi")})
    job_id = r.json()["id"]
    assert client.post(f"/api/jobs/{job_id}/cancel").status_code == 200
    job = wait(client, job_id)
    assert job["state"] == "cancelled" and job["error"] == "cancelled"
    assert client.get(f"/api/jobs/{job_id}/audio").status_code == 499


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_the_page_routes_warns_and_draws_in_chromium(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

    midi = two_programs(tmp_path / "duo.mid")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(threads=1, port=port), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                      "--disable-sync", "--no-first-run"],
            )  # fmt: skip
            page = browser.new_page(viewport={"width": 900, "height": 1100})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').options.length > 1")
            accept = page.eval_on_selector("#file", "e => e.accept")
            page.set_input_files("#file", str(midi))
            page.select_option("#format", "flac")
            page.select_option("#rate", "44100")
            page.select_option("#channels", "2")
            page.click("#render")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=90000)
            page.wait_for_function("document.getElementById('spectrogram').complete && document.getElementById('spectrogram').naturalWidth > 0", timeout=30000)
            page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30000)
            status = page.text_content("#status")
            warnings = page.eval_on_selector_all("#warnings li", "items => items.map(i => i.textContent)")
            progress = page.eval_on_selector("#progress", "p => p.value")
            duration = page.eval_on_selector("#player", "a => a.duration")
            link = page.eval_on_selector("#download", "a => [a.hidden, a.download]")
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert ".musicxml" in accept and ".mei" in accept and ".krn" in accept
    assert status == "done: duo.flac" and link == [False, "duo.flac"]
    assert any(STRINGS_WARNING in w for w in warnings) and any("drum" in w for w in warnings), warnings
    assert progress == 1 and duration > 1.0
    assert (tmp_path / "page.png").stat().st_size > 10_000
