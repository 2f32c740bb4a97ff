"""Which shipped model plays which notes (issues 12 and 13).

A synthesizer loaded with no model named (``pianosynth.load()``, ``synthesize`` without
``--model``/``--instrument``) carries a ``Router``. For each render it splits the performance by
General MIDI program (``midi.split_by_program``) and gives each program a shipped model:

1. a model whose ``render.program`` is that program: a performance-mode model, the index's default
   before others of the program; where the file has no velocity variation (every note one
   velocity), a score-mode model (issue 13) of that model's own instrument (program and reference)
   in its place, only where it beats that model fed velocity 64 on both test MR-STFT and loudness r
   (issue 19, ``stands_in_for``, ``registry.score_model_verdict``: the FluidR3 score model against
   fluidr3, and never in place of the grand, which needs none); a message says which;
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


def stands_in_for(score: ModelInfo, performance: ModelInfo) -> bool:
    """Whether score-mode model ``score`` may play a one-velocity file in place of ``performance``:
    only for a model of its own instrument (program and reference), whose velocity-64 figures its
    own were measured against (``registry.velocity64_baseline_model``), and only where it beats
    them (``registry.score_model_verdict``, issue 19). The grand needs no score model: the FluidR3
    score model never stands in for a model of another reference."""
    return (
        score.preset == "score" and performance.preset == "performance" and score.program == performance.program
        and score.soundfont == performance.soundfont and score_model_verdict(score)[0]
    )  # fmt: skip


def choose(models: dict[str, ModelInfo], program: int, uniform: bool) -> ModelInfo | None:
    """The shipped model for one program: a performance-mode model, the default before others of
    its program, else a score-mode one; for a file without dynamics, a score-mode model that stands
    in for that performance model (``stands_in_for``) where one ships; None if none."""
    matches = [m for m in models.values() if m.program == program]
    if not matches:
        return None
    matches.sort(key=lambda m: (m.preset != "performance", not m.default, m.name))
    first = matches[0]
    if uniform:
        return next((m for m in matches if stands_in_for(m, first)), first)
    return first


def passed_over(models: dict[str, ModelInfo], program: int, chosen: ModelInfo) -> list[tuple[str, str]]:
    """Score-mode models of ``program`` that a one-velocity file did not go to, with why: the
    figures that do not beat the model recorded as their baseline
    (``registry.velocity64_baseline_name``), or another reference than the chosen model's."""
    out = []
    for m in models.values():
        if m.program != program or m.preset != "score" or m.name == chosen.name:
            continue
        beats, detail = score_model_verdict(m)
        base = velocity64_baseline_name(m)
        against = "it" if base in (None, chosen.name) else f"'{base}'"  # its default of the same reference
        if not beats:
            out.append((m.name, f"which does not beat {against} at velocity 64 ({detail})"))
        elif m.soundfont != chosen.soundfont:
            out.append((m.name, f"a model of another reference ({m.soundfont}, not {chosen.soundfont}), which stands in only for a model of its own"))
    return out


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
                skipped += [(name, why, info.name) for name, why in passed_over(self.models(), program, info)]
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
        for name, why, chosen in dict.fromkeys(skipped):
            route.messages.append(
                f"{label}: every note has velocity {perf.notes[0].velocity}; rendered with '{chosen}', not the "
                f"score-mode model '{name}', {why}"
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
