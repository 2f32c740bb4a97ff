"""One explicit, step-based training loop with checkpoints, exact resume and optional DDP.

A run lives in ``runs/<name>-<hash>/``:

    config.yaml       the resolved config (features and render taken from the cache)
    meta.json         package version, git commit, cache folder, world size
    metrics.csv       step, elapsed seconds, split, loss and distances
    tb/               TensorBoard events
    last.pt, best.pt  checkpoints: everything synthesize needs, plus optimizer, step and RNG

The hash leaves out ``train.steps`` and ``train.max_minutes``, so raising either and running the
same command again continues the same run. The i-th training example is a pure function of
(seed, i) (see ``dataset.CropDataset``), so a resumed run sees exactly the batches an
uninterrupted one would.

Distributed: under ``torchrun`` (WORLD_SIZE > 1) each rank trains on its own crops, gradients are
averaged by DistributedDataParallel (gloo on the CPU, nccl on GPUs) and only rank 0 writes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import yaml

from .errors import PianosynthError
from . import __version__
from .checkpoint import CHECKPOINT_FORMAT, CheckpointError, load_checkpoint, model_from_checkpoint, save_checkpoint
from .config import Config, ConfigError, config_from_dict, stable_hash
from .dataset import SPLIT_SOURCE, Cache, CacheError, CropDataset, collate
from .fileio import atomic_write, remove_stale_temps
from .losses import MultiResolutionSTFTDistance, WeightedLoss, channels_as_batch, fft_sizes_for, log_spectral_distance
from .model import PianoSynth, build_model

# Training and its validation floor the denominators that measure the target (spectral
# convergence, the complex term's scale) at white noise of this RMS, so that silent crops (rests,
# the end of a piece) give finite losses and validation numbers; crops louder than this are
# scored as before. `evaluate` publishes the unfloored distance.
LOSS_FLOOR_DBFS = -60.0


class TrainingError(PianosynthError, RuntimeError):
    """Training cannot go on: a non-finite loss, or a run folder that does not fit."""


class Reporter(Protocol):
    """What the loop tells its caller; the CLI shows it as a progress bar.

    ``start`` gives the budget that will stop the run, in its own unit: steps ("step") or seconds
    of a time budget ("s"); ``step`` then gives the progress in that unit. ``start`` is called
    again when the other budget turns out to end first.
    """

    def start(self, total: float, initial: float, unit: str = "step") -> None: ...
    def step(self, done: float, info: dict) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


class SilentReporter:
    def start(self, total: float, initial: float, unit: str = "step") -> None:
        pass

    def step(self, done: float, info: dict) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    best_valid: float
    stopped: str  # "done", "budget" or "interrupted"
    model: PianoSynth  # the trained model (this rank's copy; identical on every rank)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def run_hash(cfg: Config, cache: Cache) -> str:
    """Identity of a run: its config (less the budget) and its data."""
    d = cfg.to_dict()
    d["train"] = {k: v for k, v in d["train"].items() if k not in ("steps", "max_minutes", "num_workers")}
    return stable_hash({"config": d, "cache": cache.dir.name})


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class _StepBatches(torch.utils.data.Sampler):
    """Batch indices for steps ``start..steps-1``: rank r of w takes crops ``(s*w + r)*B + b``."""

    def __init__(self, start: int, steps: int, batch: int, rank: int, world: int):
        self.start, self.steps, self.batch, self.rank, self.world = start, steps, batch, rank, world

    def __iter__(self):
        for s in range(self.start, self.steps):
            first = (s * self.world + self.rank) * self.batch
            yield list(range(first, first + self.batch))

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def _dist_info() -> tuple[int, int, bool]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return rank, world, world > 1


def forward(model: torch.nn.Module, inputs: list[torch.Tensor]) -> torch.Tensor:
    """The model on a collated batch's inputs: [x] or [x, notes]."""
    if len(inputs) == 2:
        return model(inputs[0], None, inputs[1])
    return model(inputs[0])


def _train_pieces(cache: Cache):
    """(audio (channels, samples) or (samples,) float in [-1, 1], note table) of every train piece."""
    for p in cache.split("train"):
        audio = cache.load(p)[1]
        audio = audio.T if audio.ndim == 2 else audio  # a stereo cache stores (samples, 2)
        yield audio.astype(np.float32) / 32767.0, cache.load_notes(p)


