"""Typed, frozen configuration: YAML in, unknown keys are an error.

A run's configuration is ``configs/base.yaml`` plus an optional override file plus
``--set section.key=value`` pairs. Every section is a frozen dataclass so that a config can be
hashed (cache folders and run folders are named by that hash) and cannot drift after loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .errors import PianosynthError

SUPPORTED_SAMPLE_RATES = (16000, 22050, 24000, 44100, 48000)
SUPPORTED_CHANNELS = (1, 2)  # mono, or the stereo of a reference that has it (issue 18: the grand)
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FEATURE_PRESETS = ("score", "performance")
# Where a cache's reference audio comes from: rendered by FluidSynth from the settings of the
# render section, recordings paired with the MIDI files (issue 12; pianosynth.recordings), or the
# Salamander concert grand played by sfizz (issue 18; pianosynth.grand)
REFERENCE_SOURCES = ("fluidsynth", "recorded", "sfizz")
# The note clock of a reference: where a note's first sample falls (features.compute_notes).
# FluidSynth's file render starts events on its 64-sample block grid; sfizz starts them at their
# own sample. A recording is aligned to the FluidSynth clock (recordings.py).
NOTE_CLOCKS = ("fluidsynth", "sfizz")
NOTE_CLOCK_OF_SOURCE = {"fluidsynth": "fluidsynth", "recorded": "fluidsynth", "sfizz": "sfizz"}
SFIZZ_QUALITIES = range(0, 11)  # sfizz's set_sample_quality: 0 (nearest) .. 10 (best interpolation)


LR_SCHEDULES = ("constant", "cosine")
# Names the library registers elsewhere (model.CELLS, decoders.DECODERS, losses.LOSSES), repeated
# here so that a config is checked without importing torch; tests/test_config.py keeps them equal.
CELLS = ("gru", "lstm", "rnn")
DECODERS = ("ddsp", "frames", "grand", "istft", "voices")
WINDOWS = ("ola", "rect")
LOSSES = ("complex", "floored", "ild", "l1", "logmag", "mrstft", "mse")
MAX_HIDDEN = 4096  # hidden units per direction: 4096 is ~100M weights a layer pair, far past any use here


class ConfigError(PianosynthError, ValueError):
    """A configuration file or ``--set`` override that does not fit the schema."""


def _require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raises ConfigError naming the key, the value and what is allowed, unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _in(x: Any, lo: float, hi: float) -> bool:
    """A finite number in [lo, hi]."""
    return _finite(x) and lo <= x <= hi


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # audio samples per second; one of SUPPORTED_SAMPLE_RATES
    hop_samples: int = 256  # audio samples per feature frame; frame_rate = sample_rate / hop_samples
    preset: str = "performance"  # "score": the report's 176 binary channels; "performance": + velocity + pedals
    tail_seconds: float = 1.0  # silence kept after the last event so that release tails are learned
    channels: int = 1  # audio channels of the reference: 1 (mono) or 2 (stereo, where the reference has it)
    note_clock: str = "fluidsynth"  # where a note's first sample falls: one of NOTE_CLOCKS (the reference's)

    def __post_init__(self) -> None:
        if self.sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ConfigError(
                f"features.sample_rate must be one of {SUPPORTED_SAMPLE_RATES}, got {self.sample_rate}"
            )
        _require(_in(self.hop_samples, 1, 8192), "features.hop_samples", self.hop_samples, "an integer in 1..8192")
        if self.preset not in FEATURE_PRESETS:
            raise ConfigError(f"features.preset must be one of {FEATURE_PRESETS}, got {self.preset!r}")
        _require(_in(self.tail_seconds, 0, 60), "features.tail_seconds", self.tail_seconds, "in 0..60 seconds")
        _require(self.channels in SUPPORTED_CHANNELS, "features.channels", self.channels, f"one of {SUPPORTED_CHANNELS}")
        _require(self.note_clock in NOTE_CLOCKS, "features.note_clock", self.note_clock, f"one of {NOTE_CLOCKS}")

    @property
    def frame_rate(self) -> float:
        """Feature frames per second: the project's one frame clock."""
        return self.sample_rate / self.hop_samples

    @property
    def velocity(self) -> bool:
        """Whether the 88 onset-velocity channels are present."""
        return self.preset == "performance"

    @property
    def pedals(self) -> bool:
        """Whether the 3 pedal channels (sustain, sostenuto, soft) are present."""
        return self.preset == "performance"

    @property
    def n_channels(self) -> int:
        """Channels of the pitch-encoding matrix: 176 binary, + 88 velocity, + 3 pedals."""
        return 176 + (88 if self.velocity else 0) + (3 if self.pedals else 0)


