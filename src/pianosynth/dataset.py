"""The dataset cache (``pianosynth prepare``) and the training examples cut from it.

A cache is one folder per (file list, feature config, render config), named by a hash of the
three::

    CACHE_ROOT/<input-name>-<hash>/
        manifest.json              config, files (with their source paths), splits, hashes, durations,
                                   skips (written last)
        pieces/<id>.json           one piece's record; its presence marks the piece as finished
        pieces/<id>.features.npy   (frames, channels) uint8, value * 127 (see features.quantize)
        pieces/<id>.audio.npy      (frames * hop_samples,) int16, or (frames * hop_samples, 2)
                                   for a stereo cache (features.channels 2): the FluidSynth or
                                   sfizz render, or the recording aligned to the MIDI and levelled
                                   (render.source "recorded", see recordings.py)
        pieces/<id>.notes.npy      (notes, 4) int64: key, velocity, onset and release samples on the
                                   reference's block grid (features.compute_notes)

Every file is written to a temporary name and renamed into place, and a piece's record is written
after its arrays, so a run that is killed can be started again: finished pieces are kept, and
half-written files are never mistaken for finished ones.

The manifest records the audio's rate and channels (``audio``). A stereo cache stores samples as
rows of (left, right), so that a crop is one contiguous slice of the memory map; its crops come
out as (channels, samples), the library's layout.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import json
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import PianosynthError
from .config import Config, FeatureConfig, RenderConfig, config_from_dict, stable_hash
from .fileio import atomic_write, file_sha1, remove_stale_temps
from .features import NOTE_COLUMNS, check_alignment, compute_features, compute_notes, dequantize, n_frames_for, note_rule, quantize
from .midi import MAX_SECONDS, MidiError, read_midi

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi", ".smf", ".kar")
SPLITS = ("train", "valid", "test")
# Where a piece's split comes from, said wherever a split turns out empty (prepare, train)
SPLIT_SOURCE = (
    "a file's split is the one named by a splits.csv in its folder, with the columns performance_midi "
    "and split, or by a MAESTRO CSV; else a hash of its path: about 1 in 10 valid, 1 in 10 test"
)
MANIFEST = "manifest.json"
CACHE_VERSION = 1  # bump when the stored layout changes, so old caches are not misread


class CacheError(PianosynthError, RuntimeError):
    """A cache folder that is missing, incomplete or of another version."""


# ---------------------------------------------------------------------------------------------
# Choosing the files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: Path  # absolute path of the MIDI file
    rel: str  # path relative to the input folder, the file's name in the manifest
    split: str  # train, valid or test
    seconds: float | None  # duration if known without parsing (from splits.csv), else None
    audio: Path | None = None  # a recording of the performance (prepare --recordings), absolute
    audio_rel: str | None = None  # its path relative to the input folder, its name in the manifest


def _hash_fraction(text: str) -> float:
    """A deterministic number in [0, 1) from a string."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12


def split_by_hash(rel: str) -> str:
    """Deterministic 80/10/10 train/valid/test split by a hash of the file's relative path."""
    u = _hash_fraction("split:" + rel)
    return "train" if u < 0.8 else ("valid" if u < 0.9 else "test")


