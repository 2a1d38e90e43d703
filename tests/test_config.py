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


def test_example_config_says_where_it_differs_from_the_defaults():
    """Its header promises 'shown values are the defaults unless noted': a value that differs
    from the code's default carries a '(default: ...)' note in its comment."""
    from edgecl.config import config_to_dict

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    shipped = dict(flat(config_to_dict(load_config(EXAMPLE))))
    default = dict(flat(config_to_dict(load_config())))
    lines = EXAMPLE.read_text().splitlines()
    for key, value in shipped.items():
        if value == default[key]:
            continue
        parts, at = key.split("."), 0
        for depth, part in enumerate(parts):  # each level's line, after its section's line
            at = next(i for i in range(at, len(lines))
                      if lines[i].startswith(f"{'  ' * depth}{part}:"))
        assert "default" in lines[at].split("#", 1)[1], f"{key}: {value} (default {default[key]})"


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
    for text, got in (("state_dir:\n", "null"), ("state_dir: [1, 2]\n", "list ['1', '2']"),
                      ("fleet:\n  token: {a: 1}\n", "dict {'a': '1'}")):  # plain scalars stay text
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
    ("memory.capacity=9", "must reach 1: a capacity of at least 10"),  # (fraction 0.1)
    ("learner.imgsz=32", "'learner.imgsz'"),
    ("learner.imgsz=65", "not a multiple of 32"),
    ("model.imgsz=33", "not a multiple of 32"),
    ("fleet.server_address=127.0.0.1:70000", "HOST:PORT"),
    ("fleet.server_address=127.0.0.1:0", "HOST:PORT"),
    ("fleet.server_address=localhost", "HOST:PORT"),
    ("fleet.server_address=http://127.0.0.1:9092", "HOST:PORT"),
    ("server.allowed_origins=drone7.lab.example", "comma-separated origins"),
    ("server.allowed_origins=https://drone7.lab.example/console", "no path"),
])
def test_bad_values_fail_at_load_with_one_line(override, fragment):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    message = str(err.value)
    assert fragment in message and "\n" not in message
    value = override.split("=", 1)[1]
    assert value.split("e")[0].lstrip("-") in message or "uncertain" in message


def test_tls_files_go_together():
    with pytest.raises(ConfigError, match="set both .HTTPS. or neither"):
        load_config(None, ["server.tls_cert=/etc/edgecl/console.pem"])
    cfg = load_config(None, ["server.tls_cert=a.pem", "server.tls_key=a.key"])
    assert (cfg.server.tls_cert, cfg.server.tls_key) == ("a.pem", "a.key")


def test_allowed_origins_load():
    cfg = load_config(None, ["server.allowed_origins=https://a.example, http://10.0.0.7:8080"])
    assert cfg.server.allowed_origins == "https://a.example, http://10.0.0.7:8080"
    # copied from the address bar, with its trailing slash
    assert load_config(None, ["server.allowed_origins=https://a.example/"]).server.allowed_origins


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


