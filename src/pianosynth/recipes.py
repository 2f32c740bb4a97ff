"""The training recipes shipped in the package (``configs/*.yaml``), found by name or by path.

The YAML files live in the repository's ``configs/``; ``src/pianosynth/configs`` is a link to it,
so the same files are package data in a wheel and ``configs/*.yaml`` paths keep working in a
checkout. With no recipe named, training follows the shipped model's own recipe: the resolved
config stored in its checkpoint, so that shipping another default model changes it too.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import Config, ConfigError, config_from_dict, load_config, parse_set


def shipped_recipes() -> dict[str, Path]:
    """Recipe name (the file's stem) -> its YAML file inside the installed package."""
    folder = Path(str(resources.files("pianosynth") / "configs"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def recipe_path(name_or_path: str | Path) -> Path:
    """An existing file is itself; otherwise a shipped recipe's name (``default``, ``report``...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    recipes = shipped_recipes()
    if str(name_or_path) in recipes:
        return recipes[str(name_or_path)]
    raise ConfigError(f"{name_or_path}: no such config file, and not a shipped recipe ({', '.join(recipes) or 'none shipped'})")


def load_recipe(name_or_path: str | Path | None, overrides: list[str] | None = None) -> Config:
    """A named or given recipe plus ``--set`` overrides; None: the shipped model's recipe."""
    if name_or_path is not None:
        return load_config(recipe_path(name_or_path), overrides)
    data = shipped_model_recipe().to_dict()
    for section, values in parse_set(overrides or []).items():
        if section not in data:
            raise ConfigError(f"unknown section {section!r}; known sections are {sorted(data)}")
        data[section].update(values)
    return config_from_dict(data)


def shipped_model_recipe() -> Config:
    """The config stored in the shipped default model's checkpoint: the recipe it was trained with."""
    from .synthesize import default_model_path
    from .checkpoint import load_checkpoint

    return config_from_dict(load_checkpoint(default_model_path())["config"])
