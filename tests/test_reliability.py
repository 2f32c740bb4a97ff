"""Issue 11: bad input, bad settings and interruptions end in one line, within limits, with
nothing lost and nothing left behind. Each test makes its reproducer in miniature."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mutator import vlq
from conftest import HAS_FLUIDSYNTH, cc, needs_fluidsynth, note, tempo, write_events

from pianosynth import cli
from pianosynth.config import CELLS, DECODERS, LOSSES, WINDOWS, Config, ConfigError, FeatureConfig, load_config
from pianosynth.midi import MAX_ONSETS_PER_SECOND, MidiError, Note, Performance, read_midi
from pianosynth.model import build_model
from pianosynth.checkpoint import CheckpointError, checkpoint_checksum, load_checkpoint, model_from_checkpoint, save_checkpoint
from pianosynth.train import TrainingError

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = ["model.hidden=8", "model.layers=1"]


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """pianosynth in this process (fast); -> (exit status, stderr). A value the argument parser
    itself refuses exits with status 2 (argparse's usage error), one line too."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    assert code in (1, 2), err  # 2: refused by the argument parser, before any work
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") or (code == 2 and ": error: " in last), err
    for w in words:
        assert w in last, (w, last)


def tiny_checkpoint(path: Path, *sets: str) -> Path:
    """A checkpoint of an untrained tiny model (no cache, no training), as export writes one."""
    cfg = load_config(None, TINY_MODEL + list(sets))
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.features)
    state = {"format": 1, "version": "test", "config": cfg.to_dict(), "model": model.state_dict(),
             "step": 0, "best_valid": 1.0, "elapsed_s": 0.0}  # fmt: skip
    save_checkpoint(path, state)
    return path


# ---------------------------------------------------------------------------------------------
# 3. Validation where values enter
# ---------------------------------------------------------------------------------------------

BAD_CONFIG = [
    ("model.hidden=-5", "model.hidden"), ("model.hidden=200000", "model.hidden"),
    ("model.layers=0", "model.layers"), ("model.layers=9", "model.layers"),
    ("model.cell=transformer", "model.cell"), ("model.decoder=wavenet", "model.decoder"),
    ("model.window=hamming", "model.window"), ("model.dropout=1.5", "model.dropout"),
    ("model.dropout=.nan", "model.dropout"), ("train.batch_size=0", "train.batch_size"),
    ("train.valid_every=0", "train.valid_every"), ("train.checkpoint_every=0", "train.checkpoint_every"),
    ("train.valid_examples=0", "train.valid_examples"), ("train.loss={}", "train.loss"),
    ("train.loss={foo: 1}", "train.loss"), ("train.loss={mse: -1}", "train.loss.mse"),
    ("train.loss={mse: 0}", "train.loss"), ("train.learning_rate=-0.001", "train.learning_rate"),
    ("train.learning_rate=.inf", "train.learning_rate"), ("train.num_workers=-1", "train.num_workers"),
    ("train.example_seconds=0", "train.example_seconds"), ("train.grad_clip=-1", "train.grad_clip"),
    ("train.max_minutes=-1", "train.max_minutes"), ("train.steps=0", "train.steps"),
    ("train.steps=-3", "train.steps"), ("train.seed=-1", "train.seed"),
    ("features.hop_samples=0", "features.hop_samples"), ("features.tail_seconds=.nan", "features.tail_seconds"),
    ("render.gain=.inf", "render.gain"), ("render.gain=0", "render.gain"),
    ("model.hidden=[", "model.hidden"),
]  # fmt: skip


@pytest.mark.parametrize("pair,key", BAD_CONFIG, ids=[p for p, _ in BAD_CONFIG])
def test_every_config_value_out_of_range_is_an_error_naming_it(pair, key):
    with pytest.raises(ConfigError) as e:
        load_config(None, [pair])
    message = str(e.value)
    assert key in message and "\n" not in message


def test_every_shipped_config_and_decoder_is_accepted():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)
    for decoder in ("frames", "istft", "ddsp", "voices"):
        load_config(None, [f"model.decoder={decoder}"])


