"""The K-weighting candidates for the loudness meter (issue 21), side by side in one run:
import time (median of 3 fresh processes), metering speed on stereo noise, and the loudness each
reads on white noise at 16 and 48 kHz.

    python benchmarks/kweighting.py

- numpy: ``audio.LoudnessMeter`` (BS.1770's biquads with pyloudnorm's parameters, run over
  blocks by ``audio.BlockFilter``), what the project uses;
- pyebur128: libebur128 in Cython (the standard's 48 kHz coefficients), if installed;
- pyloudnorm: its ``Meter`` (scipy.signal's ``lfilter``), whole signal at once.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import numpy as np

from pianosynth.audio import LoudnessMeter

BLOCK = 1 << 16


def import_seconds(module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) for _ in range(3)]
    return statistics.median(runs)


def ours(x: np.ndarray, sr: int) -> float:
    meter = LoudnessMeter(sr, channels=x.shape[0])
    for lo in range(0, x.shape[1], BLOCK):
        meter.add(x[:, lo : lo + BLOCK])
    return meter.loudness()


def ebur128(x: np.ndarray, sr: int) -> float:
    import pyebur128

    state = pyebur128.R128State(x.shape[0], sr, pyebur128.MeasurementMode.MODE_I)
    for lo in range(0, x.shape[1], BLOCK):
        block = np.ascontiguousarray(x[:, lo : lo + BLOCK].T, dtype=np.float64)  # interleaved
        state.add_frames(block.ravel(), len(block))
    return pyebur128.get_loudness_global(state)


def loudnorm(x: np.ndarray, sr: int) -> float:
    import pyloudnorm

    return pyloudnorm.Meter(sr).integrated_loudness(x.T.astype(np.float64))


def main() -> None:
    try:
        import pyebur128  # noqa: F401

        candidates = {"numpy (audio.LoudnessMeter)": ours, "pyebur128": ebur128, "pyloudnorm": loudnorm}
    except ImportError:
        print("pyebur128 is not installed: its row is left out")
        candidates = {"numpy (audio.LoudnessMeter)": ours, "pyloudnorm": loudnorm}
    modules = {"numpy (audio.LoudnessMeter)": "pianosynth.audio", "pyebur128": "pyebur128", "pyloudnorm": "pyloudnorm"}
    print(f"import numpy alone: {import_seconds('numpy'):.3f} s (median of 3; the numpy row's import includes it)")
    rng = np.random.default_rng(0)
    x48 = (0.1 * rng.standard_normal((2, 60 * 48000))).astype(np.float32)  # a minute of stereo noise
    x16 = (0.1 * rng.standard_normal((2, 60 * 16000))).astype(np.float32)
    print(f"{'candidate':30s} {'import s':>9s} {'ns/sample/ch':>13s} {'LUFS 48k':>9s} {'LUFS 16k':>9s}")
    for name, fn in candidates.items():
        times = []
        for _ in range(3):
            t = time.perf_counter()
            lufs48 = fn(x48, 48000)
            times.append(time.perf_counter() - t)
        lufs16 = fn(x16, 16000)
        ns = statistics.median(times) / x48.size * 1e9
        print(f"{name:30s} {import_seconds(modules[name]):9.3f} {ns:13.1f} {lufs48:9.3f} {lufs16:9.3f}")


if __name__ == "__main__":
    main()
