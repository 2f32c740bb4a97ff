"""Would compiled kernels pay? Two of the grand's hot spots written in plain C, compiled here with
the system's C compiler (``cc -O3``; AVX2 and FMA where the processor has them, through GCC's
``target_clones``), called through ctypes on one thread, and timed against the torch code that a
render runs today, on the same inputs:

- **the encoder's recurrence**: one direction of one GRU layer of the shipped ``grand`` (its own
  weights, hidden 128) over a window of 2,125 frames (``Synth.render``'s 30-s chunks with 2 s of
  context either side) for 10 and 15 windows at once (a 5-minute piece's batch, and a long
  piece's): ``nn.GRU`` against a C loop over the steps (the input's part of the gates computed
  first by one torch matrix product, as torch does; then per step the hidden part and the gates,
  with a vectorizable exponential);
- **the partials' spectrum**: one block's call of ``InverseFFTSynth._summed`` (the sum of every
  partial's eight window-transform taps into its frame's spectrum, both channels), captured from
  the shipped ``grand`` rendering a generated piece, against one C loop over the entries.

    python benchmarks/native_kernels.py [--repeats 5]

Prints the medians and the largest difference from torch's result. Not a test: only what one run
measures side by side is compared. Needs ``cc`` (Debian: ``apt-get install gcc``).
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import pianosynth
from pianosynth.decoders import spectral
from pianosynth.examples import generate_piece
from pianosynth.midi import write_midi

C_SOURCE = r"""
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

/* gh[b, :] = bh + h[b, :] W_hh^T with wt = W_hh^T (H, 3H): each row's hidden part of the gates */
CLONES static void hidden_part(int64_t B, int64_t H, const float *h, const float *wt, const float *bh, float *gh)
{
    const int64_t G = 3 * H;
    for (int64_t b = 0; b < B; b++) {
        float *g = gh + b * G;
        memcpy(g, bh, G * sizeof(float));
        for (int64_t k = 0; k < H; k++) {
            const float hk = h[b * H + k];
            const float *w = wt + k * G;
            for (int64_t j = 0; j < G; j++) g[j] += hk * w[j];
        }
    }
}

/* e^x to a few ulp on [-87, 88]: x = n ln 2 + r, a degree-6 polynomial in r, times 2^n */
static inline float exp_poly(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    union { int32_t i; float f; } s;
    s.i = ((int32_t)n + 127) << 23;
    return p * s.f;
}

CLONES static void gates(int64_t B, int64_t H, const float *x, const float *gh, float *h, float *out, int64_t out_b_stride)
{
    const int64_t G = 3 * H;
    for (int64_t b = 0; b < B; b++) {
        const float *xb = x + b * G, *g = gh + b * G;
        float *hb = h + b * H, *o = out + b * out_b_stride;
        for (int64_t i = 0; i < H; i++) {
            const float r = 1.0f / (1.0f + exp_poly(-(xb[i] + g[i])));
            const float z = 1.0f / (1.0f + exp_poly(-(xb[H + i] + g[H + i])));
            const float n = 2.0f / (1.0f + exp_poly(-2.0f * (xb[2 * H + i] + g[2 * H + i] * r))) - 1.0f;
            hb[i] = (hb[i] - n) * z + n;
            o[i] = hb[i];
        }
    }
}

/* gi: (T, B, 3H) the input's part of the gates, biases included; out: (T, B, H) */
int gru_direction(int64_t T, int64_t B, int64_t H, const float *gi, const float *wt, const float *bh, int reverse, float *out)
{
    float *h = calloc(B * H, sizeof(float)), *gh = malloc(B * 3 * H * sizeof(float));
    if (!h || !gh) { free(h); free(gh); return 1; }
    for (int64_t s = 0; s < T; s++) {
        const int64_t t = reverse ? T - 1 - s : s;
        hidden_part(B, H, h, wt, bh, gh);
        gates(B, H, gi + t * B * 3 * H, gh, h, out + t * B * H, H);
    }
    free(h); free(gh);
    return 0;
}

/* out: (C, slots * bins) complex as float pairs, zeroed; amp, phase: (n, C); the kernels' rows
   (2K, taps): a partial's positive lobe in row k, its negative image in row K + k */
