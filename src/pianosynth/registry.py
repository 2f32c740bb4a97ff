"""The shipped models: one folder of checkpoints and the index beside them (issue 12).

Each model is ``NAME.pt`` in the models folder (the package's ``models/``, or the folder named by
the ``PIANOSYNTH_MODELS_DIR`` environment variable). ``index.json`` beside them names the default
model (its ``"default"`` key: what ``load()`` and ``synthesize`` use when nothing is named, what
``--instrument piano`` and the name ``default`` mean) and lists, for each name, what the
checkpoint's config says (General MIDI program, instrument, sample rate, feature
preset, decoder), the file's size and SHA-1, a hash of its weights, and its test figures with
where they came from: the ``metrics.json`` that ``pianosynth evaluate`` wrote, its cache, split
and clips, and the system read from it. Figures only ever enter through ``add_model`` from such a
file; a model without them shows "-".

A checkpoint in the folder that the index does not list (or lists with another size) is still a
shipped model: its facts are read from its own config, and it has no figures.

``pianosynth export CKPT --name NAME [--results metrics.json] [--default]`` (``add_model``) writes
the slim checkpoint into the folder and its index entry in one go; ``set_default`` (or editing the
``"default"`` line of index.json) makes another shipped model the default.

Index formats: 2 has the ``"default"`` key. Format 1 (and a folder without an index) had none: its
default is the model named ``default`` (``default.pt``), which is still read so.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import PianosynthError
from .fileio import atomic_write, file_sha1, replacing

MODELS_DIR_ENV = "PIANOSYNTH_MODELS_DIR"  # another folder of shipped models (tests, a user's own set)
INDEX_NAME = "index.json"
INDEX_FORMAT = 2  # written; 2 added the top-level "default" key
READ_FORMATS = (1, 2)  # read (format 1: the default is the model named "default")
DEFAULT_ALIAS = "default"  # the name that means the index's default model wherever a model is named
MAX_SHIPPED_BYTES = 20_000_000  # a shipped model file stays at 20 MB or under (issue 12, point 6)
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
FIGURES = ("mrstft", "loudness_r", "note_f1")  # from evaluate's summary: the means over clips


class RegistryError(PianosynthError, ValueError):
    """A model name, an index or an evaluation that cannot be used as asked."""


@dataclass(frozen=True)
class ModelInfo:
    """One shipped model, as ``pianosynth models`` lists it."""

    name: str  # the file's stem: what --model and --instrument take
    path: Path
    program: int  # General MIDI program its reference audio was rendered with (render.program)
    instrument: str  # that program's General MIDI name, e.g. "Acoustic Grand Piano"
    family: str  # its General MIDI family, e.g. "Piano"
    soundfont: str  # the SoundFont's file name
    sample_rate: int
    preset: str  # "performance" (velocities and pedals) or "score" (bare notes)
    decoder: str
    bytes: int
    figures: dict | None = None  # {"mrstft", "loudness_r", "note_f1", "source": {...}} or None
    indexed: bool = True  # False: read from the checkpoint itself, not listed in index.json
    data: str | None = None  # what it was trained on and the terms the weights inherit (index.json "data")
    default: bool = False  # the index's default model (what load() and synthesize use when nothing is named)

    @property
    def reference_credit(self) -> str:
        """Who made the sampled instrument its reference audio was rendered with, and its licence."""
        return reference_credit(self.soundfont)

    def figure(self, key: str, digits: int = 3) -> str:
        """A test figure as text, "-" where there is none."""
        value = (self.figures or {}).get(key)
        return "-" if value is None else f"{value:.{digits}f}"


# The sampled instruments behind the references, by a part of the file's name (lowercase): their
# makers and licences (FluidR3: /usr/share/doc/fluid-soundfont-gm/copyright).
SAMPLED_INSTRUMENTS = (
    ("fluidr3", "FluidR3 GM SoundFont by Frank Wen and contributors (MIT licence)"),
    ("musescore_general", "MuseScore General SoundFont by S. Christian Collins (MIT licence)"),
    ("salamander", "Salamander Grand Piano by Alexander Holm (CC BY 3.0)"),
    ("grand.sfz", "Salamander Grand Piano by Alexander Holm (CC BY 3.0), played by sfizz"),  # prepare --reference grand
)


def reference_credit(soundfont: str) -> str:
    """The maker and licence of the sampled instrument in ``soundfont`` (a file name)."""
    key = Path(soundfont).name.lower()
    for part, credit in SAMPLED_INSTRUMENTS:
        if part in key:
            return credit
    return f"{Path(soundfont).name} (maker and licence not recorded here)"


def models_dir() -> Path:
    """The folder of shipped models: $PIANOSYNTH_MODELS_DIR if set, else the package's own."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env)
    return Path(str(resources.files("pianosynth") / "models"))


