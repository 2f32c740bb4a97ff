"""`pianosynth evaluate`: metrics against the baselines, and the listening page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import UserError


def cmd_evaluate(args: argparse.Namespace) -> int:
    import logging
    import time
    import warnings

    from ..dataset import Cache
    from ..evaluate import evaluate

    logging.getLogger().setLevel(logging.ERROR)  # basic-pitch announces every backend it lacks
    if not args.verbose:  # librosa, resampy and onnxruntime warn about their own internals
        warnings.filterwarnings("ignore")
    cache = Cache(args.cache)
    models = list(args.model)
    if not models and not args.no_default_model:
        from ..synthesize import default_model_path

        models = [str(default_model_path())]
    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.force:
        raise UserError(f"{out} already holds an evaluation; pass --force to overwrite it")
    t0 = time.perf_counter()
    with _ClipBar() as bar:
        result = evaluate(
            cache, models, out, split=args.split, clips=args.clips, seconds=args.seconds,
            baselines=not args.no_baselines, transcribe=not args.no_transcribe,
            progress=bar.update, model_names=args.name or None, threads=args.threads,
            flat_velocity=args.flat_velocity,
        )  # fmt: skip
    from ..evaluate import metrics_table

    print(metrics_table(result))
    print(out / "index.html")
    print(f"evaluated {len(result['clips'])} clip(s) with {len(result['systems'])} system(s) in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


class _ClipBar:
    """Progress over evaluate's clips: a bar on a terminal, a line per clip elsewhere."""

    def __enter__(self):
        from tqdm import tqdm

        self.bar = tqdm(desc="evaluate", unit="clip", dynamic_ncols=True, file=sys.stderr) if sys.stderr.isatty() else None
        return self

    def update(self, done: int, total: int, message: str) -> None:
        if self.bar is None:
            if done < total:
                print(f"[{done + 1}/{total}] {message}", file=sys.stderr)
            return
        self.bar.total = total
        self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(message)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False