def partials_from_cache(cache: Cache, partials: int = 64) -> tuple:
    """``decoders.voices.estimate_partials`` over the train split's audio and note tables."""
    from .decoders.voices import estimate_partials

    return estimate_partials(_train_pieces(cache), cache.features.sample_rate, partials)


def init_from_data(model: PianoSynth, cache: Cache) -> str:
    """Starts a voices decoder's tuning, inharmonicity and onset phases (and the grand's levels
    per channel and partial counts) from the train split's audio (decoders.voices.estimate_partials,
    decoders.grand.estimate_voices); returns a line saying what it found."""
    from .decoders.grand import GrandDecoder, estimate_voices

    dec = model.decoder
    if isinstance(dec, GrandDecoder):
        est = estimate_voices(_train_pieces(cache), cache.features.sample_rate, dec.partials)
        dec.init_from_data(est)
        counts = dec.partial_count.tolist()
        return (
            f"partials from the train audio: {int((est.used >= 3).sum())} of 88 keys had 3 or more clean notes; "
            f"partials above the floor per zone, low to high: {counts}"
        )
    f0, b, phase, used = partials_from_cache(cache, dec.partials)
    dec.init_from_data(f0, b, phase)
    return f"partials from the train audio: {int((used >= 3).sum())} of 88 keys had 3 or more clean notes"


def warm_start(model: PianoSynth, source: str, cfg: Config) -> tuple[str, bool]:
    """Starts ``model`` from the weights of another model (``train.init_from``: a checkpoint or a
    shipped model's name): fine-tuning to another instrument, recordings or feature preset.

    Each tensor of the same name and shape is copied. A tensor that differs only in its last
    dimension and is narrower here (the encoder's input weights when this run reads fewer feature
    channels, e.g. the score preset's 176 against the performance preset's 267, whose first 176
    channels are the same onset and held flags) gets the shared leading part. The rest keeps its
    fresh initialisation.

    Returns:
        (a report line, whether the source learned the same sound: same render settings and
        sample rate, so its learned partials are kept instead of being estimated from the data).
    """
    from .synthesize import resolve_model  # synthesize imports this module

    try:
        path = resolve_model(source)
    except CheckpointError as e:  # a misspelt name
        raise TrainingError(f"train.init_from: {e}") from None
    if not Path(path).is_file():
        raise TrainingError(f"train.init_from: no checkpoint or shipped model {source!r}")
    state = load_checkpoint(path)
    src_model, src_cfg = model_from_checkpoint(state)
    src = src_model.state_dict()
    mine = model.state_dict()
    copied, partial = 0, 0
    with torch.no_grad():
        for name, dst in mine.items():
            value = src.get(name)
            if value is None or value.dim() != dst.dim():
                continue
            if value.shape == dst.shape:
                dst.copy_(value)
                copied += 1
            elif value.shape[:-1] == dst.shape[:-1] and value.shape[-1] > dst.shape[-1]:
                dst.copy_(value[..., : dst.shape[-1]])
                partial += 1
    if copied + partial == 0:
        raise TrainingError(f"train.init_from: {source} shares no weights with this model")
    same_sound = src_cfg.render == cfg.render and src_cfg.features.sample_rate == cfg.features.sample_rate
    line = f"started from {path}: {copied} tensors copied, {partial} in part, {len(mine) - copied - partial} fresh"
    return line + ("" if same_sound else "; another sound, so the partials are estimated from this data"), same_sound


def notes_lookback(model: PianoSynth) -> float | None:
    """How far before a crop a voice's onset may lie and still sound in it (None: no note table)."""
    return model.decoder.max_voice_seconds if model.needs_notes else None