def _one_line_error(path=None, overrides=()):
    with pytest.raises(ConfigError) as err:
        load_config(path, list(overrides))
    message = str(err.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_aliases_deep_nesting_and_huge_values_are_refused_quickly(tmp_path):
    import time

    bomb = tmp_path / "bomb.yaml"  # 10 levels of 9 aliases: 9**10 elements when expanded
    levels = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    for key in ("memory:\n  capacity", "source:\n  uri"):
        bomb.write_text(f"{key}: [{', '.join(levels)}]\n")
        start = time.monotonic()
        message = _one_line_error(bomb)
        assert time.monotonic() - start < 2
        assert message == f"cannot parse config {bomb} at line 2: alias *a0 is not allowed in a " \
                          f"config file (write the value out)"
    deep = tmp_path / "deep.yaml"
    deep.write_text("memory:\n  capacity: " + "[" * 600 + "\n")
    assert _one_line_error(deep) == f"cannot parse config {deep} at line 2: nested deeper than 20 levels"
    assert _one_line_error(None, ["memory.capacity=" + "[" * 600]).endswith(
        "must be a number, got '[[[[[[[[[[[[[[[[[...[[[[[[[[[[[[[[[[[['")
    deep.write_text("state_dir: [" + ", ".join(["x" * 1000] * 1000) + "]\n")
    assert "must be text, got list ['xxxxxxxx" in _one_line_error(deep)


@pytest.mark.parametrize("override, expected", [
    ("server.token=0123456", "0123456"), ("server.token=12:30", "12:30"),
    ("server.token=yes", "yes"), ("server.token=3.10", "3.10"), ("fleet.token=0x1F", "0x1F"),
    ("fleet.device_name=007", "007"), ("server.token=.inf", ".inf"), ("server.token=~x", "~x"),
])
def test_text_keys_keep_the_text_as_written(tmp_path, override, expected):
    key, value = override.split("=", 1)
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == expected
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: {value}\n")
    assert getattr(getattr(load_config(path), section), name) == expected


@pytest.mark.parametrize("override, expected", [
    ("server.token=secret #1", "secret #1"), ("source.uri=dir:///data/img #2", "dir:///data/img #2"),
    ("fleet.device_name=drone #7", "drone #7"), ("server.token=&a secret", "&a secret"),
    ("server.token=|", "|"), ("server.token=>x", ">x"), ("server.token=*a", "*a"),
    ("server.token=!!python/object x", "!!python/object x"),
    ("server.token='a b'", "a b"), ('server.token="x\\ty"', "x\ty"), ("server.token=", ""),
])
def test_an_override_value_is_the_text_after_the_equals_sign(override, expected):
    """Before: override values were read as YAML, so ' #...' was dropped as a comment (a
    token shortened without a word, another existing folder streamed) and '&a', '|' were
    YAML's anchor and block markers; a value quoted whole is still read as quoted YAML."""
    key, _ = override.split("=", 1)
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == expected


@pytest.mark.parametrize("override, message", [
    ("memory.capacity=100 #x", "must be a number, got '100 #x'"),
    ("memory.capacity=10_", "must be a number, got '10_'"),
    ("server.port=87__65", "must be a number, got '87__65'"),
    ("memory.max_bytes=536870912_", "must be a number of bytes or a size such as 10GB or 512MiB, "
                                    "got '536870912_'"),
    ("memory.max_bytes=1__0MB", "must be a number of bytes or a size such as 10GB or 512MiB, "
                                "got '1__0MB'"),
    ("memory.max_bytes=2Gb", "'2Gb' reads as bits; write bytes as 2GB (powers of 1000) or 2GiB "
                             "(powers of 1024)"),
])
def test_malformed_numbers_are_one_config_error(tmp_path, override, message):
    """Before: '10_' and '1__0' passed the number pattern and int() raised, an internal error
    (exit 1; the healthcheck printed a traceback); '2Gb' was read as 2 GB of bytes."""
    assert _one_line_error(None, [override]).endswith(message)
    key, value = override.split("=", 1)
    section, name = key.split(".")
    path = tmp_path / "c.yaml"
    path.write_text(f"{section}:\n  {name}: '{value}'\n")
    assert _one_line_error(path).endswith(message)


def test_size_units_in_any_case_but_bits_are_bytes():
    assert load_config(None, ["memory.max_bytes=2gb"]).memory.max_bytes == 2 * 10**9
    assert load_config(None, ["memory.max_bytes=1_000MB"]).memory.max_bytes == 10**9
    assert load_config(None, ["memory.max_bytes=2 GiB"]).memory.max_bytes == 2 * 2**30


def test_a_ruled_text_key_is_judged_on_the_text_as_typed():
    """Before: 'fleet.server_address=127.0.0.1:' said "must be text, got dict {'127.0.0.1':
    None}" (YAML's reading), pointing away from the missing port."""
    assert _one_line_error(None, ["fleet.server_address=127.0.0.1:"]).endswith(
        "'127.0.0.1:' is not HOST:PORT with a port in 1..65535 (e.g. 127.0.0.1:9092)")
    assert load_config(None, ["export.openvino=off"]).export.openvino == "off"  # YAML's bool


@pytest.mark.parametrize("override, message", [
    ("export.onnx_opset=017", "must be a number without leading zeros (YAML 1.1 reads them as "
                              "octal), got '017'"),
    ("export.onnx_opset=090", "must be a number without leading zeros (YAML 1.1 reads them as "
                              "octal), got '090'"),
    ("memory.capacity=1:30", "must be a number written in decimal, got '1:30'"),
    ("memory.capacity=0x1F", "must be a number written in decimal, got '0x1F'"),
    ("memory.capacity=0o17", "must be a number written in decimal, got '0o17'"),
    ("memory.capacity=0b11", "must be a number written in decimal, got '0b11'"),
    ("learner.enabled=maybe", "must be true or false, got text 'maybe'"),
])
def test_yaml_11_number_forms_are_refused_not_reinterpreted(override, message):
    assert _one_line_error(None, [override]).endswith(message)


def test_accepted_number_and_bool_forms():
    cfg = load_config(None, ["memory.capacity=1e3", "replay.samples=1_000", "export.onnx_opset='17'",
                             "learner.enabled='TRUE'", "ider.enabled=on", "labels.mode=off",
                             "export.tensorrt=on", "memory.seed=0", "gate.min_acc_delta=-0.5"])
    assert (cfg.memory.capacity, cfg.replay.samples, cfg.export.onnx_opset) == (1000, 1000, 17)
    assert cfg.learner.enabled is True and cfg.ider.enabled is True
    assert (cfg.labels.mode, cfg.export.tensorrt, cfg.gate.min_acc_delta) == ("off", "on", -0.5)
    assert load_config(None, ["learner.enabled=false"]).learner.enabled is False


def test_a_key_too_long_for_yaml_is_said_so(tmp_path):
    """Before: PyYAML's "mapping values are not allowed here" for a key over 1024 characters,
    which names neither the key nor why."""
    path = tmp_path / "c.yaml"
    path.write_text("memory:\n  " + "x" * 1100 + ": 3\n")
    assert _one_line_error(path) == (f"cannot parse config {path} at line 2: a key longer than "
                                     f"1024 characters, which YAML does not allow")
    path.write_text("memory: capacity: 3\n")  # the same wording of PyYAML for another fault
    assert _one_line_error(path) == (f"cannot parse config {path} at line 1: mapping values "
                                     f"are not allowed here")


def test_duplicate_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("memory: {capacity: 5}\nreplay: {samples: 3}\nmemory: {seed: 3}\n")
    assert _one_line_error(path) == f"cannot parse config {path} at line 3: duplicate key " \
                                    f"'memory' (first at line 1)"
    path.write_text("memory:\n  capacity: 50\n  capacity: 5000\n")
    assert _one_line_error(path) == f"cannot parse config {path} at line 3: duplicate key " \
                                    f"'capacity' (first at line 2)"


@pytest.mark.parametrize("key", ["learner.distill_cls_weight", "runtime.swap_poll_s",
                                 "labels.selection.random", "ider.second_pass_weight",
                                 "fleet.round_timeout_s", "learner.budget_s", "memory.capacity"])
def test_infinity_is_refused_for_numbers(tmp_path, key):
    section, _, name = key.rpartition(".")
    for text in (".inf", "-.inf", ".nan", "inf", "nan"):
        assert _one_line_error(None, [f"{key}={text}"]).endswith(
            f"must be a finite number, got '{text}'")
    path = tmp_path / "c.yaml"
    indent = "".join(f"{'  ' * i}{part}:\n" for i, part in enumerate(section.split(".")))
    path.write_text(f"{indent}{'  ' * (section.count('.') + 1)}{name}: .inf\n")
    assert _one_line_error(path) == f"config key '{key}' in {path} must be a finite number, got '.inf'"


def test_root_and_sections_must_be_mappings(tmp_path):
    path = tmp_path / "c.yaml"
    for text, got in (("- 1\n- 2\n", "list ['1', '2']"), ("false\n", "text 'false'"),
                      ("[]\n", "list []")):
        path.write_text(text)
        for overrides in ((), ("memory.capacity=50",)):
            assert _one_line_error(path, overrides) == (
                f"config {path} must be a mapping of sections (e.g. 'memory:' with keys under "
                f"it), got {got}")
    for text, got in (("false", "text 'false'"), ("0", "text '0'"), ("[]", "list []"),
                      ('""', "text ''")):
        path.write_text(f"memory: {text}\n")
        for overrides in ((), ("memory.capacity=50",)):
            assert _one_line_error(path, overrides) == (
                f"config section 'memory' in {path} must be a mapping (keys under it) or empty, "
                f"got {got}")
    path.write_text("memory:\nlabels:\n  selection:\n")  # empty sections: their defaults
    assert load_config(path) == Config()
    assert load_config(path, ["memory.capacity=50", "labels.selection.random=0"]).memory.capacity == 50
    path.write_text("")
    assert load_config(path, ["memory.capacity=50"]).memory.capacity == 50


@pytest.mark.parametrize("override, bound", [
    ("memory.capacity=" + "9" * 400, "1..10000000"),
    ("fleet.seed=100000000000000000000", "0..4294967295"),
    ("memory.seed=4294967296", "0..4294967295"),
    ("labels.novelty_ring=1000000000000", "1..100000"),
])
def test_huge_numbers_are_out_of_range(override, bound):
    assert _one_line_error(None, [override]).endswith(f"is out of range ({bound})")


@pytest.mark.parametrize("override, bound", [
    ("learner.budget_s=1e400", "> 0 and <= 31536000"),
    ("memory.capacity=1e400", "1..10000000"),
    ("labels.priority_half_life_s=1e400", "0..31536000"),
])
def test_a_number_beyond_a_float_is_too_large_not_out_of_range(override, bound):
    """Before: "'1e400' is out of range (>= 0)", although 1e400 is >= 0."""
    assert _one_line_error(None, [override]).endswith(
        f"is too large for a number (the key takes {bound})")


def test_every_integer_key_has_an_upper_bound():
    import typing

    from edgecl import config as config_mod

    for key, rule in config_mod.RULES.items():
        section, _, name = key.rpartition(".")
        cls = config_mod.Config
        for part in filter(None, section.split(".")):
            cls = typing.get_type_hints(cls)[part]
        if typing.get_type_hints(cls)[name] is int:
            assert rule.hi is not None, f"{key} has no upper bound"
    assert load_config(None, ["fleet.seed=4294967295", "labels.novelty_ring=100000"])


def test_learner_device_index():
    assert load_config(None, ["learner.device=cuda:1"]).learner.device == "cuda:1"
    for bad in ("cuda:N", "cuda:-1", "cuda:\u0663", "gpu"):
        assert _one_line_error(None, [f"learner.device={bad}"]).startswith(
            f"config key 'learner.device' in override 'learner.device={bad}': {bad!r} is not one "
            f"of auto, cpu, cuda or cuda:<index>")


def test_an_empty_state_dir_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text('state_dir: ""\n')
    assert _one_line_error(path) == f"config key 'state_dir' in {path} must name a directory, got ''"
    path.write_text('state_dir: "  "\n')
    assert _one_line_error(path) == f"config key 'state_dir' in {path} must name a directory, got '  '"
    assert _one_line_error(None, ["state_dir="]).endswith("must name a directory, got ''")


@pytest.mark.parametrize(("text", "message"), [
    # before: "unknown config key 'memory.capacity' ...; did you mean 'memory.capacity'?"
    ("memory.capacity: 3\n", "config key 'memory.capacity' in {path}: a config file nests its "
     "keys instead of joining them with dots; write 'memory: {{capacity: ...}}' or the same in "
     "indented lines"),
    ("labels:\n  selection.uncertain: 1\n", "config key 'labels.selection.uncertain' in {path}: "
     "a config file nests its keys instead of joining them with dots; write 'labels: "
     "{{selection: {{uncertain: ...}}}}' or the same in indented lines"),
    ("Memory.Capacity: 3\n", "unknown config key 'Memory.Capacity' in {path}; did you mean "
     "'memory: {{capacity: ...}}'?"),
    ("memroy.zzz: 3\n", "unknown config key 'memroy.zzz' in {path}; did you mean 'memory'?"),
    ("memory.zzz: 3\n", "unknown config key 'memory.zzz' in {path}"),
])
def test_a_file_key_joined_with_dots_is_shown_nested(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _one_line_error(path) == message.format(path=path)


@pytest.mark.parametrize("where, key, hint", [
    ("file", "memroy", "; did you mean 'memory'?"),
    ("file", "Memory", "; did you mean 'memory'?"),
    ("override", "zzz", ""),
    ("override", "memroy.capacity", "; did you mean 'memory.capacity'?"),
    ("override", "memory.zzz", ""),
    ("override", "labels.selction.random", "; did you mean 'labels.selection.random'?"),
    # before: "did you mean 'memory'?", the section, for a key typed in the wrong case
    ("override", "Memory.Capacity", "; did you mean 'memory.capacity'?"),
    ("override", "memroy.capasity", "; did you mean 'memory.capacity'?"),
    ("override", "memroy.zzz", "; did you mean 'memory'?"),
    ("override", "LEARNER.freeze_layer", "; did you mean 'learner.freeze_layers'?"),
])
def test_unknown_sections_suggest_a_section(tmp_path, where, key, hint):
    if where == "file":
        path = tmp_path / "c.yaml"
        path.write_text(f"{key}:\n  capacity: 5\n")
        assert _one_line_error(path) == f"unknown config key '{key}' in {path}{hint}"
    else:
        assert _one_line_error(None, [f"{key}=1"]) == \
            f"unknown config key '{key}' in command-line override{hint}"
    assert _one_line_error(None, ["memory=1"]) == (
        "config key 'memory' in command-line override is a section: set one of its keys, "
        "e.g. 'memory.capacity'")


def test_quoted_true_for_a_bool_key():
    assert load_config(None, ["learner.enabled='true'"]).learner.enabled is True
    assert load_config(None, ['learner.enabled="False"']).learner.enabled is False
    assert _one_line_error(None, ["learner.enabled=2"]).endswith("must be true or false, got text '2'")


def test_mir_pool_must_hold_the_samples():
    message = _one_line_error(None, ["replay.strategy=mir", "replay.candidate_pool=10",
                                     "replay.samples=64"])
    assert message == ("config key 'replay.candidate_pool' (10) in defaults (+ overrides) must be "
                       "at least 'replay.samples' (64) with strategy mir: it replays the samples "
                       "it picks from that pool")
    # far only caps the samples it scores: a small pool is fine
    assert load_config(None, ["replay.strategy=far", "replay.candidate_pool=10"]).replay.samples == 64


def test_cli_refuses_overrides_for_a_command_without_config(capsys, tmp_path):
    from edgecl.cli import build_parser, main, split_overrides

    with pytest.raises(SystemExit) as exit_:  # a usage error, as argparse's own
        main(["scenario", "make", "--out", str(tmp_path / "sc"), "memory.capacity=5", "zzz.bogus=1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: memory.capacity=5, zzz.bogus=1: this command reads no config, so "
        "section.key=value settings do not apply to it; see 'edgecl scenario make --help'\n")
    assert not (tmp_path / "sc").exists()
    args, overrides = split_overrides(["memory", "stats", "--config", "v=2.yaml", "--conf",
                                       "w=3.yaml", "memory.capacity=50", "--json", "a.b=1"],
                                      build_parser())
    assert args == ["memory", "stats", "--config", "v=2.yaml", "--conf", "w=3.yaml", "--json"]
    assert overrides == ["memory.capacity=50", "a.b=1"]
    args, overrides = split_overrides(["run", "--out", "run=1.jsonl", "model.imgsz=64"],
                                      build_parser())
    assert (args, overrides) == (["run", "--out", "run=1.jsonl"], ["model.imgsz=64"])
    code = main(["memory", "stats", "--config", str(tmp_path / "v=2.yaml")])
    assert code == 2 and capsys.readouterr().err == f"error: config file not found: {tmp_path / 'v=2.yaml'}\n"


@pytest.mark.parametrize("text, expected", [
    ("10GB", 10 * 1000 ** 3), ("512MiB", 512 * 1024 ** 2), ("1.5 GiB", 1536 * 1024 ** 2),
    ("2gb", 2 * 1000 ** 3), ("1_000MB", 1000 * 1000 ** 2), ("268435456", 268435456)])
def test_a_byte_size_may_be_written_with_its_unit(tmp_path, text, expected):
    """Before: 'memory.max_bytes: 10GB' was refused ("must be a number"), and a team had to
    work out 10000000000 by hand."""
    path = tmp_path / "edgecl.yaml"
    path.write_text(f"memory:\n  max_bytes: {text}\nruntime:\n  out_max_bytes: {text}\n")
    cfg = load_config(path)
    assert cfg.memory.max_bytes == expected and cfg.runtime.out_max_bytes == expected


@pytest.mark.parametrize("text, said", [
    ("10G", "'10G' names no unit; write it in bytes or with one, e.g. 10GB (powers of 1000) or "
            "10GiB (powers of 1024)"),
    ("10GiBs", "must be a number of bytes or a size such as 10GB or 512MiB, got '10GiBs'"),
    ("0.5kB", "500 is out of range")])
def test_a_byte_size_without_a_clear_unit_is_refused_in_one_line(text, said):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"memory.max_bytes={text}"])
    assert said in str(err.value) and "\n" not in str(err.value)


def test_a_size_unit_is_only_read_for_byte_keys():
    with pytest.raises(ConfigError, match="must be a number, got '10GB'"):
        load_config(None, ["memory.capacity=10GB"])


@pytest.mark.parametrize("override, message", [
    ("runtime.swap_poll_s=1e10", "'runtime.swap_poll_s' in override 'runtime.swap_poll_s=1e10': "
                                 "10000000000.0 is out of range (> 0 and <= 31536000)"),
    ("learner.budget_s=1e308", "out of range (> 0 and <= 31536000)"),
    ("labels.dedup_window_s=4e7", "out of range (0..31536000)"),
    ("runtime.out_max_bytes=100", "'runtime.out_max_bytes' (100) in override "
                                  "'runtime.out_max_bytes=100' must be 0 (no rotation) or at "
                                  "least 65536 bytes"),
])
def test_times_past_a_year_and_tiny_output_files_are_refused(override, message):
    """Before: runtime.swap_poll_s=1e10 loaded, then killed the model loader's thread with an
    OverflowError (timestamp out of range for time_t); runtime.out_max_bytes=100 started a new
    file at every frame and kept only the last 5 lines."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
    assert load_config(None, ["runtime.out_max_bytes=0"]).runtime.out_max_bytes == 0


def test_a_home_folder_in_a_path_key_is_the_home_folder(tmp_path, monkeypatch):
    """Before: ``state_dir: ~/edgecl`` made a folder named ``~`` in the current directory, and
    ``model.path: ~/models/best.pt`` was 'no such file' (YAML has no shell to expand it)."""
    from edgecl.commands.common import check_state_dir_option

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg_file = tmp_path / "edgecl.yaml"
    cfg_file.write_text("state_dir: ~/edgecl\nmodel:\n  path: ~/models/best.pt\n"
                        "server:\n  tls_cert: ~/tls/cert.pem\n  tls_key: ~/tls/key.pem\n"
                        "fleet:\n  ca_cert: '~nosuchuser_edgecl/ca.pem'\n", encoding="utf-8")
    cfg = load_config(cfg_file, ["fleet.initial_model=~/global.pt"])
    home = str(tmp_path / "home")
    assert cfg.state_dir == f"{home}/edgecl"
    assert cfg.model.path == f"{home}/models/best.pt"
    assert (cfg.server.tls_cert, cfg.server.tls_key) == (f"{home}/tls/cert.pem",
                                                         f"{home}/tls/key.pem")
    assert cfg.fleet.initial_model == f"{home}/global.pt"
    assert cfg.fleet.ca_cert == "~nosuchuser_edgecl/ca.pem"  # no such user: as written
    assert check_state_dir_option("~/state") == f"{home}/state"  # --state-dir=~/state


def test_a_bad_value_is_named_where_it_was_set(tmp_path):
    """Before: 'server.port=abc' on the command line was blamed on "defaults (+ overrides)",
    and a bad value in the file on "FILE (+ overrides)" once any override was given."""
    cfg_file = tmp_path / "edgecl.yaml"
    cfg_file.write_text("server:\n  port: 80x\n")
    assert _one_line_error(None, ["server.port=abc"]) == (
        "config key 'server.port' in override 'server.port=abc' must be a number, got 'abc'")
    assert _one_line_error(cfg_file, ["learner.lr=0.01"]) == (
        f"config key 'server.port' in {cfg_file} must be a number, got '80x'")
    assert _one_line_error(cfg_file, ["server.port=70000"]) == (
        "config key 'server.port' in override 'server.port=70000': 70000 is out of range "
        "(0..65535)")
    assert _one_line_error(None, ["replay.strategy=mir", "replay.candidate_pool=10"]).startswith(
        "config key 'replay.candidate_pool' (10) in defaults (+ overrides) must be at least")
    # a one-key check outside the rules table, and a section the file got wrong
    assert _one_line_error(None, ["server.trusted_proxies=notanip"]).startswith(
        "config key 'server.trusted_proxies' in override 'server.trusted_proxies=notanip': "
        "'notanip' is not an IP address")
    cfg_file.write_text("memory: 5\n")
    assert _one_line_error(cfg_file, ["server.port=1"]).startswith(
        f"config section 'memory' in {cfg_file} must be a mapping")


def test_a_tagged_value_yaml_cannot_build_is_one_line(tmp_path):
    """Before: 'memory.capacity=!!int abc' was "internal error (ValueError: invalid literal for
    int() ...)", and '!!timestamp 2020-02-30' "internal error (ValueError: day is out of range
    for month)", from an override or a file."""
    for tagged in ("!!int abc", "!!float x", "!!timestamp 2020-02-30", "!!timestamp x"):
        assert _one_line_error(None, [f"memory.capacity={tagged}"]) == (
            f"config key 'memory.capacity' in override 'memory.capacity={tagged}' must be a "
            f"number, got '{tagged}'")
    cfg_file = tmp_path / "edgecl.yaml"
    cfg_file.write_text("memory: {capacity: !!int abc}\n")
    assert _one_line_error(cfg_file) == (
        f"cannot parse config {cfg_file}: a tagged value YAML cannot build (invalid literal for "
        "int() with base 10: 'abc'); write plain values")