def find_sources(input_dir: Path, column: str = "performance_midi") -> list[SourceFile]:
    """Lists the MIDI files of a folder with their split.

    With a ``splits.csv`` (ASAP's, or one's own with the columns ``performance_midi`` and
    ``split``) in the folder, the files are those named in its ``column`` and the split is the
    csv's, one of ``SPLITS``; otherwise every MIDI file below the folder, split by a hash of its
    path. A csv without those columns, or with another split's name, is a ValueError naming its
    line: a misspelt split would otherwise drop its files from every split without a word.
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise FileNotFoundError(f"{input_dir}: not a folder")
    splits_csv = input_dir / "splits.csv"
    sources: dict[str, SourceFile] = {}
    if splits_csv.is_file():
        with open(splits_csv, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in (column, "split") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{splits_csv}: no column {', '.join(map(repr, missing))}")
            for line, row in enumerate(reader, start=2):
                rel, split = row[column], (row["split"] or "").strip()
                if split not in SPLITS:
                    raise ValueError(f"{splits_csv}:{line}: split {split!r}, expected one of {', '.join(SPLITS)}")
                if rel in sources:  # score files repeat once per performance
                    continue
                try:
                    seconds = float(row["seconds"]) if column == "performance_midi" and row.get("seconds") else None
                except ValueError:
                    raise ValueError(f"{splits_csv}:{line}: seconds {row['seconds']!r} is not a number") from None
                sources[rel] = SourceFile((input_dir / rel).resolve(), rel, split, seconds)
    else:
        for path in sorted(input_dir.rglob("*")):
            if path.suffix.lower() in MIDI_SUFFIXES and path.is_file():
                rel = path.relative_to(input_dir).as_posix()
                sources[rel] = SourceFile(path.resolve(), rel, split_by_hash(rel), None)
    return sorted(sources.values(), key=lambda s: s.rel)


def find_recordings(input_dir: Path, column: str = "performance_midi") -> list[SourceFile]:
    """``find_sources``, each MIDI file paired with the audio file beside it that has its stem
    (``recordings.find_audio``). A MIDI file without one stays in the list with ``audio`` None:
    prepare skips it with its reason."""
    from .recordings import find_audio

    input_dir = Path(input_dir)
    out = []
    for src in find_sources(input_dir, column):
        audio = find_audio(src.path)
        rel = audio.relative_to(src.path.parent).as_posix() if audio is not None else None
        audio_rel = (Path(src.rel).parent / rel).as_posix() if rel is not None else None
        out.append(replace(src, audio=audio.resolve() if audio is not None else None, audio_rel=audio_rel))
    return out


MAESTRO_SPLITS = {"train": "train", "validation": "valid", "test": "test"}
MAESTRO_COLUMNS = ("midi_filename", "audio_filename", "split", "duration")


def find_maestro(csv_path: Path) -> list[SourceFile]:
    """The pairs of a MAESTRO-layout CSV (``midi_filename``, ``audio_filename``, ``split``,
    ``duration``; paths relative to the CSV's folder), with MAESTRO's own split (its
    ``validation`` is our ``valid``)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such file")
    root = csv_path.parent
    sources: dict[str, SourceFile] = {}
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MAESTRO_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{csv_path}: not a MAESTRO CSV (no column {', '.join(missing)})")
        for line, row in enumerate(reader, start=2):
            split = MAESTRO_SPLITS.get(row["split"].strip())
            if split is None:
                raise ValueError(f"{csv_path}:{line}: split {row['split']!r}, expected one of {', '.join(MAESTRO_SPLITS)}")
            try:
                seconds = float(row["duration"]) if row["duration"] else None
            except ValueError:
                raise ValueError(f"{csv_path}:{line}: duration {row['duration']!r} is not a number") from None
            rel, audio_rel = row["midi_filename"], row["audio_filename"]
            sources[rel] = SourceFile((root / rel).resolve(), rel, split, seconds, (root / audio_rel).resolve(), audio_rel)
    return sorted(sources.values(), key=lambda s: s.rel)


def select_subset(
    sources: list[SourceFile], limit: int | None = None, max_hours: float | None = None
) -> list[SourceFile]:
    """Takes a deterministic subset: files in hashed order until ``limit`` files or ``max_hours``.

    Stratified by split: the first file of each split (in the hashed order; train, then valid,
    then test) comes first, so any subset of 3 or more files has every split the sources have;
    the rest follow in the hashed order, which mixes splits in proportion to their size. A file
    keeps its split (splits.csv's, or its hash's): only the choice of files is stratified.
    Durations not known from splits.csv are read from the MIDI (unreadable files count as zero;
    prepare skips them later with their reason).
    """
    order = sorted(sources, key=lambda s: _hash_fraction("order:" + s.rel))
    if limit is None and max_hours is None:
        return sorted(order, key=lambda s: s.rel)
    leaders = [next(s for s in order if s.split == split) for split in SPLITS if any(s.split == split for s in order)]
    order = leaders + [s for s in order if s not in leaders]
    chosen, total_s = [], 0.0
    for src in order:
        if limit is not None and len(chosen) >= limit:
            break
        if max_hours is not None and total_s >= max_hours * 3600:
            break
        chosen.append(src)
        if max_hours is not None:
            if src.seconds is not None:
                total_s += src.seconds
            else:
                try:
                    total_s += read_midi(src.path).end_s
                except MidiError:
                    pass
    return sorted(chosen, key=lambda s: s.rel)


# ---------------------------------------------------------------------------------------------
# Preparing pieces
# ---------------------------------------------------------------------------------------------


def piece_id(rel: str) -> str:
    """A file-system-safe, unique id for a source file."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", Path(rel).stem).strip("_")[:40]
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:8]}"


def cache_key(sources: list[SourceFile], cfg: Config, limits=None) -> str:
    """Hash of (file list, feature config, render config): the cache folder's identity. A cache
    of recordings adds the audio files and the recordings' settings (``limits``: a
    ``recordings.Limits``, None for its defaults)."""
    key = {
        "version": CACHE_VERSION,
        "files": [(s.rel, s.split) for s in sources],
        "features": cfg.to_dict()["features"],
        "render": cfg.to_dict()["render"],
    }
    if cfg.render.source == "recorded":
        from .recordings import Limits, settings

        key["audio"] = [s.audio_rel for s in sources]
        key["recordings"] = settings(limits or Limits())
    if cfg.render.source == "sfizz":
        key["grand"] = _grand_identity()
    return stable_hash(key)


def _grand_identity() -> dict:
    """The SFZ text's and the sample set's hashes (grand.identity), a CacheError if the samples
    are missing or damaged."""
    from .grand import GrandError, identity

    try:
        return identity()
    except GrandError as e:
        raise CacheError(str(e)) from None


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def save_json(path: Path, data: dict) -> None:
    """Writes JSON atomically (temporary file, then rename)."""
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1, sort_keys=True)))


def prepare_piece(
    src: SourceFile, pieces_dir: Path, features: FeatureConfig, render_cfg: RenderConfig, max_seconds: float | None = MAX_SECONDS,
    limits=None,
) -> dict:
    """Features + reference audio for one file, written into ``pieces_dir``; returns its record.

    A file that cannot be used (unreadable, over ``max_seconds`` or the density limit, or one
    FluidSynth renders past its bounds) gives a record with ``skipped`` set to the reason instead.
    A missing FluidSynth or SoundFont is not a property of the file, so it raises RenderError.

    With ``render_cfg.source == "recorded"`` the reference is ``src.audio``, aligned to the MIDI and
    levelled (``recordings.reference_from_recording``); a recording that is missing, unreadable,
    misaligned or of another length (``limits``: a ``recordings.Limits``, None for its defaults)
    skips the piece with its reason.
    """
    from .recordings import Limits, RecordingError, reference_from_recording
    from .render import RenderLimitError, render, to_int16

    pid = piece_id(src.rel)
    record = {"id": pid, "file": src.rel, "split": src.split, "max_seconds": max_seconds, "note_rule": note_rule(features)}

    def skip(e: Exception) -> dict:
        record["skipped"] = str(e).replace(str(src.path), src.rel)
        save_json(pieces_dir / f"{pid}.json", record)
        return record

    try:
        perf = read_midi(src.path, max_seconds=max_seconds)  # first: its errors name the problem ("no such file")
        record["sha1"] = file_sha1(src.path)
    except (MidiError, OSError) as e:
        return skip(e)
    n_frames = n_frames_for(perf, features)
    x = quantize(compute_features(perf, features, n_frames))  # (frames, channels) uint8
    n_samples = n_frames * features.hop_samples
    notes = compute_notes(perf, features, n_samples)
    if render_cfg.source == "recorded":
        if src.audio is None:
            return skip(RecordingError(f"{src.rel}: no audio file beside it with the same stem"))
        record["audio_file"] = src.audio_rel
        try:
            # aligned to the note table's onsets: the clock of the notes the decoders are given
            y, corrections = reference_from_recording(
                src.audio, notes[:, 2], notes[:, 1], perf.end_s, features.sample_rate, n_samples, src.audio_rel or src.rel,
                limits or Limits(),
            )  # fmt: skip
        except RecordingError as e:
            return skip(e)
        record.update(corrections)
        audio, clipped = to_int16(y)  # (samples,) int16
    else:
        try:
            audio, clipped = to_int16(render(perf, render_cfg, features, n_samples))  # (samples,) int16
        except RenderLimitError as e:
            return skip(MidiError(f"{src.rel}: {e}"))
    # (samples,) int16, or (samples, 2) for a stereo config
    check_alignment(x.shape[0], audio.shape[0], features.hop_samples)
    arrays = {"features": x, "audio": audio, "notes": notes}
    for kind, array in arrays.items():
        _save_npy(pieces_dir / f"{pid}.{kind}.npy", array)
    # what check_arrays compares the files with; the hash is checked by prepare --verify
    record["arrays"] = {kind: _array_entry(pieces_dir / f"{pid}.{kind}.npy", a) for kind, a in arrays.items()}
    record.update(
        frames=int(n_frames),
        seconds=n_samples / features.sample_rate,
        peak=float(np.abs(audio).max(initial=0)) / 32767.0,  # the loudest sample, 1.0 = full scale
        notes=len(perf.notes),
        clipped_samples=clipped,
        warnings=perf.warnings,
    )
    save_json(pieces_dir / f"{pid}.json", record)  # last: marks the piece finished
    return record


def _array_entry(path: Path, array: np.ndarray) -> dict:
    """What a record holds of one saved array, for ``check_piece_arrays``: shape, dtype and the
    file's hash (checked by prepare --verify)."""
    return {"shape": list(array.shape), "dtype": array.dtype.str, "sha1": file_sha1(path)}


