"""Decoders: encoder states (and, for ``voices``, the note table) -> waveform, one file each.

``DECODERS`` maps a name to ``factory(in_channels, hop_samples, sample_rate, window)``; ``window``
only shapes the frames decoder. A decoder's ``forward(h, offset, notes)`` takes ``offset``,
(batch,) or None, the index of each input's first frame in the whole piece (the ddsp and voices
decoders' phases need it), and ``notes``, the cropped note table, which only decoders with
``needs_notes = True`` read.
"""

from __future__ import annotations

from torch import nn

from .ddsp import DDSPDecoder
from .frames import FramesDecoder
from .istft import ISTFTDecoder
from .voices import VoicesDecoder


def _frames(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return FramesDecoder(in_channels, hop_samples, window=window)


def _istft(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return ISTFTDecoder(in_channels, hop_samples)


def _ddsp(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return DDSPDecoder(in_channels, hop_samples, sample_rate)


def _voices(in_channels: int, hop_samples: int, sample_rate: int, window: str) -> nn.Module:
    return VoicesDecoder(in_channels, hop_samples, sample_rate)


DECODERS = {"frames": _frames, "istft": _istft, "ddsp": _ddsp, "voices": _voices}

__all__ = ["DECODERS", "DDSPDecoder", "FramesDecoder", "ISTFTDecoder", "VoicesDecoder"]
