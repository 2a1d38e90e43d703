"""Deployment configuration: nested frozen dataclasses loaded from one YAML file.

Unknown keys fail with a one-line error naming the closest valid key; dotted
``section.key=value`` overrides apply on top; :func:`config_hash` identifies the
effective configuration (recorded in manifests and metrics).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import json
import math
import os
import re
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from edgecl.errors import ConfigError, did_you_mean, encoding_problem, link_problem, yaml_problem


BUILT_IN_SOURCE_URI = "synthetic://?tasks=5&images_per_task=60&imgsz=160&seed=0"
"""What ``edgecl run`` without a state directory streams when no source is named."""


@dataclass(frozen=True)
class SourceConfig:
    """Where frames come from (see ``edgecl.runtime.sources``)."""

    # empty: a run without a state directory streams BUILT_IN_SOURCE_URI; a run with one must
    # name its source (the built-in scenario's labelled frames went into a device's memory)
    uri: str = ""
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
    out_max_bytes: int = 100 * 1024 * 1024
    out_backups: int = 5


# Smallest ``memory.holdout_block_s`` above 0 (seconds): block indices of epoch times then
# stay exact integers, far within float precision.
MIN_HOLDOUT_BLOCK_S = 0.01


@dataclass(frozen=True)
class MemoryConfig:
    """The bounded replay memory."""

    capacity: int = 2000
    max_bytes: int = 512 * 1024 * 1024
    jpeg_quality: int = 90
    policy: str = "class_balanced"
    task_budget_pct: float = 10.0
    holdout_fraction: float = 0.1
    holdout_block_s: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class ReplayConfig:
    """How replay samples are chosen for a learning round."""

    strategy: str = "class_balanced"
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
    # BatchNorm statistics of a round: the exact average over its last N training batches (a
    # round with fewer full batches adds forward passes after its last step; 0: off)
    bn_recalibration_batches: int = 8
    # missing annotations (issue 11): old-class boxes of the previous model on new images
    pseudo_old_classes: bool = False
    pseudo_old_conf: float = 0.5
    pseudo_old_iou: float = 0.3
    # LwF-style distillation of the previous model's YOLO head (0: off)
    distill_cls_weight: float = 1.0
    distill_box_weight: float = 1.0
    distill_conf: float = 0.25
    # later rounds keep the first N layers fixed (ultralytics' freeze=N; 10: YOLO11n's backbone
    # up to C2PSA; 0: train all layers). Measured by `edgecl bench learn`: 1.7x images/s.
    freeze_layers: int = 10
    # arithmetic of a round's forward passes: bf16 autocast (weights, optimiser state and the
    # loss stay float32) or float32; auto: bf16 where the device computes it natively (CPUs with
    # AVX-512 BF16 or AMX, CUDA GPUs from Ampere on, Jetson Orin), float32 elsewhere
    precision: str = "auto"


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
    min_instances: int = 5
    # without tasks: a class's loss counts from its best point among the last N promoted
    # versions (the sum of their recorded per-round steps), so small losses cannot add up;
    # 0: from the current model only
    forgetting_window: int = 5
    # without tasks: what the served model shows at model.conf. A class may lose at most this
    # recall (boxes found at model.conf / held-out boxes, IoU 0.5) since its best point in
    # the window (AP ranks detections: it cannot see a class's scores all falling below
    # model.conf); 1: off
    max_recall_loss: float = 0.3
    # ... and false detections at model.conf per held-out image, less the boxes found besides,
    # may rise by at most this since their lowest point in the window; 10000: off
    max_false_positives_rise: float = 1.0


@dataclass(frozen=True)
class ExportConfig:
    """Inference-engine export settings."""

    onnx_opset: int = 17
    tensorrt: str = "auto"
    precision: str = "fp16"
    int8_calibration_images: int = 300
    workspace_mb: int = 1024
    keep_promoted: int = 5
    keep_rejected: int = 3
    engine_cache_entries: int = 4
    openvino: str = "auto"
    cpu_int8: str = "auto"
    int8_max_drop: float = 0.01


@dataclass(frozen=True)
class SelectionConfig:
    """Weights of the selection policies that choose which frames a person sees.

    Each field names one policy of ``edgecl.runtime.labels.selection.SELECTION_POLICIES``;
    a frame's priority is the weighted sum of the policies' scores (0 switches a policy off).
    """

    uncertain: float = 1.0
    novel: float = 1.0
    disagreement: float = 0.5
    forgetting: float = 1.0
    random: float = 0.1


@dataclass(frozen=True)
class LabelsConfig:
    """Where training labels come from (the README's "Teaching your device")."""

    # ground_truth | pseudo | field (ground truth + operator queue + pseudo-labels) | off
    mode: str = "field"
    pseudo_conf: float = 0.6
    pseudo_precision: float = 0.9
    pseudo_min_true_positives: int = 10
    pseudo_max_per_minute: int = 60
    uncertain_low: float = 0.3
    uncertain_high: float = 0.6
    max_pending: int = 200
    priority_half_life_s: float = 21600.0
    min_priority: float = 0.1
    max_per_minute: int = 6
    dedup_window_s: float = 300.0
    dedup_distance: float = 0.03
    novel_distance: float = 0.2
    novelty_ring: int = 512
    random_share: float = 0.02
    seed: int = 0
    storage_retry_s: float = 30.0
    selection: SelectionConfig = field(default_factory=SelectionConfig)


@dataclass(frozen=True)
class ServerConfig:
    """The local HTTP server (health, metrics, operator API)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""
    allowed_hosts: str = ""
    allowed_origins: str = ""
    trusted_proxies: str = ""
    tls_cert: str = ""
    tls_key: str = ""


@dataclass(frozen=True)
class FleetConfig:
    """Fleet learning over Flower (see ``edgecl.fleet``): the server and the device sides."""

    enabled: bool = False
    server_address: str = "127.0.0.1:9092"
    device_name: str = ""
    rounds: int = 10
    min_devices: int = 2
    fraction_fit: float = 1.0
    round_timeout_s: float = 1800.0
    max_forgetting: float = 0.15
    forgetting_action: str = "drop"
    wire_dtype: str = "float16"
    seed: int = 0
    initial_model: str = ""
    proximal_mu: float = 0.0
    restrict_class_loss: bool = True
    retry_s: float = 30.0
    token: str = ""
    ca_cert: str = ""
    server_cert: str = ""
    server_key: str = ""


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
    fleet: FleetConfig = field(default_factory=FleetConfig)


@dataclass(frozen=True)
class Rule:
    """What one config key accepts: a set of choices, or a numeric range.

    Attributes:
        choices: the valid values of an enum-like key (empty for a numeric key).
        pattern: a regular expression a value may also match (e.g. ``cuda:[0-9]+``).
        lo: smallest valid value (``None``: unbounded).
        hi: largest valid value (``None``: unbounded).
        lo_open: ``lo`` itself is invalid (a strictly positive value, say).
        multiple_of: a numeric value must be a multiple of this (0: any).
        meaning: what valid values are, in words (used in the error instead of the pattern
            or the list of choices).
    """

    choices: tuple[str, ...] = ()
    pattern: str = ""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    multiple_of: int = 0
    meaning: str = ""

    def problem(self, value: object) -> str | None:
        """Describe why ``value`` is invalid, or return ``None`` when it is valid."""
        if self.pattern and not self.choices:  # a text value of a fixed form
            if re.fullmatch(self.pattern, str(value)):
                return None
            return f"{_show(value)} is not {self.meaning or 'of the form ' + self.pattern}"
        if self.choices:
            if value not in self.choices and not (self.pattern and re.fullmatch(self.pattern, str(value))):
                hint = did_you_mean(str(value), self.choices)
                return f"{_show(value)} is not {self.meaning or 'one of ' + ', '.join(self.choices)}{hint}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"{_show(value)} is not a finite number"
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        if not (low_ok and (self.hi is None or value <= self.hi)):
            return f"{_show(value)} is out of range ({self._describe()})"
        if self.multiple_of and value % self.multiple_of:
            return f"{_show(value)} is not a multiple of {self.multiple_of} ({self.meaning})"
        return None

    def _describe(self) -> str:
        if self.lo is not None and self.hi is not None and not self.lo_open:
            return f"{_num(self.lo)}..{_num(self.hi)}"
        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {_num(self.lo)}")
        if self.hi is not None:
            parts.append(f"<= {_num(self.hi)}")
        return " and ".join(parts)


_SHOW = reprlib.Repr()
_SHOW.maxlevel, _SHOW.maxlist, _SHOW.maxdict, _SHOW.maxset = 2, 4, 4, 4
_SHOW.maxstring = _SHOW.maxlong = _SHOW.maxother = 40


def _show(value: object) -> str:
    """A short repr for an error line: long text, numbers and containers are cut; an integer of
    more than 15 digits is written as a float would be (``1e+99`` for a ``1e99`` typed for an
    integer key, not 100 digits cut short)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10 ** 15:
        try:
            return f"{float(value):.6g}"
        except OverflowError:  # beyond a float: cut as any long number
            pass
    return _SHOW.repr(value)


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _choices(*names: str) -> Rule:
    return Rule(choices=names)


_FRACTION = Rule(lo=0.0, hi=1.0)
_POSITIVE = Rule(lo=0.0, lo_open=True)
_NON_NEGATIVE = Rule(lo=0.0)
MAX_DURATION_S = 365 * 86400.0
"""Longest time any ``*_s`` key may give (a year): a wait of 1e10 s overflowed the platform's
time_t and killed the thread that waited (the model loader, with ``runtime.swap_poll_s``)."""
_DURATION = Rule(lo=0.0, lo_open=True, hi=MAX_DURATION_S)
_DURATION_OR_0 = Rule(lo=0.0, hi=MAX_DURATION_S)
MIN_OUT_BYTES = 64 * 1024
"""Smallest ``runtime.out_max_bytes`` other than 0 (no rotation): a file smaller than a few
lines started anew at every frame and kept only its last ``out_backups`` lines."""
# numpy seeds are 32-bit (np.random.seed refuses more)
_SEED = Rule(lo=0, hi=2**32 - 1)
_IMGSZ = Rule(lo=32, hi=4096, multiple_of=32, meaning="the detector's largest stride")

# INVARIANT: every numeric or enum-like key has a rule here (a test walks all_keys());
# the choices agree with the registries that consume them (tests compare them).
RULES: dict[str, Rule] = {
    "source.reconnect_initial_s": _DURATION,
    "source.reconnect_max_s": _DURATION,
    "source.max_consecutive_failures": Rule(lo=1, hi=1_000_000),
    "model.imgsz": _IMGSZ,
    "model.conf": _FRACTION,
    "model.iou": _FRACTION,
    "model.max_det": Rule(lo=1, hi=10_000),
    "model.threads": Rule(lo=1, hi=256),
    "runtime.back_pressure": _choices("auto", "drop_oldest", "block"),
    "runtime.sink_queue_size": Rule(lo=1, hi=10_000),
    "runtime.swap_poll_s": _DURATION,
    "runtime.warmup_runs": Rule(lo=0, hi=100),
    "runtime.out_max_bytes": Rule(lo=0, hi=2**40),
    "runtime.out_backups": Rule(lo=1, hi=1000),
    "memory.capacity": Rule(lo=1, hi=10_000_000),
    "memory.max_bytes": Rule(lo=1024 * 1024, hi=2**44),
    "memory.jpeg_quality": Rule(lo=1, hi=100),
    "memory.policy": _choices("reservoir", "class_balanced", "task_budget"),
    "memory.task_budget_pct": Rule(lo=0.0, hi=100.0, lo_open=True),
    "memory.holdout_fraction": Rule(lo=0.0, hi=0.9, lo_open=True),
    "memory.holdout_block_s": Rule(lo=0.0, hi=86400.0),
    "memory.seed": _SEED,
    "replay.strategy": _choices("er", "mir", "mir-virtual", "far", "class_balanced"),
    "replay.samples": Rule(lo=0, hi=100_000),
    "replay.candidate_pool": Rule(lo=1, hi=100_000),
    "replay.virtual_candidates": Rule(lo=1, hi=100_000),
    "replay.virtual_top_k": Rule(lo=1, hi=100_000),
    "learner.trigger_new_samples": Rule(lo=0, hi=10_000_000),
    "learner.trigger_interval_s": _DURATION_OR_0,
    "learner.budget_s": _DURATION,
    "learner.max_steps": Rule(lo=1, hi=10_000_000),
    "learner.first_round_budget_s": _DURATION,
    "learner.first_round_max_steps": Rule(lo=1, hi=10_000_000),
    "learner.epochs": Rule(lo=1, hi=100_000),
    "learner.batch": Rule(lo=1, hi=1024),
    "learner.lr": Rule(lo=0.0, hi=1.0, lo_open=True),
    # a 1-image batch below 64 px leaves BatchNorm 1 x 1 maps at stride 32: training fails
    "learner.imgsz": Rule(lo=64, hi=4096, multiple_of=32, meaning="the detector's largest stride"),
    "learner.device": Rule(choices=("auto", "cpu", "cuda"), pattern=r"cuda:[0-9]+",
                           meaning="one of auto, cpu, cuda or cuda:<index>"),
    "learner.torch_threads": Rule(lo=1, hi=256),
    "learner.nice": Rule(lo=0, hi=19),
    "learner.replay_fraction": _FRACTION,
    "learner.bn_recalibration_batches": Rule(lo=0, hi=100_000),
    "learner.pseudo_old_conf": Rule(lo=0.0, hi=1.0, lo_open=True),
    "learner.pseudo_old_iou": _FRACTION,
    "learner.distill_cls_weight": _NON_NEGATIVE,
    "learner.distill_box_weight": _NON_NEGATIVE,
    "learner.distill_conf": Rule(lo=0.0, hi=1.0),
    "learner.freeze_layers": Rule(lo=0, hi=1000),
    "learner.precision": _choices("auto", "fp32", "bf16"),
    "ider.second_pass_weight": _NON_NEGATIVE,
    "ider.distill_memory_weight": _NON_NEGATIVE,
    "ider.distill_current_weight": _NON_NEGATIVE,
    "ider.distill_conf": _FRACTION,
    "gate.max_forgetting": Rule(lo=0.0, hi=1.0, lo_open=True),
    "gate.min_acc_delta": Rule(lo=-1.0, hi=1.0),
    "gate.min_instances": Rule(lo=1, hi=1_000_000),
    "gate.forgetting_window": Rule(lo=0, hi=1000),
    "gate.max_recall_loss": Rule(lo=0.0, hi=1.0, lo_open=True),
    "gate.max_false_positives_rise": Rule(lo=0.0, hi=10_000.0),
    "export.onnx_opset": Rule(lo=11, hi=23),
    "export.tensorrt": _choices("auto", "on", "off"),
    "export.precision": _choices("fp32", "fp16", "int8"),
    "export.int8_calibration_images": Rule(lo=1, hi=100_000),
    "export.workspace_mb": Rule(lo=1, hi=1024 * 1024),
    "export.keep_promoted": Rule(lo=0, hi=100_000),
    "export.keep_rejected": Rule(lo=0, hi=100_000),
    "export.engine_cache_entries": Rule(lo=1, hi=1000),
    "export.openvino": _choices("auto", "on", "off"),
    "export.cpu_int8": _choices("auto", "on", "off"),
    "export.int8_max_drop": _FRACTION,
    "labels.mode": _choices("ground_truth", "pseudo", "field", "off"),
    "labels.pseudo_conf": _FRACTION,
    "labels.pseudo_precision": Rule(lo=0.0, hi=1.0, lo_open=True),
    "labels.pseudo_min_true_positives": Rule(lo=0, hi=1_000_000),
    "labels.pseudo_max_per_minute": Rule(lo=0, hi=1_000_000),
    "labels.uncertain_low": _FRACTION,
    "labels.uncertain_high": _FRACTION,
    "labels.max_pending": Rule(lo=1, hi=1_000_000),
    "labels.priority_half_life_s": _DURATION_OR_0,
    "labels.min_priority": _NON_NEGATIVE,
    "labels.max_per_minute": Rule(lo=0, hi=1_000_000),
    "labels.dedup_window_s": _DURATION_OR_0,
    "labels.dedup_distance": _FRACTION,
    "labels.novel_distance": Rule(lo=0.0, hi=1.0, lo_open=True),
    # NoveltyRing allocates novelty_ring x EMBEDDING_DIM float32 (1 KiB each) at start
    "labels.novelty_ring": Rule(lo=1, hi=100_000),
    "labels.random_share": _FRACTION,
    "labels.seed": _SEED,
    "labels.storage_retry_s": _DURATION,
    "labels.selection.uncertain": _NON_NEGATIVE,
    "labels.selection.novel": _NON_NEGATIVE,
    "labels.selection.disagreement": _NON_NEGATIVE,
    "labels.selection.forgetting": _NON_NEGATIVE,
    "labels.selection.random": _NON_NEGATIVE,
    "server.port": Rule(lo=0, hi=65535),
    "fleet.rounds": Rule(lo=1, hi=1_000_000),
    "fleet.min_devices": Rule(lo=1, hi=100_000),
    "fleet.fraction_fit": Rule(lo=0.0, hi=1.0, lo_open=True),
    "fleet.round_timeout_s": _DURATION,
    "fleet.max_forgetting": Rule(lo=0.0, hi=1.0, lo_open=True),
    "fleet.forgetting_action": _choices("drop", "downweight"),
    "fleet.wire_dtype": _choices("float16", "float32"),
    "fleet.seed": _SEED,
    "fleet.retry_s": _DURATION,
    "fleet.proximal_mu": _NON_NEGATIVE,
    # a Host header's name is compared whole: a port, scheme or wildcard never matched (421)
    "server.allowed_hosts": Rule(
        pattern=r"(\s*[A-Za-z0-9_][A-Za-z0-9_.-]*\s*(,\s*[A-Za-z0-9_][A-Za-z0-9_.-]*\s*)*)?",
        meaning="empty or comma-separated host names such as drone7.lab.example (no scheme, "
                "port or wildcard; IP addresses are always allowed)"),
    "server.allowed_origins": Rule(
        pattern=r"(\s*https?://[^\s/,]+/?\s*(,\s*https?://[^\s/,]+/?\s*)*)?",
        meaning="empty or comma-separated origins such as https://drone7.lab.example "
                "(scheme, host and port; no path)"),
    # a round's image lists hold one path per line (ultralytics' train.txt): a line break in
    # the state directory's path split every one of them (every round failed); they are UTF-8
    # text, so a folder name that is not UTF-8 (os.fsdecode gives it surrogates) failed every
    # round, as did memory stats and classes list
    "state_dir": Rule(pattern="[^\x00-\x1f\x7f\udc80-\udcff]*",
                      meaning="a path without line breaks or other control characters, whose "
                              "folder names are UTF-8"),
    "fleet.device_name": Rule(
        pattern=r"[^\x00-\x1f\x7f-\x9f]{0,64}",
        meaning="a name of at most 64 characters with no newline or other control character "
                "(empty: the host name)"),
    "fleet.server_address": Rule(
        pattern=r"([^\s/:\[\]]+|\[[0-9A-Fa-f:.]+\]):(6553[0-5]|655[0-2]\d|65[0-4]\d\d|6[0-4]\d{3}"
                r"|[1-5]\d{4}|[1-9]\d{0,3})",
        meaning="HOST:PORT with a port in 1..65535 (e.g. 127.0.0.1:9092)"),
}

# Keys naming a file or folder: a leading '~' is a home folder, as in a shell (YAML has none).
PATH_KEYS = ("state_dir", "model.path", "server.tls_cert", "server.tls_key", "fleet.initial_model",
             "fleet.ca_cert", "fleet.server_cert", "fleet.server_key")

# Keys whose value is free text (paths, addresses, URIs): checked where they are used.
FREE_KEYS = frozenset({"state_dir", "source.uri", "model.path", "model.providers", "server.host",
                       "server.token", "server.allowed_hosts", "server.trusted_proxies",
                       "server.tls_cert",
                       "server.tls_key", "fleet.device_name", "fleet.token",
                       "fleet.initial_model",
                       "fleet.ca_cert", "fleet.server_cert", "fleet.server_key"})


def _origin(origins: dict[str, str] | None, key: str, where: str) -> str:
    """Where ``key``'s value was set: its entry in ``origins`` (an override), else ``where``."""
    return (origins or {}).get(key, where)


def _check_pairs(cfg: "Config", where: str, origins: dict[str, str] | None = None) -> None:
    """Checks that involve two keys at once, and the one-key checks a rule cannot express (a
    one-key error names where that key was set: ``origins``, as in :func:`validate`)."""
    def at(key: str) -> str:
        return _origin(origins, key, where)

    if not cfg.state_dir.strip():  # '' would put the state into the current directory
        raise ConfigError(f"config key 'state_dir' in {at('state_dir')} must name a directory, got "
                          f"{_show(cfg.state_dir)}")
    for item in (i.strip() for i in cfg.server.trusted_proxies.split(",")):
        try:
            ipaddress.ip_network(item, strict=False) if item else None
        except ValueError:
            raise ConfigError(f"config key 'server.trusted_proxies' in "
                              f"{at('server.trusted_proxies')}: {_show(item)} is "
                              f"not an IP address or network (e.g. 127.0.0.1, or 10.0.0.0/8)"
                              ) from None
    if 0 < cfg.runtime.out_max_bytes < MIN_OUT_BYTES:
        raise ConfigError(f"config key 'runtime.out_max_bytes' ({cfg.runtime.out_max_bytes}) in "
                          f"{at('runtime.out_max_bytes')} must be 0 (no rotation) or at least {MIN_OUT_BYTES} bytes "
                          f"(64 KiB): a smaller file starts anew at every frame and keeps only "
                          f"the last few lines")
    if bool(cfg.server.tls_cert.strip()) != bool(cfg.server.tls_key.strip()):
        raise ConfigError(f"config keys 'server.tls_cert' and 'server.tls_key' in {where} go "
                          f"together: set both (HTTPS) or neither (HTTP)")
    rep = cfg.replay
    if rep.strategy == "mir" and rep.candidate_pool < rep.samples:
        raise ConfigError(f"config key 'replay.candidate_pool' ({rep.candidate_pool}) in {where} "
                          f"must be at least 'replay.samples' ({rep.samples}) with strategy mir: "
                          f"it replays the samples it picks from that pool")
    lab = cfg.labels
    if lab.uncertain_low >= lab.uncertain_high:
        raise ConfigError(f"config keys 'labels.uncertain_low' ({lab.uncertain_low}) and "
                          f"'labels.uncertain_high' ({lab.uncertain_high}) in {where}: low must "
                          f"be below high")
    if cfg.source.reconnect_initial_s > cfg.source.reconnect_max_s:
        raise ConfigError(f"config key 'source.reconnect_initial_s' ({cfg.source.reconnect_initial_s}) "
                          f"in {where} must not exceed 'source.reconnect_max_s' "
                          f"({cfg.source.reconnect_max_s})")
    if cfg.replay.virtual_top_k > cfg.replay.virtual_candidates:
        raise ConfigError(f"config key 'replay.virtual_top_k' ({cfg.replay.virtual_top_k}) in "
                          f"{where} must not exceed 'replay.virtual_candidates' "
                          f"({cfg.replay.virtual_candidates})")
    if 0 < cfg.memory.holdout_block_s < MIN_HOLDOUT_BLOCK_S:
        raise ConfigError(f"config key 'memory.holdout_block_s' ({cfg.memory.holdout_block_s}) in "
                          f"{at('memory.holdout_block_s')} must be 0 (a draw per frame) or at least "
                          f"{MIN_HOLDOUT_BLOCK_S:g} s")
    if cfg.memory.capacity * cfg.memory.holdout_fraction < 1:
        raise ConfigError(f"config keys 'memory.capacity' ({cfg.memory.capacity}) and "
                          f"'memory.holdout_fraction' ({cfg.memory.holdout_fraction}) in {where} "
                          f"leave no held-out slot: the gate could never pass (capacity x "
                          f"holdout_fraction must reach 1: a capacity of at least "
                          f"{math.ceil(1 / cfg.memory.holdout_fraction - 1e-9)})")


def validate(cfg: "Config", where: str = "config",
             origins: dict[str, str] | None = None) -> "Config":
    """Check every key's value against :data:`RULES` and the cross-key constraints.

    Args:
        cfg: a built configuration.
        where: file or origin named in the error.
        origins: dotted key -> where its value came from, where not ``where`` (an override).

    Returns:
        ``cfg`` unchanged.

    Raises:
        ConfigError: one line naming the key, the value and what is valid.
    """
    flat = _flatten(config_to_dict(cfg))
    for key, rule in RULES.items():
        if key in flat:
            problem = rule.problem(flat[key])
            if problem is not None:
                raise ConfigError(f"config key '{key}' in {_origin(origins, key, where)}: "
                                  f"{problem}")
    _check_pairs(cfg, where, origins)
    return cfg


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """List every valid dotted key of a config dataclass.

    Args:
        cls: dataclass type to walk.
        prefix: dotted prefix for nested sections.

    Returns:
        Keys such as ``memory.capacity``.
    """
    return list(_key_types(cls, prefix))


def _key_types(cls: type = Config, prefix: str = "") -> dict[str, type]:
    """Every dotted key of a config dataclass -> its field's type, in field order."""
    out: dict[str, type] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_key_types(hints[f.name], name + "."))
        else:
            out[name] = hints[f.name]
    return out