@torch.no_grad()
def validate(
    model: torch.nn.Module, criterion: torch.nn.Module, data: CropDataset, device: torch.device, batch: int = 8,
    floor_dbfs: float | None = LOSS_FLOOR_DBFS, sample_rate: int = 16000,
) -> dict:
    """Mean validation loss, multi-resolution STFT distance (its spectral convergence floored at
    ``floor_dbfs``, see ``LOSS_FLOOR_DBFS``; its FFT sizes those of ``sample_rate``, fft_sizes_for)
    and log-spectral distance (dB)."""
    model.eval()
    mrstft = MultiResolutionSTFTDistance(fft_sizes_for(sample_rate), per_example=True, sc_floor_dbfs=floor_dbfs).to(device)
    losses, dists, lsds = [], [], []
    for first in range(0, len(data), batch):
        items = [data[i] for i in range(first, min(len(data), first + batch))]
        *inputs, y = (t.to(device) for t in collate(items))
        pred = forward(model, inputs)
        losses.append(float(criterion(pred, y)) * len(items))
        pred, y = channels_as_batch(pred, y)
        dists += mrstft(pred, y).tolist()
        lsds += log_spectral_distance(pred, y).tolist()
    model.train()
    return {"loss": sum(losses) / len(data), "mrstft": float(np.mean(dists)), "lsd": float(np.mean(lsds))}


