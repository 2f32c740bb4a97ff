"""pianosynth: neural piano synthesis from MIDI, after "Neural Synthesis of Piano Performance".

    import pianosynth
    synth = pianosynth.load()                # the shipped models, routed by program; or a name, a
                                             # checkpoint path, or instrument="harpsichord"
    audio, sr = synth.render("song.mid")     # float32 (channels, samples)
    synth.render_to_file("song.mid", "song.flac", sample_rate=44100, channels=2)

``load`` and ``Synth`` are imported on first use, so that ``import pianosynth`` (and the CLI's
start-up) does not pay for torch.
"""

__version__ = "0.1.0"
__all__ = ["load", "Synth", "shipped_models", "__version__"]


def __getattr__(name: str):
    if name in ("load", "Synth", "shipped_models"):
        from . import synthesize

        return getattr(synthesize, name)
    raise AttributeError(f"module 'pianosynth' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names, the lazy ones included, so that tab completion offers ``load``."""
    return sorted(set(globals()) | set(__all__))
