"""Typed, frozen configuration: YAML in, unknown keys are an error.

A run's configuration is ``configs/base.yaml`` plus an optional override file plus
``--set section.key=value`` pairs. Every section is a frozen dataclass so that a config can be
hashed (cache folders and run folders are named by that hash) and cannot drift after loading.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

SUPPORTED_SAMPLE_RATES = (16000, 22050, 24000, 44100)
DEFAULT_SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
FEATURE_PRESETS = ("score", "performance")


LR_SCHEDULES = ("constant", "cosine")


class ConfigError(ValueError):
    """A configuration file or ``--set`` override that does not fit the schema."""


@dataclass(frozen=True)
class FeatureConfig:
    sample_rate: int = 16000  # audio samples per second; one of SUPPORTED_SAMPLE_RATES
    hop_samples: int = 256  # audio samples per feature frame; frame_rate = sample_rate / hop_samples
    preset: str = "performance"  # "score": the report's 176 binary channels; "performance": + velocity + pedals
    tail_seconds: float = 1.0  # silence kept after the last event so that release tails are learned

    def __post_init__(self) -> None:
        if self.sample_rate not in SUPPORTED_SAMPLE_RATES:
            raise ConfigError(
                f"features.sample_rate must be one of {SUPPORTED_SAMPLE_RATES}, got {self.sample_rate}"
            )
        if self.hop_samples <= 0:
            raise ConfigError(f"features.hop_samples must be positive, got {self.hop_samples}")
        if self.preset not in FEATURE_PRESETS:
            raise ConfigError(f"features.preset must be one of {FEATURE_PRESETS}, got {self.preset!r}")
        if self.tail_seconds < 0:
            raise ConfigError(f"features.tail_seconds must be >= 0, got {self.tail_seconds}")

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

    def __post_init__(self) -> None:
        if not 0 <= self.program <= 127:
            raise ConfigError(f"render.program must be in 0..127, got {self.program}")
        if not 0 <= self.bank <= 16383:
            raise ConfigError(f"render.bank must be in 0..16383, got {self.bank}")
        if self.gain <= 0:
            raise ConfigError(f"render.gain must be positive, got {self.gain}")


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "gru"  # recurrent cell of the encoder: lstm, gru or rnn
    layers: int = 2  # stacked recurrent layers, 1 to 4
    hidden: int = 256  # hidden units per direction
    bidirectional: bool = True  # the report's BiRNN; False is an ablation
    decoder: str = "frames"  # the part that turns encoder states into audio (see model.DECODERS)
    window: str = "ola"  # frames decoder: "rect" emits hop_samples per frame; "ola" emits 2*hop, Hann overlap-add
    dropout: float = 0.0  # dropout between recurrent layers


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

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


@dataclass(frozen=True)
class Config:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
        value = yaml.safe_load(raw)
        out.setdefault(parts[0], {})[parts[1]] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return data or {}


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
