"""Takes docs/page.png: the page in Debian's Chromium after rendering a piece with a piano and a
string part (routed, with the warning shown), as stereo FLAC at 44.1 kHz.

    python scripts/page-screenshot.py [--out docs/page.png]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import mido
import uvicorn
from playwright.sync_api import sync_playwright

from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi
from pianosynth.serve import create_app


def piano_and_strings(path: Path) -> Path:
    """The generated piece on the piano (channel 0) with its chords held by strings (program 48)."""
    write_midi(generate_piece(seed=1, bars=4), path)
    mid = mido.MidiFile(path)
    beat = mid.ticks_per_beat
    strings = [mido.Message("program_change", program=48, channel=1, time=0)]
    for pitch in (48, 53, 55, 48):  # one chord root a bar
        strings += [mido.Message("note_on", note=pitch, velocity=60, channel=1, time=0),
                    mido.Message("note_off", note=pitch, velocity=0, channel=1, time=4 * beat)]  # fmt: skip
    mid.type = 1
    mid.tracks.append(mido.MidiTrack(strings))
    mid.save(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/page.png")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(threads=2, port=port), host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        midi = piano_and_strings(Path(tmp) / "piano-and-strings.mid")
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 860, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("document.getElementById('model').options.length > 1")
        page.set_input_files("#file", str(midi))
        page.select_option("#format", "flac")
        page.select_option("#rate", "44100")
        page.select_option("#channels", "2")
        page.click("#render")
        page.wait_for_function("document.getElementById('status').textContent.startsWith('done')", timeout=120000)
        page.wait_for_function("document.getElementById('spectrogram').naturalWidth > 0", timeout=30000)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    server.should_exit = True
    print(args.out)


if __name__ == "__main__":
    main()
