"""Packs part of a prepared cache small enough to travel, and unpacks it into a cache that
``pianosynth train`` reads: how the grand's GPU run got its data onto a machine that has no
network and takes at most 64 MiB per call (docs/grand.md, "The GPU run").

A 48 kHz stereo cache is 4.5 GB of int16 for its 6.5 training hours. Packed, each piece's
reference audio is decimated by 3 to 16 kHz (``scipy.signal.resample_poly``) and stored as 16-bit
FLAC; features and the note table go into a compressed ``.npz``. Unpacking interpolates back to
the cache's rate and length. The Salamander samples hold little above 8 kHz: the measured cost of
band-limiting the grand to 16 kHz sampling is 0.003-0.004 of floored MR-STFT per channel, and the
round trip here leaves an error about 55 dB below the signal (``roundtrip_error_db``). Everything
else is the cache's own: features, notes, config, splits, records (the audio's hash is the new
audio's, and each record says it was packed).

Pieces are taken in a fixed order (SHA-1 of the piece id), the valid split first up to
``--valid-seconds``, then train pieces. Each is packed once into ``OUT/pieces``; chunks of at
most ``--chunk-mib`` then hard-link them, first fit in that order, until ``--chunks`` are full. Usage::

    python scripts/pack_cache.py pack CACHE OUT --chunks 2 --chunk-mib 40
    python scripts/pack_cache.py unpack OUT/chunk-* --cache DEST   # needs numpy, scipy, soundfile

Unpacking more chunks into the same DEST adds their pieces (a resumed transfer).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pianosynth.dataset import CACHE_VERSION, MANIFEST, _save_npy, save_json  # noqa: E402
from pianosynth.fileio import file_sha1  # noqa: E402

PACK_RATE = 16000
PACK = "pack.json"


def _order(piece: dict) -> str:
    return hashlib.sha1(piece["id"].encode()).hexdigest()


def _int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def decimate(audio: np.ndarray, factor: int) -> np.ndarray:
    """int16 audio (samples[, channels]) -> int16 at 1 / ``factor`` of its rate: what is packed."""
    from scipy.signal import resample_poly

    return _int16(resample_poly(audio.astype(np.float32), 1, factor, axis=0))


def restore(low: np.ndarray, factor: int, samples: int) -> np.ndarray:
    """``decimate``'s output -> int16 at ``factor`` times its rate, ``samples`` long: what is unpacked."""
    from scipy.signal import resample_poly

    return _int16(resample_poly(low.astype(np.float32), factor, 1, axis=0)[:samples])


