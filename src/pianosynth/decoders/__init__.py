"""Decoders: encoder states (and, for ``voices``, the note table) -> waveform, one file each.

``DECODERS`` maps a name to ``factory(in_channels, hop_samples, sample_rate, window, channels)``;
``window`` only shapes the frames decoder, and only ``grand`` makes more than one output channel
(its output is (batch, channels, samples); the others' is (batch, samples)). A decoder's ``forward(h, offset, notes)`` takes ``offset``,
(batch,) or None, the index of each input's first frame in the whole piece (the ddsp and voices
decoders' phases need it), and ``notes``, the cropped note table, which only decoders with
``needs_notes = True`` read. Those also give ``margin_frames``: the frames a block of the piece
must render on either side for its own samples to equal the whole piece's
(``PianoSynth.synthesize_voices``).
"""

from __future__ import annotations

from torch import nn

from .ddsp import DDSPDecoder
from .frames import FramesDecoder
from .grand import GrandDecoder
from .istft import ISTFTDecoder
from .voices import VoicesDecoder


def _frames(in_channels: int, hop_samples: int, sample_rate: int, window: str, channels: int = 1) -> nn.Module:
    _mono("frames", channels)
    return FramesDecoder(in_channels, hop_samples, window=window)


def _istft(in_channels: int, hop_samples: int, sample_rate: int, window: str, channels: int = 1) -> nn.Module:
    _mono("istft", channels)
    return ISTFTDecoder(in_channels, hop_samples)


def _ddsp(in_channels: int, hop_samples: int, sample_rate: int, window: str, channels: int = 1) -> nn.Module:
    _mono("ddsp", channels)
    return DDSPDecoder(in_channels, hop_samples, sample_rate)


def _voices(in_channels: int, hop_samples: int, sample_rate: int, window: str, channels: int = 1) -> nn.Module:
    _mono("voices", channels)
    return VoicesDecoder(in_channels, hop_samples, sample_rate)


def _grand(in_channels: int, hop_samples: int, sample_rate: int, window: str, channels: int = 1) -> nn.Module:
    return GrandDecoder(in_channels, hop_samples, sample_rate, channels=channels)


def _mono(name: str, channels: int) -> None:
    if channels != 1:
        raise ValueError(f"the {name} decoder makes one channel; {channels} channels need the grand decoder")


DECODERS = {"frames": _frames, "istft": _istft, "ddsp": _ddsp, "voices": _voices, "grand": _grand}

__all__ = ["DECODERS", "DDSPDecoder", "FramesDecoder", "GrandDecoder", "ISTFTDecoder", "VoicesDecoder"]