def _unknown_key_error(dotted: str, where: str, *, joined: bool = False) -> ConfigError:
    """The error for a key no section has: the hint names the closest valid name at the level
    where the key first goes wrong (a section for a mistyped section), when one is close.

    ``joined``: the file's own key has dots (``memory.capacity: 3``): the hint shows the key
    nested, as a file needs it (a flow mapping, ``memory: {capacity: ...}``)."""
    parts = dotted.split(".")
    hints, depth = typing.get_type_hints(Config), 0
    while depth + 1 < len(parts) and dataclasses.is_dataclass(hints.get(parts[depth])):
        hints, depth = typing.get_type_hints(hints[parts[depth]]), depth + 1
    part = parts[depth]
    if depth + 1 == len(parts) and dataclasses.is_dataclass(hints.get(part)):
        first = dataclasses.fields(hints[part])[0].name
        return ConfigError(f"config key '{dotted}' in {where} is a section: set one of its keys, "
                           f"e.g. '{dotted}.{first}'")
    if len(parts) == 1:  # a section's key at the top level (its indentation lost)
        owners = _sections_holding(part)
        if owners:
            return ConfigError(f"unknown config key {_show(dotted)} in {where}: it is a key of "
                               f"{'a section' if len(owners) == 1 else 'sections'} "
                               f"({', '.join(owners)}); {_how_to_place(owners, where, 'indent')}")
    if len(parts) == 2 and depth == 1:  # 'port' under 'learner:': before, no hint at all
        owners = _sections_holding(parts[1], but=parts[0])
        if owners:
            sections = " or ".join(o.split(".")[0] for o in owners)
            return ConfigError(f"unknown config key {_show(dotted)} in {where}: {parts[1]!r} "
                               f"belongs to {sections} ({', '.join(owners)}), not to "
                               f"{parts[0]}; {_how_to_place(owners, where, 'move')}")
    closest = _closest_key(parts)
    if joined and closest and "." in closest:
        levels = closest.split(".")
        nested = "".join(f"{level}: {{" for level in levels[:-1]) + f"{levels[-1]}: ..."
        nested += "}" * (len(levels) - 1)
        if closest == dotted:
            return ConfigError(f"config key {_show(dotted)} in {where}: a config file nests "
                               f"its keys instead of joining them with dots; write '{nested}' "
                               f"or the same in indented lines")
        closest = nested
    hint = f"; did you mean '{closest}'?" if closest else ""
    return ConfigError(f"unknown config key {_show(dotted)} in {where}{hint}")


