"""Issue 5's comparison: every decoder x loss pair, same data, same budget, same seed, then
``pianosynth evaluate`` on the ASAP test split with the baselines.

    python benchmarks/phase_study.py --cache cache/asap-e630115312 --minutes 8 --threads 1 \
        --extra "frames+logmag, 65 min (old default)=runs/previous-default.pt"

(``runs/previous-default.pt``: ``git show 3f68521:src/pianosynth/models/default.pt``, the model
shipped before this study; docs/phase.md.)

Each pair trains from ``configs/base.yaml`` with only ``model.decoder`` and ``train.loss`` changed
(cosine learning-rate decay over the budget, seed 0), for the same wall-clock minutes on the same
number of threads. Its best checkpoint (by valid MR-STFT) is then evaluated with the others, on
the same clips, beside the baselines. Results go to ``docs/phase/results.json``,
``docs/phase/metrics.md``, the close-ups to ``docs/phase/closeups.png`` and the table to
``docs/phase.md``. A finished pair is not trained again, so the script can be stopped and
started again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from doc_block import replace_block

from pianosynth.config import load_config
from pianosynth.dataset import Cache
from pianosynth.evaluate import evaluate
from pianosynth.train import train

ROOT = Path(__file__).resolve().parents[1]

LOSSES = {
    "logmag": "{logmag: 1.0}",
    "mrstft": "{mrstft: 1.0}",
    "mrstft+complex": "{mrstft: 1.0, complex: 0.1}",
}
# ddsp + complex is left out: the ddsp decoder's partials run on from the start of the input, so
# their phase at a note's attack has nothing to do with the reference's, and a term that asks for
# the reference's phase can only push the partials down.
PAIRS = [(d, l) for d in ("frames", "istft") for l in LOSSES] + [("ddsp", "logmag"), ("ddsp", "mrstft")]


def run_record(result, overrides: list[str], args, wall_s: float) -> dict:
    """What a study keeps of one finished training run (``train.TrainResult``)."""
    return {
        "overrides": overrides,
        "steps": result.step,
        "minutes": args.minutes,
        "threads": args.threads,
        "wall_s": wall_s,
        "valid_mrstft": result.best_valid,
        "params": sum(p.numel() for p in result.model.parameters()),
        "checkpoint": str(Path(result.run_dir) / "best.pt"),
    }


def label(decoder: str, loss: str) -> str:
    return f"{decoder}+{loss}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="a cache made by prepare (the same one for every pair)")
    parser.add_argument("--minutes", type=float, default=8.0, help="wall-clock budget per pair")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "phase"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--eval-out", default=str(ROOT / "out" / "eval-phase"), help="the evaluation's folder (audio, page)")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=CHECKPOINT", help="also evaluate this checkpoint")
    parser.add_argument("--only", nargs="*", default=None, help="pair labels to train, e.g. istft+mrstft")
    parser.add_argument("--train-only", action="store_true", help="train the pairs, skip the evaluation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / "phase"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    cache = Cache(args.cache)

    for decoder, loss in PAIRS:
        name = label(decoder, loss)
        if name in results or (args.only and name not in args.only):
            continue
        overrides = [
            f"model.decoder={decoder}", f"train.loss={LOSSES[loss]}", "train.lr_schedule=cosine",
            f"train.max_minutes={args.minutes}", "train.steps=1000000", "train.valid_every=100",
            "train.valid_examples=32", "train.checkpoint_every=50",
        ]  # fmt: skip
        cfg = load_config(ROOT / "configs" / "base.yaml", overrides)
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.time()
        result = train(cfg, cache.dir, runs_root=args.runs, name=name.replace("+", "-"))
        results[name] = {"decoder": decoder, "loss": loss, **run_record(result, overrides, args, time.time() - t0)}
        results_path.write_text(json.dumps(results, indent=1))
        print(f"   {result.step} steps, best valid MR-STFT {result.best_valid:.3f}", file=sys.stderr, flush=True)

    if args.train_only:
        return 0
    names = [label(d, l) for d, l in PAIRS if label(d, l) in results]
    models = [results[n]["checkpoint"] for n in names]
    for item in args.extra:
        extra_name, path = item.split("=", 1)
        names.append(extra_name)
        models.append(path)
    ev = evaluate(cache, models, args.eval_out, split="test", clips=args.clips, model_names=names,
                  progress=lambda *a: print(a[-1], file=sys.stderr, flush=True))  # fmt: skip
    for f in ("metrics.md", "metrics.json"):
        shutil.copy(Path(args.eval_out) / f, out / f)
    plot_closeups(ev, Path(args.eval_out), out / "closeups.png")
    write_table(results, ev, args, Path(args.out) / "phase.md")
    return 0


def _db_envelope(audio: np.ndarray, sr: int, frame_s: float = 0.01) -> np.ndarray:
    n = int(sr * frame_s)
    frames = audio[: len(audio) // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames**2, axis=1) + 1e-10)


def find_moments(ev: dict, eval_dir: Path, sr: int = 16000) -> tuple[tuple[str, float], tuple[str, float]]:
    """(clip, time) of the reference's sharpest attack (largest 30 ms rise in level) and sharpest
    release (largest 100 ms fall, from a loud start), searched over every clip."""
    import soundfile as sf

    best_attack, best_release = (None, 0.0, -np.inf), (None, 0.0, -np.inf)
    for clip in ev["clips"]:
        ref, _ = sf.read(eval_dir / "audio" / f"{clip['name']}_s0.wav", dtype="float32")
        env = _db_envelope(ref, sr)
        rise = env[3:] - env[:-3]
        fall = env[:-10] - env[10:]
        fall[env[:-10] < env.max() - 30] = -np.inf  # a release from a real level, not from near silence
        i, j = int(np.argmax(rise[50:-50])) + 50, int(np.argmax(fall[50:-60])) + 50
        if rise[i] > best_attack[2]:
            best_attack = (clip["name"], i * 0.01, rise[i])
        if fall[j] > best_release[2]:
            best_release = (clip["name"], j * 0.01, fall[j])
    return best_attack[:2], best_release[:2]


def plot_closeups(ev: dict, eval_dir: Path, path: Path) -> None:
    """One row per system (the reference first): the attack and the release close up."""
    import matplotlib
    import soundfile as sf

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (attack_clip, t_a), (release_clip, t_r) = find_moments(ev, eval_dir)
    systems = [s for s in ev["systems"] if s["kind"] != "baseline" or s["name"].startswith("FluidR3 grand, every")]
    index = {s["name"]: i for i, s in enumerate(ev["systems"])}
    fig, axes = plt.subplots(len(systems), 2, figsize=(9, 1.6 * len(systems)), squeeze=False)
    window = torch.hann_window(512)
    for row, s in enumerate(systems):
        for col, (clip, t, lo, hi, what) in enumerate(
            [(attack_clip, t_a, 0.15, 0.6, "attack"), (release_clip, t_r, 0.25, 0.75, "release")]
        ):
            audio, sr = sf.read(eval_dir / "audio" / f"{clip}_s{index[s['name']]}.wav", dtype="float32")
            seg = audio[int((t - lo) * sr) : int((t + hi) * sr)]
            spec = torch.stft(torch.from_numpy(seg), 512, 64, window=window, return_complex=True).abs()
            db = 20 * np.log10(spec.numpy() + 1e-5)
            ax = axes[row, col]
            ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=max(-20, db.max()),
                      extent=[-lo * 1000, hi * 1000, 0, sr / 2000])  # fmt: skip
            ax.set_ylim(0, 6)
            ax.tick_params(labelsize=6)
            if row == 0:
                ax.set_title(f"{what}: {clip} at {t:.2f} s", fontsize=8)
            if col == 0:
                ax.set_ylabel(s["name"].split(" (")[0][:26], fontsize=6)
            if row == len(systems) - 1:
                ax.set_xlabel("ms from the event", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_table(results: dict, ev: dict, args, doc: Path) -> None:
    """The decoder x loss table (training side, test metrics) between markers in docs/phase.md."""
    lines = [
        "| decoder | loss | steps | valid MR-STFT | test MR-STFT ↓ | LSD dB ↓ | loudness r ↑ | note F1 ↑ | speed × RT ↑ |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_label = {s["name"].split(" (")[0]: s["name"] for s in ev["systems"]}
    for decoder, loss in PAIRS:
        name = label(decoder, loss)
        if name not in results or name not in by_label:
            continue
        r, m = results[name], ev["summary"][by_label[name]]
        f = lambda k, d: "—" if m[k]["mean"] is None else f"{m[k]['mean']:.{d}f}"  # noqa: E731
        lines.append(
            f"| {decoder} | {loss} | {r['steps']} | {r['valid_mrstft']:.3f} | {f('mrstft', 3)} | {f('lsd', 2)} | "
            f"{f('loudness_r', 3)} | {f('note_f1', 3)} | {f('speed', 0)} |"
        )
    any_r = next(iter(results.values()))
    replace_block(
        doc,
        "phase-table",
        f"Data: `{ev['cache']}`; budget {any_r['minutes']:g} wall-clock minutes per pair on "
        f"{any_r['threads']} CPU thread(s), seed 0; test metrics on {len(ev['clips'])} clips of "
        f"{ev['clips'][0]['seconds']:g} s (the whole evaluation, baselines included, is in "
        f"[phase/metrics.md](phase/metrics.md)).\n\n" + "\n".join(lines),
    )


if __name__ == "__main__":
    sys.exit(main())