def _files(folder: Path, default: str | None) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(folder.glob("*.pt"))} if folder.is_dir() else {}
    if default in files:
        files = {default: files.pop(default), **files}
    return files


def model_files(folder: str | Path | None = None) -> dict[str, Path]:
    """Name -> checkpoint file for every ``*.pt`` in the folder, the default first."""
    folder = Path(folder) if folder is not None else models_dir()
    return _files(folder, default_name(folder))


def instrument_name(program: int) -> str:
    """General MIDI program 0..127 -> its name ("Acoustic Grand Piano", "Harpsichord", ...)."""
    import pretty_midi

    return pretty_midi.program_to_instrument_name(int(program))


def instrument_family(program: int) -> str:
    import pretty_midi

    return pretty_midi.program_to_instrument_class(int(program))


# ---------------------------------------------------------------------------------------------
# The index
# ---------------------------------------------------------------------------------------------


def _read(folder: Path) -> tuple[dict[str, dict], str | None]:
    """(name -> index entry, the default model's name) of a models folder: the index's "default";
    for an index without one (format 1) or no index, the model named "default" if there is one."""
    path = folder / INDEX_NAME
    models, default = {}, None
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise RegistryError(f"{path}: not a readable model index ({e})") from e
        if not isinstance(data, dict) or data.get("format") not in READ_FORMATS or not isinstance(data.get("models"), dict):
            raise RegistryError(f"{path}: not a model index of format {' or '.join(map(str, READ_FORMATS))}")
        models, default = data["models"], data.get("default")
        if default is not None and (not isinstance(default, str) or not NAME_PATTERN.match(default)):
            raise RegistryError(f"{path}: \"default\" must be a model's name, got {default!r}")
    if default is None and (DEFAULT_ALIAS in models or (folder / f"{DEFAULT_ALIAS}.pt").is_file()):
        default = DEFAULT_ALIAS  # format 1: the default was the model of that name
    return models, default


def read_index(folder: str | Path | None = None) -> dict[str, dict]:
    """Name -> index entry; {} where there is no index.

    Raises:
        RegistryError: the index exists but is not one this version reads.
    """
    return _read(Path(folder) if folder is not None else models_dir())[0]


def default_name(folder: str | Path | None = None) -> str | None:
    """The default model's name: the index's ``"default"``; for a format-1 index or a folder
    without an index, the model named "default" where there is one; else None.

    Raises:
        RegistryError: the index exists but is not one this version reads.
    """
    return _read(Path(folder) if folder is not None else models_dir())[1]


def resolve_name(name: str, folder: str | Path | None = None) -> str:
    """A model's name as a user gives it: ``default`` is the default model's own name (where the
    folder has a default); any other name is itself."""
    if name == DEFAULT_ALIAS:
        return default_name(folder) or name
    return name


def write_index(models: dict[str, dict], folder: str | Path | None = None, default: str | None = None) -> Path:
    """Writes the index atomically, names sorted, the default first. ``default``: the default
    model's name; None keeps the folder's current default."""
    folder = Path(folder) if folder is not None else models_dir()
    if default is None:
        try:
            default = _read(folder)[1]
        except RegistryError:  # an unreadable index is being replaced: it names nothing
            default = DEFAULT_ALIAS if DEFAULT_ALIAS in models else None
    ordered = dict(sorted(models.items(), key=lambda kv: (kv[0] != default, kv[0])))
    data = {"format": INDEX_FORMAT, **({"default": default} if default is not None else {}), "models": ordered}
    path = folder / INDEX_NAME
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1) + "\n"))
    return path