def _sections_holding(key: str, but: str = "") -> list[str]:
    """``section.key`` for each section of :class:`Config` (other than ``but``) that has ``key``."""
    return [f"{name}.{key}" for name, kind in typing.get_type_hints(Config).items()
            if name != but and dataclasses.is_dataclass(kind)
            and key in {f.name for f in dataclasses.fields(kind)}]


def _how_to_place(owners: list[str], where: str, verb: str) -> str:
    """How to write a key at its place: on the command line the dotted name, in a file
    ``VERB it under 'section:'`` (``indent``, ``move``)."""
    if where == "command-line override":
        return f"write {' or '.join(owners)}"
    return f"{verb} it under " + " or ".join(f"'{o.split('.')[0]}:'" for o in owners)


def _closest_key(parts: list[str]) -> str | None:
    """The valid dotted name closest to a mistyped key, level by level (``Memory.Capacity`` ->
    ``memory.capacity``), as far as the levels have a close name: a mistyped section alone
    when its key has none; None when the first mistyped level has none."""
    hints, fixed = typing.get_type_hints(Config), []
    for part in parts:
        match = (part if part in hints
                 else next(iter(difflib.get_close_matches(part.lower(), list(hints), n=1,
                                                          cutoff=0.6)), None))
        if match is None:  # a hint only where an earlier level was mistyped
            return ".".join(fixed) if fixed != parts[:len(fixed)] else None
        fixed.append(match)
        if not dataclasses.is_dataclass(hints[match]):
            break
        hints = typing.get_type_hints(hints[match])
    return ".".join(fixed) or None