@dataclass(frozen=True)
class RenderConfig:
    soundfont: str = DEFAULT_SOUNDFONT  # path of the .sf2 that renders the reference audio
    program: int = 0  # General MIDI program every note is played with (0: FluidR3's Yamaha Grand Piano)
    bank: int = 0  # SoundFont bank of that program
    gain: float = 0.2  # FluidSynth's master gain (0.2 is FluidSynth's own default)
    # "fluidsynth": the reference is rendered with the settings above; "recorded": it is a recording
    # of the performance (prepare --recordings), and the settings above give the SoundFont render
    # that evaluate sets beside it as a baseline; "sfizz": the Salamander grand played by sfizz
    # with the two settings below (pianosynth.grand)
    source: str = "fluidsynth"
    # sfizz only: set_sample_quality, 0..10 (docs/grand.md measures the choice: quality 10 and 1
    # differ by far less than any model does, and 1 renders several times faster)
    sfizz_quality: int = 1
    sfizz_voices: int = 256  # sfizz only: polyphony (set_num_voices); the oldest voice is stolen past it

    def __post_init__(self) -> None:
        _require(self.source in REFERENCE_SOURCES, "render.source", self.source, f"one of {REFERENCE_SOURCES}")
        _require(self.sfizz_quality in SFIZZ_QUALITIES, "render.sfizz_quality", self.sfizz_quality, "an integer in 0..10")
        _require(_in(self.sfizz_voices, 1, 4096), "render.sfizz_voices", self.sfizz_voices, "an integer in 1..4096")
        if not 0 <= self.program <= 127:
            raise ConfigError(f"render.program must be in 0..127, got {self.program}")
        if not 0 <= self.bank <= 16383:
            raise ConfigError(f"render.bank must be in 0..16383, got {self.bank}")
        _require(_in(self.gain, 1e-6, 10), "render.gain", self.gain, "in (0, 10]")
        _require(bool(self.soundfont), "render.soundfont", self.soundfont, "a path")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gru"  # recurrent cell of the encoder: lstm, gru or rnn
    layers: int = 2  # stacked recurrent layers, 1 to 4
    hidden: int = 256  # hidden units per direction
    bidirectional: bool = True  # the report's BiRNN; False is an ablation
    decoder: str = "frames"  # the part that turns encoder states into audio (see model.DECODERS)
    window: str = "ola"  # frames decoder: "rect" emits hop_samples per frame; "ola" emits 2*hop, Hann overlap-add
    dropout: float = 0.0  # dropout between recurrent layers, in [0, 1)
    reverb_seconds: float = 0.0  # a learned room (reverb.Reverb) this long after the decoder; 0: none (a dry sampler's sound)

    def __post_init__(self) -> None:
        _require(self.cell in CELLS, "model.cell", self.cell, f"one of {CELLS}")
        _require(_in(self.layers, 1, 4), "model.layers", self.layers, "an integer in 1..4")
        _require(_in(self.hidden, 1, MAX_HIDDEN), "model.hidden", self.hidden, f"an integer in 1..{MAX_HIDDEN}")
        _require(self.decoder in DECODERS, "model.decoder", self.decoder, f"one of {DECODERS}")
        _require(self.window in WINDOWS, "model.window", self.window, f"one of {WINDOWS}")
        _require(_finite(self.dropout) and 0 <= self.dropout < 1, "model.dropout", self.dropout, "in [0, 1)")
        _require(_in(self.reverb_seconds, 0, 10), "model.reverb_seconds", self.reverb_seconds, "in 0..10 seconds")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 16  # examples per optimisation step
    example_seconds: float = 2.0  # duration of one training crop
    learning_rate: float = 1e-3  # Adam step size
    steps: int = 2000  # optimisation steps in total
    loss: dict = field(default_factory=lambda: {"logmag": 1.0})  # loss name -> weight (see losses.LOSSES)
    valid_every: int = 200  # steps between validations
    valid_examples: int = 32  # deterministic validation crops
    checkpoint_every: int = 100  # steps between "last" checkpoints
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    seed: int = 0  # seeds model init and the crop sequence
    num_workers: int = 0  # DataLoader worker processes
    max_minutes: float = 0.0  # wall-clock budget; 0 means only `steps` limits the run
    lr_schedule: str = "constant"  # constant, or cosine: decay to 0 over the steps or the time budget, whichever ends first
    init_from: str = ""  # a checkpoint, or a shipped model's name, whose weights start a fresh run ("": random)

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        _require(_in(self.batch_size, 1, 4096), "train.batch_size", self.batch_size, "an integer in 1..4096")
        _require(
            _finite(self.example_seconds) and 0 < self.example_seconds <= 600,
            "train.example_seconds", self.example_seconds, "in (0, 600] seconds",
        )  # fmt: skip
        _require(
            _finite(self.learning_rate) and self.learning_rate > 0,
            "train.learning_rate", self.learning_rate, "a finite number > 0",
        )  # fmt: skip
        _require(_in(self.steps, 1, 10**12), "train.steps", self.steps, "an integer >= 1")
        _require(
            isinstance(self.loss, dict) and len(self.loss) > 0 and set(self.loss) <= set(LOSSES),
            "train.loss", self.loss, f"a non-empty mapping of loss names {LOSSES} to weights",
        )  # fmt: skip
        for name, weight in self.loss.items():
            _require(_in(weight, 0, 1e6), f"train.loss.{name}", weight, "a weight in 0..1e6")
        _require(any(w > 0 for w in self.loss.values()), "train.loss", self.loss, "at least one weight > 0")
        for key in ("valid_every", "valid_examples", "checkpoint_every"):
            value = getattr(self, key)
            _require(_in(value, 1, 10**12), f"train.{key}", value, "an integer >= 1")
        _require(_in(self.grad_clip, 0, 1e9), "train.grad_clip", self.grad_clip, "in 0..1e9 (0 disables clipping)")
        _require(_in(self.seed, 0, 2**63 - 1), "train.seed", self.seed, "an integer >= 0")
        _require(_in(self.num_workers, 0, 256), "train.num_workers", self.num_workers, "an integer in 0..256")
        _require(isinstance(self.init_from, str), "train.init_from", self.init_from, "a checkpoint path or a shipped model's name")
        _require(_in(self.max_minutes, 0, 1e7), "train.max_minutes", self.max_minutes, "in 0..1e7 (0: no time budget)")


