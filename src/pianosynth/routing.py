"""Which shipped model plays which notes (issues 12 and 13).

A synthesizer loaded with no model named (``pianosynth.load()``, ``synthesize`` without
``--model``/``--instrument``) carries a ``Router``. For each render it splits the performance by
General MIDI program (``midi.split_by_program``) and gives each program a shipped model:

1. a model whose ``render.program`` is that program: a performance-mode model, or, where the file
   has no velocity variation (every note one velocity) and one is shipped that beats its
   instrument's default fed velocity 64 on both test MR-STFT and loudness r (issue 19,
   ``registry.score_model_verdict``; that default is the performance model of the same program
   and reference, e.g. fluidr3 for the FluidR3 score model), a score-mode model (issue 13); a
   message says which; the index's default model before others of the program;
2. else the piano (the index's default model), with a warning naming the programs rendered that way.

``synthesize.Synth`` renders each part with its model and mixes them before the level stage. A
file with one program, played by the piano, takes the single-model path unchanged, and the
shipped models are not even looked up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .midi import PedalCurve, Performance, split_by_program
from .registry import ModelInfo, instrument_name, score_model_verdict, shipped, velocity64_baseline_name


@dataclass
class Part:
    """Notes of one or more programs and the model that plays them."""

    model: str | None  # a shipped model's name; None: the router's own (piano) synthesizer
    programs: list[int]
    perf: Performance


@dataclass
class Route:
    parts: list[Part]
    messages: list[str] = field(default_factory=list)  # choices the user should know of
    warnings: list[str] = field(default_factory=list)  # programs without a model of their own


def uniform_velocity(perf: Performance) -> bool:
    """Whether every note has one velocity: a bare score's export, not a performance."""
    return len({n.velocity for n in perf.notes}) == 1


def choose(models: dict[str, ModelInfo], program: int, uniform: bool) -> ModelInfo | None:
    """The shipped model for one program: for a file without dynamics, a score-mode model that
    beats its default fed velocity 64 (``registry.score_model_verdict``, issue 19), else
    performance mode first; the default model before others of its program; None if none."""
    matches = [m for m in models.values() if m.program == program]
    if not matches:
        return None
    want = "score" if uniform else "performance"

    def wanted(m: ModelInfo) -> bool:
        return m.preset == want and (m.preset != "score" or score_model_verdict(m)[0])

    matches.sort(key=lambda m: (not wanted(m), not m.default, m.name))
    return matches[0]


def passed_over(models: dict[str, ModelInfo], program: int, chosen: ModelInfo) -> list[tuple[str, str, str | None]]:
    """Score-mode models of ``program`` that a one-velocity file did not go to, with why and the
    model they were compared with (``registry.velocity64_baseline_name``; None: none recorded)."""
    return [
        (m.name, score_model_verdict(m)[1], velocity64_baseline_name(m)) for m in models.values()
        if m.program == program and m.preset == "score" and m.name != chosen.name
    ]  # fmt: skip


class Router:
    """Routes the programs of a performance to shipped models (see the module's docstring)."""

    def __init__(self, main_program: int, folder: str | Path | None = None):
        self.main_program = main_program  # the program of the synthesizer that owns this router
        self.folder = folder
        self._models: dict[str, ModelInfo] | None = None

    def models(self) -> dict[str, ModelInfo]:
        if self._models is None:
            self._models = shipped(self.folder)
        return self._models

    def route(self, perf: Performance, label: str) -> Route:
        programs = perf.programs
        uniform = uniform_velocity(perf)
        if programs == [self.main_program] and not uniform:
            return Route([Part(None, programs, perf)])  # the common case: no look-up at all
        parts: dict[str | None, Part] = {}
        unmatched, score_chosen, skipped = [], [], []
        for program, part in split_by_program(perf).items():
            info = choose(self.models(), program, uniform)
            if info is None:
                unmatched.append(program)
            elif info.preset == "score" and uniform:
                score_chosen.append(info.name)
            elif uniform:
                skipped += [(name, why, base, info.name) for name, why, base in passed_over(self.models(), program, info)]
            name = None if info is None or info.default else info.name  # the default: this synthesizer itself
            if name in parts:  # several programs on one model (e.g. unmatched ones on the piano)
                parts[name].programs.append(program)
                parts[name].perf = _merge(parts[name].perf, part)
            else:
                parts[name] = Part(name, [program], part)
        route = Route(list(parts.values()))
        if score_chosen:
            velocity = perf.notes[0].velocity
            chosen = ", ".join(f"'{n}'" for n in dict.fromkeys(score_chosen))
            route.messages.append(
                f"{label}: every note has velocity {velocity}; rendered with the score-mode model {chosen} "
                "(name a model with --model or --instrument to choose another)"
            )
        for name, why, base, chosen in dict.fromkeys(skipped):
            against = "it" if base in (None, chosen) else f"'{base}'"  # its default of the same reference
            route.messages.append(
                f"{label}: every note has velocity {perf.notes[0].velocity}; rendered with '{chosen}', not the "
                f"score-mode model '{name}', which does not beat {against} at velocity 64 ({why})"
            )
        if unmatched:
            listed = ", ".join(f"{p} ({instrument_name(p)})" for p in unmatched)
            route.warnings.append(f"{label}: no shipped model plays program(s) {listed}; rendered them as piano")
        return route


def _merge(a: Performance, b: Performance) -> Performance:
    """Two programs' parts played by one model: their notes and their pedals together, merged as
    ``midi.read_midi`` merges channels (at equal times the later part's event wins)."""
    notes = sorted(a.notes + b.notes, key=lambda n: (n.start_s, n.pitch))
    pedals = {}
    for name in a.pedals.keys() | b.pedals.keys():
        curves = [c for c in (a.pedals.get(name), b.pedals.get(name)) if c is not None]
        times = np.concatenate([c.times_s for c in curves])
        order = np.argsort(times, kind="stable")
        pedals[name] = PedalCurve(times[order], np.concatenate([c.values for c in curves])[order])
    return Performance(notes, pedals, max(a.end_s, b.end_s))