def _what(value: object) -> str:
    """Name a wrong value in an error: its type, and a short repr (never the whole object)."""
    if value is None:
        return "null"
    return f"{'text' if isinstance(value, str) else type(value).__name__} {_show(value)}"


# YAML 1.1 words read as booleans (also accepted quoted, in any case).
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def _coerce(value: object, kind: type, dotted: str, where: str) -> object:
    # the type is checked first: a list or mapping is never walked nor printed whole
    if kind is str:
        choices = set(RULES[dotted].choices if dotted in RULES else ())
        if isinstance(value, bool) and ("on" if value else "off") in choices:
            return "on" if value else "off"  # an explicit !!bool on/off
        if not isinstance(value, str):
            raise ConfigError(f"config key '{dotted}' in {where} must be text, got {_what(value)}")
        return str(value)
    if kind is bool:
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' in {where} must be true or false, "
                              f"got {_what(value)}")
        return value
    if isinstance(value, str):
        value = _number_from_text(value, kind, dotted, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"config key '{dotted}' in {where} must be a number, got {_what(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{dotted}' in {where} must be a finite number, got {value}")
    if kind is float:
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key '{dotted}' in {where}: {_show(value)} is too large for "
                              f"a number (the key takes {RULES[dotted]._describe()})") from None
    if isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"config key '{dotted}' in {where} must be an integer, got {value!r}")
        return int(value)
    return value


