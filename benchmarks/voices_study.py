"""Issue 9's comparison: the report's system, the phase-aware default and the voices decoder, each
trained from its own shipped recipe for the same wall-clock budget on the same threads, then
``pianosynth evaluate`` on the ASAP test split with the baselines.

    python benchmarks/voices_study.py --cache cache/asap-e630115312 --minutes 15 --threads 1 --tag 15min

Each system is ``configs/<name>.yaml`` with only ``train.max_minutes`` changed (so the cosine
learning-rate decay ends with the budget), seed 0. Its best checkpoint (by valid MR-STFT) is
evaluated with the others, on the same clips, beside the baselines and any ``--extra``
checkpoints. Results go to ``docs/voices/results-<tag>.json``, ``docs/voices/metrics-<tag>.md``,
close-ups to ``docs/voices/closeups-<tag>.png`` and the table to ``docs/voices.md`` (between the
``voices-<tag>`` markers). A finished system is not trained again, so the script can be stopped
and started again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
from doc_block import replace_block
from phase_study import plot_closeups, run_record

from pianosynth.config import load_config
from pianosynth.dataset import Cache
from pianosynth.evaluate import evaluate
from pianosynth.train import train

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("report", "istft", "voices")  # configs/<name>.yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="a cache made by prepare (the same one for every system)")
    parser.add_argument("--minutes", type=float, default=15.0, help="wall-clock budget per system")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--tag", required=True, help="names the outputs, e.g. 15min")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), help="configs to train, or variants named with --variant")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL=CONFIG|KEY=VALUE|...",
                        help="a config with overrides, trained as system LABEL, e.g. 'voices-mrstft=voices|train.loss={mrstft: 1.0}'")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the saved metrics, no training or evaluation")
    parser.add_argument("--runs", default=str(ROOT / "runs" / "voices"))
    parser.add_argument("--out", default=str(ROOT / "docs"))
    parser.add_argument("--eval-out", default=None, help="the evaluation's folder (default out/eval-voices-TAG)")
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--extra", action="append", default=[], metavar="NAME=CHECKPOINT", help="also evaluate this checkpoint")
    parser.add_argument("--train-only", action="store_true", help="train, skip the evaluation")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out) / "voices"
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / f"results-{args.tag}.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    cache = Cache(args.cache)
    eval_out = Path(args.eval_out or ROOT / "out" / f"eval-voices-{args.tag}")

    variants = {}
    for item in args.variant:
        label, spec = item.split("=", 1)
        config, *sets = spec.split("|")
        variants[label] = (config, sets)
    if args.table_only:
        ev = json.loads((out / f"metrics-{args.tag}.json").read_text())
        write_table(results, ev, args, Path(args.out) / "voices.md")
        return 0
    for name in args.systems:
        if name in results:
            continue
        config, sets = variants.get(name, (name, []))
        overrides = sets + [f"train.max_minutes={args.minutes}"]
        cfg = load_config(ROOT / "configs" / f"{config}.yaml", overrides)
        print(f"== {name}", file=sys.stderr, flush=True)
        t0 = time.time()
        result = train(cfg, cache.dir, runs_root=args.runs, name=f"{name}-{args.tag}")
        results[name] = {
            "config": f"configs/{config}.yaml",
            "decoder": cfg.model.decoder,
            "loss": "+".join(cfg.train.loss),
            **run_record(result, overrides, args, time.time() - t0),
        }
        results_path.write_text(json.dumps(results, indent=1))
        print(f"   {result.step} steps, best valid MR-STFT {result.best_valid:.3f}", file=sys.stderr, flush=True)

    if args.train_only:
        return 0
    names = [n for n in args.systems if n in results]
    models = [results[n]["checkpoint"] for n in names]
    for item in args.extra:
        extra_name, path = item.split("=", 1)
        names.append(extra_name)
        models.append(path)
    ev = evaluate(cache, models, eval_out, split="test", clips=args.clips, model_names=names,
                  progress=lambda *a: print(a[-1], file=sys.stderr, flush=True))  # fmt: skip
    shutil.copy(eval_out / "metrics.md", out / f"metrics-{args.tag}.md")
    shutil.copy(eval_out / "metrics.json", out / f"metrics-{args.tag}.json")
    plot_closeups(ev, eval_out, out / f"closeups-{args.tag}.png")
    write_table(results, ev, args, Path(args.out) / "voices.md")
    return 0


def write_table(results: dict, ev: dict, args, doc: Path) -> None:
    """The systems' table (training side, test metrics) between the tag's markers in docs/voices.md."""
    lines = [
        "| system | decoder | loss | params | steps | valid MR-STFT | test MR-STFT ↓ | floored −80 dB ↓ | LSD dB ↓ | loudness r ↑ | note F1 ↑ |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by_label = {s["name"].split(" (")[0]: s["name"] for s in ev["systems"]}
    rows = [(n, results.get(n)) for n in by_label if ev["summary"][by_label[n]] is not None]
    for name, r in rows:
        m = ev["summary"][by_label[name]]
        kind = next(s["kind"] for s in ev["systems"] if s["name"] == by_label[name])
        if kind == "baseline" and not name.startswith(("FluidR3 grand, every", "silence")):
            continue
        f = lambda k, d: "—" if m[k]["mean"] is None else f"{m[k]['mean']:.{d}f}"  # noqa: E731
        if r is None:
            lines.append(f"| {name} | | | | | | {f('mrstft', 3)} | {f('mrstft_floor80', 3)} | {f('lsd', 2)} | {f('loudness_r', 3)} | {f('note_f1', 3)} |")
        else:
            lines.append(
                f"| {name} | {r['decoder']} | {r['loss']} | {r['params']:,} | {r['steps']} | {r['valid_mrstft']:.3f} | "
                f"{f('mrstft', 3)} | {f('mrstft_floor80', 3)} | {f('lsd', 2)} | {f('loudness_r', 3)} | {f('note_f1', 3)} |"
            )
    any_r = next(iter(results.values()), None)
    budget = (
        f"budget {any_r['minutes']:g} wall-clock minutes per system on {any_r['threads']} CPU thread(s), seed 0"
        if any_r else "checkpoints trained elsewhere, each row says how"
    )
    replace_block(
        doc,
        f"voices-{args.tag}",
        f"Data: `{ev['cache']}`; {budget}; test metrics on {len(ev['clips'])} clips of "
        f"{ev['clips'][0]['seconds']:g} s (the whole evaluation, baselines included, is in "
        f"[voices/metrics-{args.tag}.md](voices/metrics-{args.tag}.md)).\n\n" + "\n".join(lines),
    )


if __name__ == "__main__":
    sys.exit(main())