@dataclass(frozen=True)
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.render.source == "recorded" and self.features.channels != 1:
            raise ConfigError("features.channels must be 1 for render.source='recorded' (recordings are read as mono)")
        if self.train.loss.get("ild", 0) > 0 and self.features.channels != 2:
            raise ConfigError(f"train.loss.ild scores a stereo image: it needs features.channels 2, got {self.features.channels}")
        clock = NOTE_CLOCK_OF_SOURCE[self.render.source]
        if self.features.note_clock != clock:
            raise ConfigError(
                f"features.note_clock must be {clock!r} for render.source={self.render.source!r} "
                f"(the reference's own clock), got {self.features.note_clock!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        # Caches, runs and checkpoints made before a key existed hold no such key; leaving its
        # default out keeps their hashes, and so their folder names, unchanged.
        if d["render"]["source"] == "fluidsynth":
            del d["render"]["source"]
        if self.render.source != "sfizz":  # settings that only sfizz reads
            del d["render"]["sfizz_quality"], d["render"]["sfizz_voices"]
        for key, default in (("channels", 1), ("note_clock", "fluidsynth")):
            if d["features"][key] == default:
                del d["features"][key]
        return d


_SECTION_TYPES = {
    "features": FeatureConfig,
    "render": RenderConfig,
    "model": ModelConfig,
    "train": TrainConfig,
}


def _build_section(cls: type, values: dict[str, Any], where: str) -> Any:
    """Builds one section dataclass, refusing keys it does not know."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    hints = get_type_hints(cls)
    checked = {}
    for key, value in values.items():
        checked[key] = _coerce(value, hints[key], f"{where}.{key}")
    return cls(**checked)


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Checks a YAML value against a field type, allowing int where float is expected."""
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool, dict):
        if typ is int and isinstance(value, bool):
            raise ConfigError(f"{where}: expected int, got bool")
        if not isinstance(value, typ):
            raise ConfigError(f"{where}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


def config_from_dict(data: dict[str, Any]) -> Config:
    """Builds a Config from nested dicts, e.g. a checkpoint's stored config."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(_SECTION_TYPES))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known sections are {sorted(_SECTION_TYPES)}")
    return Config(
        **{name: _build_section(cls, data.get(name, {}), name) for name, cls in _SECTION_TYPES.items()}
    )


def _merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "loss":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_set(pairs: list[str]) -> dict[str, Any]:
    """Turns ``["model.hidden=128", "train.loss={mse: 1}"]`` into a nested override dict.

    Values are parsed as YAML, so numbers, booleans and mappings keep their types.
    """
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        dotted, raw = pair.split("=", 1)
        parts = dotted.strip().split(".")
        if len(parts) != 2:
            raise ConfigError(f"--set expects section.key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {dotted}: the value {raw!r} is not valid YAML") from e
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the config file ({e})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping of sections, got a YAML {type(data).__name__}")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Loads a config: dataclass defaults, then a YAML file, then ``--set`` overrides.

    An override file may name a parent with ``base: other.yaml`` (relative to itself).
    """
    data: dict[str, Any] = {}
    if path is not None:
        data = _load_with_bases(Path(path), depth=0)
    data = _merge(data, parse_set(overrides or []))
    return config_from_dict(data)


def _load_with_bases(path: Path, depth: int) -> dict[str, Any]:
    if depth > 8:
        raise ConfigError(f"{path}: 'base:' chain is too deep (a loop?)")
    data = _read_yaml(path)
    parent = data.pop("base", None)
    if parent is None:
        return data
    return _merge(_load_with_bases(path.parent / parent, depth + 1), data)


def stable_hash(obj: Any, length: int = 10) -> str:
    """A short hash of any JSON-serialisable object, stable across runs and machines."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:length]
