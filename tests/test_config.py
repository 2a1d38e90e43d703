"""Configuration loading, overrides, unknown keys and hashing."""

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