# digits, single underscores between them (as Python reads them: '10_' and '1__0' are no number)
_INT_TEXT = re.compile(r"[-+]?[0-9]+(?:_[0-9]+)*")
# forms YAML 1.1 reads as numbers that this loader does not: hex, octal, binary, base 60
_NOT_DECIMAL = re.compile(r"[-+]?(0[xXoObB]|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?$)")


_SIZE_TEXT = re.compile(r"([0-9]+(?:_[0-9]+)*(?:\.[0-9]+)?)\s*([kmgt])(i?)(b)", re.IGNORECASE)
_SIZE_POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def size_from_text(text: str, dotted: str, where: str) -> int | None:
    """A size in bytes written with its unit, for the ``*_bytes`` keys: ``10GB`` (10**10),
    ``512MiB`` (512 * 2**20), ``1.5 GiB``; ``None`` for text that names no unit.

    Raises:
        ConfigError: a unit without the ``B`` (``10G``: bytes or bits, 10**9 or 2**30?).
    """
    t = text.strip()
    match = _SIZE_TEXT.fullmatch(t)
    if match:
        number, prefix, binary, unit = match.groups()
        if unit == "b" and prefix.isupper():  # 2Gb, 512Mb: the b of bits
            raise ConfigError(f"config key '{dotted}' in {where}: {_show(text)} reads as bits; "
                              f"write bytes as {number}{prefix}B (powers of 1000) or "
                              f"{number}{prefix}iB (powers of 1024)")
        base = 1024 if binary else 1000
        return int(round(float(number.replace("_", "")) * base ** _SIZE_POWERS[prefix.lower()]))
    if re.fullmatch(r"[0-9][0-9_.]*\s*[kmgt]i?", t, re.IGNORECASE):
        raise ConfigError(f"config key '{dotted}' in {where}: {_show(text)} names no unit; write "
                          f"it in bytes or with one, e.g. {t.rstrip('iI')}B (powers of 1000) or "
                          f"{t.rstrip('iI').rstrip()}iB (powers of 1024)")
    return None


