"""``pianosynth serve``: a local page that renders MIDI with the shipped models. A thin room above
the library: every render goes through ``Synth.render_to_file``, as the CLI's do.

Starlette and uvicorn: a small, well-kept ASGI framework and server (Starlette is what FastAPI is
built on), enough for a few routes without FastAPI's validation layer, and uvicorn runs it
in-process, so the tests start a real server on a free port.

**A local service (issue 20).**

- Only this machine's own pages may use it: a request whose ``Host`` is not the served address
  (DNS rebinding) or whose ``Origin`` is another site (a page the user visits posting to
  127.0.0.1) is refused with 403 before any route runs (``LocalOnly``).
- An upload is read by this module, chunk by chunk, and refused with 413 as soon as it passes the
  limit, whatever its transfer encoding (a declared length, or chunked with none); nothing of it
  reaches the disk before that.
- A render runs as a ``RenderJob`` (below) in a worker thread; a client that goes away cancels it.
- Every error is a JSON ``{"error": "one line"}`` with a 4xx status, or a 500 naming the
  exception in one line; no traceback reaches the log.
- A file name of any script downloads: ``Content-Disposition`` carries an ASCII fallback and the
  RFC 5987 ``filename*=UTF-8''...``.

**Render jobs: the API that routes and progress build on.**

``RenderJobs`` (``app.state.jobs``) runs at most ``max_jobs`` renders at a time (the page: one)::

    job = jobs.start(work, label)   # -> RenderJob, or raises Busy when every slot is taken
    job.id, job.label               # a random id (hex), the input's name
    job.state                       # "running", then "done", "failed" or "cancelled"
    job.progress                    # 0..1: seconds synthesized / seconds in the piece
    job.done_s, job.total_s
    job.cancel()                    # asks the render to stop; it does at the next chunk
    job.wait(timeout)               # True once it has finished
    job.result                      # bytes of the WAV once "done"
    job.warnings                    # the render's warnings (list of one-line strings)
    job.error, job.status           # one-line message and HTTP status once "failed"
    job.to_json()                   # all of the above but the result, for a progress route
    jobs.get(job_id)                # a job by id (finished ones are kept until the next start)

``work(job)`` runs in the worker thread and returns the result bytes; it passes ``job.report`` as
the render's ``progress`` callback, and ``report`` raises ``RenderCancelled`` once the job is
cancelled, so the render stops between chunks: the chunked synthesis (``PianoSynth.synthesize``)
closes its thread pool and ``render_to_file`` removes its temporary file on the way out. The
reading of the input and the features come before the first chunk; they are bounded by the
input limits (``midi.Limits``) rather than by cancelling.

**The page does what the CLI does.** ``POST /api/jobs`` takes the same form as ``/api/render``
(a MIDI file or a score, or an example) plus the CLI's output options (``format``,
``sample_rate``, ``channels``, ``loudness``) and a model: "" (the default) routes each General
MIDI program to its shipped model as ``synthesize`` does, a name plays every note with that
model (``default``: the index's default model). It answers at once with the job; ``GET /api/jobs/{id}`` gives its progress, then its
warnings and the choices made (the routing), ``/audio`` and ``/spectrogram`` the results, and
``POST /api/jobs/{id}/cancel`` stops it.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import threading
import urllib.parse
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

ROUTED = ""  # the model choice that routes programs to the shipped models, as synthesize does
DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # a long piano performance is well under 200 kB of MIDI
DEFAULT_MAX_SECONDS = 600.0  # rendered audio per request
EXAMPLE_SEEDS = range(4)  # generated pieces offered on the page (examples.generate_piece)
FORM_OVERHEAD_BYTES = 16 * 1024  # multipart boundaries and the small fields around the upload
LOOPBACK = ("127.0.0.1", "localhost", "::1")
POLL_SECONDS = 0.05  # how often a waiting request looks for its job's end and its client's departure


class RenderCancelled(Exception):
    """Raised inside a render by ``RenderJob.report`` once the job is cancelled."""


class Busy(Exception):
    """Every render slot is taken."""


class RenderJob:
    """One render in a worker thread (see the module's docstring for the API)."""

    def __init__(self, label: str):
        self.id = secrets.token_hex(8)
        self.label = label
        self.state = "running"
        self.done_s = 0.0
        self.total_s = 0.0
        self.result: bytes | None = None
        self.warnings: list[str] = []
        self.error: str | None = None
        self.status = 200
        self._cancel = threading.Event()
        self._finished = threading.Event()

    @property
    def progress(self) -> float:
        return min(1.0, self.done_s / self.total_s) if self.total_s > 0 else 0.0

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was asked (the job may still be on its way out)."""
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._finished.wait(timeout)

    def report(self, done_s: float, total_s: float) -> None:
        """The render's ``progress`` callback: records progress, stops a cancelled render."""
        self.done_s, self.total_s = done_s, total_s
        if self._cancel.is_set():
            raise RenderCancelled

    def to_json(self) -> dict:
        return {
            "id": self.id, "label": self.label, "state": self.state, "progress": round(self.progress, 4),
            "done_s": round(self.done_s, 2), "total_s": round(self.total_s, 2), "warnings": self.warnings,
            "error": self.error,
        }  # fmt: skip


class RenderJobs:
    """At most ``max_jobs`` renders at a time, each a ``RenderJob`` in a thread of its own."""

    def __init__(self, max_jobs: int = 1):
        self.max_jobs = max_jobs
        self._jobs: dict[str, RenderJob] = {}
        self._lock = threading.Lock()

    def running(self) -> list[RenderJob]:
        with self._lock:
            return [j for j in self._jobs.values() if not j.finished]

    def get(self, job_id: str) -> RenderJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, work: Callable[[RenderJob], bytes], label: str) -> RenderJob:
        """Starts ``work(job)`` in a worker thread. Raises Busy when every slot is taken."""
        with self._lock:
            if sum(not j.finished for j in self._jobs.values()) >= self.max_jobs:
                raise Busy
            self._jobs = {k: j for k, j in self._jobs.items() if not j.finished}  # the last finished ones go
            job = RenderJob(label)
            self._jobs[job.id] = job
        threading.Thread(target=self._run, args=(job, work), name=f"render-{job.id}", daemon=True).start()
        return job

    @staticmethod
    def _run(job: RenderJob, work: Callable[[RenderJob], bytes]) -> None:
        from .audio import OutputError
        from .midi import MidiError
        from .synthesize import SynthesisError

        try:
            if job.cancelled:
                raise RenderCancelled
            job.result = work(job)
            job.state = "done"
        except RenderCancelled:
            job.state, job.status, job.error = "cancelled", 499, "cancelled"
        except (MidiError, SynthesisError, OutputError) as e:
            message = " ".join(str(e).split())
            job.state, job.status, job.error = "failed", 413 if "over the limit" in message else 400, message
        except MemoryError:
            job.state, job.status, job.error = "failed", 413, f"{job.label}: out of memory while rendering"
        except Exception as e:  # anything else is this program's fault: one line, never a traceback
            job.state, job.status, job.error = "failed", 500, f"internal error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        finally:
            job._finished.set()


