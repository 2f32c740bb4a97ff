"""Checkpoints: reading, writing, checksums and export. Data, never code.

A checkpoint is a ``torch.save`` file of one dict: ``format``, ``version``, ``config`` (plain
values), ``model`` (tensors), and for a training run ``optimizer``, ``step``, ``best_valid``,
``elapsed_s`` and ``rng``, plus a ``checksum`` over all of it. It is read with
``torch.load(weights_only=True)``: torch's restricted unpickler, which builds only tensors,
dicts, lists, tuples and plain scalars and refuses every other global. A file whose unpickling
would import or call anything else (a crafted ``.pt`` that runs a shell command) is refused with
a one-line :class:`CheckpointError` before any of it runs.

This module sits below training, synthesis and the model registry: each of them reads weights
through it, and it imports none of them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .errors import PianosynthError
from .config import Config, ConfigError, config_from_dict
from .fileio import atomic_write
from .model import PianoSynth, build_model

CHECKPOINT_FORMAT = 1
SLIM_KEYS = ("format", "version", "config", "model", "step", "best_valid", "elapsed_s")


class CheckpointError(PianosynthError, RuntimeError):
    """A file is not a loadable pianosynth checkpoint: missing, foreign, damaged, unsafe to
    unpickle, or holding a config or weights this version cannot build."""


def checkpoint_checksum(state: dict) -> str:
    """SHA-256 of everything in a checkpoint but its ``checksum``: every tensor's name, dtype,
    shape and bytes, and the repr of every other value, walked in sorted key order. A bit flipped
    anywhere in the weights, the optimizer state or the config changes it."""
    h = hashlib.sha256()

    def walk(name: str, value) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for k in sorted(value, key=str):
                walk(f"{name}/{k}", value[k])
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{name}[{i}]", v)
        else:
            h.update(f"{name}={value!r};".encode())

    walk("", {k: v for k, v in state.items() if k != "checksum"})
    return h.hexdigest()


def save_checkpoint(path: Path, state: dict) -> None:
    """torch.save to a temporary file, then rename: a checkpoint is whole or absent. The state
    is written with its ``checksum`` (checkpoint_checksum), which load_checkpoint verifies."""
    state = {**state, "checksum": checkpoint_checksum(state)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | Path) -> dict:
    """Loads a checkpoint as data (``weights_only=True``) and verifies its checksum. Checkpoints
    written before checksums existed (no ``checksum`` key) load unverified.

    Raises:
        CheckpointError: no such file; not a torch file; a pickle that asks for anything but
            tensors and plain containers; not a pianosynth checkpoint; a checksum mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a truncated, foreign or unsafe file
        text = str(e).lower()
        if "weights only load failed" in text and "global" in text:  # it names a class or function
            raise CheckpointError(
                f"{path}: refused: the file asks to run code or build objects on load, which a "
                "pianosynth checkpoint never does (only tensors and plain values are read)"
            ) from e
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a pianosynth checkpoint (format {CHECKPOINT_FORMAT})")
    if "checksum" in state and state["checksum"] != checkpoint_checksum(state):
        raise CheckpointError(f"{path}: checksum mismatch, the file is damaged; use another copy or checkpoint")
    return state


def model_from_checkpoint(state_or_path: dict | str | Path) -> tuple[PianoSynth, Config]:
    """Rebuilds the model and its config from a checkpoint (or its path), in eval mode.

    Raises:
        CheckpointError: the checkpoint lacks a part, or its config or weights are not ones this
            version can build and load.
    """
    name = "checkpoint" if isinstance(state_or_path, dict) else str(state_or_path)
    state = state_or_path if isinstance(state_or_path, dict) else load_checkpoint(state_or_path)
    missing = [k for k in ("config", "model") if k not in state]
    if missing:
        raise CheckpointError(f"{name}: not a complete checkpoint (no {', '.join(missing)})")
    if not isinstance(state["config"], dict) or not isinstance(state["model"], dict):
        raise CheckpointError(f"{name}: not a complete checkpoint (its config or weights are not tables)")
    try:
        cfg = config_from_dict(state["config"])
        model = build_model(cfg.model, cfg.features)
    except (ConfigError, ValueError, TypeError) as e:
        raise CheckpointError(f"{name}: its config is not one this version can build ({e})") from e
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else (first[0] if first else type(e).__name__)
        raise CheckpointError(f"{name}: its weights do not fit its config ({detail})") from e
    model.eval()
    return model, cfg


def export_checkpoint(src: str | Path, dst: str | Path) -> dict:
    """Writes a slim copy of a checkpoint for shipping: config, weights, step, validation score.

    The optimizer state and RNG are dropped (they only matter for resuming), which halves the size.
    """
    state = load_checkpoint(src)
    model_from_checkpoint(state)  # refuse to ship weights that do not load
    missing = [k for k in SLIM_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{src}: not a complete checkpoint (no {', '.join(missing)})")
    slim = {k: state[k] for k in SLIM_KEYS}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(dst, slim)
    return slim