def test_a_config_path_that_is_no_file_says_what_it_is(tmp_path):
    """Before: /dev/null was "not a regular file (a folder?)"."""
    assert _one_line_error("/dev/null") == ("config file /dev/null is not a regular file (a "
                                            "device or a pipe)")
    assert _one_line_error(tmp_path) == f"config file {tmp_path} is a folder, not a file"
    assert _one_line_error(tmp_path / "none.yaml") == f"config file not found: {tmp_path}/none.yaml"


@pytest.mark.parametrize("text", ["\u0663\u0660", "\uff18\uff10\uff18\uff10", "1\u0660"])
def test_a_number_in_other_scripts_digits_is_refused(text):
    """Before: 'memory.capacity=٣٠' loaded as 30 and 'server.port=８０８０' as 8080 (Python's
    int reads any script's digits), while a label's class id takes ASCII digits only."""
    for key in ("memory.capacity", "server.port", "learner.lr"):
        assert _one_line_error(None, [f"{key}={text}"]) == (
            f"config key '{key}' in override '{key}={text}' must be a number written in ASCII "
            f"digits, got '{text}'")


def test_a_state_dir_with_a_line_break_is_refused_in_one_line(tmp_path):
    """Before: a state directory moved to a path holding a line break imported and verified,
    but every learning round failed ("no usable training image ... No such file"): a round's
    image lists hold one path per line."""
    from edgecl.commands.common import check_state_dir_option

    with pytest.raises(ConfigError) as err:
        check_state_dir_option("flight\nx")
    assert str(err.value) == ("--state-dir: 'flight\\nx' is not a path without line breaks or "
                              "other control characters, whose folder names are UTF-8")
    config = tmp_path / "edgecl.yaml"
    config.write_text('state_dir: "flight\\nx"\n')
    with pytest.raises(ConfigError, match="config key 'state_dir' in .*edgecl.yaml: 'flight"):
        load_config(config)
    assert check_state_dir_option("with space/é") == "with space/é"