def add_note_table(src: SourceFile, record: dict, pieces_dir: Path, features: FeatureConfig) -> None:
    """Writes the note table of a piece finished before caches held note tables, or under an
    older rule (``features.NOTE_RULE``), from its MIDI file: no re-render. A record that lists
    its arrays gets the new table's shape and hash, and the rule; it is saved last."""
    perf = read_midi(src.path, max_seconds=record.get("max_seconds", MAX_SECONDS))
    n_samples = record["frames"] * features.hop_samples
    path = pieces_dir / f"{record['id']}.notes.npy"
    notes = compute_notes(perf, features, n_samples)
    _save_npy(path, notes)
    if "arrays" in record:
        record["arrays"]["notes"] = _array_entry(path, notes)
    record["note_rule"] = note_rule(features)
    save_json(pieces_dir / f"{record['id']}.json", record)


def stale_notes(record: dict, features: FeatureConfig) -> bool:
    """Whether a finished piece's note table was made under an older rule than this code's
    (records from before the rule was kept are of rule 1)."""
    return record.get("note_rule", 1) != note_rule(features)


def _read_record(path: Path) -> dict | None:
    """A piece's record, or None if it is absent or unreadable (then the piece is redone)."""
    try:
        rec = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        log.warning("redoing %s: its record is unreadable", path.name)
        return None
    return rec if isinstance(rec, dict) and "id" in rec and ("skipped" in rec or "frames" in rec) else None


