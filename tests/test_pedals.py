"""Pedals on the shipped fluidr3 model against its FluidR3 reference (issue 13): the cases of benchmarks/pedals.py
(docs/pedals.md), each rendered by FluidSynth and by fluidr3, a few seconds each."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import needs_fluidsynth

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import pedals  # noqa: E402

pytestmark = needs_fluidsynth
SILENT = -100.0  # dBFS: below this a window is silent for these tests (the attack is at -44 dB)


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """case name -> window label -> (reference dB, model dB), rendered once per case on demand."""
    import pianosynth

    synth = pianosynth.load("fluidr3", threads=1)  # named: the model of the FluidR3 reference that FluidSynth renders here
    by_name = {c.name: c for c in pedals.cases()}
    cache: dict[str, dict[str, tuple[float, float]]] = {}
    folder = tmp_path_factory.mktemp("pedals")

    def get(name: str) -> dict[str, tuple[float, float]]:
        if name not in cache:
            cache[name] = {label: (ref, mod) for label, ref, mod in pedals.measure(by_name[name], synth, folder)}
        return cache[name]

    return get


AFTER_OFF, AFTER_LIFT = "0.3-1.2 s after note-off", "0.3-1.2 s after pedal-up"


def test_sustain_holds_a_released_note_until_the_pedal_lifts(measured):
    none, held = measured("no pedal")[AFTER_OFF], measured("sustain")
    assert none[0] < SILENT and none[1] < SILENT
    ref, mod = held[AFTER_OFF]
    assert ref > -70 and abs(mod - ref) < 3.0
    assert max(held[AFTER_LIFT]) < SILENT


def test_the_sustain_pedal_is_a_switch_at_64(measured):
    below, at = measured("half pedal 63")[AFTER_OFF], measured("half pedal 64")[AFTER_OFF]
    assert max(below) < SILENT
    assert at[0] > -70 and abs(at[1] - at[0]) < 6.0


def test_sostenuto_holds_only_the_keys_down_when_it_was_pressed(measured):
    caught, late = measured("sostenuto, key down at the press"), measured("sostenuto, key struck after the press")
    ref, mod = caught[AFTER_OFF]
    assert ref > -70 and abs(mod - ref) < 4.0
    assert max(caught[AFTER_LIFT]) < SILENT
    assert max(late[AFTER_OFF]) < SILENT


def test_the_soft_pedal_changes_nothing_as_in_the_reference(measured):
    off, on = measured("soft pedal off")["0.1-1.8 s"], measured("soft pedal on")["0.1-1.8 s"]
    assert abs(on[0] - off[0]) < 0.5  # FluidR3 has no soft pedal
    assert abs(on[1] - off[1]) < 1.0  # and the model must not invent one


def test_a_key_re_struck_under_the_sustain_pedal(measured):
    m = measured("re-strike under sustain")
    ref, mod = m["1.05-1.3 s (re-struck)"]
    assert abs(mod - ref) < 1.5
    ref, mod = m["1.7-2.6 s (both up, pedalled)"]
    assert ref > -70 and abs(mod - ref) < 3.0  # the model is 1.6 dB low here (docs/pedals.md)
    assert max(m[AFTER_LIFT]) < SILENT