def test_the_names_config_checks_are_the_library_registries():
    from pianosynth.decoders import DECODERS as LIB_DECODERS
    from pianosynth.losses import LOSSES as LIB_LOSSES
    from pianosynth.model import CELLS as LIB_CELLS

    assert set(DECODERS) == set(LIB_DECODERS)
    assert set(LOSSES) == set(LIB_LOSSES)
    assert set(CELLS) == set(LIB_CELLS)
    assert set(WINDOWS) == {"ola", "rect"}


def test_a_yaml_list_is_not_a_config(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml")


@pytest.mark.parametrize(
    "argv,words",
    [
        (["synthesize", "x.mid", "-o", "x.wav", "--threads", "-1"], ["--threads", "-1"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--chunk-seconds", "nan"], ["--chunk-seconds"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--context-seconds", "inf"], ["--context-seconds"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--normalize", "nan"], ["--normalize"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--normalize", "inf"], ["--normalize"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--normalize", "-1"], ["--normalize"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--normalize", "1e6"], ["--normalize"]),
        (["synthesize", "x.mid", "-o", "x.wav", "--max-seconds", "0"], ["--max-seconds"]),
        (["prepare", "in", "--jobs", "0"], ["--jobs", "0"]),
        (["prepare", "in", "--limit", "0"], ["--limit"]),
        (["prepare", "in", "--max-hours", "nan"], ["--max-hours"]),
        (["prepare", "in", "--program", "200"], ["--program"]),
        (["train", "--cache", "c", "--threads", "-1"], ["--threads"]),
        (["train", "--cache", "c", "--set", "features.sample_rate=22050"], ["features.sample_rate", "cache"]),
        (["train", "--cache", "c", "--set", "render.gain=0.5"], ["render.gain"]),
        (["demo", "--bars", "0"], ["--bars"]),
        (["evaluate", "--cache", "c", "--clips", "0"], ["--clips"]),
        (["evaluate", "--cache", "c", "--seconds", "-5"], ["--seconds"]),
        (["train", "--cache", "c", "--config", "LIST"], ["must be a mapping"]),
        (["train", "--cache", "c", "--set", "model.hidden=-5"], ["model.hidden", "-5"]),
        (["train", "--cache", "c", "--set", "train.batch_size=0"], ["train.batch_size"]),
    ],
)
def test_bad_cli_numbers_are_one_line_errors(argv, words, capsys, tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n")
    argv = [str(tmp_path / "list.yaml") if a == "LIST" else a for a in argv]
    assert_one_line_error(*run_cli(capsys, *argv), *words)


def test_a_file_that_is_not_a_soundfont_is_refused(tmp_path, simple_midi):
    from pianosynth.config import RenderConfig
    from pianosynth.render import RenderError, check_renderer

    if not HAS_FLUIDSYNTH:
        pytest.skip("fluidsynth missing")
    with pytest.raises(RenderError, match="not an SF2/SF3 file"):
        check_renderer(RenderConfig(soundfont=str(simple_midi)))


def test_checkpoints_this_version_cannot_load_are_one_line_errors(tmp_path, simple_midi, capsys):
    good = tiny_checkpoint(tmp_path / "good.pt")
    state = load_checkpoint(good)
    no_model = tmp_path / "no_model.pt"
    save_checkpoint(no_model, {k: v for k, v in state.items() if k not in ("model", "checksum")})
    other = tmp_path / "other.pt"  # its config says 16 hidden units, its weights have 8
    cfg = state["config"]
    save_checkpoint(other, {**{k: v for k, v in state.items() if k != "checksum"}, "config": {**cfg, "model": {**cfg["model"], "hidden": 16}}})
    for path, words in [(no_model, ["no model"]), (other, ["weights do not fit"])]:
        with pytest.raises(CheckpointError):
            model_from_checkpoint(path)
        code, err = run_cli(capsys, "synthesize", str(simple_midi), "-o", str(tmp_path / "o.wav"), "--model", str(path))
        assert_one_line_error(code, err, *words)
    assert not list(tmp_path.glob("*.wav")) and not list(tmp_path.glob(".*"))


# ---------------------------------------------------------------------------------------------
# 1. Limits before allocation
# ---------------------------------------------------------------------------------------------


def smf(division: int, track: bytes) -> bytes:
    """A type-0 Standard MIDI File from raw track bytes."""
    return b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big") + division.to_bytes(2, "big") + \
        b"MTrk" + len(track).to_bytes(4, "big") + track  # fmt: skip


def test_the_44_byte_file_is_refused_before_features_are_allocated(tmp_path, capsys):
    # division 1, tempo FF FF FF (16.8 s a beat), one note after 9,999,000 ticks: ~5 years of audio
    track = b"\x00\xff\x51\x03\xff\xff\xff" + vlq(9_999_000) + b"\x90\x3c\x64" + b"\x01\x80\x3c\x00" + b"\x00\xff\x2f\x00"
    path = tmp_path / "long.mid"
    path.write_bytes(smf(1, track))
    assert len(path.read_bytes()) == 44
    with pytest.raises(MidiError, match="over the limit of 3600 s"):
        read_midi(path)
    code, err = run_cli(capsys, "synthesize", str(path), "-o", str(tmp_path / "o.wav"))
    assert_one_line_error(code, err, "--max-seconds")
    assert not (tmp_path / "o.wav").exists()


def test_a_pedal_20_hours_after_the_note_is_refused(tmp_path):
    # 120 bpm, 480 ticks a beat: 20 h = 72,000 s = 69,120,000 ticks
    events = note(0, 0, 480, 60) + cc(0, 69_120_000 // 8, 64, 127)  # pretty_midi refuses > 1e7 ticks; 2.5 h is enough
    path = write_events(tmp_path / "pedal.mid", events, midi_type=0)
    with pytest.raises(MidiError, match="over the limit"):
        read_midi(path)
    assert read_midi(path, max_seconds=None).end_s > 3600  # the limit, not the parser, refused it


def test_max_seconds_is_the_users_to_set(tmp_path):
    path = write_events(tmp_path / "eight.mid", tempo(0, 120) + note(1, 0, 16 * 480, 60))  # 8 s
    assert read_midi(path).end_s == pytest.approx(8.0)
    with pytest.raises(MidiError, match="lasts 8 s, over the limit of 5 s"):
        read_midi(path, max_seconds=5)


def test_thousands_of_simultaneous_notes_are_refused(tmp_path):
    n = 5280
    notes = [Note(21 + i % 88, (i % 1000) / 1000, 0.5 + (i % 1000) / 1000, 64) for i in range(n)]
    from pianosynth.midi import check_limits

    with pytest.raises(MidiError, match=f"over the limit of {MAX_ONSETS_PER_SECOND}"):
        check_limits(Performance(notes, {}, 1.5))
    check_limits(Performance(notes[:MAX_ONSETS_PER_SECOND], {}, 1.5))  # at the limit: accepted
    # and from a file, through the parser: 5,280 note-ons at tick 0 (running status)
    ons = b"\x00\x90" + b"".join(bytes([0, 21 + i % 88, 64]) for i in range(n))[1:]
    offs = b"\x83\x60\x80" + b"".join(bytes([0, 21 + i % 88, 0]) for i in range(n))[1:]  # 480 ticks later
    track = ons + offs + b"\x00\xff\x2f\x00"
    path = tmp_path / "dense.mid"
    path.write_bytes(smf(480, track))
    with pytest.raises(MidiError, match="notes start within one second"):
        read_midi(path)


def fluidsynth_children(pid: int) -> list[int]:
    """Process ids of fluidsynth processes whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            name = fields[0].split("(", 1)[1]
            ppid = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and name.startswith("fluidsynth"):
            out.append(int(stat.parent.name))
    return out


def long_performance(seconds: float) -> Performance:
    notes = [Note(40 + (i % 40), i * 0.25, i * 0.25 + 1.0, 80) for i in range(int(seconds * 4))]
    return Performance(notes, {}, notes[-1].end_s)


@needs_fluidsynth
def test_fluidsynth_is_stopped_past_the_expected_size(tmp_path):
    from pianosynth.config import RenderConfig
    from pianosynth.render import TEMP_PREFIX, RenderLimitError, render

    # a 200 s performance rendered as if it were 1 s long: FluidSynth writes far past the bound
    # (1.5 x (1 s + the 60 s allowed for tails))
    with pytest.raises(RenderLimitError, match="more than the piece needs"):
        render(long_performance(200), RenderConfig(), FeatureConfig(), 16000)
    assert fluidsynth_children(os.getpid()) == []
    assert not list(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{os.getpid()}-*"))


# ---------------------------------------------------------------------------------------------
# 2. Child processes and temporary files
# ---------------------------------------------------------------------------------------------

RENDER_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from test_reliability import long_performance
from pianosynth.config import FeatureConfig, RenderConfig
from pianosynth.render import render
render(long_performance(1800), RenderConfig(), FeatureConfig(sample_rate=44100), 44100 * 1800)
"""


@needs_fluidsynth
def test_fluidsynth_dies_with_its_parent_and_the_next_run_removes_the_temp_folder(tmp_path):
    from pianosynth.render import TEMP_PREFIX, remove_stale_render_folders

    proc = subprocess.Popen([sys.executable, "-c", RENDER_SCRIPT, str(Path(__file__).parent)])
    deadline, children = time.time() + 60, []
    while time.time() < deadline and not children:
        children = fluidsynth_children(proc.pid)
        time.sleep(0.05)
    assert children, "the render did not start fluidsynth"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{c}").exists() for c in children):
        time.sleep(0.05)
    assert not any(Path(f"/proc/{c}").exists() for c in children), "fluidsynth outlived its parent"
    left = list(Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}{proc.pid}-*"))
    assert left, "kill -9 leaves the folder (nothing can remove it then)"
    removed = remove_stale_render_folders()
    assert set(left) <= set(removed) and not any(p.exists() for p in left)


def test_temporary_files_of_a_killed_synthesis_or_save_are_removed_by_the_next_run(tmp_path, simple_midi):
    from pianosynth.fileio import TEMP_MARKER, remove_stale_temps
    from pianosynth.synthesize import synthesize_file

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    raw = tmp_path / f".o.wav.{dead.pid}.{TEMP_MARKER}k2j4h5l6.wav"
    raw.write_bytes(b"RIFF" + bytes(1000))
    mine = tmp_path / f".p.wav.{os.getpid()}.{TEMP_MARKER}a8s7d6f5.wav"  # a running process's: kept
    mine.write_bytes(b"x")
    synthesize_file(simple_midi, tmp_path / "o.wav", model_path=tiny_checkpoint(tmp_path / "m.pt"))
    assert not raw.exists() and mine.exists()
    ckpt_tmp = tmp_path / f".last.pt.{dead.pid}.{TEMP_MARKER}q1w2e3r4"
    ckpt_tmp.write_bytes(b"partial")
    assert remove_stale_temps(tmp_path) == [ckpt_tmp]


SYNTH_SCRIPT = """
import signal, sys
# a shell's background job (`make test &`) starts with SIGINT ignored, and Python then keeps it
# ignored: take Ctrl-C as a terminal's child would (set here, not in a preexec_fn: Python run
# between fork and exec can deadlock in a process with threads)
signal.signal(signal.SIGINT, signal.default_int_handler)
from pianosynth.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_synthesis_leaves_nothing_and_says_so(sig, tmp_path):
    from pianosynth.examples import generate_piece
    from pianosynth.midi import write_midi

    model = tiny_checkpoint(tmp_path / "m.pt", "model.hidden=64")
    midi = tmp_path / "long.mid"
    write_midi(generate_piece(seed=0, bars=400), midi)  # ~16 min of music: long enough that a loaded machine still interrupts it mid-way
    out = tmp_path / "out" / "o.wav"
    args = ["synthesize", str(midi), "-o", str(out), "--model", str(model), "--threads", "1", "--chunk-seconds", "5"]
    scratch = tmp_path / "tmp"  # the child's temporary folder: the model's raw output goes there first
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SYNTH_SCRIPT, *args], stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(scratch.rglob("*.wav")):
        time.sleep(0.02)
    assert list(scratch.rglob("*.wav")), "synthesis did not start"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "no output was written" in err and "resume" not in err and "Traceback" not in err
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert list(scratch.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# 4. Integrity
# ---------------------------------------------------------------------------------------------


def flip_bytes_inside(path: Path, tensor: torch.Tensor, count: int = 200) -> None:
    """Flips ``count`` bytes of a tensor's data where it lies in a saved checkpoint."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "tensor bytes not found in the file"
    for i in range(count):
        data[at + (i * 7) % len(raw)] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_bit_rotted_checkpoint_is_refused(tmp_path, simple_midi, capsys):
    path = tiny_checkpoint(tmp_path / "m.pt")
    weight = load_checkpoint(path)["model"]["decoder.proj.weight"]
    flip_bytes_inside(path, weight)
    assert "checksum" in torch.load(path, weights_only=False)  # still loads as a file...
    with pytest.raises(CheckpointError, match="checksum mismatch"):  # ...but not as a model
        load_checkpoint(path)
    code, err = run_cli(capsys, "synthesize", str(simple_midi), "-o", str(tmp_path / "o.wav"), "--model", str(path))
    assert_one_line_error(code, err, "checksum mismatch")
    assert not (tmp_path / "o.wav").exists()


def test_checkpoints_from_before_checksums_still_load(tmp_path):
    path = tiny_checkpoint(tmp_path / "m.pt")
    state = load_checkpoint(path)
    del state["checksum"]
    torch.save(state, tmp_path / "old.pt")  # as the code before issue 11 wrote them
    model, _ = model_from_checkpoint(tmp_path / "old.pt")
    assert torch.equal(model.state_dict()["decoder.proj.weight"], state["model"]["decoder.proj.weight"])


def test_the_shipped_model_carries_a_checksum_that_holds():
    from pianosynth.synthesize import default_model_path

    state = load_checkpoint(default_model_path())
    assert state["checksum"] == checkpoint_checksum(state)


def test_export_writes_a_checksum(tmp_path):
    from pianosynth.checkpoint import export_checkpoint

    src = tiny_checkpoint(tmp_path / "m.pt")
    state = load_checkpoint(src)
    del state["checksum"]
    torch.save({**state, "optimizer": {}}, tmp_path / "old.pt")
    export_checkpoint(tmp_path / "old.pt", tmp_path / "slim.pt")
    slim = torch.load(tmp_path / "slim.pt", weights_only=False)
    assert slim["checksum"] == checkpoint_checksum(slim) and "optimizer" not in slim


def test_a_truncated_manifest_is_one_line(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"version": 1, "config": {"feat')
    assert_one_line_error(*run_cli(capsys, "info", str(tmp_path)), "manifest.json")
    assert_one_line_error(*run_cli(capsys, "train", "--cache", str(tmp_path), "--runs", str(tmp_path / "r")), "manifest.json")


@pytest.fixture(scope="module")
def one_piece_cache(tmp_path_factory):
    from pianosynth.dataset import find_sources, prepare

    root = tmp_path_factory.mktemp("one")
    (root / "midi").mkdir()
    for i in range(2):
        write_events(root / "midi" / f"p{i}.mid", tempo(0, 120) + note(1, 0, 480, 60 + i) + note(1, 480, 960, 64 + i))
    cfg = Config(features=FeatureConfig(hop_samples=128, tail_seconds=0.2))
    return root, cfg, (lambda **kw: prepare(find_sources(root / "midi"), root / "c", cfg, **{"name": "one", **kw}))


@needs_fluidsynth
def test_a_truncated_cached_array_is_found_and_prepare_redoes_the_piece(one_piece_cache, tmp_path, capsys):
    from pianosynth.dataset import Cache, CacheError
    from pianosynth.train import train

    root, cfg, prepare = one_piece_cache
    cache_dir = prepare()
    cache = Cache(cache_dir)
    piece = cache.pieces[0]
    features = cache_dir / "pieces" / f"{piece['id']}.features.npy"
    whole = features.read_bytes()
    features.write_bytes(whole[: len(whole) - 100])
    assert cache.check_arrays() and "truncated" in cache.check_arrays()[0]
    assert_one_line_error(*run_cli(capsys, "info", str(cache_dir)), "features.npy", "prepare again")
    with pytest.raises(CacheError, match="features.npy"):
        train(load_config(None, TINY_MODEL + ["train.steps=1"]), cache_dir, runs_root=tmp_path)
    assert prepare() == cache_dir
    assert features.read_bytes() == whole and Cache(cache_dir).check_arrays() == []
    # the same size but another byte: only the hash sees it, with verify
    audio = cache_dir / "pieces" / f"{piece['id']}.audio.npy"
    good = audio.read_bytes()
    audio.write_bytes(good[:-2] + bytes([good[-2] ^ 1]) + good[-1:])
    assert Cache(cache_dir).check_arrays() == [] and Cache(cache_dir).check_arrays(verify=True)
    prepare()
    assert audio.read_bytes() != good  # without verify the damage is not seen
    prepare(verify=True)
    assert audio.read_bytes() == good


@needs_fluidsynth
def test_a_piece_skipped_for_its_length_is_redone_under_a_larger_limit(one_piece_cache):
    from pianosynth.dataset import Cache

    root, cfg, prepare = one_piece_cache
    short = Cache(prepare(max_seconds=0.5, name="short"))  # a cache of its own: nothing finished yet
    assert len(short.pieces) == 0 and all("over the limit" in s["reason"] for s in short.skipped)
    assert len(Cache(prepare(name="short")).pieces) == 2


# ---------------------------------------------------------------------------------------------
# 5. Honest resume
# ---------------------------------------------------------------------------------------------

TINY_TRAIN = TINY_MODEL + ["train.batch_size=2", "train.example_seconds=0.3", "train.valid_examples=1", "train.valid_every=1"]


@needs_fluidsynth
def test_a_resumed_run_logs_each_step_once(one_piece_cache, tmp_path):
    from pianosynth.train import train

    _, _, prepare = one_piece_cache
    cache_dir = prepare()
    first = train(load_config(None, TINY_TRAIN + ["train.steps=2"]), cache_dir, runs_root=tmp_path)
    metrics = first.run_dir / "metrics.csv"
    with open(metrics, "a", newline="") as f:  # rows a run killed after its step-2 checkpoint logged
        csv.writer(f).writerows([[3, "9.9", "train", 0.5, "", ""], [3, "9.9", "valid", 0.5, 1.0, 2.0]])
    train(load_config(None, TINY_TRAIN + ["train.steps=4"]), cache_dir, runs_root=tmp_path)
    rows = list(csv.reader(open(metrics, newline="")))[1:]
    keys = [(r[0], r[2]) for r in rows]
    assert sorted(keys) == sorted({(str(s), split) for s in range(1, 5) for split in ("train", "valid")})
    assert "9.9" not in {r[1] for r in rows}  # the killed run's rows were dropped


@needs_fluidsynth
def test_a_run_folder_reused_with_other_settings_is_refused_or_lists_the_budget(one_piece_cache, tmp_path):
    from pianosynth.train import train

    class Messages:
        def __init__(self):
            self.lines = []

        def message(self, text):
            self.lines.append(text)

        start = step = close = lambda *a, **k: None

    _, _, prepare = one_piece_cache
    cache_dir = prepare()
    run_dir = tmp_path / "run"
    train(load_config(None, TINY_TRAIN + ["train.steps=1"]), cache_dir, run_dir=run_dir)
    with pytest.raises(TrainingError, match=r"train.learning_rate: 0.001 -> 0.01.*--restart"):
        train(load_config(None, TINY_TRAIN + ["train.steps=2", "train.learning_rate=0.01"]), cache_dir, run_dir=run_dir)
    said = Messages()
    result = train(load_config(None, TINY_TRAIN + ["train.steps=2"]), cache_dir, run_dir=run_dir, reporter=said)
    assert result.step == 2
    assert any("train.steps: 1 -> 2" in line for line in said.lines), said.lines