def _number_from_text(text: str, kind: type, dotted: str, where: str) -> int | float:
    """Read a number as written in decimal: ``50``, ``1_000``, ``1e3``, ``0.5``; for a
    ``*_bytes`` key also a size with its unit (:func:`size_from_text`).

    YAML 1.1's other forms are refused, not reinterpreted: a leading zero (octal: ``017`` is
    15), ``0x``/``0o``/``0b`` and base 60 (``1:30`` is 90); so is anything not finite.
    """
    t = text.strip()
    if not t.isascii():  # Python reads '٣٠' and '８０８０' as numbers; a label's class id does not
        raise ConfigError(f"config key '{dotted}' in {where} must be a number written in ASCII "
                          f"digits, got {_show(text)}")
    if dotted.endswith("_bytes"):
        size = size_from_text(t, dotted, where)
        if size is not None:
            return size
    if _INT_TEXT.fullmatch(t):
        if re.match(r"[-+]?0[0-9_]", t):
            raise ConfigError(f"config key '{dotted}' in {where} must be a number without leading "
                              f"zeros (YAML 1.1 reads them as octal), got {_show(text)}")
        if kind is int:  # exact, however large (the rule's range refuses it then)
            if len(t) > 100:
                raise ConfigError(f"config key '{dotted}' in {where}: {_show(text)} is out of "
                                  f"range ({RULES[dotted]._describe()})")
            return int(t)
    try:
        value = float(t)
    except ValueError:
        how = "a number written in decimal" if _NOT_DECIMAL.match(t) else "a number"
        if re.fullmatch(r"[-+]?\.(inf|nan)", t, re.IGNORECASE):  # YAML's infinity, not-a-number
            how = "a finite number"
        elif dotted.endswith("_bytes"):
            how = "a number of bytes or a size such as 10GB or 512MiB"
        raise ConfigError(f"config key '{dotted}' in {where} must be {how}, got {_show(text)}") from None
    if math.isinf(value) and "inf" not in t.lower():  # 1e400: beyond a float
        raise ConfigError(f"config key '{dotted}' in {where}: {_show(text)} is too large for a "
                          f"number (the key takes {RULES[dotted]._describe()})")
    if not math.isfinite(value):
        raise ConfigError(f"config key '{dotted}' in {where} must be a finite number, got {_show(text)}")
    return value