class LocalOnly:
    """ASGI middleware: refuses (403) a request whose ``Host`` is not an address this server is
    served at, or whose ``Origin`` (sent by browsers with every cross-site POST) is another site.

    Served on a loopback address, the Host must name a loopback address with this port, so a
    page of another site that rebinds its DNS name to 127.0.0.1 is refused too. Served on another
    address (the user let others in), any Host is taken but the Origin must still be the Host's.
    """

    def __init__(self, app, host: str, port: int):
        self.app, self.port = app, port
        wildcard = host in ("0.0.0.0", "::", "")
        names = LOOPBACK if host in LOOPBACK else () if wildcard else (host,)
        self.hosts = None if wildcard else {_host_value(n, port) for n in names} | ({_host_value(n, None) for n in names} if port == 80 else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            problem = self.problem(headers)
            if problem is not None:
                await JSONResponse({"error": problem}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def problem(self, headers: dict[str, str]) -> str | None:
        """None for a request of this server's own page, else the one-line reason to refuse it."""
        host = headers.get("host", "").strip().lower()
        if not host or (self.hosts is not None and host not in self.hosts):
            return f"refused: Host {host or '(none)'!r} is not this server's address"
        origin = headers.get("origin")
        if origin is not None:
            parsed = urllib.parse.urlsplit(origin.strip().lower())
            if parsed.scheme not in ("http", "https") or parsed.netloc != host:
                return f"refused: a request from another site ({origin})"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "refused: a request from another site"
        return None


def _host_value(name: str, port: int | None) -> str:
    name = f"[{name}]" if ":" in name else name
    return name if port is None else f"{name}:{port}"


def content_disposition(filename: str) -> str:
    """``attachment`` with an ASCII fallback name and the exact one as RFC 5987 ``filename*``."""
    clean = "".join(c for c in filename if c.isprintable()) or "pianosynth.wav"
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in clean)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(clean, safe='')}"