void summed(int64_t n, int64_t C, const float *amp, const float *phase, const int64_t *slot, const int64_t *index,
            int64_t taps, const int64_t *bins, const float *w, const uint8_t *near_zero, int64_t K, int64_t nbins,
            int64_t n_out, float *out)
{
    for (int64_t e = 0; e < n; e++) {
        const int64_t k = index[e], base = slot[e] * nbins;
        for (int64_t c = 0; c < C; c++) {
            const float half = 0.5f * amp[e * C + c];
            const float re = sinf(phase[e * C + c]) * half, im = -cosf(phase[e * C + c]) * half;
            float *o = out + 2 * (c * n_out + base);
            for (int64_t t = 0; t < taps; t++) {
                float *p = o + 2 * bins[k * taps + t];
                p[0] += re * w[k * taps + t];
                p[1] += im * w[k * taps + t];
            }
            if (near_zero[k])
                for (int64_t t = 0; t < taps; t++) {
                    float *p = o + 2 * bins[(K + k) * taps + t];
                    p[0] += re * w[(K + k) * taps + t];
                    p[1] -= im * w[(K + k) * taps + t];
                }
        }
    }
}
"""

I64, PTR = ctypes.c_int64, ctypes.c_void_p


def compile_kernels(tmp: Path) -> ctypes.CDLL:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc) here: apt-get install gcc")
    (tmp / "kernels.c").write_text(C_SOURCE)
    subprocess.run([cc, "-O3", "-shared", "-fPIC", "-o", str(tmp / "kernels.so"), str(tmp / "kernels.c"), "-lm"], check=True)
    return ctypes.CDLL(str(tmp / "kernels.so"))


def median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def gru_rows(lib: ctypes.CDLL, rnn: torch.nn.GRU, repeats: int) -> None:
    w_ih, w_hh, b_ih, b_hh = (getattr(rnn, f"{n}_l0").detach() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    single = torch.nn.GRU(w_ih.shape[1], rnn.hidden_size)
    with torch.no_grad():
        for name, value in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), (w_ih, w_hh, b_ih, b_hh)):
            getattr(single, name).copy_(value)
    wt = w_hh.t().contiguous()
    for batch in (10, 15):
        x = torch.rand(2125, batch, w_ih.shape[1])  # (frames, windows, features), time-major as the render runs it

        def ours():
            gi = torch.addmm(b_ih, x.reshape(-1, x.shape[-1]), w_ih.t()).view(x.shape[0], batch, -1)
            out = torch.empty(x.shape[0], batch, rnn.hidden_size)
            if lib.gru_direction(I64(x.shape[0]), I64(batch), I64(rnn.hidden_size), PTR(gi.data_ptr()), PTR(wt.data_ptr()),
                                 PTR(b_hh.data_ptr()), ctypes.c_int(0), PTR(out.data_ptr())):  # fmt: skip
                raise MemoryError
            return out

        with torch.no_grad():
            t_torch, ref = median_seconds(lambda: single(x)[0], repeats)
            t_c, out = median_seconds(ours, repeats)
        print(f"GRU direction, 2,125 steps x {batch} windows, hidden {rnn.hidden_size}: torch {t_torch * 1e3:.1f} ms, "
              f"C {t_c * 1e3:.1f} ms ({t_torch / t_c:.2f} x), largest difference {float((out - ref).abs().max()):.1e}")  # fmt: skip


def spectrum_rows(lib: ctypes.CDLL, synth: "pianosynth.Synth", repeats: int) -> None:
    captured = {}
    original = spectral.InverseFFTSynth._summed

    def capture(self, amp, phase, slot, index, n_slots, kernels):
        captured.setdefault("call", (self, amp, phase, slot, index, n_slots, kernels))
        return original(self, amp, phase, slot, index, n_slots, kernels)

    with tempfile.TemporaryDirectory() as tmp:
        midi = Path(tmp) / "piece.mid"
        write_midi(generate_piece(seed=0, bars=8, bpm=96.0), midi)
        spectral.InverseFFTSynth._summed = capture
        try:
            synth.render(midi)
        finally:
            spectral.InverseFFTSynth._summed = original
    fft, amp, phase, slot, index, n_slots, kernels = captured["call"]
    bins, w, near_zero = (k.contiguous() for k in kernels)
    amp, phase, slot, index = amp.contiguous(), phase.contiguous(), slot.contiguous(), index.contiguous()
    near = near_zero.to(torch.uint8)
    C = amp.shape[1]

    def ours():
        out = torch.zeros(C, n_slots * fft.bins, dtype=torch.complex64)
        lib.summed(I64(len(amp)), I64(C), PTR(amp.data_ptr()), PTR(phase.data_ptr()), PTR(slot.data_ptr()), PTR(index.data_ptr()),
                   I64(fft.taps), PTR(bins.data_ptr()), PTR(w.data_ptr()), PTR(near.data_ptr()), I64(len(near)),
                   I64(fft.bins), I64(n_slots * fft.bins), PTR(out.data_ptr()))  # fmt: skip
        return out.view(C, n_slots, fft.bins).transpose(0, 1)

    t_torch, ref = median_seconds(lambda: original(fft, amp, phase, slot, index, n_slots, kernels), repeats)
    t_c, out = median_seconds(ours, repeats)
    print(f"partials' spectrum, one block ({len(amp):,} entries x {C} channels x {fft.taps} taps into {n_slots} frames): "
          f"torch {t_torch * 1e3:.1f} ms, C {t_c * 1e3:.1f} ms ({t_torch / t_c:.2f} x), "
          f"largest difference {float((out - ref).abs().max() / ref.abs().max()):.1e} of the peak")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    synth = pianosynth.load("grand", threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        lib = compile_kernels(Path(tmp))
        gru_rows(lib, synth.model.encoder.rnn, args.repeats)
        spectrum_rows(lib, synth, args.repeats)


if __name__ == "__main__":
    main()
