"""Checkpoints are data, never code: a file whose unpickling would run a command is refused
through every door that reads weights (load_checkpoint, the API, the CLI's --model, the model
listing), and the command never runs."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from test_reliability import assert_one_line_error, run_cli, tiny_checkpoint

import pianosynth
from pianosynth.checkpoint import CheckpointError, load_checkpoint, model_from_checkpoint


class Payload:
    """Unpickling this calls os.system: what an attacker's checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(path: Path, marker: Path, legacy: bool = False) -> Path:
    """A checkpoint in the real layout (a tiny model's state) with one hostile value inside."""
    good = tiny_checkpoint(path.with_name("good-" + path.name))
    state = torch.load(good, weights_only=True)
    state["version"] = Payload(marker)
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_the_payload_is_real_and_load_checkpoint_refuses_it(tmp_path, legacy):
    marker = tmp_path / "ran"
    bad = hostile_checkpoint(tmp_path / "bad.pt", marker, legacy)
    torch.load(bad, weights_only=False)  # the unsafe reader runs it: the payload is real...
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused: the file asks to run code"):
        load_checkpoint(bad)  # ...and ours does not
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_a_plain_pickle_of_a_payload_is_refused(tmp_path, protocol):
    marker = tmp_path / "ran"
    bad = tmp_path / "plain.pt"
    bad.write_bytes(pickle.dumps({"format": 1, "x": Payload(marker)}, protocol=protocol))
    pickle.loads(bad.read_bytes())  # the payload is real
    assert marker.exists()
    marker.unlink()
    # protocol 2 reaches the refused global; newer ones stop earlier, at an opcode torch's reader lacks
    with pytest.raises(CheckpointError, match="refused" if protocol == 2 else "refused|not a readable checkpoint"):
        load_checkpoint(bad)
    assert not marker.exists()


def test_every_door_refuses_a_hostile_checkpoint(tmp_path, simple_midi, capsys):
    marker = tmp_path / "ran"
    bad = hostile_checkpoint(tmp_path / "bad.pt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        pianosynth.load(str(bad))
    with pytest.raises(CheckpointError, match="refused"):
        model_from_checkpoint(bad)
    code, err = run_cli(capsys, "synthesize", str(simple_midi), "-o", str(tmp_path / "o.wav"), "--model", str(bad))
    assert_one_line_error(code, err, "refused")
    assert not (tmp_path / "o.wav").exists()
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bad, models / "evil.pt")  # an unlisted .pt in a models folder
    code, err = run_cli(capsys, "models", "--models-dir", str(models))
    assert_one_line_error(code, err, "refused")
    assert not marker.exists()


def test_a_checkpoint_without_a_config_is_one_line_in_the_listing(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    state = torch.load(tiny_checkpoint(tmp_path / "m.pt"), weights_only=True)
    del state["config"], state["checksum"]
    torch.save(state, models / "noconfig.pt")
    code, err = run_cli(capsys, "models", "--models-dir", str(models))
    assert_one_line_error(code, err, "no config")


def test_shipped_and_training_checkpoints_load_as_data(tmp_path):
    for path in sorted(Path(pianosynth.__file__).parent.joinpath("models").glob("*.pt")):
        model, cfg = model_from_checkpoint(path)  # weights_only=True reads every shipped file
        assert cfg.to_dict() and sum(p.numel() for p in model.parameters()) > 0
    # a training checkpoint also holds optimizer state and the RNG: plain data too
    state = load_checkpoint(tiny_checkpoint(tmp_path / "t.pt"))
    state.update(optimizer=torch.optim.Adam(model.parameters()).state_dict(), rng={"torch": torch.get_rng_state()})
    torch.save(state, tmp_path / "train.pt")
    assert torch.equal(torch.load(tmp_path / "train.pt", weights_only=True)["rng"]["torch"], state["rng"]["torch"])
