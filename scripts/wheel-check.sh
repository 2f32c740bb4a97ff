#!/usr/bin/env bash
# The wheel a user would install: built by `python -m build`, installed into a clean virtualenv
# with torch==2.13.0 first (pyproject's range alone could pull a CUDA build of several GB), then
# `pianosynth demo` run from a folder outside the checkout. Part of `make test`, so CI runs it.
# Needs pip to reach its index; fails (never skips) when it cannot.
set -euo pipefail
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}
TORCH_PIP_ARGS=${TORCH_PIP_ARGS:-}
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/pianosynth-wheel.XXXXXX")"
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m venv "$work/build-env"
"$work/build-env/bin/pip" install -q build
"$work/build-env/bin/python" -m build -q --wheel --outdir "$work/dist" "$root" >/dev/null
wheel=$(ls "$work"/dist/pianosynth-*.whl)
echo "built $(basename "$wheel") ($(du -k "$wheel" | cut -f1) kB)"

"$PYTHON" -m venv "$work/clean"
# shellcheck disable=SC2086  # TORCH_PIP_ARGS is a list of pip options
"$work/clean/bin/pip" install -q "$TORCH" $TORCH_PIP_ARGS
"$work/clean/bin/pip" install -q "$wheel"
cd "$work"
"$work/clean/bin/pianosynth" demo --out "$work/demo"
"$work/clean/bin/python" - "$work/demo/demo.wav" <<'PY'
import sys

import soundfile as sf

info = sf.info(sys.argv[1])
assert info.frames > info.samplerate, info  # more than a second of audio
print(f"wheel demo: {info.frames / info.samplerate:.1f} s at {info.samplerate} Hz from a clean venv")
PY
# a command that needs an extra says which, in one line, and exits 1
needs_extra() {  # EXTRA, then the command's arguments
  local extra=$1 err rc=0
  shift
  err=$(timeout 120 "$work/clean/bin/pianosynth" "$@" 2>&1 >/dev/null) || rc=$?  # serve would otherwise run on
  if [ "$rc" != 1 ] || [ "$(printf '%s\n' "$err" | wc -l)" != 1 ] || [[ "$err" != *"pip install 'pianosynth[$extra]'"* ]]; then
    echo "pianosynth $* in the core install: exit $rc, expected 1 and one line naming the $extra extra: $err" >&2
    exit 1
  fi
}
needs_extra plot synthesize "$work/demo/demo.mid" -o "$work/plot.wav" --plot
needs_extra serve serve
echo "wheel core: --plot and serve name the extra they need"
# only the core: nothing of the extras came along
for extra in matplotlib tensorboard starlette librosa playwright; do
  if "$work/clean/bin/python" -c "import $extra" 2>/dev/null; then
    echo "the core install pulled in $extra" >&2
    exit 1
  fi
done