def weights_hash(state: dict) -> str:
    """A hash of a checkpoint's weights alone (``state["model"]``): the same for a training
    checkpoint and its slim export, so figures measured on one can be matched to the other."""
    from .checkpoint import checkpoint_checksum

    return checkpoint_checksum({"model": state["model"]})


def describe_checkpoint(path: str | Path, state: dict | None = None) -> dict:
    """The index entry's facts, read from the checkpoint's config (no figures)."""
    from .checkpoint import CheckpointError, load_checkpoint
    from .config import ConfigError, config_from_dict
    from .grand import SFZ_NAME

    path = Path(path)
    state = state if state is not None else load_checkpoint(path)
    if not isinstance(state.get("config"), dict) or not isinstance(state.get("model"), dict):
        raise CheckpointError(f"{path}: not a complete checkpoint (no config or no weights)")
    try:
        cfg = config_from_dict(state["config"])
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: its config is not one this version can read ({e})") from e
    return {
        "file": path.name,
        "program": cfg.render.program,
        "instrument": instrument_name(cfg.render.program),
        "family": instrument_family(cfg.render.program),
        # the reference's instrument: the grand's SFZ file for a sfizz cache, else the SoundFont
        "soundfont": SFZ_NAME if cfg.render.source == "sfizz" else Path(cfg.render.soundfont).name,
        "sample_rate": cfg.features.sample_rate,
        "preset": cfg.features.preset,
        "decoder": cfg.model.decoder,
        "bytes": path.stat().st_size,
        "sha1": file_sha1(path),
        "weights": weights_hash(state),
    }


def _info(name: str, path: Path, entry: dict, indexed: bool, default: bool = False) -> ModelInfo:
    return ModelInfo(
        name=name, path=path, program=int(entry["program"]), instrument=entry["instrument"], family=entry["family"],
        soundfont=entry["soundfont"], sample_rate=int(entry["sample_rate"]), preset=entry["preset"],
        decoder=entry["decoder"], bytes=int(entry["bytes"]), figures=entry.get("figures"), indexed=indexed,
        data=entry.get("data"), default=default,
    )  # fmt: skip


def shipped(folder: str | Path | None = None) -> dict[str, ModelInfo]:
    """Every shipped model by name, the default first. Index entries are trusted where the file's
    size agrees (``check`` compares SHA-1s too); any other checkpoint is read from its config."""
    folder = Path(folder) if folder is not None else models_dir()
    index, default = _read(folder)
    out = {}
    for name, path in _files(folder, default).items():
        entry = index.get(name)
        if entry is not None and entry.get("file") == path.name and entry.get("bytes") == path.stat().st_size:
            out[name] = _info(name, path, entry, indexed=True, default=name == default)
        else:
            out[name] = _info(name, path, describe_checkpoint(path), indexed=False, default=name == default)
    return out


def check(folder: str | Path | None = None) -> list[str]:
    """Problems between the index and the files: entries without a file, files without an entry,
    SHA-1s that differ. Empty when they agree."""
    folder = Path(folder) if folder is not None else models_dir()
    index, default = _read(folder)
    files = _files(folder, default)
    problems = [f"{name}: listed in {INDEX_NAME} but {folder / (name + '.pt')} is missing" for name in index if name not in files]
    if default is not None and default not in files and default not in index:
        problems.append(f"{INDEX_NAME} names {default!r} as the default model, but there is no such model in {folder}")
    elif files and default is None:
        problems.append(f"no default model: name one in {INDEX_NAME} (\"default\") or with pianosynth export CKPT --name NAME --default")
    for name, path in files.items():
        entry = index.get(name)
        if entry is None:
            problems.append(f"{name}: {path.name} is not in {INDEX_NAME} (no figures); add it with pianosynth export {path} --name {name}")
        elif entry.get("sha1") != file_sha1(path):
            problems.append(f"{name}: {path.name} is not the file {INDEX_NAME} describes (SHA-1 differs); export it again")
    return problems


# ---------------------------------------------------------------------------------------------
# Choosing a model
# ---------------------------------------------------------------------------------------------


def known_instruments(models: dict[str, ModelInfo]) -> str:
    """"fluidr3 (Acoustic Grand Piano), harpsichord (Harpsichord)": for error messages."""
    return ", ".join(f"{m.name} ({m.instrument}{', score mode' if m.preset == 'score' else ''})" for m in models.values()) or "none"


