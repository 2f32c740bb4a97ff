from pathlib import Path

import pytest

from pianosynth.config import Config, ConfigError, load_config, parse_set, stable_hash

ROOT = Path(__file__).resolve().parents[1]


def test_base_yaml_equals_the_dataclass_defaults():
    assert load_config(ROOT / "configs" / "base.yaml") == Config()


def test_unknown_keys_and_wrong_types_fail_loudly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  hiden: 128\n")
    with pytest.raises(ConfigError, match=r"model: unknown key\(s\) \['hiden'\]"):
        load_config(bad)
    with pytest.raises(ConfigError, match="unknown section"):
        load_config(None, ["modle.hidden=3"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(None, ["model.hidden=big"])
    with pytest.raises(ConfigError, match="sample_rate must be one of"):
        load_config(None, ["features.sample_rate=8000"])


def test_set_overrides_and_base_chain(tmp_path):
    (tmp_path / "parent.yaml").write_text("model:\n  hidden: 64\n  layers: 3\n")
    (tmp_path / "child.yaml").write_text("base: parent.yaml\nmodel:\n  layers: 1\n")
    cfg = load_config(tmp_path / "child.yaml", ["train.loss={mse: 0.5, logmag: 1}", "train.learning_rate=1"])
    assert (cfg.model.hidden, cfg.model.layers) == (64, 1)
    assert cfg.train.loss == {"mse": 0.5, "logmag": 1}
    assert cfg.train.learning_rate == 1.0 and isinstance(cfg.train.learning_rate, float)
    assert parse_set(["a.b=true"]) == {"a": {"b": True}}


def test_stable_hash_depends_on_content_only():
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_the_level_difference_loss_needs_a_stereo_reference():
    with pytest.raises(ConfigError, match="train.loss.ild"):
        load_config(None, ["train.loss={floored: 1.0, ild: 0.3}"])
    cfg = load_config(ROOT / "configs" / "grand.yaml", ["train.loss={floored: 1.0, ild: 0.3}"])
    assert cfg.train.loss == {"floored": 1.0, "ild": 0.3}
