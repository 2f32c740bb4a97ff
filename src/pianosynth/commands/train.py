"""`pianosynth train`: a recipe and a cache into a run folder, with a progress bar."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_INTERRUPTED, UserError


class _TqdmReporter:
    """Shows training as a progress bar with the loss and an ETA (only on rank 0)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.bar = None

    def start(self, total: float, initial: float, unit: str = "step") -> None:
        """A bar over the budget that stops the run: steps, or the seconds of a time budget (its
        ETA is then the time left); a second call (the other budget ends first) replaces it."""
        self.close()
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="train", unit=unit, dynamic_ncols=True, file=sys.stderr)

    def step(self, done: float, info: dict) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in info.items()}, refresh=False)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def cmd_train(args: argparse.Namespace) -> int:
    import os

    from ..recipes import load_recipe
    from ..registry import DEFAULT_ALIAS
    from ..train import train

    fixed = sorted({kv.split("=", 1)[0] for kv in args.set if kv.split(".", 1)[0] in ("features", "render")})
    if fixed:
        raise UserError(f"--set {', '.join(fixed)}: features and render settings come from the cache; set them on prepare")
    cfg = load_recipe(args.config, args.set)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    name = args.name or (Path(args.config).stem if args.config else DEFAULT_ALIAS)  # no recipe: the default model's own
    rank = int(os.environ.get("RANK", "0"))
    result = train(
        cfg, args.cache, runs_root=args.runs, name=name, run_dir=args.run_dir, restart=args.restart,
        reporter=_TqdmReporter(enabled=rank == 0),
    )  # fmt: skip
    if rank == 0:
        print(result.run_dir)
        print(f"stopped at step {result.step} ({result.stopped}); best valid MR-STFT {result.best_valid:.4f}", file=sys.stderr)
    if result.stopped == "interrupted":
        print("interrupted: checkpoint saved; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