def find_instrument(name: str, folder: str | Path | None = None) -> ModelInfo:
    """A shipped model for ``--instrument NAME``: a model's name; "piano" or "default" for the
    default; or a General MIDI instrument name ("harpsichord"), matched without case, performance
    models first (the default before others).

    Raises:
        RegistryError: one line listing the shipped models.
    """
    models = shipped(folder)
    key = str(name).strip().lower()
    if key in models:
        return models[key]
    if key in ("piano", DEFAULT_ALIAS):
        default = next((m for m in models.values() if m.default), None)
        if default is not None:
            return default
    by_gm = [m for m in models.values() if m.instrument.lower() == key]
    by_gm.sort(key=lambda m: m.preset != "performance")
    if by_gm:
        return by_gm[0]
    raise RegistryError(f"unknown instrument {name!r}; shipped: {known_instruments(models)}")


# ---------------------------------------------------------------------------------------------
# Adding a model
# ---------------------------------------------------------------------------------------------


def figures_from_metrics(path: str | Path, system: str | None = None, weights: str | None = None) -> dict:
    """Test figures for one model from a ``metrics.json`` written by ``pianosynth evaluate``.

    Args:
        system: the model system's name in it; may be left out when it holds one model.
        weights: the model's ``weights_hash``; where the evaluation recorded one for the system,
            the two must agree (the figures are this model's, not another's).

    Raises:
        RegistryError: unreadable file, no such system, several to choose from, other weights.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    try:
        result = json.loads(path.read_text())
        systems = result["systems"]
        summary = result["summary"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RegistryError(f"{path}: not a metrics.json written by pianosynth evaluate ({type(e).__name__}: {e})") from e
    candidates = [s for s in systems if s.get("kind") == "model"]
    names = ", ".join(repr(s["name"]) for s in candidates) or "none"
    if system is not None:
        chosen = [s for s in candidates if s["name"] == system]
        if not chosen:
            raise RegistryError(f"{path}: no model system {system!r}; it holds {names}")
    elif len(candidates) != 1:
        raise RegistryError(f"{path}: {len(candidates)} model systems ({names}); name one with --system")
    else:
        chosen = candidates
    picked = chosen[0]
    if weights is not None and picked.get("weights") is not None and picked["weights"] != weights:
        raise RegistryError(f"{path}: {picked['name']!r} was evaluated with other weights than this checkpoint's")
    stats = summary[picked["name"]]

    def mean(key: str):
        value = (stats.get(key) or {}).get("mean")
        return None if value is None or not math.isfinite(value) else float(value)

    clips = result.get("clips") or []
    return {
        **{key: mean(key) for key in FIGURES},
        "source": {
            "metrics": str(path),
            "system": picked["name"],
            "cache": result.get("cache"),
            "split": result.get("split"),
            "clips": len(clips),
            "seconds": clips[0]["seconds"] if clips else None,
            "weights_checked": picked.get("weights") is not None and weights is not None,
        },
    }


def add_model(
    checkpoint: str | Path,
    name: str,
    folder: str | Path | None = None,
    results: str | Path | None = None,
    system: str | None = None,
    force: bool = False,
    default: bool = False,
    data: str | None = None,
) -> ModelInfo:
    """Ships ``checkpoint`` as ``NAME.pt`` (slimmed, as ``pianosynth export``) and indexes it,
    with test figures from an evaluation's ``metrics.json`` if ``results`` is given; ``default``:
    it becomes the folder's default model too (``set_default``); ``data``: what it was trained on
    and the terms its weights inherit (``pianosynth models`` prints it).

    The checkpoint may already be the shipped file (to add or refresh its figures): it is then
    indexed where it is, not rewritten. Re-exporting other weights under a name drops the old
    figures unless ``results`` gives new ones.

    Raises:
        RegistryError: a bad name, an existing file without ``force``, a file over the size limit,
            figures that do not belong to these weights; with ``default``, a model that cannot be
            the default (it is shipped all the same).
    """
    from .checkpoint import export_checkpoint, load_checkpoint

    if not NAME_PATTERN.match(name):
        raise RegistryError(f"model name {name!r}: use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit")
    if name == DEFAULT_ALIAS:
        raise RegistryError(f"model name {name!r} means the index's default model; give the model its own name, and --default to make it the default")
    folder = Path(folder) if folder is not None else models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / f"{name}.pt"
    src = Path(checkpoint)
    in_place = dst.exists() and src.exists() and os.path.samefile(src, dst)
    index = read_index(folder)
    if not in_place:
        if dst.exists() and not force:
            raise RegistryError(f"{dst} exists; pass --force to replace the shipped model {name!r}")
        with replacing(dst) as tmp:  # an unpredictable name of our own (fileio)
            export_checkpoint(src, tmp)
            size = tmp.stat().st_size
            if size > MAX_SHIPPED_BYTES:
                raise RegistryError(f"{src}: the slim checkpoint is {size / 1e6:.1f} MB, over the {MAX_SHIPPED_BYTES / 1e6:g} MB limit for a shipped model")
    state = load_checkpoint(dst)
    entry = describe_checkpoint(dst, state)
    if entry["bytes"] > MAX_SHIPPED_BYTES:
        raise RegistryError(f"{dst}: {entry['bytes'] / 1e6:.1f} MB, over the {MAX_SHIPPED_BYTES / 1e6:g} MB limit for a shipped model")
    old = index.get(name) or {}
    if results is not None:
        entry["figures"] = figures_from_metrics(results, system=system, weights=entry["weights"])
    elif old.get("figures") and old.get("weights") == entry["weights"]:
        entry["figures"] = old["figures"]  # the same weights keep their figures
    if data is not None:
        if not data.strip():
            raise RegistryError("--data: say what the model was trained on and under which terms")
        entry["data"] = data.strip()
    elif old.get("data") and old.get("weights") == entry["weights"]:
        entry["data"] = old["data"]  # and what they were trained on
    index[name] = entry
    write_index(index, folder)
    if default:
        return set_default(name, folder)
    return _info(name, dst, entry, indexed=True, default=name == default_name(folder))


def set_default(name: str, folder: str | Path | None = None) -> ModelInfo:
    """Makes the shipped model ``name`` the folder's default: ``"default": NAME`` in index.json
    (format 2). From then on ``load()``, ``synthesize`` without ``--model``, ``--instrument piano``,
    the name ``default`` and the programs without a model of their own use it.

    Raises:
        RegistryError: no such indexed model or no file for it, or a score-mode model (the default
            plays every performance).
    """
    folder = Path(folder) if folder is not None else models_dir()
    index = read_index(folder)
    entry = index.get(name)
    if entry is None:
        raise RegistryError(f"no model {name!r} in {folder / INDEX_NAME}; ship it first with pianosynth export CKPT --name {name}")
    path = folder / entry["file"]
    if not path.is_file():
        raise RegistryError(f"{name!r}: {path} is missing")
    if entry.get("preset") != "performance":
        raise RegistryError(f"{name!r} is a {entry.get('preset')}-mode model; the default plays every performance, so it must be a performance-mode model")
    write_index(index, folder, default=name)
    return _info(name, path, entry, indexed=True, default=True)


# ---------------------------------------------------------------------------------------------
# When a score-mode model plays by itself (issue 19)
# ---------------------------------------------------------------------------------------------

# A score-mode model's figures hold, under this key, the test figures of its instrument's default
# model fed velocity 64 everywhere (``evaluate --flat-velocity 64``) on the same test split: what
# playing a one-velocity file with the default would score. The score model is chosen by itself
# only where it beats them on both MR-STFT and loudness r (``score_model_verdict``). Its
# instrument's default is a performance-mode model of the same program that learned the same
# reference (soundfont): for the FluidR3 score model, fluidr3, whichever model the index names as
# the default (``velocity64_baseline_model``).
VELOCITY64 = "default_at_velocity_64"


def velocity64_baseline_model(entry: dict, index: dict[str, dict], default: str | None = None) -> str | None:
    """The name of a score-mode model's instrument's default (``entry``: its index entry): among
    the performance-mode models of its program that learned the same reference, one of its sample
    rate first, then the index's default, then by name. None where there is none."""
    candidates = [
        n for n, e in index.items()
        if e.get("preset") == "performance" and e.get("program") == entry.get("program") and e.get("soundfont") == entry.get("soundfont")
    ]  # fmt: skip
    candidates.sort(key=lambda n: (index[n].get("sample_rate") != entry.get("sample_rate"), n != default, n))
    return candidates[0] if candidates else None