def train(
    cfg: Config,
    cache_dir: str | Path,
    runs_root: str | Path = "runs",
    name: str = "run",
    run_dir: str | Path | None = None,
    restart: bool = False,
    reporter: Reporter | None = None,
) -> TrainResult:
    """Trains (or resumes) a model on a prepared cache. See the module docstring."""
    reporter = reporter or SilentReporter()
    rank, world, distributed = _dist_info()
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if torch.cuda.is_available() else "cpu")
    if distributed:
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend)
        if device.type == "cuda":
            torch.cuda.set_device(device)
    try:
        return _train(cfg, cache_dir, runs_root, name, run_dir, restart, reporter, rank, world, device)
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def _train(cfg, cache_dir, runs_root, name, run_dir, restart, reporter, rank, world, device) -> TrainResult:
    cache = Cache(cache_dir)
    terms = dict(cfg.train.loss)
    if cache.features.channels != 2 and terms.pop("ild", 0):
        # a stereo recipe (the shipped grand's, taken when no recipe is named) on a mono cache
        reporter.message("train.loss.ild left out: the cache is mono, and one channel has no stereo image")
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, loss=terms))
    # The cache decides the features and the reference sound; the run records them.
    cfg = dataclasses.replace(cfg, features=cache.features, render=cache.render)
    tc = cfg.train
    run_dir = Path(run_dir) if run_dir else Path(runs_root) / f"{name}-{run_hash(cfg, cache)}"
    writer_rank = rank == 0
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"

    problems = cache.check_arrays()
    if problems:
        raise CacheError(f"{problems[0]}{f' (and {len(problems) - 1} more)' if len(problems) > 1 else ''}; run prepare again to repair the cache")

    torch.manual_seed(tc.seed)
    try:
        model = build_model(cfg.model, cfg.features).to(device)
    except ValueError as e:  # combinations a single field's range cannot see, e.g. an odd hop for ola
        raise ConfigError(f"model and features do not fit together: {e}") from e
    criterion = WeightedLoss(tc.loss, floor_dbfs=LOSS_FLOOR_DBFS, sample_rate=cfg.features.sample_rate).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.learning_rate)
    step, best, elapsed_before = 0, math.inf, 0.0
    if restart and writer_rank:
        for p in (last_path, best_path, run_dir / "metrics.csv"):
            p.unlink(missing_ok=True)
    if world > 1:
        torch.distributed.barrier()
    if writer_rank:
        remove_stale_temps(run_dir)  # .last.pt.tmp<pid> of a run that was killed while saving
    if last_path.is_file():
        state = load_checkpoint(last_path)
        budget, fixed = resume_differences(state, cfg, last_path)
        if fixed:
            raise TrainingError(
                f"{run_dir} holds a run with other settings ({'; '.join(fixed)}); "
                "use --restart to start it over, or another --run-dir"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, elapsed_before = state["step"], state["best_valid"], state["elapsed_s"]
        torch.set_rng_state(state["rng"]["torch"])
        reporter.message(f"resuming {run_dir} from step {step}")
        if budget:
            reporter.message(f"  with a new budget ({'; '.join(budget)}): these keys may change between runs")
        if writer_rank:
            drop_metrics_after(run_dir / "metrics.csv", step)
    else:
        same_sound = False
        if tc.init_from:
            message, same_sound = warm_start(model, tc.init_from, cfg)
            reporter.message(message)
        if hasattr(model.decoder, "init_from_data") and not same_sound:
            reporter.message(init_from_data(model, cache))

    if writer_rank:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        meta = {"version": __version__, "git_commit": _git_commit(), "cache": str(cache.dir), "world_size": world}
        (run_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    ddp_model = model
    if world > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)

    lookback = notes_lookback(model)
    train_data = CropDataset(cache, "train", tc.example_seconds, seed=tc.seed, notes_lookback_seconds=lookback)
    valid_split = "valid" if cache.split("valid") else "train"
    if valid_split == "train":
        reporter.message(
            "no piece in the valid split of this cache: validating on fixed crops of the train split, which "
            f"measures fit, not generalisation; {SPLIT_SOURCE}"
        )
    valid_data = CropDataset(
        cache, valid_split, tc.example_seconds, examples=tc.valid_examples, random_crops=False, notes_lookback_seconds=lookback
    )
    loader = torch.utils.data.DataLoader(
        train_data,
        batch_sampler=_StepBatches(step, tc.steps, tc.batch_size, rank, world),
        num_workers=tc.num_workers,
        persistent_workers=False,
        collate_fn=collate,
    )

    writer = None
    metrics_file = None
    if writer_rank:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise TrainingError(f"training writes TensorBoard logs and needs {e.name or 'tensorboard'}: pip install 'pianosynth[train]'") from e

        writer = SummaryWriter(str(run_dir / "tb"), purge_step=step)
        new_csv = not (run_dir / "metrics.csv").exists()
        metrics_file = open(run_dir / "metrics.csv", "a", newline="")
        metrics_csv = csv.writer(metrics_file)
        if new_csv:
            metrics_csv.writerow(["step", "elapsed_s", "split", "loss", "mrstft", "lsd"])

    stop = {"signal": None}

    def on_signal(signum, frame):
        stop["signal"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()

    def elapsed() -> float:
        return elapsed_before + time.monotonic() - started

    def checkpoint(path: Path) -> None:
        if writer_rank:
            metrics_file.flush()
            save_checkpoint(
                path,
                {
                    "format": CHECKPOINT_FORMAT,
                    "version": __version__,
                    "config": cfg.to_dict(),
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "step": step,
                    "best_valid": best,
                    "elapsed_s": elapsed(),
                    "rng": {"torch": torch.get_rng_state()},
                },
            )

    def run_validation() -> None:
        nonlocal best
        if not writer_rank:
            return
        v = validate(model, criterion, valid_data, device, sample_rate=cfg.features.sample_rate)
        metrics_csv.writerow([step, f"{elapsed():.1f}", "valid", v["loss"], v["mrstft"], v["lsd"]])
        metrics_file.flush()
        for k, val in v.items():
            writer.add_scalar(f"valid/{k}", val, step)
        reporter.message(f"step {step}: valid loss {v['loss']:.4f}, MR-STFT {v['mrstft']:.4f}, LSD {v['lsd']:.2f} dB")
        if v["mrstft"] < best:
            best = v["mrstft"]
            checkpoint(best_path)

    stopped = "done"
    first_step, bar_unit = step, None
    # A resumed run whose time budget is spent takes no step (it took one more, at a learning rate
    # of 0, and overwrote last.pt), and says how to go on.
    spent = tc.max_minutes > 0 and _agree(elapsed() >= tc.max_minutes * 60, world)
    if spent:
        stopped = "budget"
        reporter.message(f"its budget of {tc.max_minutes:g} min is spent: no step taken; raise train.max_minutes to go on")
    model.train()
    try:
        for batch in () if spent else loader:
            *inputs, y = (t.to(device) for t in batch)
            lr = learning_rate(tc, step, _max_over_ranks(elapsed(), world))  # one clock for every rank
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = criterion(forward(ddp_model, inputs), y)
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"loss became {float(loss.detach())} at step {step + 1}; stopped. The last good checkpoint is "
                    f"{last_path if last_path.exists() else '(none yet)'}; try a lower train.learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            step += 1
            info = {"loss": float(loss.detach()), **criterion.last_terms, "lr": optimizer.param_groups[0]["lr"]}
            if tc.max_minutes > 0:
                info["budget_left_min"] = max(0.0, tc.max_minutes - elapsed() / 60)
            unit, total, done = progress_budget(tc, step, elapsed(), first_step, elapsed_before)
            if unit != bar_unit:
                reporter.start(total, done, unit)
                bar_unit = unit
            reporter.step(done, {"step": step, **info} if unit != "step" else info)
            if writer_rank:
                metrics_csv.writerow([step, f"{elapsed():.1f}", "train", info["loss"], "", ""])
                for k, val in info.items():
                    if k != "budget_left_min":
                        writer.add_scalar(f"train/{k}", val, step)
            halt = _agree(stop["signal"] is not None or (tc.max_minutes > 0 and elapsed() >= tc.max_minutes * 60), world)
            if step % tc.valid_every == 0 or step == tc.steps or halt:
                run_validation()
            if step % tc.checkpoint_every == 0 or step == tc.steps or halt:
                checkpoint(last_path)
            if halt:
                stopped = "interrupted" if stop["signal"] is not None else "budget"
                break
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        reporter.close()
        if writer is not None:
            writer.close()
            metrics_file.close()
    return TrainResult(run_dir, step, best, stopped, model)


BUDGET_KEYS = ("steps", "max_minutes", "num_workers")  # train keys a resumed run may change


def resume_differences(state: dict, cfg: Config, path: Path) -> tuple[list[str], list[str]]:
    """What differs between a checkpoint's config and this run's, as "key: old -> new" lines:
    (budget keys, which a resume may change; every other key, which it may not)."""
    try:
        old = config_from_dict(state["config"]).to_dict()
    except (ConfigError, KeyError) as e:
        raise TrainingError(f"{path}: its config is not one this version can read ({e}); use --restart") from e
    new = cfg.to_dict()
    budget, fixed = [], []
    for section in new:
        for key, value in new[section].items():
            before = old[section].get(key)
            if before != value:
                line = f"{section}.{key}: {before!r} -> {value!r}"
                (budget if section == "train" and key in BUDGET_KEYS else fixed).append(line)
    return budget, fixed


def drop_metrics_after(path: Path, step: int) -> None:
    """Removes the metrics.csv rows logged after ``step`` (those after the checkpoint a run resumes
    from), so the resumed run writes each step once."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    keep = [r for i, r in enumerate(rows) if i == 0 or not r or not r[0].isdigit() or int(r[0]) <= step]
    if len(keep) == len(rows):
        return

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(keep)

    atomic_write(path, write)


def progress_budget(tc, step: int, elapsed_s: float, start_step: int, start_elapsed_s: float) -> tuple[str, float, float]:
    """The budget that will stop the run, as (unit, total, done): ("step", steps, step), or with
    ``max_minutes`` ("s", its seconds, elapsed seconds) unless the steps, at this session's pace so
    far, run out before the clock does."""
    if tc.max_minutes <= 0:
        return "step", tc.steps, step
    budget_s = tc.max_minutes * 60
    if step > start_step:
        pace_s = (elapsed_s - start_elapsed_s) / (step - start_step)
        if elapsed_s + (tc.steps - step) * pace_s < budget_s:
            return "step", tc.steps, step
    return "s", round(budget_s, 1), round(min(elapsed_s, budget_s), 1)


def learning_rate(tc, step: int, elapsed_s: float) -> float:
    """The step size for the next step: constant, or a cosine from ``learning_rate`` down to 0 at
    the end of the run, where the end is whichever of ``steps`` and ``max_minutes`` comes first
    (with a time budget the schedule follows the clock, so a resumed run picks up where it was)."""
    if tc.lr_schedule == "constant":
        return tc.learning_rate
    progress = step / max(1, tc.steps)
    if tc.max_minutes > 0:
        progress = max(progress, elapsed_s / (tc.max_minutes * 60))
    return tc.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _max_over_ranks(value: float, world: int) -> float:
    """The largest of every rank's ``value``, on every rank (so that ranks decide alike)."""
    if world == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t.item())


def _agree(flag: bool, world: int) -> bool:
    """True on every rank if it is true on any (so all ranks stop at the same step)."""
    return _max_over_ranks(1.0 if flag else 0.0, world) > 0
