"""Deployment configuration: nested frozen dataclasses loaded from one YAML file.

Unknown keys fail with a one-line error naming the closest valid key; dotted
``section.key=value`` overrides apply on top; :func:`config_hash` identifies the
effective configuration (recorded in manifests and metrics).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgecl.errors import ConfigError, did_you_mean


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from (see ``edgecl.runtime.sources``)."""

    uri: str = "synthetic://?tasks=5&images_per_task=60&imgsz=160&seed=0"
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_consecutive_failures: int = 50


@dataclass(frozen=True)
class ModelConfig:
    """The detector used at start-up and its inference settings."""

    path: str = ""
    imgsz: int = 160
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 100
    threads: int = 2
    providers: str = "auto"


@dataclass(frozen=True)
class RuntimeConfig:
    """The capture -> inference -> sink loop."""

    back_pressure: str = "auto"
    sink_queue_size: int = 64
    swap_poll_s: float = 0.5
    warmup_runs: int = 2
    realtime: bool = False


@dataclass(frozen=True)
class MemoryConfig:
    """The bounded replay memory."""

    capacity: int = 2000
    max_bytes: int = 512 * 1024 * 1024
    jpeg_quality: int = 90
    policy: str = "class_balanced"
    task_budget_pct: float = 10.0
    holdout_fraction: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class ReplayConfig:
    """How replay samples are chosen for a learning round."""

    strategy: str = "far"
    samples: int = 64
    candidate_pool: int = 256
    virtual_candidates: int = 50
    virtual_top_k: int = 10


@dataclass(frozen=True)
class LearnerConfig:
    """When and how the on-device learner fine-tunes the detector."""

    enabled: bool = True
    trigger_new_samples: int = 100
    trigger_interval_s: float = 0.0
    trigger_new_class: bool = True
    budget_s: float = 120.0
    max_steps: int = 60
    first_round_budget_s: float = 300.0
    first_round_max_steps: int = 600
    epochs: int = 3
    batch: int = 8
    lr: float = 0.002
    imgsz: int = 160
    device: str = "auto"
    torch_threads: int = 1
    nice: int = 10
    # 0 merges replayed images into the training set; in (0, 1] each batch holds that share.
    replay_fraction: float = 0.0
    # training batches used to re-estimate BatchNorm statistics after a round (0: off)
    bn_recalibration_batches: int = 8


@dataclass(frozen=True)
class IderConfig:
    """IDER (idempotent experience replay) adapted to the YOLO class branch."""

    enabled: bool = False
    second_pass_weight: float = 0.5
    distill_memory_weight: float = 0.5
    distill_current_weight: float = 0.4
    distill_conf: float = 0.3


@dataclass(frozen=True)
class GateConfig:
    """Acceptance test a candidate model must pass before it is staged."""

    max_forgetting: float = 0.15
    min_acc_delta: float = -0.02


@dataclass(frozen=True)
class ExportConfig:
    """Inference-engine export settings."""

    onnx_opset: int = 17
    tensorrt: str = "auto"
    precision: str = "fp16"
    int8_calibration_images: int = 300
    workspace_mb: int = 1024


@dataclass(frozen=True)
class LabelsConfig:
    """Where training labels come from."""

    mode: str = "ground_truth"
    pseudo_conf: float = 0.6
    uncertain_low: float = 0.3
    uncertain_high: float = 0.6
    max_pending: int = 200


@dataclass(frozen=True)
class ServerConfig:
    """The local HTTP server (health, metrics, operator API)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765


@dataclass(frozen=True)
class Config:
    """Top-level configuration of one deployment."""

    state_dir: str = "state"
    source: SourceConfig = field(default_factory=SourceConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    ider: IderConfig = field(default_factory=IderConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    labels: LabelsConfig = field(default_factory=LabelsConfig)
    server: ServerConfig = field(default_factory=ServerConfig)


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """List every valid dotted key of a config dataclass.

    Args:
        cls: dataclass type to walk.
        prefix: dotted prefix for nested sections.

    Returns:
        Keys such as ``memory.capacity``.
    """
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(all_keys(hints[f.name], name + "."))
        else:
            keys.append(name)
    return keys


def _unknown_key_error(dotted: str, where: str) -> ConfigError:
    hint = did_you_mean(dotted, all_keys(), cutoff=0.0)
    return ConfigError(f"unknown config key '{dotted}' in {where}{hint}")


def _coerce(value: object, kind: type, dotted: str, where: str) -> object:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"config key '{dotted}' in {where} must be true or false, got {value!r}")
    if kind in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ConfigError(f"config key '{dotted}' in {where} must be a number, got {value!r}")
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"config key '{dotted}' in {where} must be an integer, got {value!r}")
        return int(value)
    if kind is str and not isinstance(value, str):
        return str(value)
    return value


def _build(cls: type, data: dict, prefix: str, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' in {where} "
                          f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in names:
            raise _unknown_key_error(dotted, where)
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value or {}, dotted + ".", where)
        else:
            kwargs[key] = _coerce(value, kind, dotted, where)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, object]:
    """Parse one ``section.key=value`` override (the value is read as YAML).

    Args:
        text: the override as typed on the command line.

    Returns:
        ``(dotted_key, value)``.

    Raises:
        ConfigError: when ``=`` is missing or the key is empty.
    """
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a deployment config and apply dotted overrides.

    Args:
        path: YAML file, or ``None`` for the built-in defaults.
        overrides: ``section.key=value`` strings, applied in order.

    Returns:
        The frozen :class:`Config`.

    Raises:
        ConfigError: missing or unparsable file, unknown key, wrong value type.
    """
    tree: dict = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        try:
            tree = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"cannot parse config {p}{at}: {getattr(exc, 'problem', exc)}") from None
    for text in overrides:
        key, value = parse_override(text)
        if key not in all_keys():
            raise _unknown_key_error(key, "command-line override")
        _set_dotted(tree, key, value)
    return _build(Config, tree, "", where if not overrides else f"{where} (+ overrides)")


def config_to_dict(cfg: Config) -> dict:
    """Return the config as plain nested dicts.

    Args:
        cfg: the configuration.

    Returns:
        A JSON-serialisable dict.
    """
    return dataclasses.asdict(cfg)


def config_hash(cfg: Config) -> str:
    """Hash the effective configuration (stable across key order).

    Args:
        cfg: the configuration.

    Returns:
        First 16 hex digits of the sha256 of its canonical JSON.
    """
    blob = json.dumps(config_to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