def record_velocity64_baseline(name: str, results: str | Path, system: str | None = None, folder: str | Path | None = None) -> ModelInfo:
    """Records on score-mode model ``name``'s index entry the figures of its instrument's default
    model (``velocity64_baseline_model``: same program and reference) fed velocity 64, read from
    that evaluation's ``metrics.json`` (their weights must be that model's).

    Raises:
        RegistryError: no such model, not a score-mode model, no figures of its own, no
            performance-mode model of its program and reference, or figures of other weights.
    """
    folder = Path(folder) if folder is not None else models_dir()
    index, default = _read(folder)
    entry = index.get(name)
    if entry is None:
        raise RegistryError(f"no model {name!r} in {folder / INDEX_NAME}")
    if entry.get("preset") != "score":
        raise RegistryError(f"{name!r} is a {entry.get('preset')}-mode model; the velocity-64 baseline is for score-mode models")
    if not entry.get("figures"):
        raise RegistryError(f"{name!r} has no test figures of its own to compare; export it with --results first")
    baseline = velocity64_baseline_model(entry, index, default)
    if baseline is None:
        raise RegistryError(
            f"no performance-mode model of program {entry['program']} that learned {entry.get('soundfont')} to be {name!r}'s baseline"
        )
    figures = figures_from_metrics(results, system=system, weights=index[baseline].get("weights"))
    figures["source"]["model"] = baseline
    entry["figures"][VELOCITY64] = figures
    write_index(index, folder)
    return _info(name, folder / entry["file"], entry, indexed=True)


