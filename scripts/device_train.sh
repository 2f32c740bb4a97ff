#!/usr/bin/env bash
# The grand's GPU run (docs/grand.md, "The GPU run"), as run on a lent machine that has torch but
# no network, in calls of at most 64 MiB each. Run from the repository root.
#
#   scripts/device_train.sh add CHUNK            unpack a packed chunk (scripts/pack_cache.py) into the cache
#   scripts/device_train.sh smoke [BATCH STEPS]  a few steps on the GPU: does it run, and how fast
#   scripts/device_train.sh train MIN BATCH LR   warm-start from the shipped grand, train MIN minutes
#
# Environment: CACHE (default /tmp/gpucache), RUN (default /tmp/gpurun), OUT (where results go),
# WHEELS (default .whl: soundfile, cffi, pycparser, mido, soxr for the target's Python).
set -euo pipefail
CACHE=${CACHE:-/tmp/gpucache}
RUN=${RUN:-/tmp/gpurun}
WHEELS=${WHEELS:-.whl}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1

site() {
    if [ ! -f /tmp/site/soundfile.py ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
    fi
    export PYTHONPATH="src:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
}

# minutes batch lr run-dir [KEY=VALUE ...]: through the API (the CLI loads every command's
# modules, and evaluation's need more packages than this machine has)
train() {
    local minutes=$1 batch=$2 lr=$3 run=$4
    shift 4
    "$PY" -c '
import sys

from pianosynth.commands.train import _TqdmReporter
from pianosynth.recipes import load_recipe
from pianosynth.train import train

cache, run, sets = sys.argv[1], sys.argv[2], sys.argv[3:]
result = train(load_recipe("grand", sets), cache, run_dir=run, reporter=_TqdmReporter())
print(f"stopped at step {result.step} ({result.stopped}); best valid MR-STFT {result.best_valid:.4f}")
' "$CACHE" "$run" train.init_from=grand train.max_minutes="$minutes" train.batch_size="$batch" \
        train.learning_rate="$lr" train.num_workers="${WORKERS:-6}" "$@"
}

case "${1:-}" in
add)
    site
    "$PY" scripts/pack_cache.py unpack "$2" --cache "$CACHE"
    ;;
smoke)
    site
    "$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
    rm -rf /tmp/smoke
    train 0 "${2:-16}" 0.0005 /tmp/smoke train.steps="${3:-20}" train.valid_every=10 train.valid_examples=16
    "$PY" -c '
import csv
rows = [r for r in csv.DictReader(open("/tmp/smoke/metrics.csv")) if r["split"] == "train"]
t = [float(r["elapsed_s"]) for r in rows]
h = len(t) // 2
print(f"smoke: {len(rows)} steps, {t[-1]:.1f} s in all, {(t[-1] - t[h]) / max(1, len(t) - 1 - h):.3f} s/step over the second half")
print("losses:", [round(float(r["loss"]), 3) for r in rows])
'
    ;;
train)
    site
    train "$2" "$3" "$4" "$RUN" train.valid_every="${VALID_EVERY:-250}" train.checkpoint_every=100 || echo "train exited with $?"
    if [ -n "${OUT:-}" ]; then
        for f in best.pt last.pt metrics.csv config.yaml meta.json; do
            if [ -f "$RUN/$f" ]; then cp "$RUN/$f" "$OUT/"; fi
        done
        ls -la "$OUT"
    fi
    ;;
*)
    echo "usage: $0 add CHUNK | smoke [BATCH STEPS] | train MINUTES BATCH LR" >&2
    exit 2
    ;;
esac
