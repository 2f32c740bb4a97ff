"""Training: every config runs, resume is exact, signals and NaNs are handled, DDP ranks agree."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import needs_fluidsynth

from pianosynth.config import Config, FeatureConfig, load_config
from pianosynth.dataset import find_sources, prepare
from pianosynth.examples import write_demo_midi
from pianosynth.checkpoint import load_checkpoint, model_from_checkpoint
from pianosynth.train import TrainingError, train

ROOT = Path(__file__).resolve().parents[1]
TINY_SET = [
    "model.hidden=8",
    "model.layers=1",
    "train.batch_size=2",
    "train.example_seconds=0.5",
    "train.valid_examples=2",
    "train.valid_every=2",
    "train.checkpoint_every=1",
]

pytestmark = needs_fluidsynth


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    write_demo_midi(root / "midi", count=2, bars=3)
    cfg = Config(features=FeatureConfig(sample_rate=16000, hop_samples=64, tail_seconds=0.5))
    return prepare(find_sources(root / "midi"), root / "c", cfg, name="tiny")


def tiny_cfg(*extra: str, path: Path | None = None) -> Config:
    return load_config(path, TINY_SET + list(extra))


def weights(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_runs_one_step(config, tiny_cache, tmp_path):
    cfg = load_config(config, ["train.steps=1"] + TINY_SET)
    result = train(cfg, tiny_cache, runs_root=tmp_path, name=config.stem)
    assert result.step == 1 and result.stopped == "done"
    assert (result.run_dir / "last.pt").is_file() and (result.run_dir / "config.yaml").is_file()
    model, stored = model_from_checkpoint(result.run_dir / "last.pt")
    assert stored.model == cfg.model
    assert stored.features.hop_samples == 64  # the cache's features, not the config's


def test_resume_is_exact(tiny_cache, tmp_path):
    whole = train(tiny_cfg("train.steps=4", "model.dropout=0.0"), tiny_cache, runs_root=tmp_path / "a")
    first = train(tiny_cfg("train.steps=2"), tiny_cache, runs_root=tmp_path / "b")
    resumed = train(tiny_cfg("train.steps=4"), tiny_cache, runs_root=tmp_path / "b")
    assert first.run_dir == resumed.run_dir and resumed.step == 4
    a, b = weights(whole.model), weights(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and a different seed really gives different weights, so the comparison above can fail
    other = train(tiny_cfg("train.steps=4", "train.seed=1"), tiny_cache, runs_root=tmp_path / "c")
    assert any(not torch.equal(a[k], v) for k, v in weights(other.model).items())
    lines = (resumed.run_dir / "metrics.csv").read_text().splitlines()
    assert lines[0] == "step,elapsed_s,split,loss,mrstft,lsd"
    assert [line.split(",")[0] for line in lines[1:] if ",train," in line] == ["1", "2", "3", "4"]


def test_voices_train_and_resume_exactly(tiny_cache, tmp_path):
    """The voices decoder reads the cached note tables; a resumed run equals an uninterrupted one,
    and its partials start from the training audio."""
    cfg = lambda *e: tiny_cfg("model.decoder=voices", "train.loss={mrstft: 1.0, complex: 0.1}", *e)  # noqa: E731
    whole = train(cfg("train.steps=3"), tiny_cache, runs_root=tmp_path / "a")
    first = train(cfg("train.steps=1"), tiny_cache, runs_root=tmp_path / "b")
    resumed = train(cfg("train.steps=3"), tiny_cache, runs_root=tmp_path / "b")
    assert resumed.step == 3
    a, b = weights(whole.model), weights(resumed.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the tuning moved off equal temperament for keys the demo pieces play (estimated, then trained)
    assert float(whole.model.decoder.detune.abs().max()) > 0


def test_sigterm_saves_and_the_rerun_resumes(tiny_cache, tmp_path):
    args = [sys.executable, "-m", "pianosynth", "train", "--cache", str(tiny_cache), "--runs", str(tmp_path), "--name", "s"]
    args += [a for kv in TINY_SET + ["train.steps=100000"] for a in ("--set", kv)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("s-*/last.pt")):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint saved" in err and "Traceback" not in err
    run_dir = Path(out.strip().splitlines()[-1])
    step = load_checkpoint(run_dir / "last.pt")["step"]
    assert 1 <= step < 100000
    again = subprocess.run(args[:-1] + [f"train.steps={step + 2}"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resuming {run_dir} from step {step}" in again.stderr
    assert load_checkpoint(run_dir / "last.pt")["step"] == step + 2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tiny_cache, tmp_path):
    cfg = tiny_cfg("train.steps=50", "train.loss={mse: 1.0}", "train.learning_rate=1.0e+30", "train.grad_clip=0.0")
    with pytest.raises(TrainingError, match=r"loss became (inf|nan) at step \d+"):
        train(cfg, tiny_cache, runs_root=tmp_path)
    (last,) = tmp_path.glob("*/last.pt")
    state = load_checkpoint(last)
    assert state["step"] >= 1
    assert all(torch.isfinite(v).all() for v in state["model"].values())


def test_reproducible_on_cpu(tiny_cache, tmp_path):
    a = train(tiny_cfg("train.steps=2"), tiny_cache, runs_root=tmp_path / "a").model
    b = train(tiny_cfg("train.steps=2"), tiny_cache, runs_root=tmp_path / "b").model
    for (k, va), vb in zip(weights(a).items(), weights(b).values()):
        assert torch.equal(va, vb), k


DDP_SCRIPT = """
import os, sys, torch
from pianosynth.config import load_config
from pianosynth.train import train
cfg = load_config(None, sys.argv[3:])
result = train(cfg, sys.argv[1], runs_root=sys.argv[2], name="ddp")
torch.save(result.model.state_dict(), os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.pt"))
"""


# the cosine schedule on a short clock: each rank's own clock would give it its own learning rate
@pytest.mark.parametrize("schedule", [[], ["train.lr_schedule=cosine", "train.max_minutes=0.1"]], ids=["constant", "cosine-clock"])
def test_ddp_two_cpu_ranks_end_with_identical_weights(schedule, tiny_cache, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    cmd += [str(tiny_cache), str(tmp_path)] + TINY_SET + ["train.steps=3"] + schedule
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    (run_dir,) = tmp_path.glob("ddp-*")
    state = load_checkpoint(run_dir / "last.pt")
    assert state["step"] == 3
    # the ranks trained on different crops: a single process would have reached other weights
    single = train(load_config(None, TINY_SET + ["train.steps=3"]), tiny_cache, runs_root=tmp_path / "single").model
    assert any(not torch.equal(r0[k], v) for k, v in single.state_dict().items())


def test_cosine_schedule_follows_steps_or_the_clock_whichever_ends_first():
    from pianosynth.train import learning_rate

    cfg = tiny_cfg("train.learning_rate=0.002", "train.steps=100", "train.lr_schedule=cosine")
    tc = cfg.train
    assert learning_rate(tc, 0, 0.0) == pytest.approx(0.002)
    assert learning_rate(tc, 50, 0.0) == pytest.approx(0.001)
    assert learning_rate(tc, 100, 0.0) == pytest.approx(0.0, abs=1e-12)
    timed = tiny_cfg("train.learning_rate=0.002", "train.steps=100", "train.lr_schedule=cosine", "train.max_minutes=10").train
    assert learning_rate(timed, 10, 300.0) == pytest.approx(0.001)  # half the clock, a tenth of the steps
    assert learning_rate(timed, 75, 300.0) == pytest.approx(0.002 * 0.5 * (1 + math.cos(0.75 * math.pi)))
    assert learning_rate(timed, 10, 900.0) == 0.0
    assert learning_rate(tiny_cfg("train.steps=100").train, 99, 1e6) == pytest.approx(1e-3)  # constant
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        tiny_cfg("train.lr_schedule=linear")


@pytest.mark.parametrize("decoder", ["istft", "ddsp"])
def test_phase_aware_decoders_train_and_reload(decoder, tiny_cache, tmp_path):
    cfg = tiny_cfg(f"model.decoder={decoder}", "train.steps=2", "train.loss={mrstft: 1.0, complex: 0.1}")
    result = train(cfg, tiny_cache, runs_root=tmp_path)
    model, stored = model_from_checkpoint(result.run_dir / "last.pt")
    assert stored.model.decoder == decoder
    a, b = weights(result.model), weights(model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warm_start_copies_weights_and_narrows_the_input_for_the_score_preset(tiny_cache, tmp_path):
    """train.init_from starts a fresh run from another model: same-shaped tensors are copied, the
    encoder's input weights keep their first 176 channels for a score-preset model, and partials
    learned on the same sound are kept (not estimated again)."""
    src = train(tiny_cfg("model.decoder=voices", "train.steps=2"), tiny_cache, runs_root=tmp_path / "src")
    ckpt = src.run_dir / "last.pt"
    from pianosynth.model import build_model
    from pianosynth.train import warm_start

    same = model_from_checkpoint(ckpt)[1]  # the run's config, with the cache's features and render
    model = build_model(same.model, dataclasses.replace(same.features, preset="score"))
    line, same_sound = warm_start(model, str(ckpt), same)
    assert same_sound and "2 in part" in line
    a, b = src.model.state_dict(), model.state_dict()
    assert torch.equal(b["encoder.rnn.weight_ih_l0"], a["encoder.rnn.weight_ih_l0"][:, :176])
    assert torch.equal(b["decoder.detune"], a["decoder.detune"])
    # another sound (harpsichord): weights copied, but the partials are to be estimated again
    other = dataclasses.replace(same, render=dataclasses.replace(same.render, program=6))
    assert not warm_start(build_model(same.model, same.features), str(ckpt), other)[1]
    with pytest.raises(TrainingError, match="no checkpoint"):
        warm_start(model, str(tmp_path / "missing.pt"), same)
    with pytest.raises(TrainingError, match="^train.init_from: unknown model 'fluidr33'; shipped: "):
        warm_start(model, "fluidr33", same)
