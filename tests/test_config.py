"""Configuration loading, overrides, unknown keys and hashing."""

import re
from pathlib import Path

import pytest

from edgecl.config import Config, all_keys, config_hash, load_config
from edgecl.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "edgecl.yaml"


def test_defaults_are_frozen():
    cfg = load_config()
    assert cfg == Config()
    with pytest.raises(AttributeError):
        cfg.memory.capacity = 3


def test_example_config_loads_and_comments_every_key():
    cfg = load_config(EXAMPLE)
    assert cfg.state_dir == "/var/lib/edgecl"
    text = EXAMPLE.read_text()
    for key in all_keys():
        leaf = key.split(".")[-1]
        line = next((ln for ln in text.splitlines() if ln.strip().startswith(leaf + ":")), None)
        assert line is not None, f"{key} missing from {EXAMPLE}"
        assert "#" in line, f"{key} has no comment in {EXAMPLE}"


def test_override_types_and_hash_changes():
    base = load_config()
    cfg = load_config(None, ["memory.capacity=50", "gate.max_forgetting=1", "ider.enabled=true"])
    assert cfg.memory.capacity == 50
    assert cfg.gate.max_forgetting == 1.0 and isinstance(cfg.gate.max_forgetting, float)
    assert cfg.ider.enabled is True
    assert config_hash(cfg) != config_hash(base)
    assert config_hash(load_config()) == config_hash(base)


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'memory.capacity'"):
        load_config(None, ["memory.capacty=3"])
    bad = tmp_path / "c.yaml"
    bad.write_text("memory:\n  max_byte: 3\n")
    with pytest.raises(ConfigError, match=r"memory.max_byte.*c.yaml.*memory.max_bytes"):
        load_config(bad)


def test_bad_values_and_files(tmp_path):
    with pytest.raises(ConfigError, match="must be a number"):
        load_config(None, ["memory.capacity=lots"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(None, ["memory.capacity=1.5"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "b.yaml"
    broken.write_text("memory: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(broken)
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(None, ["novalue"])
    for text, got in (("state_dir:\n", "null"), ("state_dir: [1, 2]\n", "list [1, 2]"),
                      ("fleet:\n  token: {a: 1}\n", "dict {'a': 1}")):
        broken.write_text(text)  # before: the state went to ./None or './[1, 2]'
        with pytest.raises(ConfigError, match=f"must be text, got {re.escape(got)}$"):
            load_config(broken)
    assert load_config(None, ["fleet.device_name=7"]).fleet.device_name == "7"
    broken.write_text("labels:\n  mode: off\n")  # YAML 1.1 reads an unquoted off as false
    assert load_config(broken).labels.mode == "off" == load_config(None, ["labels.mode=off"]).labels.mode
    assert load_config(None, ["fleet.server_address=[::1]:9092"]).fleet.server_address == "[::1]:9092"


@pytest.mark.parametrize("override, fragment", [
    ("labels.mode=bogus", "'labels.mode'"),
    ("learner.batch=-3", "'learner.batch'"),
    ("server.port=70000", "'server.port'"),
    ("model.conf=5", "'model.conf'"),
    ("runtime.back_pressure=bogus", "'runtime.back_pressure'"),
    ("learner.lr=1e6", "'learner.lr'"),
    ("memory.holdout_fraction=0", "'memory.holdout_fraction'"),
    ("export.precision=int4", "'export.precision'"),
    ("export.tensorrt=maybe", "'export.tensorrt'"),
    ("learner.device=gpu", "'learner.device'"),
    ("replay.strategy=bogus", "'replay.strategy'"),
    ("memory.capacity=0", "'memory.capacity'"),
    ("memory.max_bytes=100", "'memory.max_bytes'"),
    ("labels.uncertain_low=0.9", "'labels.uncertain_low'"),
    ("memory.holdout_block_s=-1", "'memory.holdout_block_s'"),
    ("memory.holdout_block_s=1e-300", "'memory.holdout_block_s'"),
    ("learner.imgsz=32", "'learner.imgsz'"),
    ("learner.imgsz=65", "not a multiple of 32"),
    ("model.imgsz=33", "not a multiple of 32"),
    ("fleet.server_address=127.0.0.1:70000", "HOST:PORT"),
    ("fleet.server_address=127.0.0.1:0", "HOST:PORT"),
    ("fleet.server_address=localhost", "HOST:PORT"),
    ("fleet.server_address=http://127.0.0.1:9092", "HOST:PORT"),
])
def test_bad_values_fail_at_load_with_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert fragment in message and "\n" not in message
    value = override.split("=", 1)[1]
    assert value.split("e")[0].lstrip("-") in message or "uncertain" in message


def test_valid_edge_values_load():
    cfg = load_config(None, ["learner.lr=1e-3", "learner.device=cuda:0", "server.port=0",
                             "model.conf=1", "memory.holdout_fraction=0.5"])
    assert cfg.learner.lr == pytest.approx(1e-3) and cfg.learner.device == "cuda:0"


def test_every_key_has_a_rule_or_is_free_text():
    import typing

    from edgecl import config as config_mod

    booleans = set()
    for key in config_mod.all_keys():
        section, _, name = key.rpartition(".")
        cls = config_mod.Config
        for part in filter(None, section.split(".")):
            cls = typing.get_type_hints(cls)[part]
        if typing.get_type_hints(cls)[name] is bool:
            booleans.add(key)
    unchecked = set(config_mod.all_keys()) - set(config_mod.RULES) - config_mod.FREE_KEYS - booleans
    assert not unchecked, f"config keys without a validation rule: {sorted(unchecked)}"
    assert set(config_mod.RULES) <= set(config_mod.all_keys())


def test_choices_agree_with_the_registries_that_consume_them():
    from edgecl.config import RULES
    from edgecl.continual.strategies import STRATEGIES
    from edgecl.runtime.buffers import POLICIES as BUFFERS

    assert set(RULES["replay.strategy"].choices) == set(STRATEGIES)
    assert set(RULES["runtime.back_pressure"].choices) == set(BUFFERS) | {"auto"}


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "cannot read config" in str(err.value) and "\n" not in str(err.value)