def _prepare_worker(args: tuple) -> dict:
    return prepare_piece(*args)


def _quiet_worker() -> None:
    # Warnings travel back in each record and the parent reports them, so workers stay quiet.
    logging.getLogger("pianosynth").setLevel(logging.ERROR)
    import signal
    import sys

    # No PR_SET_PDEATHSIG here: it fires when the *thread* that started the worker ends, and a pool
    # may start workers from its handler thread; a full test run once hung on a pool whose worker
    # had been killed that way. A worker whose prepare is killed gets EOF on its task pipe and
    # exits; its FluidSynth dies with it (render.run_bounded).
    # Pool.terminate sends SIGTERM: exit through Python so temporary folders are removed (and a
    # sfizz process ended, render.close_sfizz); a second SIGTERM must not break that clean-up
    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle


# ---------------------------------------------------------------------------------------------
# Checking cached arrays
# ---------------------------------------------------------------------------------------------

ARRAY_KINDS = ("features", "audio", "notes")


def _npy_header(path: Path) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, bytes the file must have) from a .npy header, without reading the data."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
        return shape, dtype, f.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _expected_arrays(record: dict, features: FeatureConfig) -> dict:
    """kind -> (shape with None for any length, dtype) of a piece's arrays. Records written before
    issue 11 carry no ``arrays`` and are checked against their frame count and the config."""
    if "arrays" in record:
        return {k: (tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in record["arrays"].items()}
    frames = record["frames"]
    return {
        "features": ((frames, features.n_channels), np.dtype(np.uint8)),
        "audio": ((frames * features.hop_samples,), np.dtype(np.int16)),
        "notes": ((None, len(NOTE_COLUMNS)), np.dtype(np.int64)),
    }


def check_piece_arrays(pieces_dir: Path, record: dict, features: FeatureConfig, verify: bool = False) -> str | None:
    """What is wrong with a finished piece's arrays (missing, truncated, another shape or dtype,
    or, with ``verify``, another hash than its record's), or None if nothing is."""
    expected = _expected_arrays(record, features)
    for kind in ARRAY_KINDS:
        path = pieces_dir / f"{record['id']}.{kind}.npy"
        if not path.is_file():
            return f"{record['file']}: {path.name} is missing"
        try:
            shape, dtype, size = _npy_header(path)
        except (OSError, ValueError) as e:
            return f"{record['file']}: {path.name} is not a readable array ({e})"
        want_shape, want_dtype = expected[kind]
        if dtype != want_dtype or len(shape) != len(want_shape) or any(
            w is not None and w != g for w, g in zip(want_shape, shape)
        ):
            return f"{record['file']}: {path.name} is {dtype} {shape}, the manifest says {want_dtype} {want_shape}"
        if path.stat().st_size != size:
            return f"{record['file']}: {path.name} has {path.stat().st_size} bytes, its header needs {size} (truncated?)"
        if verify and "arrays" in record and file_sha1(path) != record["arrays"][kind]["sha1"]:
            return f"{record['file']}: {path.name} does not match its hash in the manifest (damaged)"
    return None


def prepare(
    sources: list[SourceFile],
    cache_root: Path,
    cfg: Config,
    name: str = "cache",
    jobs: int = 1,
    progress: Callable[[Iterator, int], Iterator] | None = None,
    max_seconds: float | None = MAX_SECONDS,
    verify: bool = False,
    limits=None,
) -> Path:
    """Builds (or finishes) the cache for ``sources`` and returns its folder.

    Pieces already finished by an earlier, interrupted run are kept and not redone, unless their
    arrays fail ``check_piece_arrays`` (with ``verify``, their hashes too, and a recording's hash
    against its file's): those are redone, as are pieces skipped under another ``max_seconds``. ``progress(iterator, total)`` may wrap the
    iterator of finished pieces (e.g. with tqdm). ``limits`` (a ``recordings.Limits``; None: its
    defaults) bounds a recording's lead-in and tail.
    """
    from .render import check_renderer, remove_stale_render_folders

    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if cfg.render.source in ("fluidsynth", "sfizz"):
        # fail before any work if FluidSynth or the SoundFont, sfizz or the grand's samples are missing
        check_renderer(cfg.render)
    remove_stale_render_folders()  # left by a run killed with -9
    cache_dir = Path(cache_root) / f"{name}-{cache_key(sources, cfg, limits)}"
    pieces_dir = cache_dir / "pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(pieces_dir)  # left behind by a killed run (fileio)
    records: dict[str, dict] = {}
    todo = []
    for src in sources:
        rec_path = pieces_dir / f"{piece_id(src.rel)}.json"
        rec = _read_record(rec_path)
        if rec is not None and "skipped" in rec and rec.get("max_seconds", MAX_SECONDS) != max_seconds:
            rec = None  # skipped under another length limit: try again under this one
        if rec is not None and "skipped" not in rec:
            if ("arrays" not in rec and not (pieces_dir / f"{rec['id']}.notes.npy").is_file()) or stale_notes(rec, cfg.features):
                add_note_table(src, rec, pieces_dir, cfg.features)  # a cache from before note tables, or their rule
            problem = check_piece_arrays(pieces_dir, rec, cfg.features, verify=verify)
            if not problem and verify and rec.get("audio_sha1") and src.audio is not None and src.audio.is_file():
                if file_sha1(src.audio) != rec["audio_sha1"]:  # the recording changed since
                    problem = f"{src.rel}: {src.audio_rel} does not match its hash in the manifest (changed)"
            if problem:
                log.warning("redoing %s", problem)
                rec = None
        if rec is not None:
            records[src.rel] = rec
        else:
            todo.append((src, pieces_dir, cfg.features, cfg.render, max_seconds, limits))
    check_disk_space([src for src, *_ in todo], cache_dir, cfg.features)
    if todo:
        if jobs > 1 and len(todo) > 1:
            import multiprocessing as mp

            with mp.get_context("spawn").Pool(min(jobs, len(todo)), initializer=_quiet_worker) as pool:
                results = pool.imap_unordered(_prepare_worker, todo)
                for rec in progress(results, len(todo)) if progress else results:
                    records[rec["file"]] = rec
                # done: the workers leave on their own, through their clean-up (a sfizz process
                # ended, render.close_sfizz), before the with-block's terminate could SIGTERM them
                # in the middle of it (which printed "Exception ignored in atexit callback")
                pool.close()
                pool.join()
        else:
            results = map(_prepare_worker, todo)
            for rec in progress(results, len(todo)) if progress else results:
                records[rec["file"]] = rec
    for src in sources:  # where each file was read from, for evaluation baselines that re-render it
        records[src.rel]["path"] = str(src.path)
        if src.audio is not None:
            records[src.rel]["audio_path"] = str(src.audio)
    manifest = {
        "version": CACHE_VERSION,
        "config": {"features": cfg.to_dict()["features"], "render": cfg.to_dict()["render"]},
        "audio": {"sample_rate": cfg.features.sample_rate, "channels": cfg.features.channels, "dtype": "int16"},
        "pieces": [records[s.rel] for s in sources if "skipped" not in records[s.rel]],
        "skipped": [
            {"file": r["file"], "reason": r["skipped"]} for s in sources if "skipped" in (r := records[s.rel])
        ],
    }
    if cfg.render.source == "recorded":
        from .recordings import Limits, settings

        manifest["recordings"] = settings(limits or Limits())
    if cfg.render.source == "sfizz":
        manifest["grand"] = _grand_identity()
    save_json(cache_dir / MANIFEST, manifest)
    return cache_dir


DISK_MARGIN = 1.1  # the estimate's margin: features, note tables, records and the file system's own


def cache_bytes(seconds: float, features: FeatureConfig) -> int:
    """Bytes that ``seconds`` of pieces take in a cache: int16 audio of every channel, and uint8
    features (the note tables are a few bytes per note)."""
    audio = seconds * features.sample_rate * features.channels * 2
    return int(audio + seconds * features.frame_rate * features.n_channels)


def check_disk_space(sources: list[SourceFile], cache_dir: Path, features: FeatureConfig) -> None:
    """Raises CacheError in one line when the free space under ``cache_dir`` is short of what the
    pieces to do will take (their durations from splits.csv, else from the MIDI file)."""
    if not sources:
        return
    seconds = 0.0
    for src in sources:
        if src.seconds is not None:
            seconds += src.seconds + features.tail_seconds
        else:
            try:
                seconds += read_midi(src.path).end_s + features.tail_seconds
            except MidiError:
                pass  # skipped later with its reason
    need = DISK_MARGIN * cache_bytes(seconds, features)
    free = shutil.disk_usage(cache_dir).free
    if need > free:
        raise CacheError(
            f"{cache_dir}: not enough disk space: {len(sources)} piece(s), {seconds / 3600:.1f} h at "
            f"{features.sample_rate} Hz x {features.channels} channel(s) need about {need / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB are free; free space, use --max-hours, or another --out"
        )


# ---------------------------------------------------------------------------------------------
# Reading a cache
# ---------------------------------------------------------------------------------------------


class Cache:
    """A finished cache folder: its manifest, config and memory-mapped pieces."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir)
        path = self.dir / MANIFEST
        if not path.is_file():
            raise CacheError(f"{self.dir}: no {MANIFEST} (not a cache, or prepare did not finish)")
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise CacheError(f"{path}: unreadable ({type(e).__name__}); run prepare again to rewrite it") from e
        if not isinstance(self.manifest, dict) or self.manifest.get("version") != CACHE_VERSION:
            version = self.manifest.get("version") if isinstance(self.manifest, dict) else None
            raise CacheError(f"{self.dir}: cache version {version}, expected {CACHE_VERSION}; run prepare again")
        try:
            cfg = config_from_dict(self.manifest["config"])
            self.pieces: list[dict] = list(self.manifest["pieces"])
            self.skipped: list[dict] = list(self.manifest["skipped"])
            for piece in self.pieces:
                piece["id"], piece["file"], piece["split"], piece["frames"], piece["seconds"]  # noqa: B018
        except (KeyError, TypeError, ValueError) as e:
            raise CacheError(f"{path}: incomplete or damaged ({type(e).__name__}: {e}); run prepare again") from e
        self.features: FeatureConfig = cfg.features
        self.render: RenderConfig = cfg.render

    @property
    def channels(self) -> int:
        """Audio channels of the reference: 1, or 2 for a stereo cache."""
        return self.features.channels

    def check_arrays(self, verify: bool = False) -> list[str]:
        """One line per piece whose arrays do not match the manifest (see check_piece_arrays)."""
        problems = (check_piece_arrays(self.dir / "pieces", p, self.features, verify) for p in self.pieces)
        return [f"{self.dir}: {p}" for p in problems if p]

    def split(self, name: str) -> list[dict]:
        return [p for p in self.pieces if p["split"] == name]

    def load(self, piece: dict) -> tuple[np.ndarray, np.ndarray]:
        """Memory maps one piece: features (frames, channels) uint8 and audio int16, (samples,) or,
        in a stereo cache, (samples, 2)."""
        base = self.dir / "pieces" / piece["id"]
        x = np.load(f"{base}.features.npy", mmap_mode="r")
        y = np.load(f"{base}.audio.npy", mmap_mode="r")
        return x, y

    def load_notes(self, piece: dict) -> np.ndarray:
        """One piece's note table, (notes, 4) int64 (see features.compute_notes)."""
        path = self.dir / "pieces" / f"{piece['id']}.notes.npy"
        if not path.is_file():
            raise CacheError(f"{self.dir}: no note table for {piece['file']}; run prepare again to add them")
        if stale_notes(piece, self.features):
            raise CacheError(
                f"{self.dir}: the note table of {piece['file']} follows an older rule (note_rule {piece.get('note_rule', 1)}, "
                f"now {note_rule(self.features)}); run prepare again: it rewrites the tables and keeps the audio"
            )
        return np.load(path)

    def summary(self) -> dict:
        """Hours and files per split, and skip reasons with their counts."""
        out: dict = {"splits": {}, "files": len(self.pieces), "skipped": len(self.skipped), "reasons": {}}
        for split in SPLITS:
            pieces = self.split(split)
            out["splits"][split] = {
                "files": len(pieces),
                "hours": sum(p["seconds"] for p in pieces) / 3600,
            }
        for s in self.skipped:
            # the reason without the file name, so equal reasons group together
            reason = s["reason"].split(": ", 1)[-1]
            reason = re.sub(r"\(.*\)$", "", reason).strip()
            out["reasons"][reason] = out["reasons"].get(reason, 0) + 1
        return out


class CropDataset:
    """Training or validation crops of ``example_seconds`` from one split of a cache.

    Works as a torch map-style Dataset. Training crops are random but a pure function of
    ``(seed, index)``, so the i-th example of a run is the same on every run and after a resume;
    validation crops are evenly spaced through each piece. Pieces are memory mapped lazily in
    each worker process, so workers start fast and the dataset is never loaded into RAM.

    Items: (features (frames, channels) float32 in 0..1, audio float32 in [-1, 1]): audio is
    (frames * hop,) in a mono cache and (2, frames * hop) in a stereo one.
    """

    def __init__(
        self,
        cache: Cache | str | Path,
        split: str,
        example_seconds: float,
        examples: int | None = None,
        random_crops: bool | None = None,
        seed: int = 0,
        notes_lookback_seconds: float | None = None,
    ):
        self.cache = cache if isinstance(cache, Cache) else Cache(cache)
        # with a lookback, items carry the note table of notes sounding in the crop: those with an
        # onset inside it or up to the lookback before it (longer voices are cut by the decoder)
        self.lookback = None if notes_lookback_seconds is None else round(notes_lookback_seconds * self.cache.features.sample_rate)
        self._notes: dict[int, np.ndarray] = {}
        self.pieces = self.cache.split(split)
        if not self.pieces:
            raise CacheError(f"{self.cache.dir}: no pieces in the {split!r} split")
        fc = self.cache.features
        self.hop = fc.hop_samples
        self.frames = max(1, round(example_seconds * fc.frame_rate))
        self.random = (split == "train") if random_crops is None else random_crops
        self.seed = seed
        lengths = np.array([p["frames"] for p in self.pieces], dtype=np.float64)
        self._weights = lengths / lengths.sum()  # pick pieces in proportion to their length
        if self.random:
            self.examples = examples if examples is not None else 10**9
            self._fixed = None
        else:
            n = examples if examples is not None else len(self.pieces)
            self._fixed = self._even_crops(n, lengths)
            self.examples = len(self._fixed)
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _even_crops(self, n: int, lengths: np.ndarray) -> list[tuple[int, int]]:
        """n crops spread over the split: each piece gets a share by length, evenly spaced."""
        counts = np.maximum(1, np.floor(self._weights * n)).astype(int)
        crops = []
        for i, (count, length) in enumerate(zip(counts, lengths)):
            room = max(0, int(length) - self.frames)
            for k in range(count):
                crops.append((i, int(room * (k + 0.5) / count)))
        return crops[:n] if len(crops) > n else crops

    def __len__(self) -> int:
        return self.examples

    def crop_position(self, index: int) -> tuple[int, int]:
        """(piece index, start frame) of example ``index``."""
        if self._fixed is not None:
            return self._fixed[index]
        rng = np.random.default_rng([self.seed, index])
        piece = int(rng.choice(len(self.pieces), p=self._weights))
        room = max(0, self.pieces[piece]["frames"] - self.frames)
        return piece, int(rng.integers(0, room + 1))

    def _piece(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._maps:
            self._maps[i] = self.cache.load(self.pieces[i])
        return self._maps[i]

    def __getitem__(self, index: int):
        import torch

        piece, start = self.crop_position(index)
        x_all, y_all = self._piece(piece)
        x = np.zeros((self.frames, x_all.shape[1]), dtype=np.float32)
        y = np.zeros((self.frames * self.hop,) + y_all.shape[1:], dtype=np.float32)  # (samples[, 2])
        n = min(self.frames, x_all.shape[0] - start)  # pieces shorter than a crop are zero-padded
        x[:n] = dequantize(np.asarray(x_all[start : start + n]))
        y[: n * self.hop] = np.asarray(y_all[start * self.hop : (start + n) * self.hop], dtype=np.float32) / 32767.0
        if y.ndim == 2:
            y = np.ascontiguousarray(y.T)  # (2, samples): the library's (channels, samples)
        if self.lookback is None:
            return torch.from_numpy(x), torch.from_numpy(y)
        return torch.from_numpy(x), torch.from_numpy(self.crop_notes(piece, start)), torch.from_numpy(y)

    def crop_notes(self, piece: int, start: int) -> np.ndarray:
        """The note table of the crop at frame ``start`` of piece ``piece``, times in samples from
        the crop's first sample. -> (notes, 4) int64"""
        if piece not in self._notes:
            self._notes[piece] = self.cache.load_notes(self.pieces[piece])
        notes = self._notes[piece]
        lo, hi = start * self.hop, (start + self.frames) * self.hop
        a, z = np.searchsorted(notes[:, 2], [lo - self.lookback, hi])  # the table is sorted by onset
        out = notes[a:z].copy()
        out[:, 2:] -= lo
        return out


def collate(items: list[tuple]) -> tuple:
    """Stacks dataset items; note tables of different lengths are padded with key -1 rows.

    [(x, y)] -> (x, y); [(x, notes, y)] -> (x, (batch, max notes, 4), y)
    """
    import torch

    if len(items[0]) == 2:
        return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])
    n = max(1, max(len(notes) for _, notes, _ in items))
    table = torch.full((len(items), n, 4), -1, dtype=torch.long)
    for i, (_, notes, _) in enumerate(items):
        table[i, : len(notes)] = notes
    return torch.stack([a for a, _, _ in items]), table, torch.stack([b for _, _, b in items])

