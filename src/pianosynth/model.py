"""The network: a recurrent encoder over feature frames and a decoder from states to waveform.

The report's system is ``encoder = BiRNN`` and ``decoder = frames``: a linear head that emits the
audio of each time window, the ``[examples, time windows, audio samples]`` matrix, joined into a
waveform. Decoders are looked up by name in ``DECODERS`` so that others can stand beside it.

Long inputs go through ``PianoSynth.synthesize``, which runs overlapping chunks with enough left and
right context for the bidirectional RNN and crossfades them, so memory does not grow with length.
"""

from __future__ import annotations

import collections
import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .decoders import DECODERS
from .reverb import Reverb

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Features as the network takes them: float in 0..1. The stored, quantized form (uint8
    multiples of 1/127, ``features.quantize``) is converted; float passes through."""
    return x.float() / 127.0 if x.dtype == torch.uint8 else x


class Encoder(nn.Module):
    """A stacked (bi)directional recurrent network over feature frames.

    x: (batch, frames, in_channels) -> h: (batch, frames, hidden * directions)
    """

    def __init__(self, in_channels: int, cell: str, layers: int, hidden: int, bidirectional: bool, dropout: float = 0.0):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
        if not 1 <= layers <= 4:
            raise ValueError(f"layers must be 1 to 4, got {layers}")
        if hidden <= 0 or in_channels <= 0:
            raise ValueError(f"hidden and in_channels must be positive, got {hidden} and {in_channels}")
        self.rnn = CELLS[cell](
            in_channels,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.out_channels = hidden * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return h

    def forward_split(self, x: torch.Tensor, pool, groups: int = 1, time_major: bool = False) -> torch.Tensor:
        """``forward`` for synthesis (no gradients, no dropout) on ``pool``'s threads: each layer's
        two directions, and ``groups`` parts of the batch, as tasks of their own. A recurrence is
        a chain of small steps that one thread runs one after another, so splitting the batch
        alone leaves a short piece's few windows on one thread; the directions are independent
        until the next layer. The same recurrences with the same weights (one direction at a
        time, the backward one on the reversed sequence): equal to ``forward`` up to float32
        rounding (tests/test_voices.py).

        The layers run time-major, as torch's recurrences do inside, so a batch given time-major
        (``time_major``) is never transposed into a copy; each layer's input is let go as soon as
        its tasks are done (the caller should hold no other reference to ``x``): a long piece's
        batches are the largest thing its render holds (docs/speed.md).

        x: (batch, frames, in_channels), or (frames, batch, in_channels) if ``time_major``
        -> (batch, frames, out_channels), or (frames, batch, out_channels)
        """
        rnn = self.rnn
        if not rnn.bidirectional:
            if time_major:
                x = x.transpose(0, 1)
            h = torch.cat(list(pool.map(self._no_grad(self.forward), [p for p in x.tensor_split(groups) if len(p)])))
            return h.transpose(0, 1) if time_major else h
        h, x = (x if time_major else x.transpose(0, 1).contiguous()), None  # (frames, batch, channels)
        for layer in range(rnn.num_layers):
            parts = [p for p in h.tensor_split(groups, dim=1) if p.shape[1]]
            tasks = [(p, layer, reverse) for p in parts for reverse in (False, True)]
            h = None
            outs = list(pool.map(self._no_grad(lambda task: self._direction(*task)), tasks))
            del parts, tasks  # the layer's input goes before its output is joined
            joined = [torch.cat(outs[i : i + 2], dim=-1) for i in range(0, len(outs), 2)]  # each part's two directions
            del outs
            h = joined[0] if len(joined) == 1 else torch.cat(joined, dim=1)
            del joined
        return h if time_major else h.transpose(0, 1)

    @staticmethod
    def _no_grad(fn):
        def run(arg):
            with torch.no_grad():  # grad mode is per thread
                return fn(arg)

        return run

    def _direction(self, x: torch.Tensor, layer: int, reverse: bool) -> torch.Tensor:
        """One direction of one layer, time-major (x: (frames, batch, channels)): a one-layer,
        one-way network of the same cell reading this layer's weights
        (``torch.func.functional_call``). Each call makes its own, uninitialized (no random
        numbers drawn, nothing registered): the tasks run at once on several threads, and a
        shared module would have its weights swapped under it by another task."""
        rnn = self.rnn
        # on the meta device: no memory, no initialization; functional_call supplies every weight
        single = type(rnn)(x.shape[-1], rnn.hidden_size, batch_first=False, bias=rnn.bias, device="meta")
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
        weights = {f"{n}_l0": getattr(rnn, n + suffix) for n in names}
        seq = x.flip(0) if reverse else x
        out = torch.func.functional_call(single, weights, (seq,))[0]
        return out.flip(0) if reverse else out


class PianoSynth(nn.Module):
    """Feature frames -> waveform.

    x: (batch, frames, in_channels) float in 0..1 -> y: (batch, frames * hop_samples), or
    (batch, channels, frames * hop_samples) from a multi-channel decoder (``grand``)
    """

    def __init__(
        self,
        in_channels: int,
        hop_samples: int,
        cell: str = "gru",
        layers: int = 2,
        hidden: int = 256,
        bidirectional: bool = True,
        decoder: str = "frames",
        window: str = "ola",
        dropout: float = 0.0,
        sample_rate: int = 16000,
        reverb_seconds: float = 0.0,
        channels: int = 1,
    ):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.in_channels = in_channels
        self.hop_samples = hop_samples
        self.encoder = Encoder(in_channels, cell, layers, hidden, bidirectional, dropout)
        self.channels = channels
        self.decoder = DECODERS[decoder](self.encoder.out_channels, hop_samples, sample_rate, window=window, channels=channels)
        if reverb_seconds > 0 and channels != 1:
            raise ValueError("a learned room (reverb_seconds > 0) is mono; set it to 0 for stereo")
        # a learned room for recordings (issue 12); absent, so a dry model's checkpoint is unchanged
        self.reverb = Reverb(sample_rate, reverb_seconds) if reverb_seconds > 0 else None

    @property
    def needs_notes(self) -> bool:
        """Whether the decoder reads the note table beside the frames (the ``voices`` decoder)."""
        return getattr(self.decoder, "needs_notes", False)

    def forward(self, x: torch.Tensor, offset: torch.Tensor | None = None, notes: torch.Tensor | None = None) -> torch.Tensor:
        """``offset``: (batch,) index of each input's first frame in its whole sequence, or None
        for 0; ``notes``: (batch, notes, 4) the note table cropped to each input, onsets and
        releases in samples from its first frame, key -1 for padding (see ``decoders``)."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x of shape (batch, frames, {self.in_channels}), got {tuple(x.shape)}")
        h = self.encoder(x)
        y = self.decoder(h, offset, notes) if self.needs_notes else self.decoder(h, offset)
        return y if self.reverb is None else self.reverb(y)

    def _dry(self, x: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """The frame decoders' output before the room (``synthesize`` applies it to the joined
        blocks, not to each window)."""
        return self.decoder(self.encoder(x), offset)

    @torch.no_grad()
    def synthesize(
        self,
        x: torch.Tensor,
        chunk_frames: int = 1024,
        context_frames: int = 256,
        crossfade_frames: int = 16,
        batch_chunks: int | None = None,
        max_batch_frames: int = 32768,
        workers: int = 1,
        notes: torch.Tensor | np.ndarray | None = None,
        block_frames: int = 256,
    ) -> Iterator[torch.Tensor]:
        """Synthesizes a sequence of any length in overlapping chunks, yielding audio blocks.

        Each chunk's core of ``chunk_frames`` frames is run inside a window with up to
        ``context_frames`` of real input on each side (the bidirectional RNN's view of past and
        future). Windows never reach past the sequence (at the ends they slide inwards), so the
        first and last frames see what a whole-sequence pass sees. Neighbouring cores are
        crossfaded over ``crossfade_frames`` with a raised-cosine ramp. ``batch_chunks`` windows,
        all of one length, run through the RNN together (by default as many as fit in
        ``max_batch_frames`` frames: on a CPU a recurrent step costs about the same for one
        sequence as for ten, so batching is what makes synthesis fast). Memory depends on these
        sizes, not on the length of the input. ``workers`` > 1 splits each batch between that many
        threads (torch releases the GIL inside its kernels; give each one torch thread)::

            window k:   [ context | core k | context ]
            window k+1:            [ context | core k+1 | context ]
            output:     ... core k ><fade>< core k+1 ...

        x: (frames, in_channels) -> yields (samples,) blocks whose concatenation is
        (frames * hop_samples,).

        With the ``voices`` decoder, ``notes`` (the whole piece's note table, ``(notes, 4)``) is
        required and ``synthesize_voices`` does the work, in blocks of ``block_frames``. With a
        learned room (``reverb``), the blocks go through it in turn, each one's reverberation
        carried into the next.
        """
        blocks = self._synthesize_dry(x, chunk_frames, context_frames, crossfade_frames, batch_chunks, max_batch_frames, workers, notes, block_frames)
        yield from blocks if self.reverb is None else self.reverb.stream(blocks)

    @torch.no_grad()
    def _synthesize_dry(self, x, chunk_frames, context_frames, crossfade_frames, batch_chunks, max_batch_frames, workers, notes, block_frames):
        """``synthesize`` before the room: the decoder's blocks."""
        if self.needs_notes:
            if notes is None:
                raise ValueError("this model's decoder needs the note table: pass notes=")
            yield from self.synthesize_voices(x, notes, chunk_frames, context_frames, crossfade_frames, max_batch_frames, workers, block_frames)
            return
        if x.dim() != 2 or x.shape[-1] != self.in_channels:
            raise ValueError(f"expected x of shape (frames, {self.in_channels}), got {tuple(x.shape)}")
        if crossfade_frames > context_frames:
            raise ValueError("crossfade_frames must not exceed context_frames")
        n, hop = x.shape[0], self.hop_samples
        n_chunks = max(1, math.ceil(n / chunk_frames))
        span = min(n, chunk_frames + 2 * context_frames)
        batch_chunks = batch_chunks or max(1, max_batch_frames // span)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, crossfade_frames * hop + 2)[1:-1])
        pending = x.new_zeros(0)  # the previous chunk's output past its core, to fade out
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for first in range(0, n_chunks, batch_chunks):
                chunks = range(first, min(n_chunks, first + batch_chunks))
                starts = [max(0, min(k * chunk_frames - context_frames, n - span)) for k in chunks]
                windows = as_float(torch.stack([x[s : s + span] for s in starts]))
                y = self._run_windows(windows, torch.tensor(starts), pool, workers)  # (chunks, span * hop)
                for k, lo in zip(chunks, starts):
                    core_lo, core_hi = k * chunk_frames, min(n, (k + 1) * chunk_frames)
                    tail_hi = min(core_hi + crossfade_frames, lo + span)
                    seg = y[k - first, (core_lo - lo) * hop : (tail_hi - lo) * hop]
                    if len(pending):
                        fade_in = ramp[: len(pending)]
                        head = seg[: len(pending)] * fade_in + pending * (1 - fade_in)
                        seg = torch.cat([head, seg[len(pending) :]])
                    core = (core_hi - core_lo) * hop
                    pending = seg[core:]
                    yield seg[:core]

    @torch.no_grad()
    def conditioning(
        self, x: torch.Tensor, chunk_frames: int, context_frames: int, crossfade_frames: int,
        max_batch_frames: int = 32768, workers: int = 1,
    ) -> torch.Tensor:
        """The voices decoder's conditioning for a whole piece, computed in overlapping windows as
        ``synthesize`` does and crossfaded between neighbours. It is small (``cond_channels`` per
        frame), so a long piece's fits in memory, and every frame's value is computed once, which
        lets the voices render in blocks that join exactly.

        x: (frames, in_channels) -> (frames, cond_channels)
        """
        n = x.shape[0]
        n_chunks = max(1, math.ceil(n / chunk_frames))
        span = min(n, chunk_frames + 2 * context_frames)
        per_batch = max(1, max_batch_frames // span)
        ramp = 0.5 - 0.5 * torch.cos(torch.linspace(0, math.pi, crossfade_frames + 2)[1:-1])[:, None]
        out = None
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            for first in range(0, n_chunks, per_batch):
                chunks = range(first, min(n_chunks, first + per_batch))
                starts = [max(0, min(k * chunk_frames - context_frames, n - span)) for k in chunks]
                if pool is not None and not (self.training and self.encoder.rnn.dropout):
                    # the directions of each layer on threads of their own (``Encoder.forward_split``),
                    # the windows made time-major, (span, windows, channels), and held by no name
                    # here, so that no copy is made and each layer's input is let go when done
                    h = self.encoder.forward_split(
                        as_float(torch.stack([x[s : s + span] for s in starts], dim=1)), pool, max(1, workers // 2), time_major=True
                    )
                    c = self.decoder.condition(h).transpose(0, 1)
                    del h
                else:
                    windows = as_float(torch.stack([x[s : s + span] for s in starts]))
                    c = self._map(lambda w: self.decoder.condition(self.encoder(w)), windows, pool, workers)
                if out is None:
                    out = c.new_zeros(n, c.shape[-1])
                for k, lo in zip(chunks, starts):
                    core_lo, core_hi = k * chunk_frames, min(n, (k + 1) * chunk_frames)
                    seg = c[k - first, core_lo - lo : min(core_hi + crossfade_frames, lo + span) - lo]
                    if k > 0 and crossfade_frames:  # fade in over the previous chunk's tail
                        fade = min(crossfade_frames, len(seg))
                        out[core_lo : core_lo + fade] = seg[:fade] * ramp[:fade] + out[core_lo : core_lo + fade] * (1 - ramp[:fade])
                        out[core_lo + fade : core_lo + len(seg)] = seg[fade:]
                    else:
                        out[core_lo : core_lo + len(seg)] = seg
        return out

    @torch.no_grad()
    def synthesize_voices(
        self, x: torch.Tensor, notes, chunk_frames: int, context_frames: int, crossfade_frames: int,
        max_batch_frames: int = 32768, workers: int = 1, block_frames: int = 256,
    ) -> Iterator[torch.Tensor]:
        """The voices decoder over a whole piece: the conditioning first (``conditioning``), then
        the audio in blocks of ``block_frames`` (small, so that the voices sounding in a block,
        each with its frames of partials, stay small in memory). Each block is rendered with the decoder's
        ``margin_frames`` on either side and only its core is kept; a voice frame or a noise frame depends only on its
        own place in the piece, so the blocks join exactly, without crossfades. Voices that have
        ended (``VoicesDecoder.voice_end``) are left out of a block.

        x: (frames, in_channels), notes: (notes, 4) -> yields (samples,) blocks, or (channels,
        samples) from a decoder of more than one channel
        """
        dec, hop = self.decoder, self.hop_samples
        n = x.shape[0]
        c = self.conditioning(x, chunk_frames, context_frames, crossfade_frames, max_batch_frames, workers)
        notes = torch.as_tensor(np.asarray(notes), dtype=torch.long).reshape(-1, 4)
        ends = dec.voice_end(notes[:, 2], notes[:, 3], notes[:, 0])
        margin = dec.margin_frames
        step = min(chunk_frames, block_frames)
        blocks = [(lo, min(n, lo + step)) for lo in range(0, n, step)]

        def render(block: tuple[int, int]) -> torch.Tensor:
            lo, hi = block
            a, z = max(0, lo - margin), min(n, hi + margin)
            pick = (notes[:, 2] < z * hop + hop) & (ends > a * hop - hop)
            local = notes[pick].clone()
            local[:, 2:] -= a * hop
            with torch.no_grad():  # grad mode is per thread
                y = dec.render(c[None, a:z], local[None], torch.tensor([a]))[0]
            if y.dim() == 2 and y.shape[0] == 1:
                y = y[0]  # one channel: (samples,) blocks, as every mono decoder yields
            return y[..., (lo - a) * hop : (hi - a) * hop]

        if workers > 1:
            # up to 2 workers blocks in flight, yielded in order: a thread that finishes a light
            # block starts the next one instead of waiting for its neighbour's (no barrier per
            # round), and memory stays bounded whatever the piece's length
            with ThreadPoolExecutor(workers) as pool:
                pending = collections.deque()
                for block in blocks:
                    if len(pending) == 2 * workers:
                        yield pending.popleft().result()
                    pending.append(pool.submit(render, block))
                while pending:
                    yield pending.popleft().result()
        else:
            for block in blocks:
                yield render(block)

    @staticmethod
    def _map(fn, windows: torch.Tensor, pool, workers: int) -> torch.Tensor:
        """``fn`` on a batch, split between ``pool``'s threads if there is one."""
        if pool is None:
            return fn(windows)

        def run(part):
            with torch.no_grad():
                return fn(part)

        return torch.cat(list(pool.map(run, [p for p in windows.tensor_split(workers) if len(p)])))

    def _run_windows(self, windows: torch.Tensor, offsets: torch.Tensor, pool, workers: int) -> torch.Tensor:
        """The model on a batch of windows, split between ``pool``'s threads if there is one."""
        if pool is None:
            return self._dry(windows, offsets)

        def run(part):
            with torch.no_grad():  # grad mode is per thread
                return self._dry(*part)

        parts = [p for p in zip(windows.tensor_split(workers), offsets.tensor_split(workers)) if len(p[0])]
        return torch.cat(list(pool.map(run, parts)))


def build_model(model_cfg, feature_cfg) -> PianoSynth:
    """The model a config describes (configs stay outside the model's signature)."""
    return PianoSynth(
        in_channels=feature_cfg.n_channels,
        hop_samples=feature_cfg.hop_samples,
        cell=model_cfg.cell,
        layers=model_cfg.layers,
        hidden=model_cfg.hidden,
        bidirectional=model_cfg.bidirectional,
        decoder=model_cfg.decoder,
        window=model_cfg.window,
        dropout=model_cfg.dropout,
        sample_rate=feature_cfg.sample_rate,
        reverb_seconds=model_cfg.reverb_seconds,
        channels=feature_cfg.channels,
    )