class DataFileLoader(yaml.SafeLoader):
    """PyYAML's safe loader for the YAML files users bring (a dataset's ``data.yaml``, a
    ``tasks.yaml``), with aliases refused and nesting bounded: ten lines of nested aliases
    expand to 10^10 values, and reading or quoting them took minutes and gigabytes; and a key
    given twice refused (``names: {0: car, 0: truck}`` took truck without a word)
    (``yaml.load(text, Loader=DataFileLoader)``; errors are ``yaml.YAMLError``)."""

    what = "a dataset file"
    max_depth = 20
    _depth = 0

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"alias *{event.anchor[:40]} is not allowed in {self.what} (write "
                            f"the value out)", event.start_mark)
        self._depth += 1
        try:
            if self._depth > self.max_depth:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {self.max_depth} levels",
                    self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML's hook
        # a key given twice is an error, not the last one silently winning ({0: car, 0: truck})
        seen: dict[str, int] = {}
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_show(key_node.value)} (first at line "
                                    f"{seen[key_node.value] + 1})", key_node.start_mark)
                seen[key_node.value] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


class _ConfigLoader(DataFileLoader):
    """YAML for config files and override values.

    Every plain scalar but null stays the text written: the key's type decides how it is read
    (YAML 1.1 would turn a token ``0123456`` into the number 42798 and ``yes`` into True).
    Aliases are refused (a config needs none, and nested aliases make exponentially large
    values), nesting is bounded, and a duplicate key is an error instead of the last one
    silently winning.
    """

    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    what = "a config file"