def velocity64_baseline_name(info: ModelInfo) -> str | None:
    """The model whose velocity-64 figures a score-mode model's were compared with, as recorded."""
    return (((info.figures or {}).get(VELOCITY64) or {}).get("source") or {}).get("model")


def score_model_verdict(info: ModelInfo) -> tuple[bool, str]:
    """Whether a score-mode model plays one-velocity files by itself: only where its recorded test
    figures beat its instrument's default fed velocity 64 on both MR-STFT (lower) and loudness r
    (higher). -> (verdict, the figures compared, as text)"""
    figures = info.figures or {}
    base = figures.get(VELOCITY64) or {}
    keys = ("mrstft", "loudness_r")
    if any(figures.get(k) is None or base.get(k) is None for k in keys):
        return False, "no recorded test figures against its default at velocity 64"
    beats = figures["mrstft"] < base["mrstft"] and figures["loudness_r"] > base["loudness_r"]
    detail = (
        f"test MR-STFT {figures['mrstft']:.3f} against {base['mrstft']:.3f}, "
        f"loudness r {figures['loudness_r']:.3f} against {base['loudness_r']:.3f}"
    )
    return beats, detail


def listing(models: dict[str, ModelInfo]) -> str:
    """The table ``pianosynth models`` prints, the default marked "(default)"."""
    head = ("name", "instrument", "program", "rate", "preset", "size", "MR-STFT", "loudness r", "note F1", "evaluated on")
    rows = []
    for m in models.values():
        src = (m.figures or {}).get("source") or {}
        on = f"{src.get('clips')} x {src.get('seconds'):g} s, {src.get('split')} of {src.get('cache')}" if src.get("clips") else "-"
        rows.append((
            f"{m.name} (default)" if m.default else m.name, m.instrument, str(m.program), f"{m.sample_rate} Hz", m.preset, f"{m.bytes / 1e6:.1f} MB",
            m.figure("mrstft"), m.figure("loudness_r"), m.figure("note_f1"), on,
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    lines.append("")
    lines.append("licences (the code is MIT; the weights carry their training data's terms):")
    for m in models.values():
        lines.append(f"  {m.name}: trained on {m.data or '(not recorded)'}")
        lines.append(f"  {' ' * len(m.name)}  reference: {m.reference_credit}")
    return "\n".join(lines)