@pytest.mark.parametrize("value", ["drone7.lab:8765", "https://drone7.lab", "*", "*.lab",
                                   "drone7.lab,,x", "drone 7"])
def test_an_allowed_host_that_can_never_match_is_refused(value):
    """Before: accepted without a word; a Host header is compared by its name alone, so the
    operator met 421 with no clue why."""
    assert _one_line_error(None, [f"server.allowed_hosts={value}"]).endswith(
        f"{value!r} is not empty or comma-separated host names such as drone7.lab.example (no "
        f"scheme, port or wildcard; IP addresses are always allowed)")


def test_allowed_hosts_take_names_and_addresses():
    assert load_config(None, ["server.allowed_hosts=drone7.lab, drone8.lab.,10.0.0.5"]
                       ).server.allowed_hosts == "drone7.lab, drone8.lab.,10.0.0.5"


@pytest.mark.parametrize("text, line, tail", [
    ('memory:\n  capacity: 50\n  policy: "abc\n  seed: 1\nlearner:\n  lr: 0.1\n', 3,
     "a quoted value is never closed (found unexpected end of stream at line 7)"),
    ("memory:\n  policy: 'abc\n---\n", 2,
     "a quoted value is never closed (found unexpected document separator at line 3)"),
    ('memory:\n  policy: "a\\qb"\n', 2, "found unknown escape character 'q'"),
])
def test_a_quote_never_closed_is_named_where_it_opens(tmp_path, text, line, tail):
    """Before: 'at line 7: found unexpected end of stream' for a 6-line file whose quote
    opens on line 3."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert _one_line_error(path) == f"cannot parse config {path} at line {line}: {tail}"


def test_an_empty_config_name_is_said_as_such():
    """Before: '--config ""' said 'config file . is a folder, not a file'."""
    with pytest.raises(ConfigError, match=r"^the config file's name is empty \(an unset variable\?\)$"):
        load_config("  ")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "memory:\nserver:\n"])
def test_a_config_file_that_sets_nothing_is_warned_of(tmp_path, caplog, text):
    """Before: a config cut to 0 bytes (a power loss during an edit) ran with ./state and the
    console off, and only an INFO line named the file."""
    path = tmp_path / "edgecl.yaml"
    path.write_text(text)
    assert load_config(path) == Config()
    assert caplog.messages == [f"config {path} sets no key (empty, only comments, or sections "
                               f"with nothing under them): every key takes its built-in default "
                               f"(state_dir state, no source, console off)"]
    caplog.clear()
    path.write_text("memory:\n  capacity: 50\n")
    load_config(path)
    assert not caplog.messages


def test_a_sections_key_at_the_top_level_names_its_section(tmp_path):
    """Before: 'unknown config key 'capacity'' with no hint, for a key whose indentation was
    lost under 'memory:'."""
    path = tmp_path / "c.yaml"
    path.write_text("memory:\ncapacity: 50\n")
    assert _one_line_error(path) == (f"unknown config key 'capacity' in {path}: it is a key of a "
                                     f"section (memory.capacity); indent it under 'memory:'")
    path.write_text("seed: 3\n")
    assert _one_line_error(path).endswith("it is a key of sections (memory.seed, labels.seed, "
                                          "fleet.seed); indent it under 'memory:' or 'labels:' "
                                          "or 'fleet:'")
    assert _one_line_error(None, ["capacity=3"]).endswith("(memory.capacity); write "
                                                          "memory.capacity")


def test_a_key_under_the_wrong_section_names_its_section(tmp_path):
    """Before: 'unknown config key 'learner.port'' with no hint, for server's key written
    under 'learner:'."""
    path = tmp_path / "c.yaml"
    path.write_text("learner:\n  port: 18631\n")
    assert _one_line_error(path) == (f"unknown config key 'learner.port' in {path}: 'port' "
                                     f"belongs to server (server.port), not to learner; move it "
                                     f"under 'server:'")
    assert _one_line_error(None, ["fleet.capacity=3"]).endswith(
        "'capacity' belongs to memory (memory.capacity), not to fleet; write memory.capacity")
    path.write_text("learner:\n  epocks: 3\n")  # a typo in its own section: the closest key
    assert _one_line_error(path).endswith("did you mean 'learner.epochs'?")


def test_a_huge_number_for_an_integer_key_is_shown_as_typed():
    """Before: '999999999999999967...2608739868455469056 is out of range (1..10000000)' for
    memory.capacity=1e99: the integer it made, 100 digits cut short."""
    with pytest.raises(ConfigError, match=r": 1e\+99 is out of range \(1\.\.10000000\)$"):
        load_config(None, ["memory.capacity=1e99"])
