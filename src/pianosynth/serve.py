"""``pianosynth serve``: a local page that renders MIDI with the shipped models. A thin room above
the library: every render goes through ``Synth.render_to_file``, as the CLI's do.

Starlette and uvicorn: a small, well-kept ASGI framework and server (Starlette is what FastAPI is
built on), enough for four routes without FastAPI's validation layer, and uvicorn runs it
in-process, so the tests start a real server on a free port. Renders run in a worker thread
(``run_in_threadpool``), never on the event loop, and one at a time: a second request while one
runs is answered 429. Uploads and rendered durations have limits.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # a long piano performance is well under 200 kB of MIDI
DEFAULT_MAX_SECONDS = 600.0  # rendered audio per request
EXAMPLE_SEEDS = range(4)  # generated pieces offered on the page (examples.generate_piece)


def create_app(
    models: dict[str, Path] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    threads: int | None = None,
) -> Starlette:
    """The page and its API. ``models``: name -> checkpoint (default: the shipped models)."""
    from .synthesize import shipped_models

    models = dict(models) if models is not None else shipped_models()
    loaded: dict = {}
    busy = asyncio.Lock()

    def synth(name: str):
        from .synthesize import load

        if name not in loaded:
            loaded[name] = load(models[name], threads=threads)
        return loaded[name]

    def example_midi(seed: int) -> bytes:
        from .examples import generate_piece
        from .midi import write_midi

        with tempfile.TemporaryDirectory(prefix="pianosynth-serve-") as tmp:
            path = Path(tmp) / "example.mid"
            write_midi(generate_piece(seed=seed, bars=8), path)
            return path.read_bytes()

    def render(name: str, midi: bytes, label: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="pianosynth-serve-") as tmp:
            out = Path(tmp) / "out.wav"
            synth(name).render_to_file(midi, out, name=label, max_seconds=max_seconds)
            return out.read_bytes()

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("{MAX_MB}", f"{max_upload_bytes / 2**20:g}").replace("{MAX_S}", f"{max_seconds:g}"))

    async def list_models(request: Request) -> JSONResponse:
        return JSONResponse({"models": list(models), "examples": list(EXAMPLE_SEEDS)})

    async def render_route(request: Request) -> Response:
        from .audio import OutputError
        from .midi import MidiError
        from .synthesize import SynthesisError

        declared = int(request.headers.get("content-length") or 0)
        if declared > max_upload_bytes + 4096:
            return _error(413, f"upload over the limit of {max_upload_bytes / 2**20:g} MB")
        form = await request.form(max_files=1, max_fields=4, max_part_size=max_upload_bytes + 1)
        name = str(form.get("model") or next(iter(models), ""))
        if name not in models:
            return _error(400, f"unknown model {name!r}; shipped: {', '.join(models)}")
        upload = form.get("midi")
        if upload is not None and hasattr(upload, "read"):
            midi = await upload.read(max_upload_bytes + 1)
            label = Path(upload.filename or "upload.mid").name
            if len(midi) > max_upload_bytes:
                return _error(413, f"{label}: over the limit of {max_upload_bytes / 2**20:g} MB")
        elif form.get("example") is not None and str(form.get("example")).isdigit() and int(str(form.get("example"))) in EXAMPLE_SEEDS:
            seed = int(str(form.get("example")))
            midi, label = await run_in_threadpool(example_midi, seed), f"example{seed}.mid"
        else:
            return _error(400, "send a MIDI file (field 'midi') or an example number (field 'example')")
        if busy.locked():
            return _error(429, "busy: one render at a time; try again when it is done")
        async with busy:
            try:
                wav = await run_in_threadpool(render, name, midi, label)
            except (MidiError, SynthesisError, OutputError) as e:
                return _error(413 if "over the limit" in str(e) else 400, str(e))
        stem = Path(label).stem
        return Response(wav, media_type="audio/wav", headers={"Content-Disposition": f'attachment; filename="{stem}.wav"'})

    return Starlette(
        routes=[
            Route("/", page),
            Route("/api/models", list_models),
            Route("/api/render", render_route, methods=["POST"]),
        ]
    )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def serve(host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Runs the page with uvicorn until Ctrl-C. ``options`` go to ``create_app``."""
    import uvicorn

    uvicorn.run(create_app(**options), host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>pianosynth</title>
<style>
body{font-family:sans-serif;margin:2em auto;max-width:720px;padding:0 1em}
#drop{border:2px dashed #888;border-radius:8px;padding:2em;text-align:center;margin:1em 0}
#drop.over{background:#eef}
label{margin-right:1em} button{font-size:1.1em;padding:.3em 1.2em} audio{width:100%;margin-top:1em}
#status{margin-top:1em;min-height:1.5em} .error{color:#b00}
</style></head><body>
<h1>pianosynth</h1>
<p>Drop a MIDI file here, or pick a generated example, then render it with a shipped model.
Files up to {MAX_MB} MB and {MAX_S} s of audio. Everything stays on this computer.</p>
<div id="drop">Drop a .mid file here, or <input type="file" id="file" accept=".mid,.midi,audio/midi"></div>
<p><label>Example <select id="example"><option value="">(none: use the file)</option></select></label>
<label>Model <select id="model"></select></label>
<button id="render">Render</button></p>
<div id="status"></div>
<audio id="player" controls></audio>
<p><a id="download" href="#" hidden>Download the WAV</a></p>
<script>
const $ = id => document.getElementById(id);
let dropped = null;
fetch("/api/models").then(r => r.json()).then(info => {
  for (const m of info.models) $("model").add(new Option(m, m));
  for (const e of info.examples) $("example").add(new Option("generated piece " + e, e));
});
const drop = $("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => {
  e.preventDefault(); drop.classList.remove("over");
  dropped = e.dataTransfer.files[0] || null;
  if (dropped) { $("status").textContent = "ready: " + dropped.name; $("example").value = ""; }
});
$("file").addEventListener("change", () => { dropped = $("file").files[0] || null; if (dropped) $("example").value = ""; });
$("render").addEventListener("click", async () => {
  const form = new FormData();
  form.append("model", $("model").value);
  if ($("example").value !== "") form.append("example", $("example").value);
  else if (dropped) form.append("midi", dropped, dropped.name);
  else { $("status").textContent = "choose a MIDI file or an example first"; return; }
  $("status").className = ""; $("status").textContent = "rendering...";
  $("render").disabled = true;
  try {
    const response = await fetch("/api/render", {method: "POST", body: form});
    if (!response.ok) {
      const body = await response.json().catch(() => ({error: response.statusText}));
      throw new Error(body.error);
    }
    const name = (response.headers.get("Content-Disposition") || "").split('filename="')[1]?.replace('"', "") || "pianosynth.wav";
    const url = URL.createObjectURL(await response.blob());
    $("player").src = url;
    $("download").href = url; $("download").download = name; $("download").hidden = false;
    $("status").textContent = "done: " + name;
  } catch (err) {
    $("status").className = "error"; $("status").textContent = "error: " + err.message;
  } finally {
    $("render").disabled = false;
  }
});
</script>
</body></html>
"""
