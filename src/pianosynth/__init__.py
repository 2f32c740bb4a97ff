"""pianosynth: neural piano synthesis from MIDI, after "Neural Synthesis of Piano Performance"."""

__version__ = "0.1.0"