def _build(cls: type, data: dict | None, prefix: str, where: str,
           origins: dict[str, str] | None = None):
    if data is None:  # an empty section ('memory:' with nothing under it): its defaults
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' in {where} "
                          f"must be a mapping (keys under it) or empty, got {_what(data)}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in names:
            raise _unknown_key_error(dotted, where, joined="." in str(key))
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            kwargs[key] = _build(kind, value, dotted + ".", where, origins)
        else:
            kwargs[key] = _coerce(value, kind, dotted, _origin(origins, dotted, where))
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: object, where: str) -> None:
    parts = dotted.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:  # absent, or an empty section in the file
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"config section '{'.'.join(parts[:i + 1])}' in {where} must be a "
                              f"mapping (keys under it) or empty, got {_what(node[part])}")
        node = node[part]
    node[parts[-1]] = value


YAML_VALUE_ERRORS = (ValueError, TypeError, AttributeError)
"""What PyYAML's constructors raise for an explicitly tagged value they cannot build
(``!!int abc``, ``!!timestamp 2020-02-30``), besides its own ``YAMLError``."""


def parse_override(text: str) -> tuple[str, object]:
    """Parse one ``section.key=value`` override.

    The value is the text after the first ``=``, as typed (surrounding blanks dropped); the
    key's type decides how it is read, as for a plain value in a config file. Only a value
    quoted whole (``'...'`` or ``"..."``) is read as a YAML quoted scalar. Before, every value
    was read as YAML, so ``server.token=secret #1`` became ``secret`` (a YAML comment) and
    ``source.uri=dir://img #2`` streamed the folder ``img``.

    Args:
        text: the override as typed on the command line.

    Returns:
        ``(dotted_key, value)``.

    Raises:
        ConfigError: when ``=`` is missing or the key is empty.
    """
    if "=" not in text:
        raise ConfigError(f"override {_show(text)} must look like section.key=value")
    key, raw = text.split("=", 1)
    key, value = key.strip(), raw.strip()
    if not key:
        raise ConfigError(f"override {_show(text)} has an empty key")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        try:  # quoted as in a config file: YAML's escapes apply
            value = yaml.load(value, Loader=_ConfigLoader)
        except (yaml.YAMLError, *YAML_VALUE_ERRORS):  # 'a'b': the text as typed
            pass
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
        if not str(path).strip():  # Path('') is '.', the current folder
            raise ConfigError("the config file's name is empty (an unset variable?)")
        where = str(path)
        p = Path(path)
        if not p.is_file():
            if not p.exists():
                why = link_problem(p)  # a link that loops or leads nowhere is named as one
                raise ConfigError(f"config file {why}" if why else f"config file not found: {p}")
            raise ConfigError(f"config file {p} is a folder, not a file" if p.is_dir()
                              else f"config file {p} is not a regular file (a device or a pipe)")
        from edgecl.input_files import MAX_DATA_FILE_BYTES, read_input_text

        try:
            tree = yaml.load(read_input_text(p, MAX_DATA_FILE_BYTES, "a config file"),
                             Loader=_ConfigLoader)
        except yaml.YAMLError as exc:
            raise ConfigError(f"cannot parse config {p}{yaml_problem(exc)}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"cannot read config {p}: {encoding_problem(exc)}") from None
        except YAML_VALUE_ERRORS as exc:
            raise ConfigError(f"cannot parse config {p}: a tagged value YAML cannot build "
                              f"({exc}); write plain values") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config {p}: "
                              f"{getattr(exc, 'reason', None) or exc.strerror or exc}") from None
        except (RecursionError, MemoryError):
            raise ConfigError(f"cannot parse config {p}: nested too deeply or too large") from None
        if tree is None:  # an empty file: the defaults
            tree = {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config {p} must be a mapping of sections (e.g. 'memory:' with "
                              f"keys under it), got {_what(tree)}")
        if all(value is None or value == {} for value in tree.values()):
            # a file cut by a power loss while it was edited, a failed copy: before, a run went
            # on with ./state and no console, and only an INFO line named the file
            import logging

            logging.getLogger(__name__).warning(
                "config %s sets no key (empty, only comments, or sections with nothing under "
                "them): every key takes its built-in default (state_dir %s, no source, console "
                "off)", p, Config().state_dir)
    keys = all_keys()
    origins = dict.fromkeys(keys, where)  # a key's own error names where it was set
    for text in overrides:
        key, value = parse_override(text)
        if key not in keys:
            raise _unknown_key_error(key, "command-line override")
        _set_dotted(tree, key, value, where)
        origins[key] = f"override {_show(text)}"
    # a section or key the file got wrong is the file's; a check of two keys names both sources
    built = expand_user_paths(_build(Config, tree, "", where, origins))
    return validate(built, where if not overrides else f"{where} (+ overrides)", origins)


def expand_user_paths(cfg: Config) -> Config:
    """``cfg`` with a leading ``~`` or ``~user`` of every :data:`PATH_KEYS` value made the home
    folder it names (:func:`os.path.expanduser`; one that names no user stays as written).

    Before, ``state_dir: ~/edgecl`` made a folder named ``~`` in the current directory, and a
    ``model.path`` of ``~/models/best.pt`` was "no such file".
    """
    for key in PATH_KEYS:
        section, _, name = key.rpartition(".")
        holder = getattr(cfg, section) if section else cfg
        value = getattr(holder, name)
        if not value.startswith("~"):
            continue
        expanded = dataclasses.replace(holder, **{name: os.path.expanduser(value)})
        cfg = dataclasses.replace(cfg, **{section: expanded}) if section else expanded
    return cfg


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
