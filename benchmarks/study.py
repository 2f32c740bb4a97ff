"""The report's study at CPU scale: one factor at a time from configs/base.yaml, equal wall clock.

    python benchmarks/study.py --asap ../shared/data/asap --hours 2 --minutes 5 --threads 1

Every run trains on the same fixed subset of the ASAP train split (``prepare --max-hours 2``) for
the same wall-clock budget, and is then scored on the same fixed validation crops (4 s each,
evenly spaced through the valid split), whatever its own example duration. Results go to
``docs/study/results.json``, the curves to ``docs/study/curves.png`` and the table to
``docs/study.md``. A finished variant is not run again (delete its entry in results.json to redo
it), so the script can be interrupted and started again.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from doc_block import replace_block

from pianosynth.config import load_config
from pianosynth.dataset import Cache, CropDataset, find_sources, prepare, select_subset
from pianosynth.losses import WeightedLoss
from pianosynth.checkpoint import model_from_checkpoint
from pianosynth.train import train, validate

ROOT = Path(__file__).resolve().parents[1]

# (factor, variant name, overrides of configs/base.yaml); "base" is the reference point
VARIANTS = [
    ("base", "base (gru, 2 layers, batch 16, 2 s, logmag, bidirectional)", []),
    ("cell", "cell=lstm", ["model.cell=lstm"]),
    ("cell", "cell=rnn", ["model.cell=rnn"]),
    ("layers", "layers=1", ["model.layers=1"]),
    ("layers", "layers=3", ["model.layers=3"]),
    ("batch", "batch=8", ["train.batch_size=8"]),
    ("batch", "batch=32", ["train.batch_size=32"]),
    ("duration", "example=1 s", ["train.example_seconds=1.0"]),
    ("duration", "example=4 s", ["train.example_seconds=4.0"]),
    ("loss", "loss=mse", ["train.loss={mse: 1.0}"]),
    ("loss", "loss=mse+logmag", ["train.loss={mse: 1000.0, logmag: 1.0}"]),
    ("bidirectional", "unidirectional", ["model.bidirectional=false"]),
]


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--asap", default=str(ROOT.parent / "shared" / "data" / "asap"))
    parser.add_argument("--hours", type=float, default=2.0, help="hours of ASAP to prepare (all splits)")
    parser.add_argument("--minutes", type=float, default=5.0, help="wall-clock budget per run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--cache-root", default=str(ROOT / "cache"))
    parser.add_argument("--runs", default=str(ROOT / "runs" / "study"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run")
    parser.add_argument("--report-only", action="store_true", help="only rewrite the doc from results.json")
    parser.add_argument(
        "--curves", nargs="*", default=[], metavar="LABEL=RUN_DIR",
        help="longer runs (trained side by side) whose valid curves to plot instead of the budget runs'",
    )  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "study").mkdir(parents=True, exist_ok=True)
    results_path = out / "study" / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}

    base_cfg = load_config(ROOT / "configs" / "base.yaml")
    sources = select_subset(find_sources(Path(args.asap)), max_hours=args.hours)
    cache_dir = prepare(sources, Path(args.cache_root), base_cfg, name="asap", jobs=2)
    cache = Cache(cache_dir)
    # the same yardstick for every run: 4 s crops evenly spaced through the valid split
    yardstick = CropDataset(cache, "valid", example_seconds=4.0, examples=48, random_crops=False)

    for factor, name, overrides in VARIANTS:
        if args.report_only or name in results or (args.only and name not in args.only):
            continue
        cfg = load_config(
            ROOT / "configs" / "base.yaml",
            overrides + [f"train.max_minutes={args.minutes}", "train.steps=1000000", "train.valid_every=25",
                         "train.valid_examples=16", "train.checkpoint_every=50"],
        )  # fmt: skip
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.time()
        result = train(cfg, cache_dir, runs_root=args.runs, name=slug(name))
        model, _ = model_from_checkpoint(result.run_dir / "last.pt")
        final = validate(model, WeightedLoss(cfg.train.loss), yardstick, torch.device("cpu"))
        results[name] = {
            "factor": factor,
            "overrides": overrides,
            "steps": result.step,
            "minutes": args.minutes,
            "wall_s": time.time() - t0,
            "mrstft": final["mrstft"],
            "lsd": final["lsd"],
            "params": sum(p.numel() for p in model.parameters()),
            "run_dir": str(Path(result.run_dir).relative_to(ROOT)) if Path(result.run_dir).is_relative_to(ROOT) else str(result.run_dir),
            "curve": read_curve(result.run_dir / "metrics.csv"),
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(f"   {result.step} steps, MR-STFT {final['mrstft']:.3f}, LSD {final['lsd']:.2f} dB", file=sys.stderr)

    write_report(results, cache, out, args)
    return 0


def read_curve(metrics_csv: Path) -> list[tuple[float, float]]:
    """(elapsed seconds, valid MR-STFT) pairs from a run's metrics.csv."""
    with open(metrics_csv) as f:
        return [(float(r["elapsed_s"]), float(r["mrstft"])) for r in csv.DictReader(f) if r["split"] == "valid"]


def write_report(results: dict, cache: Cache, out: Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if args.curves:
        for item in args.curves:
            label, run_dir = item.split("=", 1)
            t, d = zip(*read_curve(Path(run_dir) / "metrics.csv"))
            ax.plot(np.array(t) / 60, d, marker=".", label=label)
    else:
        for name in ("base (gru, 2 layers, batch 16, 2 s, logmag, bidirectional)", "loss=mse", "loss=mse+logmag"):
            if name in results:
                t, d = zip(*results[name]["curve"])
                label = {"loss=mse": "mse", "loss=mse+logmag": "mse + logmag"}.get(name, "logmag (base)")
                ax.plot(np.array(t) / 60, d, marker=".", label=label)
    ax.set_xlabel("wall-clock minutes (1 CPU thread)")
    ax.set_ylabel("valid MR-STFT distance (lower is better)")
    ax.set_title("Training loss: log-magnitude vs time-domain MSE")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "study" / "curves.png", dpi=110)
    plt.close(fig)

    summary = cache.summary()["splits"]
    lines = [
        "| factor | variant | steps in budget | MR-STFT | LSD (dB) | parameters |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for factor, name, _ in VARIANTS:
        if name in results:
            r = results[name]
            lines.append(f"| {factor} | {name} | {r['steps']} | {r['mrstft']:.3f} | {r['lsd']:.2f} | {r['params']:,} |")
    table = "\n".join(lines)
    replace_block(
        out / "study.md",
        "study-table",
        f"Data: `{cache.dir.name}` ({summary['train']['hours']:.2f} h train, "
        f"{summary['valid']['hours']:.2f} h valid); budget {args.minutes:g} wall-clock minutes per run, "
        f"{args.threads} CPU thread(s). Scores: the last checkpoint on 48 fixed 4 s crops of the valid split.\n\n"
        f"{table}",
    )


if __name__ == "__main__":
    sys.exit(main())