def create_app(
    models: dict[str, Path] | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    threads: int | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    limits=None,
) -> Starlette:
    """The page and its API. ``models``: name -> checkpoint (default: the shipped models);
    ``host``, ``port``: the address it is served at (requests for another are refused);
    ``limits``: each render's budget (``midi.Limits``, default its defaults)."""
    from .synthesize import shipped_models

    models = dict(models) if models is not None else shipped_models()
    loaded: dict = {}
    load_lock = threading.Lock()
    jobs = RenderJobs(max_jobs=1)

    def synth(name: str):
        """A loaded model by name; ``ROUTED``: the router over every shipped model."""
        from .synthesize import load

        with load_lock:
            if name not in loaded:
                loaded[name] = load(models[name] if name != ROUTED else None, threads=threads)
            return loaded[name]

    def choices() -> list[dict]:
        """The page's model list: routing first, then each model with its instrument."""
        from .registry import shipped

        known = shipped()
        out = [{"value": ROUTED, "label": "automatic: each General MIDI program to its model"}]
        for name in models:
            m = known.get(name)
            what = f" ({m.instrument}{', score mode' if m.preset == 'score' else ''}{', default' if m.default else ''})" if m is not None else ""
            out.append({"value": name, "label": f"{name}{what}"})
        return out

    def example_midi(seed: int) -> bytes:
        from .examples import generate_piece
        from .midi import write_midi

        with tempfile.TemporaryDirectory(prefix="pianosynth-serve-") as tmp:
            path = Path(tmp) / "example.mid"
            write_midi(generate_piece(seed=seed, bars=8), path)
            return path.read_bytes()

    extras: dict[str, dict] = {}  # job id -> what the page shows beside the job: options, routing, spectrogram

    def render_work(name: str, midi: bytes, label: str, options: dict):
        from .synthesize import can_plot

        for old in [k for k in extras if jobs.get(k) is None]:  # jobs forgets finished renders
            del extras[old]
        extra = {"format": options["format"], "model": name}

        def work(job: RenderJob) -> bytes:
            extras[job.id] = extra
            render = {k: v for k, v in options.items() if k != "format"}
            plot = can_plot()
            with tempfile.TemporaryDirectory(prefix="pianosynth-serve-") as tmp:
                out = Path(tmp) / f"out.{options['format']}"
                result = synth(name).render_to_file(
                    midi, out, name=label, max_seconds=max_seconds, limits=limits, progress=job.report, plot=plot, **render
                )  # fmt: skip
                job.warnings = list(result.warnings)
                extra.update(
                    messages=list(result.messages), seconds=round(result.seconds, 3), sample_rate=result.sample_rate,
                    channels=result.channels, spectrogram=plot,
                )  # fmt: skip
                if plot:
                    extra["png"] = result.plot.read_bytes()
                return out.read_bytes()

        return work

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE.replace("{MAX_MB}", f"{max_upload_bytes / 2**20:g}").replace("{MAX_S}", f"{max_seconds:g}"))

    async def list_models(request: Request) -> JSONResponse:
        from .audio import DEFAULT_LOUDNESS_LUFS, FORMATS, MIN_LOUDNESS_LUFS, SAMPLE_RATE_RANGE
        from .scores import SCORE_SUFFIXES

        return JSONResponse({
            "models": list(models), "choices": await run_in_threadpool(choices), "examples": list(EXAMPLE_SEEDS),
            "formats": [f.lstrip(".") for f in FORMATS], "sample_rates": list(SAMPLE_RATE_RANGE),
            "loudness": {"default": DEFAULT_LOUDNESS_LUFS, "min": MIN_LOUDNESS_LUFS},
            "inputs": sorted({".mid", ".midi", *SCORE_SUFFIXES}),
        })  # fmt: skip

    async def read_request(request: Request, routed: bool):
        """(model name, input bytes, its label, the output options) from a render form, or an
        error Response. ``routed``: whether no model named means routing (the job API) or the
        first model (``/api/render``, as before)."""
        limit_mb = f"{max_upload_bytes / 2**20:g} MB"
        body = await read_body(request, max_upload_bytes + FORM_OVERHEAD_BYTES)
        if body is None:  # and close the connection: the rest of the upload is not read
            response = _error(413, f"upload over the limit of {limit_mb} (raise it with pianosynth serve --max-upload-mb)")
            response.headers["Connection"] = "close"
            return response
        try:
            form = await _replayed(request, body).form(max_files=1, max_fields=8, max_part_size=max_upload_bytes + 1)
        except Exception as e:  # a malformed multipart body: python-multipart and Starlette raise several types
            return _error(400, f"not a form upload ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        from .registry import DEFAULT_ALIAS, RegistryError, resolve_name

        name = str(form.get("model") or (ROUTED if routed else next(iter(models), "")))
        if name not in models and name == DEFAULT_ALIAS:  # the default model by its alias
            try:
                name = await run_in_threadpool(resolve_name, name)
            except RegistryError as e:
                return _error(500, str(e))
        if name not in models and not (routed and name == ROUTED):
            return _error(400, f"unknown model {name!r}; shipped: {', '.join(models)}")
        try:
            options = output_options(form)
        except ValueError as e:
            return _error(400, str(e))
        upload = form.get("midi")
        example = str(form.get("example") or "")
        if upload is not None and hasattr(upload, "read"):
            midi = await upload.read(max_upload_bytes + 1)
            label = Path(upload.filename or "upload.mid").name or "upload.mid"
            if len(midi) > max_upload_bytes:
                return _error(413, f"{label}: over the limit of {limit_mb} (raise it with pianosynth serve --max-upload-mb)")
        elif example.isdigit() and int(example) in EXAMPLE_SEEDS:
            midi, label = await run_in_threadpool(example_midi, int(example)), f"example{example}.mid"
        else:
            return _error(400, "send a MIDI file or a score (field 'midi') or an example number (field 'example')")
        return name, midi, label, options

    async def start_from(request: Request, routed: bool) -> tuple[RenderJob, dict] | Response:
        """Reads a request's file and options and starts its render job, or answers why not."""
        read = await read_request(request, routed=routed)
        if isinstance(read, Response):
            return read
        name, midi, label, options = read
        try:
            return jobs.start(render_work(name, midi, label, options), label), options
        except Busy:
            return _error(429, "busy: one render at a time; try again when it is done")

    async def render_route(request: Request) -> Response:
        started = await start_from(request, routed=False)
        if isinstance(started, Response):
            return started
        job, options = started
        while not job.finished:
            if await request.is_disconnected():  # the client has gone: nobody will hear it
                job.cancel()
                return _error(499, "cancelled: the client went away")
            await asyncio.sleep(POLL_SECONDS)
        if job.state != "done":
            return _error(job.status, job.error or job.state)
        return audio_response(job, options)

    def audio_response(job: RenderJob, options: dict) -> Response:
        fmt = options["format"]
        headers = {"Content-Disposition": content_disposition(f"{Path(job.label).stem}.{fmt}")}
        return Response(job.result, media_type=MEDIA_TYPES[fmt], headers=headers)

    async def start_job(request: Request) -> Response:
        started = await start_from(request, routed=True)
        if isinstance(started, Response):
            return started
        return JSONResponse(job_json(started[0]), status_code=202)

    def job_json(job: RenderJob) -> dict:
        return {**job.to_json(), **{k: v for k, v in extras.get(job.id, {}).items() if k != "png"}}

    def find_job(request: Request) -> RenderJob | Response:
        job = jobs.get(request.path_params["job_id"])
        return job if job is not None else _error(404, "no such render (a finished one is kept until the next starts)")

    async def job_status(request: Request) -> Response:
        job = find_job(request)
        return job if isinstance(job, Response) else JSONResponse(job_json(job))

    async def job_cancel(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        job.cancel()
        return JSONResponse(job_json(job))

    async def job_audio(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        if job.state != "done":
            return _error(409 if not job.finished else job.status, job.error or f"the render is {job.state}")
        return audio_response(job, extras[job.id])

    async def job_spectrogram(request: Request) -> Response:
        job = find_job(request)
        if isinstance(job, Response):
            return job
        png = extras.get(job.id, {}).get("png") if job.state == "done" else None
        if png is None:
            return _error(404, "no spectrogram: the render is not done, or matplotlib is missing (pip install 'pianosynth[plot]')")
        return Response(png, media_type="image/png")

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/models", list_models),
            Route("/api/render", render_route, methods=["POST"]),
            Route("/api/jobs", start_job, methods=["POST"]),
            Route("/api/jobs/{job_id}", job_status),
            Route("/api/jobs/{job_id}/cancel", job_cancel, methods=["POST"]),
            Route("/api/jobs/{job_id}/audio", job_audio),
            Route("/api/jobs/{job_id}/spectrogram", job_spectrogram),
        ],
        exception_handlers={Exception: internal_error},
    )
    app.state.jobs = jobs
    app.add_middleware(LocalOnly, host=host, port=port)
    return app


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body, read as it arrives; None as soon as it passes ``limit`` bytes (a
    declared Content-Length over it is refused before a byte is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _replayed(request: Request, body: bytes) -> Request:
    """A Request over the same scope whose body is ``body`` (already read and bounded)."""
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return Request(request.scope, receive)


MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "ogg": "audio/ogg"}


def output_options(form) -> dict:
    """The CLI's output options from a form's fields, checked as the CLI checks them: ``format``
    (wav, flac, ogg), ``sample_rate`` (Hz; empty: the model's), ``channels`` (1 or 2) and
    ``loudness`` (LUFS; empty: the default). Raises ValueError with one line."""
    import math

    from .audio import DEFAULT_LOUDNESS_LUFS, MIN_LOUDNESS_LUFS, SAMPLE_RATE_RANGE

    def field(key: str) -> str:
        return str(form.get(key) or "").strip()

    fmt = field("format").lower() or "wav"
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"format must be one of {', '.join(MEDIA_TYPES)}, got {fmt!r}")
    lo, hi = SAMPLE_RATE_RANGE
    rate = field("sample_rate")
    if rate and not (rate.isdigit() and lo <= int(rate) <= hi):
        raise ValueError(f"sample_rate must be an integer from {lo} to {hi} Hz, got {rate!r}")
    channels = field("channels") or "1"
    if channels not in ("1", "2"):
        raise ValueError(f"channels must be 1 or 2, got {channels!r}")
    loudness = field("loudness")
    try:
        lufs = float(loudness) if loudness else DEFAULT_LOUDNESS_LUFS
    except ValueError:
        lufs = math.nan
    if not (math.isfinite(lufs) and MIN_LOUDNESS_LUFS < lufs <= 0):
        raise ValueError(f"loudness must be a number of LUFS above {MIN_LOUDNESS_LUFS:g} and at most 0, got {loudness!r}")
    return {"format": fmt, "sample_rate": int(rate) if rate else None, "channels": int(channels), "loudness": lufs}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def serve(host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Runs the page with uvicorn until Ctrl-C. ``options`` go to ``create_app``."""
    import uvicorn

    uvicorn.run(create_app(host=host, port=port, **options), host=host, port=port, log_level="warning")


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>pianosynth</title>
<style>
body{font-family:sans-serif;margin:2em auto;max-width:760px;padding:0 1em}
#drop{border:2px dashed #888;border-radius:8px;padding:1.5em;text-align:center;margin:1em 0}
#drop.over{background:#eef}
fieldset{border:1px solid #ccc;border-radius:6px;margin:.8em 0} label{margin-right:1em;white-space:nowrap}
button{font-size:1.1em;padding:.3em 1.2em} audio{width:100%;margin-top:1em} progress{width:100%}
#status{margin-top:.5em;min-height:1.5em} .error{color:#b00} #warnings li{color:#8a5a00}
#spectrogram{width:100%;margin-top:1em} #notes li{color:#335}
</style></head><body>
<h1>pianosynth</h1>
<p>Drop a MIDI file or a score (MusicXML, MEI, Humdrum), or pick a generated example, then render
it. Files up to {MAX_MB} MB and {MAX_S} s of audio. Everything stays on this computer.</p>
<div id="drop">Drop a file here, or <input type="file" id="file"
  accept=".mid,.midi,.musicxml,.xml,.mxl,.mei,.krn,.kern,audio/midi"></div>
<fieldset><legend>What to play</legend>
<label>Example <select id="example"><option value="">(none: use the file)</option></select></label>
<label>Model <select id="model"></select></label>
</fieldset>
<fieldset><legend>Output</legend>
<label>Format <select id="format"><option>wav</option><option>flac</option><option>ogg</option></select></label>
<label>Rate <select id="rate"><option value="">the model's</option><option>22050</option><option>44100</option><option>48000</option></select></label>
<label>Channels <select id="channels"><option value="1">mono</option><option value="2">stereo</option></select></label>
<label>Loudness <input id="loudness" type="number" step="1" value="-23" style="width:4em"> LUFS</label>
</fieldset>
<p><button id="render">Render</button> <button id="cancel" hidden>Cancel</button></p>
<progress id="progress" max="1" value="0" hidden></progress>
<div id="status"></div>
<ul id="warnings"></ul><ul id="notes"></ul>
<img id="spectrogram" alt="spectrogram of the result" hidden>
<audio id="player" controls></audio>
<p><a id="download" href="#" hidden>Download</a></p>
<script>
const $ = id => document.getElementById(id);
function downloadName(header) {
  const exact = header.match(/filename[*]=UTF-8''([^;]+)/i);
  if (exact) return decodeURIComponent(exact[1]);
  const plain = header.match(/filename="([^"]*)"/);
  return plain ? plain[1] : "pianosynth.wav";
}
function list(id, lines) {
  $(id).replaceChildren(...lines.map(t => { const li = document.createElement("li"); li.textContent = t; return li; }));
}
const sleep = ms => new Promise(r => setTimeout(r, ms));
async function json(response) {
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(body.error);
  return body;
}
let dropped = null, current = null;
fetch("/api/models").then(r => r.json()).then(info => {
  for (const c of info.choices) $("model").add(new Option(c.label, c.value));
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
$("cancel").addEventListener("click", () => { if (current) fetch("/api/jobs/" + current + "/cancel", {method: "POST"}); });
$("render").addEventListener("click", async () => {
  const form = new FormData();
  form.append("model", $("model").value);
  form.append("format", $("format").value);
  form.append("sample_rate", $("rate").value);
  form.append("channels", $("channels").value);
  form.append("loudness", $("loudness").value);
  if ($("example").value !== "") form.append("example", $("example").value);
  else if (dropped) form.append("midi", dropped, dropped.name);
  else { $("status").textContent = "choose a file or an example first"; return; }
  $("status").className = ""; $("status").textContent = "rendering...";
  list("warnings", []); list("notes", []); $("spectrogram").hidden = true;
  $("render").disabled = true; $("cancel").hidden = false;
  $("progress").hidden = false; $("progress").value = 0;
  try {
    let job = await json(await fetch("/api/jobs", {method: "POST", body: form}));
    current = job.id;
    while (job.state === "running") {
      await sleep(200);
      job = await json(await fetch("/api/jobs/" + job.id));
      $("progress").value = job.progress;
      if (job.total_s) $("status").textContent = `rendering... ${job.done_s.toFixed(0)} of ${job.total_s.toFixed(0)} s`;
    }
    list("warnings", job.warnings.map(w => "warning: " + w));
    list("notes", job.messages || []);
    if (job.state !== "done") throw new Error(job.error || job.state);
    const response = await fetch("/api/jobs/" + job.id + "/audio");
    if (!response.ok) await json(response);
    const name = downloadName(response.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    $("player").src = url;
    $("download").href = url; $("download").download = name; $("download").hidden = false;
    $("download").textContent = "Download " + name;
    if (job.spectrogram) { $("spectrogram").src = "/api/jobs/" + job.id + "/spectrogram"; $("spectrogram").hidden = false; }
    $("progress").value = 1;
    $("status").textContent = "done: " + name;
  } catch (err) {
    $("status").className = "error"; $("status").textContent = "error: " + err.message;
  } finally {
    $("render").disabled = false; $("cancel").hidden = true; current = null;
  }
});
</script>
</body></html>
"""
