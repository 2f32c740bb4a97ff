"""The local page: its API through Starlette's test client, and the page in a real Chromium."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import CHROMIUM, free_port

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from starlette.testclient import TestClient  # noqa: E402

from pianosynth import registry  # noqa: E402
from pianosynth.examples import generate_piece  # noqa: E402
from pianosynth.midi import write_midi  # noqa: E402
from pianosynth.serve import create_app  # noqa: E402

BASE_URL = "http://127.0.0.1:8000"  # create_app's default address: requests for another Host are refused


@pytest.fixture(scope="module")
def midi(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "tune.mid"
    write_midi(generate_piece(seed=3, bars=2), path)
    return path


@pytest.fixture(scope="module")
def client():
    with TestClient(create_app(max_upload_bytes=20_000, max_seconds=30.0, threads=1), base_url=BASE_URL) as c:
        yield c


def test_render_an_upload_and_an_example(client, midi):
    listed = client.get("/api/models").json()
    default = registry.shipped()[registry.default_name()]  # the index's default, whichever it is
    label = f"{default.name} ({default.instrument}, default)"
    assert listed["models"][0] == default.name and {"value": default.name, "label": label} in listed["choices"]
    r = client.post("/api/render", data={"model": "default"}, files={"midi": ("tune.mid", midi.read_bytes(), "audio/midi")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "audio/wav" and 'filename="tune.wav"' in r.headers["content-disposition"]
    assert "filename*=UTF-8''tune.wav" in r.headers["content-disposition"]
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == default.sample_rate and len(audio) > sr and np.abs(audio).max() > 0.01
    r = client.post("/api/render", data={"example": "0"})
    assert r.status_code == 200 and 'filename="example0.wav"' in r.headers["content-disposition"]


def test_limits_and_bad_requests_are_one_line_json(client, midi):
    big = client.post("/api/render", files={"midi": ("big.mid", b"\0" * 30_000, "audio/midi")})
    assert big.status_code == 413 and "over the limit" in big.json()["error"]
    long_piece = midi.with_name("long.mid")
    write_midi(generate_piece(seed=0, bars=40), long_piece)  # well over the 30 s limit
    long = client.post("/api/render", files={"midi": ("long.mid", long_piece.read_bytes(), "audio/midi")})
    assert long.status_code == 413 and "over the limit of 30 s" in long.json()["error"]
    bad = client.post("/api/render", files={"midi": ("bad.mid", b"not midi", "audio/midi")})
    assert bad.status_code == 400 and bad.json()["error"].startswith("bad.mid: not a readable MIDI file")
    assert client.post("/api/render", data={"model": "nope", "example": "0"}).status_code == 400
    assert client.post("/api/render", data={}).status_code == 400


def test_one_render_at_a_time(midi):
    from pianosynth.serve import Busy

    app = create_app(threads=1)
    with TestClient(app, base_url=BASE_URL) as c:
        jobs = app.state.jobs
        release = threading.Event()
        holder = jobs.start(lambda job: release.wait(30) and b"", "holder")  # a render that runs until released
        try:
            r = c.post("/api/render", data={"example": "0"})
            assert r.status_code == 429 and "one render at a time" in r.json()["error"]
            with pytest.raises(Busy):
                jobs.start(lambda job: b"", "another")
        finally:
            release.set()
        assert holder.wait(10) and holder.state == "done"
        assert c.post("/api/render", data={"example": "0"}).status_code == 200


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is not installed")
def test_the_page_in_a_real_browser(midi, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    import uvicorn

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
            page = browser.new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("document.getElementById('model').options.length > 0")
            # a dropped file: the same DataTransfer a drag from the desktop delivers
            data = list(midi.read_bytes())
            page.evaluate(
                """data => { const dt = new DataTransfer();
                   dt.items.add(new File([new Uint8Array(data)], 'tune.mid', {type: 'audio/midi'}));
                   document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true})); }""",
                data,
            )
            page.click("#render")
            page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=60000)
            page.wait_for_function("document.getElementById('player').readyState >= 1", timeout=30000)
            duration = page.eval_on_selector("#player", "a => a.duration")
            link = page.eval_on_selector("#download", "a => [a.hidden, a.download, a.href]")
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / "saved.wav"
            download.value.save_as(saved)
            # then a generated example, chosen from the list
            page.select_option("#example", "1")
            page.click("#render")
            page.wait_for_function("document.getElementById('status').textContent === 'done: example1.wav'", timeout=60000)
            page.screenshot(path=str(tmp_path / "page.png"))
            browser.close()
    finally:
        server.should_exit = True
        thread.join(10)
    assert duration > 1.0
    assert link[0] is False and link[1] == "tune.wav" and link[2].startswith("blob:")
    audio, sr = sf.read(saved)
    assert sr == registry.shipped()[registry.default_name()].sample_rate and abs(len(audio) / sr - duration) < 0.01
