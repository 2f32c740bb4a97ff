"""Training tells the truth on a small folder: every split gets a piece from a subset of 3, silent
crops give finite losses and validation numbers, and the progress bar follows the budget that
stops the run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import needs_fluidsynth

from pianosynth.cli import main
from pianosynth.config import load_config
from pianosynth.dataset import SPLIT_SOURCE, SPLITS, Cache, SourceFile, find_sources, select_subset, split_by_hash
from pianosynth.losses import ComplexSTFTLoss, MultiResolutionSTFTDistance, WeightedLoss, noise_magnitude
from pianosynth.midi import Note, Performance, write_midi
from pianosynth.train import LOSS_FLOOR_DBFS, progress_budget, train

TINY = [
    "model.hidden=8", "model.layers=1", "train.batch_size=2", "train.example_seconds=0.5",
    "train.valid_examples=4", "train.valid_every=2", "train.checkpoint_every=1000",
    "train.loss={mrstft: 1.0, complex: 0.1}",
]  # fmt: skip


def _sources(splits: str) -> list[SourceFile]:
    return [SourceFile(Path(f"/x/{i:02d}.mid"), f"{i:02d}.mid", split, 60.0) for i, split in enumerate(splits.split())]


def test_a_subset_of_three_has_every_split_and_no_file_changes_its_split():
    sources = _sources("train " * 40 + "valid test")  # 42 files, one valid and one test
    chosen = select_subset(sources, limit=3)
    assert sorted(s.split for s in chosen) == ["test", "train", "valid"]
    assert all(s in sources for s in chosen)  # the same files with their own splits
    assert sorted(s.split for s in select_subset(sources, max_hours=3 * 60 / 3600)) == ["test", "train", "valid"]
    # fewer than three: train first, then valid
    assert [s.split for s in select_subset(sources, limit=1)] == ["train"]
    assert sorted(s.split for s in select_subset(sources, limit=2)) == ["train", "valid"]
    # the choice is deterministic, and a larger subset holds the smaller one
    assert select_subset(sources, limit=3) == select_subset(list(reversed(sources)), limit=3)
    assert set(s.rel for s in select_subset(sources, limit=3)) <= set(s.rel for s in select_subset(sources, limit=10))
    # a split the sources lack cannot appear
    assert {s.split for s in select_subset(_sources("train " * 10), limit=3)} == {"train"}


def test_the_training_floor_keeps_silent_crops_finite_and_loud_ones_unchanged():
    torch.manual_seed(0)
    silent = torch.zeros(2, 8000)
    silent[:, ::97] = 1 / 32768  # 16-bit rounding noise, as a cached rest holds
    guess = 0.01 * torch.randn(2, 8000)
    unfloored = MultiResolutionSTFTDistance()(guess, silent)
    floored = MultiResolutionSTFTDistance(sc_floor_dbfs=LOSS_FLOOR_DBFS)(guess, silent)
    assert unfloored > 1e3  # what training printed before: spectral convergence over about zero
    assert torch.isfinite(floored) and floored < 30
    assert ComplexSTFTLoss()(guess, silent) > 1e3 and ComplexSTFTLoss(scale_floor_dbfs=-60)(guess, silent) < 100
    loud = 0.3 * torch.randn(2, 8000)
    assert MultiResolutionSTFTDistance(sc_floor_dbfs=-60)(guess, loud) == MultiResolutionSTFTDistance()(guess, loud)
    weighted = WeightedLoss({"mrstft": 1.0, "complex": 0.1}, floor_dbfs=-60)
    assert float(weighted(guess, silent)) == pytest.approx(float(floored) + 0.1 * float(ComplexSTFTLoss(scale_floor_dbfs=-60)(guess, silent)), rel=1e-5)


def test_the_floor_is_the_norm_of_white_noise_at_that_level():
    torch.manual_seed(1)
    window = torch.hann_window(1024, periodic=True)
    noise = 10 ** (-60 / 20) * torch.randn(1, 64000)  # RMS -60 dBFS
    spec = torch.stft(noise, 1024, 256, window=window, center=True, pad_mode="constant", return_complex=True).abs()
    rms_per_bin = float(torch.sqrt(torch.mean(spec[:, 1:-1, 4:-4] ** 2)))
    assert rms_per_bin == pytest.approx(noise_magnitude(window, -60), rel=0.05)
    # by hand: 1e-3 * sqrt(sum(hann^2)) = 1e-3 * sqrt(3 * 1024 / 8)
    assert noise_magnitude(window, -60) == pytest.approx(1e-3 * math.sqrt(3 * 1024 / 8), rel=1e-6)


def test_the_progress_budget_is_the_one_that_stops_the_run():
    steps_only = SimpleNamespace(steps=500, max_minutes=0.0)
    assert progress_budget(steps_only, 10, 5.0, 0, 0.0) == ("step", 500, 10)
    clock = SimpleNamespace(steps=1_000_000, max_minutes=2.0)
    assert progress_budget(clock, 0, 0.0, 0, 0.0) == ("s", 120.0, 0.0)
    assert progress_budget(clock, 10, 12.0, 0, 0.0) == ("s", 120.0, 12.0)  # 1e6 steps at 1.2 s would take weeks
    few_steps = SimpleNamespace(steps=20, max_minutes=60.0)
    assert progress_budget(few_steps, 10, 12.0, 0, 0.0) == ("step", 20, 10)  # 12 s more, long before the hour
    resumed = SimpleNamespace(steps=1000, max_minutes=1.0)
    assert progress_budget(resumed, 510, 50.0, 500, 40.0) == ("s", 60.0, 50.0)  # 490 steps at 1 s each: the clock


class Recorder:
    def __init__(self):
        self.starts, self.done, self.lines = [], [], []

    def start(self, total, initial, unit="step"):
        self.starts.append((total, initial, unit))

    def step(self, done, info):
        self.done.append(done)

    def message(self, text):
        self.lines.append(text)

    def close(self):
        pass


def _mostly_silent_piece(path: Path, seed: int) -> None:
    """A quiet note at the start and one 8 s later: almost every 0.5 s crop is a rest."""
    notes = [Note(60 + seed % 12, 0.0, 0.15, 30), Note(67, 8.0, 8.15, 30)]
    write_midi(Performance(notes=notes, pedals={}, end_s=8.15), path)


@needs_fluidsynth
def test_a_three_file_cache_of_rests_gives_splits_finite_numbers_and_a_budget_bar(tmp_path, capsys):
    folder = tmp_path / "midi"
    folder.mkdir()
    for i in range(12):
        _mostly_silent_piece(folder / f"piece_{i:02d}.mid", i)
    assert {split_by_hash(s.rel) for s in find_sources(folder)} == {"train", "valid", "test"}
    code = main([
        "prepare", str(folder), "--limit", "3", "--out", str(tmp_path / "cache"), "--sample-rate", "16000",
        "--set", "features.hop_samples=64", "--set", "features.tail_seconds=0.5",
    ])  # fmt: skip
    assert code == 0
    cache_dir = Path(capsys.readouterr().out.splitlines()[0])
    cache = Cache(cache_dir)
    assert {split: len(cache.split(split)) for split in ("train", "valid", "test")} == {"train": 1, "valid": 1, "test": 1}

    said = Recorder()
    budget_minutes = 0.05
    cfg = load_config(None, TINY + ["train.steps=1000000", f"train.max_minutes={budget_minutes}"])
    result = train(cfg, cache_dir, run_dir=tmp_path / "run", reporter=said)
    assert result.stopped == "budget" and result.step >= 1
    assert said.starts[0][0] == budget_minutes * 60 and said.starts[0][2] == "s"
    assert said.done[-1] == pytest.approx(budget_minutes * 60, abs=0.11)  # the bar ends full
    with open(result.run_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    train_losses = [float(r["loss"]) for r in rows if r["split"] == "train"]
    valid = [float(r["mrstft"]) for r in rows if r["split"] == "valid"]
    assert len(train_losses) == result.step and valid
    # Unfloored, an all-silent batch scored about 6e14 here (and 6e9 to 6e10 in the report that found
    # it); floored at -60 dBFS, a fresh model some 45 dB louder than the floor scores about 2e2,
    # less than the unfloored loss of a real crop at -66 dBFS (about 6e2).
    assert all(math.isfinite(x) and 0 <= x < 1e3 for x in train_losses), train_losses
    assert all(math.isfinite(x) and 0 <= x < 1e3 for x in valid), valid
    assert math.isfinite(result.best_valid) and result.best_valid == min(valid)
    # run again: the spent budget takes no step and leaves the run as it was
    last = (result.run_dir / "last.pt").read_bytes()
    again = Recorder()
    resumed = train(cfg, cache_dir, run_dir=tmp_path / "run", reporter=again)
    assert (resumed.stopped, resumed.step, resumed.best_valid) == ("budget", result.step, result.best_valid)
    assert again.done == [] and any("no step taken" in line for line in again.lines), again.lines
    assert (result.run_dir / "last.pt").read_bytes() == last

    steps = Recorder()
    train(load_config(None, TINY + ["train.steps=3"]), cache_dir, run_dir=tmp_path / "run3", reporter=steps)
    assert steps.starts == [(3, 1, "step")] and steps.done[-1] == 3


@needs_fluidsynth
def test_a_whole_folder_of_three_says_where_splits_come_from_and_a_splits_csv_of_ones_own_sets_them(tmp_path, capsys):
    folder = tmp_path / "three"
    folder.mkdir()
    names = ["piece_1.mid", "piece_2.mid", "piece_3.mid"]
    assert [split_by_hash(n) for n in names] == ["train"] * 3  # no subset: every file keeps its hashed split
    for i, name in enumerate(names):
        _mostly_silent_piece(folder / name, i)

    def prepare_folder(out: str) -> tuple[int, str, str]:
        code = main(["prepare", str(folder), "--out", str(tmp_path / out), "--sample-rate", "16000", "--set", "features.tail_seconds=0.5"])
        said = capsys.readouterr()
        return code, said.out, said.err

    code, out, _ = prepare_folder("hashed")
    assert code == 0 and "no valid piece" in out and "no test piece" in out
    assert f"  {SPLIT_SOURCE}\n" in out  # where a split comes from, and how to name one
    (folder / "splits.csv").write_text("performance_midi,split\npiece_1.mid,train\npiece_2.mid,valid\npiece_3.mid,test\npiece_9.mid,valid\n")
    code, out, err = prepare_folder("named")
    assert code == 0 and "no valid piece" not in out and SPLIT_SOURCE not in out
    cache = Cache(Path(out.splitlines()[0]))
    assert {split: [p["file"] for p in cache.split(split)] for split in SPLITS} == {
        "train": ["piece_1.mid"], "valid": ["piece_2.mid"], "test": ["piece_3.mid"],
    }  # fmt: skip
    assert "skipped piece_9.mid: piece_9.mid: no such file" in err  # the reason, not an errno's quoted path
    for text, says in [
        ("performance_midi,split\npiece_1.mid,train\npiece_2.mid,validation\n", "splits.csv:3: split 'validation', expected one of train, valid, test"),
        ("performance_midi\npiece_1.mid\n", "splits.csv: no column 'split'"),
        ("performance_midi,split,seconds\npiece_1.mid,train,long\n", "splits.csv:2: seconds 'long' is not a number"),
    ]:
        (folder / "splits.csv").write_text(text)
        code, _, err = prepare_folder("bad")
        assert code == 1 and err.strip() == f"error: {folder / says}", err