def pack_piece(cache_dir: Path, piece: dict, sample_rate: int, out: Path) -> int:
    """Writes <id>.flac and <id>.npz under ``out``; returns their bytes."""
    import soundfile as sf

    base = cache_dir / "pieces" / piece["id"]
    low16 = decimate(np.load(f"{base}.audio.npy"), sample_rate // PACK_RATE)
    buf = io.BytesIO()
    sf.write(buf, low16, PACK_RATE, format="FLAC", subtype="PCM_16", compression_level=1.0)
    (out / f"{piece['id']}.flac").write_bytes(buf.getvalue())
    np.savez_compressed(out / f"{piece['id']}.npz", features=np.load(f"{base}.features.npy"), notes=np.load(f"{base}.notes.npy"))
    return len(buf.getvalue()) + (out / f"{piece['id']}.npz").stat().st_size


def pack(cache_dir: Path, out: Path, chunks: int, chunk_mib: float, valid_seconds: float) -> list[Path]:
    manifest = json.loads((cache_dir / MANIFEST).read_text())
    sample_rate = manifest["config"]["features"]["sample_rate"]
    if sample_rate % PACK_RATE:
        raise SystemExit(f"error: {cache_dir}: {sample_rate} Hz is not a multiple of {PACK_RATE} Hz")
    pieces = sorted(manifest["pieces"], key=_order)
    valid = [p for p in pieces if p["split"] == "valid"]
    train = [p for p in pieces if p["split"] == "train"]
    queue: list[dict] = []
    total = 0.0
    for p in valid:
        if total + p["seconds"] <= valid_seconds or not queue:
            queue.append(p)
            total += p["seconds"]
    queue += train
    staged = out / "pieces"  # every piece packed once; chunks hard-link what they hold
    staged.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for p in queue:
        if (staged / f"{p['id']}.npz").is_file():  # packed by an earlier run
            sizes[p["id"]] = sum((staged / f"{p['id']}.{ext}").stat().st_size for ext in ("flac", "npz"))
        else:
            sizes[p["id"]] = pack_piece(cache_dir, p, sample_rate, staged)
    limit = chunk_mib * 2**20
    written = []
    for k in range(1, chunks + 1):
        folder = out / f"chunk-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        records, size, rest = [], 0, []
        for p in queue:  # first fit, in the fixed order
            if size + sizes[p["id"]] > limit and (records or rest):  # a piece larger than a chunk goes alone
                rest.append(p)
                continue
            for ext in ("flac", "npz"):
                target = folder / f"{p['id']}.{ext}"
                if not target.exists():
                    target.hardlink_to(staged / f"{p['id']}.{ext}")
            records.append(p)
            size += sizes[p["id"]]
        queue = rest
        head = {k2: v for k2, v in manifest.items() if k2 not in ("pieces", "skipped")}
        head["pieces"], head["packed"] = records, {"from": str(cache_dir), "rate": PACK_RATE}
        save_json(folder / PACK, head)
        hours = {s: sum(r["seconds"] for r in records if r["split"] == s) / 3600 for s in ("train", "valid")}
        print(f"{folder}: {len(records)} pieces, {size / 2**20:.1f} MiB, train {hours['train']:.2f} h, valid {hours['valid']:.2f} h", flush=True)
        written.append(folder)
        if not queue:
            break
    return written


def unpack(chunks: list[Path], dest: Path) -> dict:
    """Adds every piece of ``chunks`` to the cache at ``dest`` (made if missing)."""
    import soundfile as sf

    pieces_dir = dest / "pieces"
    pieces_dir.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((dest / MANIFEST).read_text()) if (dest / MANIFEST).is_file() else None
    for chunk in chunks:
        head = json.loads((chunk / PACK).read_text())
        if head.get("version") != CACHE_VERSION:
            raise SystemExit(f"error: {chunk}: cache version {head.get('version')}, expected {CACHE_VERSION}")
        if manifest is None:
            manifest = {k: v for k, v in head.items() if k not in ("pieces", "packed")} | {"pieces": [], "skipped": []}
        elif manifest["config"] != head["config"]:
            raise SystemExit(f"error: {chunk}: packed from a cache of other settings than {dest}")
        have = {p["id"] for p in manifest["pieces"]}
        rate = head["config"]["features"]["sample_rate"]
        for record in head["pieces"]:
            if record["id"] in have:
                continue
            low, low_rate = sf.read(chunk / f"{record['id']}.flac", dtype="int16", always_2d=True)
            shape = tuple(record["arrays"]["audio"]["shape"])
            audio = restore(low, rate // low_rate, shape[0]).reshape(shape)
            with np.load(chunk / f"{record['id']}.npz") as z:
                arrays = {"audio": audio, "features": z["features"], "notes": z["notes"]}
            record = json.loads(json.dumps(record))
            for kind, array in arrays.items():
                path = pieces_dir / f"{record['id']}.{kind}.npy"
                _save_npy(path, array)
                record["arrays"][kind]["sha1"] = file_sha1(path)
            record["packed"] = {"rate": low_rate}
            save_json(pieces_dir / f"{record['id']}.json", record)
            manifest["pieces"].append(record)
    save_json(dest / MANIFEST, manifest)
    return manifest


def roundtrip_error_db(audio: np.ndarray, sample_rate: int) -> float:
    """Level of (unpacked - original) relative to the original, in dB, for int16 audio."""
    factor = sample_rate // PACK_RATE
    err = restore(decimate(audio, factor), factor, len(audio)).astype(np.float64) - audio
    return float(10 * np.log10(np.mean(err**2) / max(np.mean(audio.astype(np.float64) ** 2), 1e-12)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("cache", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--chunks", type=int, default=1)
    p.add_argument("--chunk-mib", type=float, default=40.0)
    p.add_argument("--valid-seconds", type=float, default=600.0)
    u = sub.add_parser("unpack")
    u.add_argument("chunks", type=Path, nargs="+")
    u.add_argument("--cache", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pack":
        if not (args.cache / MANIFEST).is_file():
            raise SystemExit(f"error: {args.cache}: not a finished cache (no {MANIFEST})")
        pack(args.cache, args.out, args.chunks, args.chunk_mib, args.valid_seconds)
    else:
        for c in args.chunks:
            if not (c / PACK).is_file():
                raise SystemExit(f"error: {c}: not a packed chunk (no {PACK})")
        m = unpack(args.chunks, args.cache)
        hours = {s: sum(r["seconds"] for r in m["pieces"] if r["split"] == s) / 3600 for s in ("train", "valid", "test")}
        print(f"{args.cache}: {len(m['pieces'])} pieces, " + ", ".join(f"{s} {h:.2f} h" for s, h in hours.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
