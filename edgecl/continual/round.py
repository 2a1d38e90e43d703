"""One learning round: snapshot -> select replay -> fine-tune -> evaluate -> gate -> export -> stage.

A pure library function (no threads, no runtime imports): the runtime runs it inside the
spawned learner process (or in the foreground for ``edgecl learn``), hands it a hook that
records the evaluation, and promotes what it staged.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import shlex
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgecl.config import Config, config_hash
from edgecl.continual.evaluate import DECE_PROTOCOL
from edgecl.continual.gate import is_taskless, judge_results
from edgecl.continual.round_state import (
    LearnerState,
    RoundResult,
    RoundStatus,
    learner_dir,
    load_state,
    progress_within_memory,
    save_state,
    update_task_bookkeeping,
)
from edgecl.errors import EdgeclError, StorageError, is_storage_error, link_problem, storage_faults
from edgecl.frames import STREAM_TASK
from edgecl.models.registry import MANUAL_PROMOTION, added_by_person

log = logging.getLogger(__name__)

EVAL_CONF = 0.001
EVAL_MAX_DET = 300


@dataclass
class RoundContext:
    """What the steps of one round share."""

    cfg: Config
    state: LearnerState
    snapshot: object
    new_records: list
    work: Path
    registry: object
    parent_version: str | None
    names: dict[int, str]
    base_checkpoint: Path | None = None
    progress: object = None  # the fine-tuning's progress callback (finetune.ProgressCallback)
    merges: dict[int, int] = dataclasses.field(default_factory=dict)  # as the round began

    @property
    def first(self) -> bool:
        """True when nothing was learnt yet: the round starts from a freshly built model."""
        return self.parent_version is None and self.base_checkpoint is None

    def young_steps(self) -> int | None:
        """Steps a model learning from scratch has trained every layer so far, while they are
        fewer than ``learner.first_round_max_steps`` (the first round's: 0), else None.

        Such a model is still young: its round trains as a first round does (every layer, no
        LwF or IDER from a parent that knows little, the first round's budgets, the steps
        left of ``first_round_max_steps``). Before, a first round on 14 operator answers
        stopped after 60 steps (its epochs), and every later round froze that untrained
        backbone: after five rounds no class was detected. The count is the manifest's
        ``training.backbone_steps``; a parent without one (the user's checkpoint, a model
        added by hand, a fleet model) counts as trained.
        """
        if self.first:
            return 0
        if self.parent_version is None or self.registry is None:
            return None
        try:
            steps = (self.registry.manifest(self.parent_version).get("training") or {}).get(
                "backbone_steps")
        except EdgeclError:
            return None
        if isinstance(steps, bool) or not isinstance(steps, int):
            return None
        return steps if steps < int(self.cfg.learner.first_round_max_steps) else None

    @property
    def parent_label(self) -> str | None:
        """The parent as the manifest names it: a version, ``checkpoint:NAME`` or ``None``."""
        if self.parent_version is not None:
            return self.parent_version
        return f"checkpoint:{self.base_checkpoint.name}" if self.base_checkpoint else None


RoundRecorder = Callable[..., dict]
"""``record(round_no=, version=, status=, reason=, seconds=, evaluation=, columns=, class_names=,
calibration=, baseline=) -> dict``:
stores a round's held-out evaluation (the runtime's monitor does) and returns the continual-
learning figures it derives (``acc``, ``bwt``, ...), which go into the manifest. ``baseline``
(see :func:`start_baseline`) is the evaluation of the model the device started with, or None."""

START_PREFIX = "start:"
"""How a baseline names a user's checkpoint that is no registry version (``start:best.pt``)."""


def start_baseline(ctx: RoundContext, parent: dict | None, parent_names: dict[int, str]
                   ) -> dict | None:
    """The evaluation of the model the device started with, when this round's parent is one.

    A user's own checkpoint (``model.path``), or a version added by hand (``edgecl models
    add``), was never a round's candidate, so no evaluation of it was recorded: the forgetting
    monitor's rows began at the first round's version, and what that round lost of the
    checkpoint's classes showed in no matrix. The round hands this evaluation to its recording
    hook as a row before its own.

    Only the stream's per-class scores are kept (benchmark tasks the start never learnt would
    read as learnt at its score), and only of the classes the start knows (a class it cannot
    predict would read as learnt at AP 0, and its later gain as backward transfer).

    Args:
        ctx: the round's context.
        parent: task -> :class:`~edgecl.continual.evaluate.EvalResult` of the parent (None
            when it was not evaluated: a first round from scratch).
        parent_names: the parent's class id -> name.

    Returns:
        ``{"version": name, "evaluation": {STREAM_TASK: EvalResult}}`` or None.
    """
    if parent is None or STREAM_TASK not in parent:
        return None
    if ctx.parent_version is None:
        if ctx.base_checkpoint is None:
            return None
        name = f"{START_PREFIX}{Path(ctx.base_checkpoint).name}"
    elif added_by_person(ctx.registry.manifest(ctx.parent_version)):
        name = ctx.parent_version
    else:
        return None
    result = parent[STREAM_TASK]
    known = {int(c) for c in parent_names}
    kept = dataclasses.replace(
        result, per_class_ap50_95={c: v for c, v in result.per_class_ap50_95.items() if c in known},
        per_class_recall={c: v for c, v in result.per_class_recall.items() if c in known},
        per_class_instances={c: v for c, v in result.per_class_instances.items() if c in known})
    return {"version": name, "evaluation": {STREAM_TASK: kept}}



ROUND_RECORD_FILE = "round_record.json"
"""A version's file holding what its round handed the recording hook (see
:func:`write_round_record`)."""


def write_round_record(path: Path, *, round_no: int, status, reason: str, seconds: float,
                       evaluation: dict, columns: list[str], class_names: dict[int, str],
                       calibration: dict | None, baseline: dict | None = None) -> Path:
    """Write what a round hands its recording hook, so that it can be handed again.

    The file travels with the staged version; :func:`read_round_record` reads it back. It is
    strict JSON: a score that could not be computed (NaN) is ``null``, read back as NaN.

    Args:
        path: the file to write (in the round's work folder, staged with the version).
        round_no: the round.
        status: its :class:`RoundStatus` (or its value).
        reason: the gate's verdict.
        seconds: the round's wall time so far.
        evaluation: task -> :class:`~edgecl.continual.evaluate.EvalResult` of the candidate.
        columns: the task order.
        class_names: class id -> name.
        calibration: the calibration report, or None.
        baseline: :func:`start_baseline`'s evaluation of the model the device started with,
            or None.

    Returns:
        ``path``.
    """
    import json

    from edgecl.atomic import json_default, json_safe

    body = {"round_no": int(round_no), "status": getattr(status, "value", status),
            "reason": str(reason), "seconds": seconds, "columns": list(columns),
            "class_names": {str(k): str(v) for k, v in class_names.items()},
            "evaluation": {t: r.to_dict() for t, r in evaluation.items()},
            "calibration": calibration,
            "baseline": None if baseline is None else {
                "version": str(baseline["version"]),
                "evaluation": {t: r.to_dict() for t, r in baseline["evaluation"].items()}}}
    path.write_text(json.dumps(json_safe(body), default=json_default, sort_keys=True,
                               allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_round_record(path: Path) -> dict:
    """Read a :func:`write_round_record` file back as the recording hook's keyword arguments.

    Args:
        path: the version's ``round_record.json``.

    Returns:
        ``round_no``, ``status``, ``reason``, ``seconds``, ``evaluation`` (task ->
        :class:`~edgecl.continual.evaluate.EvalResult`), ``columns``, ``class_names``,
        ``calibration``, ``baseline`` (None in a record written before baselines were kept).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not such a record (bad JSON, missing or mistyped fields).
    """
    import json

    from edgecl.continual.evaluate import EvalResult

    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        start = body.get("baseline")
        baseline = None if start is None else {
            "version": str(start["version"]),
            "evaluation": {str(t): EvalResult.from_dict(r) for t, r in start["evaluation"].items()}}
        return {"round_no": int(body["round_no"]), "status": str(body["status"]),
                "reason": str(body["reason"]), "seconds": body.get("seconds"),
                "columns": [str(c) for c in body["columns"]],
                "class_names": {int(k): str(v) for k, v in body["class_names"].items()},
                "evaluation": {str(t): EvalResult.from_dict(r)
                               for t, r in body["evaluation"].items()},
                "calibration": body.get("calibration"), "baseline": baseline}
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError, ValueError,
            OverflowError) as exc:  # before: a count of Infinity stopped every start
        raise ValueError(f"{path}: not a round record ({type(exc).__name__}: {exc})") from None


NO_NEW_SAMPLES = "no new labelled samples"
"""Why a round was skipped: every training sample in the memory was learnt already."""


def run_round(cfg: Config, reason: str = "on_demand", max_sample_id: int | None = None,
              record: RoundRecorder | None = None, hold: bool = False,
              progress=None, again: bool = False) -> RoundResult:
    """Run one learning round: snapshot -> replay -> fine-tune -> evaluate -> gate -> export -> stage.

    Only a candidate the gate accepts is exported (ONNX, TensorRT engine); a rejected one is kept
    in the registry with its checkpoint, manifest and reason, and nothing is built for it. A
    round is skipped while the memory holds no new training sample, or no held-out sample at
    all (the gate could not judge its candidate).

    Args:
        cfg: configuration.
        reason: what triggered the round.
        max_sample_id: learn only samples with ids up to this (those present when the round
            was triggered); ``None``: everything in the memory.
        record: optional hook storing the evaluation (see :data:`RoundRecorder`).
        hold: a staged candidate waits for a person (``edgecl models promote``): its manifest
            says ``"promote": "manual"``, so a restart does not promote it.
        progress: optional :data:`edgecl.continual.finetune.ProgressCallback` of the
            fine-tuning (steps of at most how many, seconds of the budget).
        again: with no new training sample, learn every training sample of the memory as
            new (``edgecl learn --again``: after a change of the learner's settings, say)
            instead of skipping.

    Returns:
        The :class:`RoundResult` (``staged``, ``rejected``, ``skipped`` or ``failed``).
    """
    started_s = time.time()  # when, for records; how long is on the monotonic clock
    started_mono_s = time.monotonic()  # (a clock set by NTP mid-round is no round of a year)
    ctx = _open_round(cfg, max_sample_id, again)
    if ctx is None:
        return RoundResult(RoundStatus.SKIPPED, reason=NO_NEW_SAMPLES, trigger=reason,
                           started_s=started_s)
    ctx.progress = progress
    held_out = ctx.snapshot.records(held_out=True)
    if not held_out:
        # INVARIANT: a candidate is trained only when the gate can judge it (else the round's
        # training, 300 steps for a first one, would end rejected and be thrown away)
        return RoundResult(RoundStatus.SKIPPED, trigger=reason, started_s=started_s,
                           reason="no held-out sample yet: the gate could not judge a candidate; "
                                  "the round waits for more labelled frames")
    if not any(r.classes for r in held_out):  # background frames only: no AP to judge on
        return RoundResult(RoundStatus.SKIPPED, trigger=reason, started_s=started_s,
                           reason=f"the {len(held_out)} held-out sample(s) hold no box yet "
                                  f"(background frames only): the gate could not judge a "
                                  f"candidate; the round waits for labelled frames with objects")
    if not any(_scorable(r, ctx.state.task_classes) for r in held_out):
        return RoundResult(RoundStatus.SKIPPED, trigger=reason, started_s=started_s,
                           reason=f"none of the {len(held_out)} held-out sample(s) holds a box of "
                                  f"its own task's classes (they show earlier tasks' objects): "
                                  f"the gate could not judge a candidate; the round waits for "
                                  f"labelled frames of the new classes")
    problems = (ctx.registry.verify(ctx.parent_version, essential_only=True)
                if ctx.parent_version else [])
    if problems:
        # INVARIANT: a tampered parent is never fine-tuned (its result would be promoted)
        return RoundResult(RoundStatus.FAILED, trigger=reason, started_s=started_s,
                           reason=f"parent {ctx.parent_version} fails its integrity check: "
                                  f"{problems[0]}; no round learns on it until it is replaced: "
                                  + ("'edgecl models rollback' serves the version before it, or "
                                     if _earlier_version(ctx.registry, ctx.parent_version) else "")
                                  + "'edgecl models add --promote' a checkpoint you trust")
    tasks = sorted({r.task for r in ctx.new_records})
    origins = Counter(r.origin.value for r in ctx.new_records)  # where their labels came from
    of = (f"({', '.join(f'{origin} {n}' for origin, n in sorted(origins.items()))})"
          if tasks == [STREAM_TASK]  # a device has classes, not tasks (before: "from the
          else f"of task(s) {', '.join(tasks)}")  # stream", imports and answers alike)
    log.info("round %d: %d new sample(s) %s (trigger: %s)", ctx.state.round + 1,
             len(ctx.new_records), of, reason)
    return _train_evaluate_stage(ctx, reason, started_s, started_mono_s, record, hold)


def _without_unnamed_classes(snapshot, names: dict[int, str]):
    """The snapshot without samples holding a class id that neither the class registry nor the
    memory names (a label edited by hand): with them, the round grew the model to that many
    classes under placeholder names. Said in one warning; the samples stay in the memory. A
    device that names no class at all (a memory filled through the API) keeps every sample."""
    if not names:
        return snapshot
    unnamed = [r for r in snapshot.rows if any(c not in names for c in r.classes)]
    if not unnamed:
        return snapshot
    first = unnamed[0]
    cls = next(c for c in first.classes if c not in names)
    log.warning("%d sample(s) hold a class id that the class registry does not name (sample %d: "
                "class id %d; the registry names %d classes) and are left out of this round: a "
                "label edited by hand? 'edgecl memory remove %d' deletes such a sample",
                len(unnamed), first.id, cls, len(names), first.id)
    left_out = {r.id for r in unnamed}
    return dataclasses.replace(snapshot, rows=tuple(r for r in snapshot.rows
                                                    if r.id not in left_out))


def _open_round(cfg: Config, max_sample_id: int | None, again: bool = False
                ) -> RoundContext | None:
    from edgecl.continual.memory import memory_from_config
    from edgecl.continual.merges import finish_merges
    from edgecl.models.classes import ClassRegistry, adopt_memory_class_names
    from edgecl.models.registry import Registry

    memory = memory_from_config(cfg)
    try:
        classes = ClassRegistry(cfg.state_dir)
        adopt_memory_class_names(memory, classes)  # a damaged registry: rebuilt from the memory
        merges = classes.merged()
        finish_merges(memory, merges, classes.names())  # a merge a stop cut short
        snapshot = memory.snapshot()
        names = dict(memory.class_names() or {})
        last_id_given = memory.change_signature()[1]
    finally:
        memory.close()
    names.update(ClassRegistry(cfg.state_dir).names())  # INVARIANT: the class registry names ids
    state = progress_within_memory(cfg.state_dir, load_state(cfg.state_dir), last_id_given)
    if max_sample_id is not None:
        # INVARIANT: a round sees only samples present when it was triggered
        snapshot = dataclasses.replace(snapshot, rows=tuple(r for r in snapshot.rows
                                                            if r.id <= max_sample_id))
    snapshot = _without_unnamed_classes(snapshot, names)
    new = [r for r in snapshot.records(held_out=False) if r.id > state.last_sample_id]
    if not new and again:  # every sample was learnt: learnt once more, as new
        new = list(snapshot.records(held_out=False))
    if not new:
        return None
    # INVARIANT: a task or class enters evaluation once a round trains on it: its first row is
    # its "just learnt" value (metrics.first_learnt_rows), never an untrained one
    update_task_bookkeeping(state, snapshot.records(held_out=False))
    work = learner_dir(cfg.state_dir) / "work"
    shutil.rmtree(work, ignore_errors=True)  # INVARIANT: a round starts from a clean work dir
    if work.is_symlink() or (work.exists() and not work.is_dir()):
        # a file where the round's folder belongs (a card fault, a hand): the round's own scratch
        # space, so removed (before: every round failed with a FileExistsError traceback)
        log.warning("%s was a file, not the round's work folder: removed", work)
        with storage_faults("cannot remove a file where the round's work folder belongs", work):
            work.unlink()
    with storage_faults("cannot create the round's work folder", work):
        work.mkdir(parents=True)
    registry = Registry(Path(cfg.state_dir) / "models")
    return RoundContext(cfg, state, snapshot, new, work, registry, registry.current(),
                        {int(k): str(v) for k, v in names.items()}, base_checkpoint(cfg),
                        merges=merges)


def _earlier_version(registry, current: str) -> bool:
    """Whether a rollback from ``current`` has a version to go back to."""
    return any(v != current for v in registry.history())


def base_checkpoint(cfg: Config) -> Path | None:
    """The user's own pretrained ultralytics checkpoint (``model.path`` ending in ``.pt``), which
    the first round learns on top of instead of a freshly built model.

    ``None`` when not set, and for a checkpoint saved as untrained (``"untrained": true`` in
    its edgecl metadata: a fresh detector that only names the first classes, as the demo
    serves until its first round): such a start is a first round (no frozen layers, the first
    round's step budget), not a later one.
    """
    path = Path(cfg.model.path) if cfg.model.path else None
    if path is None or path.suffix.lower() != ".pt" or not path.is_file():
        return None
    from edgecl.errors import ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint

    try:
        _, meta = load_checkpoint(path)
    except ModelLoadError:
        return path  # the round's own load reports what is wrong with it
    return None if meta.get("untrained") else path


def start_model_problem(cfg: Config) -> str | None:
    """Why ``model.path`` cannot be what a first round starts from, or None.

    A round with no version to start from learns on top of ``model.path``'s checkpoint, or
    trains a model of its own where none is set (or a model yaml asks for it). A path that does
    not exist, a folder, or an exported engine (``.onnx``, an OpenVINO ``.xml``, ``.engine``:
    what ``edgecl run --model`` serves) is none of these: before, such a round trained a
    YOLO11n from scratch and the gate, with no earlier model to compare, promoted it over the
    model the user gave.

    Args:
        cfg: the configuration (``model.path``).

    Returns:
        One line naming the path and what to give instead, or None.
    """
    if not cfg.model.path:
        return None
    path = Path(cfg.model.path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):  # an untrained start, asked for
        from edgecl.ultra import model_yaml_problem, packaged_model_yaml

        found = path if path.is_file() else packaged_model_yaml(path.name)
        if found is None:
            return (f"model.path {path}: no such model yaml (neither a file nor one of "
                    f"ultralytics' packaged models, such as yolo11n.yaml or yolo11s.yaml)")
        problem = model_yaml_problem(found)
        return None if problem is None else f"model.path {path} {problem}"
    if not path.exists():
        why = link_problem(path)  # a link that loops or leads to a card not mounted
        return f"model.path {why}" if why else f"model.path {path}: no such file"
    if path.is_dir():
        return (f"the model {path} is a folder; a round learns on top of an ultralytics .pt "
                f"checkpoint: set model.path to one")
    if not path.is_file():
        return not_a_file_problem(path)
    if suffix != ".pt":
        return (f"the model {path} is no .pt checkpoint (an exported engine?), which no round "
                f"can fine-tune; set model.path to the ultralytics .pt checkpoint it was "
                f"exported from (the engine serves all the same), or to yolo11n.yaml to learn a "
                f"model of its own from scratch")
    return None


def not_a_file_problem(path: Path) -> str:
    """What is said of a ``model.path`` that exists but is no regular file (a FIFO, a device,
    a link to one): before, a round took it for "no checkpoint" and trained, and promoted, a
    model from scratch in place of the user's."""
    return (f"model.path {path}: not a regular file (a FIFO, a device or a socket); set it to "
            f"the ultralytics .pt checkpoint file itself")


def no_checkpoint_problem(version: str) -> str:
    """What a round says of a current version that holds no ``model.pt`` (an exported engine
    added as the device's model) while ``model.path`` names no checkpoint: nothing to
    fine-tune."""
    return (f"current version {version} has no model.pt to fine-tune (an exported engine); "
            f"set model.path to the ultralytics .pt checkpoint it was exported from, or promote "
            f"that checkpoint ('edgecl models add --promote FILE.pt')")


def unlearnable_current(cfg: Config, registry) -> str | None:
    """Why no learning round can start from the registry's current version, or None.

    Args:
        cfg: the configuration (``model.path``: a checkpoint a round may start from instead).
        registry: the :class:`~edgecl.models.registry.Registry`.

    Returns:
        :func:`no_checkpoint_problem` when the current version holds no ``model.pt`` and
        ``model.path`` names no trained checkpoint; with no current version,
        :func:`start_model_problem` or :func:`scratch_problem`; None otherwise.
    """
    try:
        current = registry.current()
        if current is None:
            return start_model_problem(cfg) or scratch_problem(cfg)
        if "model.pt" in (registry.manifest(current).get("files") or {}):
            return None
    except EdgeclError:
        return None  # a damaged registry is reported where it is read
    return None if base_checkpoint(cfg) is not None else no_checkpoint_problem(current)


SAFE_FREEZE_LAYERS = 20
"""``learner.freeze_layers`` below this leaves the head trainable in every ultralytics detection
family edgecl runs (their layer counts are 22 and above); larger values are checked at start."""


def check_start_model(cfg: Config) -> None:
    """Refuse at start learner settings that the model a round would fine-tune cannot take,
    instead of failing every round (``run``) or after the round has started (``learn``).

    Checks IDER (``ider.enabled``) against an end-to-end head (YOLO26, YOLOv10),
    ``learner.freeze_layers`` of :data:`SAFE_FREEZE_LAYERS` or more against the current
    version's layer count (the first round never freezes), and ``learner.imgsz`` against the
    model's largest stride (64 for a P6 model: before, such a model was accepted at start
    and every round then failed). Loads the model only when one of them can apply.

    Raises:
        ConfigError: one line naming the setting, the model and what it takes.
    """
    from edgecl.continual.finetune import settings_problem
    from edgecl.errors import ConfigError, EdgeclError
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.models.registry import Registry

    freeze = int(cfg.learner.freeze_layers)
    imgsz = int(cfg.learner.imgsz)
    if not (cfg.ider.enabled or freeze >= SAFE_FREEZE_LAYERS or imgsz % 64):
        return  # (no detection model's stride is above 64)
    pt, later, label = None, False, ""
    models = Path(cfg.state_dir) / "models"
    try:
        registry = Registry(models) if models.is_dir() else None
        current = registry.current() if registry is not None else None
        if current is not None:
            pt, later, label = registry.file_path(current, "model.pt"), True, f"version {current}"
    except EdgeclError:
        pt = None  # an ONNX-only or damaged version: the round's own checks report it
    pt = pt or base_checkpoint(cfg)
    if pt is None:
        return
    label = label or Path(pt).name
    try:
        model, _ = load_checkpoint(pt)
    except EdgeclError:
        return  # the round's own load reports what is wrong with it
    problem = settings_problem(model, freeze if later else 0, cfg.ider.enabled, label, imgsz=imgsz)
    if problem:
        raise ConfigError(problem)


def _top_class(ctx: RoundContext) -> int:
    """Highest class id any sample of the round's snapshot carries (-1 when none)."""
    return max((c for r in ctx.snapshot.records() for c in r.classes), default=-1)


def _load_parent(ctx: RoundContext):
    """The model a round starts from, as a DetectionModel with its names (the class registry's,
    by id): the current version's checkpoint, else the user's pretrained checkpoint, else a
    freshly built YOLO11n.

    Raises:
        EdgeclError: the current version has no ``model.pt`` (an ONNX-only version added by
            hand) and no pretrained checkpoint is configured: there is nothing to fine-tune.
    """
    from edgecl.errors import RegistryError
    from edgecl.models.checkpoint import load_checkpoint
    from edgecl.ultra import build_detection_model

    pt = None
    if ctx.parent_version is not None:
        try:
            pt = ctx.registry.file_path(ctx.parent_version, "model.pt")
        except RegistryError:
            pt = ctx.base_checkpoint
            if pt is None:
                raise EdgeclError(no_checkpoint_problem(ctx.parent_version)) from None
    elif ctx.base_checkpoint is not None:
        pt = ctx.base_checkpoint
    if pt is not None:
        model, meta = load_checkpoint(pt)
        stored = {int(k): str(v) for k, v in (meta.get("names") or model.names).items()}
        if ctx.parent_version is None or pt == ctx.base_checkpoint:
            # a user's pretrained start, also in place of a version that holds only an exported
            # engine: its ids must be the device's (before, there a checkpoint whose ids named
            # other classes was trained and promoted with its head's rows renamed)
            from edgecl.models.classes import ClassRegistry

            _check_start_names(pt, stored, ctx.names,
                               ClassRegistry(ctx.cfg.state_dir).former_names())
            _warn_start_size(f"the checkpoint {Path(pt).name}", meta.get("imgsz"),
                             int(ctx.cfg.learner.imgsz))
        elif "parent" not in ctx.registry.manifest(ctx.parent_version):
            # a user's model staged by 'edgecl models add' is a start too: its size changes
            _warn_start_size(f"version {ctx.parent_version} (added with 'edgecl models add')",
                             meta.get("imgsz"), int(ctx.cfg.learner.imgsz))
        # INVARIANT: the class registry names ids: a class renamed since the parent was made
        # (edgecl classes rename) carries its new name into the candidate
        names = {i: ctx.names.get(i, name) for i, name in stored.items()}
        model.names = names
        return model, names
    problem = start_model_problem(ctx.cfg) or scratch_problem(ctx.cfg)
    if problem:  # never a model of its own in place of the one the user gave
        raise EdgeclError(problem)
    waiting = (ctx.registry.added_unpromoted()
               if ctx.registry is not None and not ctx.cfg.model.path else None)
    if waiting is not None:  # nor in place of the one the user added and did not promote
        from edgecl.models.registry import unpromoted_model_problem

        raise EdgeclError(unpromoted_model_problem(ctx.cfg.state_dir, *waiting, serving=True))
    nc = 1 + max(_top_class(ctx), 0)
    names = {i: ctx.names.get(i, f"class{i}") for i in range(nc)}
    arch = _start_yaml(ctx.cfg)
    if _untrained_start(ctx.cfg):  # asked for: a yaml or an untrained checkpoint as model.path
        log.info("this round starts from a freshly built %s (model.path %s is an untrained "
                 "model)", Path(arch).name, ctx.cfg.model.path)
    else:
        log.warning("this round starts from a YOLO11n trained from scratch: the registry has no "
                    "version and model.path names no checkpoint (a file given to 'edgecl run "
                    "--model' serves that run only; to learn on top of your own checkpoint, set "
                    "model.path or run 'edgecl models add --promote FILE' first)")
    try:
        model = build_detection_model(nc, cfg=arch, names=names)
    except Exception as exc:  # ultralytics raises many kinds for a bad model yaml
        text = str(exc).strip()
        raise EdgeclError(f"cannot build a model from model.path {arch}: {type(exc).__name__}: "
                          f"{text.splitlines()[0] if text else 'no detail'}") from None
    return model, names  # a yaml of another task's head was refused above (start_model_problem)


def _start_yaml(cfg: Config) -> str:
    """The model yaml a round with nothing to fine-tune builds: ``model.path``'s yaml (a file,
    else ultralytics' packaged one of that name, as :class:`~edgecl.models.torch_backend.
    TorchBackend` reads it), or ``yolo11n.yaml``. Before, every yaml (``yolo11s.yaml``, a
    user's own) built a YOLO11n."""
    path = Path(cfg.model.path) if cfg.model.path else None
    if path is None or path.suffix.lower() not in (".yaml", ".yml"):
        return "yolo11n.yaml"
    return str(path) if path.is_file() else path.name


def scratch_problem(cfg: Config) -> str | None:
    """Why a round with no version to start from must not train from scratch, or None.

    A device whose first classes came from a trained checkpoint (``edgecl run --model
    FILE.pt``, ``labels import`` with ``model.path``: :meth:`~edgecl.models.classes.
    ClassRegistry.seeding_checkpoint`) and that was later run without it: before, its round
    trained a YOLO11n from scratch, and the gate, with no earlier model to compare, promoted
    it over the team's detector, with one warning.

    Args:
        cfg: the configuration (``model.path``, ``state_dir``).

    Returns:
        One line naming the checkpoint and what to give, or None (``model.path`` set: a
        checkpoint to start from, or a model yaml asking for a fresh start).
    """
    from edgecl.models.classes import ClassRegistry

    if cfg.model.path:
        return None
    try:
        seeded = ClassRegistry(cfg.state_dir).seeding_checkpoint()
    except EdgeclError:
        return None  # a damaged registry is reported where it is read
    if seeded is None:
        return None
    return (f"no round trains from scratch here: this device's classes came from the checkpoint "
            f"{seeded}, and the registry has no version to learn on (model.path is unset); give "
            f"model.path={shlex.quote(seeded)}, or add it with 'edgecl models add "
            f"{shlex.quote(seeded)} --promote --state-dir {shlex.quote(str(cfg.state_dir))}' "
            f"(model.path=yolo11n.yaml starts afresh on purpose)")


def _untrained_start(cfg: Config) -> bool:
    """True when ``model.path`` asks for an untrained start: a model yaml (``yolo11n.yaml``) or
    a checkpoint saved as untrained (:func:`base_checkpoint` gives ``None`` for it)."""
    path = Path(cfg.model.path) if cfg.model.path else None
    if path is None:
        return False
    if path.suffix.lower() in (".yaml", ".yml"):
        return True
    return path.suffix.lower() == ".pt" and path.is_file() and base_checkpoint(cfg) is None


def _check_start_names(path: Path, stored: dict[int, str], registry: dict[int, str],
                       former: dict[int, list[str]] | None = None) -> None:
    """Refuse a pretrained checkpoint whose class ids name other classes than the device's
    (labels imported before the checkpoint was given: the head's rows would be renamed).

    Raises:
        ConfigError: one line naming the first disagreeing id and what to do.
    """
    from edgecl.errors import ConfigError
    from edgecl.models.classes import names_conflict

    conflict = names_conflict(registry, stored, former)  # a rename since: the same classes
    if conflict:
        raise ConfigError(f"model.path {path}: {conflict}; a checkpoint's classes keep their "
                          f"ids, so give it to a new state directory first ('edgecl models add "
                          f"--promote {path.name}'), then import the labels, which map classes "
                          f"by name")


def _warn_start_size(what: str, trained, learner_imgsz: int) -> None:
    """Say so when a pretrained start (``what``: the user's model, in words) was trained at
    another size than the round's: the round trains, exports and the device then serves at
    ``learner.imgsz``."""
    from edgecl.models.checkpoint import longer_side

    side = longer_side(trained)
    if side is not None and side != learner_imgsz:
        log.warning("%s was trained at %d px; this round trains and exports at "
                    "learner.imgsz=%d px, and the device serves that size from now on (set "
                    "learner.imgsz: %d to keep its size)", what, side, learner_imgsz, side)


def _grow_for_new_classes(model, names: dict[int, str], ctx: RoundContext):
    from edgecl.continual.head import grow_head

    top = _top_class(ctx)
    if top < len(names):
        return model, names
    grown = dict(names)
    for c in range(len(names), top + 1):
        grown[c] = ctx.names.get(c, f"class{c}")
    log.info("head grows from %d to %d classes: %s", len(names), len(grown),
             [grown[c] for c in range(len(names), top + 1)])
    return grow_head(model, grown), grown


def _backend(model, names, cfg: Config, conf: float, max_det: int):
    """The round's detector of ``model``: classes merged into others in the device's class
    registry are detected as those (:class:`~edgecl.continual.merges.MergedClassesDetector`)."""
    from edgecl.continual.merges import MergedClassesDetector
    from edgecl.models.base import InferenceOptions
    from edgecl.models.classes import ClassRegistry, ClassRegistryError
    from edgecl.models.torch_backend import TorchBackend

    opts = InferenceOptions(conf=conf, iou=cfg.model.iou, max_det=max_det,
                            threads=cfg.learner.torch_threads)
    backend = TorchBackend.from_model(model, names, cfg.learner.imgsz, opts)
    try:
        merged = ClassRegistry(cfg.state_dir).merged()
    except ClassRegistryError:  # the round rebuilt a damaged registry before: none to apply
        merged = {}
    return MergedClassesDetector(backend, merged, cfg.model.iou) if merged else backend


def select_replay(ctx: RoundContext, parent_model, parent_names, model_for_virtual) -> list[int]:
    """Choose replay samples with the configured strategy (empty before anything was learnt)."""
    from edgecl.continual.strategies import ReplayContext, get_strategy

    if not ctx.state.learnt_tasks or ctx.cfg.replay.samples <= 0:
        return []
    current = max(ctx.new_records, key=lambda r: r.id).task
    if is_taskless([current]):
        # INVARIANT: in deployment every frame has one task; "earlier" then means the samples
        # learnt in earlier rounds, not none at all
        current = None
    scorer = None
    if ctx.cfg.replay.strategy == "mir-virtual":
        from edgecl.continual.finetune import make_virtual_scorer

        paths = ctx.snapshot.image_paths([r.id for r in ctx.snapshot.records(held_out=False)])
        by_id = dict(zip([r.id for r in ctx.snapshot.records(held_out=False)], paths))
        batch = ctx.snapshot.image_paths([r.id for r in ctx.new_records[: ctx.cfg.learner.batch]])
        scorer = make_virtual_scorer(model_for_virtual, batch, ctx.cfg.learner.lr, by_id,
                                     imgsz=ctx.cfg.learner.imgsz)
    rctx = ReplayContext.from_config(ctx.cfg.replay, current_task=current,
                                     new_ids=frozenset(r.id for r in ctx.new_records),
                                     seed=ctx.cfg.memory.seed + ctx.state.round,
                                     virtual_scorer=scorer)
    detector = _backend(parent_model, parent_names, ctx.cfg, ctx.cfg.model.conf, 100)
    strategy = get_strategy(ctx.cfg.replay.strategy)
    return list(strategy.select(ctx.snapshot, ctx.cfg.replay.samples, model=detector, context=rctx))


def _scorable(record, task_classes: dict[str, list[int]]) -> bool:
    """Whether a held-out record holds a box that its task's evaluation scores (a task is
    evaluated on its own classes; one with none recorded, on every class)."""
    own = task_classes.get(record.task)
    return bool(record.classes) and (not own or bool(set(record.classes) & set(own)))


def evaluate_tasks(model, names, ctx: RoundContext) -> dict:
    """Evaluate a model on the held-out slice of every task seen, on that task's classes.

    Returns:
        task -> :class:`EvalResult` (tasks without held-out samples are left out, and so is a
        task whose held-out samples hold no box of its classes: see :func:`measured_tasks`).
    """
    from edgecl.continual.evaluate import evaluate_model

    backend = _backend(model, names, ctx.cfg, EVAL_CONF, EVAL_MAX_DET)
    results = {}
    for task in ctx.state.task_order:
        ids = ctx.snapshot.ids(held_out=True, task=task)
        if ids:
            results[task] = evaluate_model(backend, ctx.snapshot.image_paths(ids),
                                           class_ids=ctx.state.task_classes.get(task) or None,
                                           serving_conf=ctx.cfg.model.conf,
                                           serving_max_det=ctx.cfg.model.max_det)
    return measured_tasks(results)


def measured_tasks(results: dict) -> dict:
    """The tasks an evaluation measured: a task whose held-out images hold no box of its own
    classes (background frames, or frames showing only earlier classes) has no AP, and its
    mAP50-95 of 0 entered ACC and the accuracy matrix as if the task were forgotten. The
    stream (no tasks) is kept: the gate then judges it class by class.

    Args:
        results: task -> :class:`~edgecl.continual.evaluate.EvalResult`.

    Returns:
        The results of the tasks with at least one held-out box.
    """
    unmeasured = [t for t, r in results.items() if r.n_boxes == 0 and t != STREAM_TASK]
    if unmeasured:
        log.info("held-out slice of task(s) %s holds no box of its classes: not scored",
                 ", ".join(unmeasured))
    return {t: r for t, r in results.items() if t not in unmeasured}


SMALL_BOX_SHARE = 0.5
"""Share of a round's new boxes under the model's finest stride above which the round says so."""


def small_boxes_note(samples, imgsz: int, stride: int) -> str | None:
    """Why a round learns little of its new boxes, or None: most are smaller than the model's
    finest stride once the frame is letterboxed to ``imgsz`` (thermal drone footage at 64 px:
    a 39x71 px car at 640 px is 4x7 px). Ultralytics' task-aligned assigner then gives most of
    them no anchor point, so they teach nothing while the loss falls towards 0 all the same,
    which reads as convergence.

    Args:
        samples: the round's new samples (``width``, ``height`` in pixels; ``labels`` float32
            (N, 5) YOLO rows, normalised ``class, x, y, w, h``).
        imgsz: ``learner.imgsz``, the letterbox's longer side in pixels.
        stride: the model's finest stride in pixels (8 for YOLO11's P3 head).

    Returns:
        One line with the share and the ``learner.imgsz`` at which the median box's shorter
        side is one stride, or None when at most :data:`SMALL_BOX_SHARE` are under it.
    """
    sides = []
    for sample in samples:
        labels = np.asarray(sample.labels, np.float32).reshape(-1, 5)
        scale = imgsz / max(int(sample.width), int(sample.height), 1)
        sides.append(np.minimum(labels[:, 3] * sample.width, labels[:, 4] * sample.height) * scale)
    side = np.concatenate(sides) if sides else np.zeros(0, np.float32)
    small = int((side < stride).sum())
    if not side.size or small <= SMALL_BOX_SHARE * side.size:
        return None
    median = float(np.median(side))
    need = int(np.ceil(imgsz * stride / max(median, 1e-3) / 32.0) * 32)
    return (f"{small} of {side.size} new boxes of this round are under {stride} px on their "
            f"shorter side at learner.imgsz={imgsz} (the model's finest stride; median "
            f"{median:.1f} px): the model learns little of them, though its loss falls all the "
            f"same; learner.imgsz={need} makes the median box one stride")


def _fine_tune(ctx: RoundContext, model, parent_model, replay_ids: list[int]):
    from edgecl.continual.finetune import FineTuner

    cfg = ctx.cfg
    try:
        stride = int(min(float(s) for s in model.stride))
    except (AttributeError, TypeError, ValueError):  # a model without strides: the usual 8
        stride = 8
    try:
        small = small_boxes_note(ctx.snapshot.get([r.id for r in ctx.new_records]),
                                 int(cfg.learner.imgsz), stride)
    except EdgeclError:  # a damaged label file: the training's own reading says so
        small = None
    if small:
        log.warning("%s", small)
    young = ctx.young_steps()
    first = young is not None  # a first round, or one of a model still learning from scratch
    if young:  # learner.max_steps=5 gave a 270-step round here, with no word of why
        log.info("this round trains every layer, for at most %d steps and "
                 "learner.first_round_budget_s=%g s, as a first round does: the model learns "
                 "from scratch and has trained %d of learner.first_round_max_steps=%d steps so "
                 "far (learner.max_steps=%d and learner.budget_s bound the rounds once it has)",
                 _round_steps(ctx, young), cfg.learner.first_round_budget_s, young,
                 cfg.learner.first_round_max_steps, cfg.learner.max_steps)
    elif first:  # learner.max_steps=5 on a new device still trained 600 steps, unexplained
        log.info("first round: the model learns from scratch, every layer, for at most "
                 "learner.first_round_max_steps=%d steps and learner.first_round_budget_s=%g s "
                 "(learner.max_steps and learner.budget_s bound the rounds after it)",
                 cfg.learner.first_round_max_steps, cfg.learner.first_round_budget_s)
    prev = parent_model if (cfg.ider.enabled and not first) else None
    learner = cfg.learner
    hooks = []
    new_images = ctx.snapshot.image_paths([r.id for r in ctx.new_records])
    if not first and (learner.distill_cls_weight > 0 or learner.distill_box_weight > 0):
        from edgecl.continual.distill import DistillHook

        hooks.append(DistillHook(parent_model, cls_weight=learner.distill_cls_weight,
                                 box_weight=learner.distill_box_weight, conf=learner.distill_conf))
    if not first and learner.pseudo_old_classes:
        from edgecl.continual.old_labels import pseudo_label_copies

        old_nc = int(parent_model.model[-1].nc)
        detector = _backend(parent_model, {i: str(i) for i in range(old_nc)}, cfg,
                            learner.pseudo_old_conf, 300)
        new_images, stats = pseudo_label_copies(new_images, detector, ctx.work / "pseudo-old",
                                                range(old_nc), conf=learner.pseudo_old_conf,
                                                iou_thr=learner.pseudo_old_iou)
        log.info("pseudo-labels of old classes: %d box(es) added to %d of %d new image(s)",
                 stats.added, stats.images_with_added, stats.images)
    tuner = FineTuner(model, cfg.learner, cfg.ider, prev_model=prev, hooks=hooks,
                      progress=ctx.progress)
    return tuner.run(new_images,
                     ctx.snapshot.image_paths(replay_ids),
                     budget_s=cfg.learner.first_round_budget_s if first else cfg.learner.budget_s,
                     max_steps=_round_steps(ctx, young),
                     epochs=cfg.learner.epochs * (10 if first else 1), device=cfg.learner.device,
                     freeze_layers=0 if first else cfg.learner.freeze_layers)


def _round_steps(ctx: RoundContext, young: int | None) -> int:
    """The step bound of a round: ``learner.first_round_max_steps`` for a first round; for a
    later round of a young model (:meth:`RoundContext.young_steps`) the steps it has left of
    it, at least ``learner.max_steps``; else ``learner.max_steps``."""
    learner = ctx.cfg.learner
    if young is None:
        return int(learner.max_steps)
    left = int(learner.first_round_max_steps) - young
    return left if ctx.first else max(left, int(learner.max_steps))


def export_candidate(ctx: RoundContext, model, names: dict[int, str],
                     accepted: bool = True) -> tuple[dict, dict]:
    """Save the checkpoint and, for an accepted candidate, export ONNX, the CPU engines
    (OpenVINO, INT8 behind its gate; see :mod:`edgecl.continual.cpu_engines`) and (where
    TensorRT exists) build an engine.

    Args:
        ctx: the round.
        model: the fine-tuned DetectionModel.
        names: its class names.
        accepted: the gate's verdict; a rejected candidate keeps only its checkpoint.

    Returns:
        ``(files, export_meta)``: registry file name -> path, and manifest fields.
    """
    from edgecl.models.checkpoint import save_checkpoint
    from edgecl.models.export import export_onnx

    cfg = ctx.cfg
    pt = save_checkpoint(model, ctx.work / "model.pt",
                         meta={"names": names, "imgsz": cfg.learner.imgsz,
                               "parent": ctx.parent_label})
    if not accepted:
        return {"model.pt": pt}, {"precision": "not exported (rejected by the gate)"}
    stats: dict = {}
    onnx = export_onnx(model, ctx.work / "model.onnx", imgsz=cfg.learner.imgsz,
                       opset=cfg.export.onnx_opset, names=names, stats=stats)
    files = {"model.pt": pt, "model.onnx": onnx}
    meta = {"export_s": stats.get("export_s"), "ider_folded": stats.get("ider_folded", False),
            "precision": "fp32 (onnx)"}
    from edgecl.continual.cpu_engines import export_cpu_engines

    # the TensorRT engine first: where one is built it serves, and 'auto' builds no CPU engine
    engine, engine_meta = _maybe_engine(ctx, onnx, names)
    cpu_files, cpu_meta = export_cpu_engines(cfg, model, names, onnx, ctx.work, ctx.snapshot,
                                             eval_conf=EVAL_CONF, eval_max_det=EVAL_MAX_DET,
                                             engine_built=engine is not None)
    files.update(cpu_files)
    meta.update(cpu_meta)
    if engine is not None:
        files["model.engine"] = engine
    meta.update(engine_meta)
    return files, meta


def _maybe_engine(ctx: RoundContext, onnx: Path, names: dict[int, str]) -> tuple[Path | None, dict]:
    from edgecl.models.engine_file import read_engine_header
    from edgecl.models.tensorrt_build import EngineBuildError, build_engine, tensorrt_available

    cfg = ctx.cfg
    if cfg.export.tensorrt == "off" or (cfg.export.tensorrt == "auto" and not tensorrt_available()):
        return None, {"engine": "not built (TensorRT not available)"}
    calib = None
    if cfg.export.precision == "int8":
        from edgecl.continual.int8_calibration import calibration_images

        calib = calibration_images(ctx.snapshot, cfg.export.int8_calibration_images)
    try:
        engine = build_engine(onnx, ctx.work / "model.engine", precision=cfg.export.precision,
                              imgsz=cfg.learner.imgsz, workspace_mb=cfg.export.workspace_mb,
                              calibration_images=calib, names=names,
                              cache_dir=Path(cfg.state_dir) / "models" / "engine-cache",
                              cache_entries=cfg.export.engine_cache_entries)
    except EngineBuildError as exc:
        log.error("TensorRT engine not built (%s); the ONNX model is kept", exc)
        return None, {"engine": f"build failed: {exc}"}
    header = read_engine_header(engine)
    info = header.get("edgecl", header)
    return engine, {"precision": info.get("precision", cfg.export.precision),
                    "engine_cache_key": info.get("cache_key")}


def _load_or_none(sample):
    from edgecl.errors import ReplayMemoryError

    try:
        return sample.load_image()
    except ReplayMemoryError as exc:
        log.warning("sample %d skipped: %s", sample.id, exc)
        return None


def _set_far_baselines(ctx: RoundContext, model, names) -> None:
    """FAR's baseline: each sample's recall right after its task was learnt (in deployment,
    where every frame has one task, right after the round that learnt it: the round's new
    samples, not the whole memory again)."""
    from edgecl.continual.recall import batch_recall

    current = {r.task for r in ctx.new_records}
    new_ids = {r.id for r in ctx.new_records}
    ids = [r.id for r in ctx.snapshot.records(held_out=False)
           if r.task in current and (r.task != STREAM_TASK or r.id in new_ids)]
    samples = ctx.snapshot.get(ids)
    images = [_load_or_none(s) for s in samples]
    keep = [i for i, im in enumerate(images) if im is not None]
    detector = _backend(model, names, ctx.cfg, ctx.cfg.model.conf, 100)
    recalls = batch_recall(detector, [images[i] for i in keep], [samples[i].labels for i in keep])
    ctx.snapshot.set_recall_baseline([samples[i].id for i in keep], recalls.tolist())


def seed_round(seed: int) -> None:
    """Seed the generators a round draws from (the weights of a YOLO11n built for an untrained
    start, a grown head's new weights, augmentation) as ultralytics' ``init_seeds`` does without
    its determinism switches: the same snapshot and parent then give the same candidate, so a
    round can be replayed to be examined (with ``learner.torch_threads`` 1; more threads may
    add float noise).

    Args:
        seed: ``memory.seed`` plus the round's number.
    """
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _train_evaluate_stage(ctx: RoundContext, reason: str, started_s: float,
                          started_mono_s: float, record: RoundRecorder | None,
                          hold: bool = False) -> RoundResult:
    cfg, state = ctx.cfg, ctx.state
    round_no = state.round + 1
    clock = _PhaseClock()
    seed_round(cfg.memory.seed + round_no)  # first: an untrained start is built here
    parent_model, parent_names = _load_parent(ctx)
    model, names = _grow_for_new_classes(copy.deepcopy(parent_model), parent_names, ctx)
    with clock("select"):
        replay_ids = select_replay(ctx, parent_model, parent_names, model)
    with clock("train"):
        ft = _fine_tune(ctx, model, parent_model, replay_ids)
    ctx.snapshot.record_replay(replay_ids)
    with clock("evaluate"):
        candidate = evaluate_tasks(model, names, ctx)
        parent = None if ctx.first else evaluate_tasks(parent_model, parent_names, ctx)
    cand_map = {t: r.map50_95 for t, r in candidate.items()}
    failed = ft.stopped_reason if ft.stopped_reason in ("nan_loss", "no_data") else ""
    if not failed and ft.steps == 0:  # the parent, unchanged: staged, it would count as learnt
        failed = (f"no optimiser step before the round stopped ({ft.stopped_reason}, after "
                  f"{ft.seconds:.1f} s of set-up): raise learner.budget_s (first round: "
                  f"learner.first_round_budget_s)")
    verdict = judge_results(parent, candidate, list(state.learnt_tasks), cfg.gate,
                            training_failed=failed, names=names,
                            parent_classes=set(parent_names) if parent is not None else None,
                            **recent_losses(ctx.registry, cfg.gate.forgetting_window, names))
    status = RoundStatus.STAGED if verdict.accepted else RoundStatus.REJECTED
    calibrator, cal_report = None, None
    if verdict.accepted:
        with clock("calibrate"):
            calibrator, cal_report = _calibrate(ctx, model, names)
    with clock("export"), storage_faults(f"round {round_no}: cannot export the candidate model",
                                         ctx.work):
        files, export_meta = export_candidate(ctx, model, names, accepted=verdict.accepted)
    after = dataclasses.replace(state, round=round_no)
    if verdict.accepted:
        after.learnt_tasks = list(dict.fromkeys(state.learnt_tasks
                                                + [r.task for r in ctx.new_records]))
        after.last_sample_id = max(r.id for r in ctx.new_records)
    baseline = start_baseline(ctx, parent, parent_names)
    recorded = dict(round_no=round_no, status=status, reason=verdict.reason,
                    seconds=round(time.monotonic() - started_mono_s, 1), evaluation=candidate,
                    columns=state.task_order, class_names=names, calibration=cal_report,
                    baseline=baseline)
    with clock("stage"):
        manifest = _manifest(ctx, names, ft, verdict, candidate, export_meta, reason, replay_ids)
        with storage_faults(f"round {round_no}: cannot write the round's record", ctx.work):
            # what the recording hook is about to receive, kept with the version: a kill
            # between staging and recording is recovered from it
            # (runtime.learner.record_missing_rounds)
            files[ROUND_RECORD_FILE] = write_round_record(ctx.work / ROUND_RECORD_FILE, **recorded)
            # the learner's progress once this round is done: a kill between staging and
            # saving it is recovered from here (runtime.learner.promote_leftover_staged)
            manifest["learner_state"] = dataclasses.asdict(after)
            if hold:
                manifest["promote"] = MANUAL_PROMOTION
            if calibrator is not None:
                from edgecl.calibration.posthoc import CALIBRATOR_FILE, calibration_manifest

                files[CALIBRATOR_FILE] = calibrator.save(ctx.work / CALIBRATOR_FILE)
                manifest["calibration"] = calibration_manifest(cal_report)
        version = ctx.registry.stage(files, manifest, status=status.value, link=True)
    # the round's time up to its version, the same in the metrics database (monitor report)
    # and in the result (edgecl learn --json): before, the database's was taken before the
    # parent's baseline and the staging, 5 s short of the other in a 70 s round
    recorded["seconds"] = round(time.monotonic() - started_mono_s, 1)
    cl, unsaved = _after_staging(ctx, version, manifest, recorded, record, after,
                                 (model, names) if verdict.accepted else None)
    log.info("round %d -> %s %s: %s", round_no, version, status.value, verdict.reason)
    return RoundResult(status, reason=verdict.reason, round=round_no, version=version,
                       trigger=reason, started_s=started_s, seconds=recorded["seconds"],
                       acc=cl.get("acc"), bwt=cl.get("bwt"),
                       per_task={t: _finite(v) for t, v in cand_map.items()},
                       classes=sorted(names), steps=ft.steps, train_s=round(ft.seconds, 1),
                       replayed=len(replay_ids), new_samples=len(ctx.new_records),
                       timings_s=clock.seconds, unsaved=unsaved)


def _after_staging(ctx: RoundContext, version: str, manifest: dict, recorded: dict,
                   record: RoundRecorder | None, after: LearnerState,
                   accepted_model: tuple | None) -> tuple[dict, list[str]]:
    """The round's writes after its version is staged: its metrics record, FAR's recall
    baselines, the learner's progress.

    The staged version is the round's commit, and it holds the record (``round_record.json``)
    and the progress (``learner_state`` in its manifest): a full disk here does not fail the
    round. What could not be written is logged in one line each and listed, and whoever
    applies the result writes it from the version (:func:`edgecl.runtime.learner.write_unsaved`).
    Any other fault propagates.

    Args:
        ctx: the round.
        version: the version just staged.
        manifest: its manifest as staged.
        recorded: the recording hook's keyword arguments (without ``version``).
        record: the recording hook, or ``None``.
        after: the learner's progress once this round is done.
        accepted_model: ``(model, names)`` of an accepted candidate (FAR's baselines), or None.

    Returns:
        ``(figures, unsaved)``: what the hook derived (ACC, BWT, ...; empty when not recorded)
        and the names of what was not written (``"metrics"``, ``"progress"``).
    """
    round_no = recorded["round_no"]
    figures: dict = {}
    unsaved: list[str] = []
    if record is not None:
        try:
            figures = record(version=version, **recorded)
            ctx.registry.update_manifest(version, {"metrics": dict(manifest["metrics"], **figures)})
        except (StorageError, OSError) as exc:
            if not is_storage_error(exc):
                raise
            log.warning("round %d (%s) not recorded in the metrics database yet (%s); it is "
                        "recorded from the version once there is room", round_no, version, exc)
            unsaved.append("metrics")
    if accepted_model is not None:
        try:
            _set_far_baselines(ctx, *accepted_model)
        except (StorageError, OSError) as exc:
            if not is_storage_error(exc):
                raise
            log.warning("round %d: FAR's recall baselines of its new samples not saved (%s); "
                        "FAR ranks those samples without one", round_no, exc)
    if manifest.get("promote") == MANUAL_PROMOTION:
        # held for a person ('learn --no-promote'): the serving version learnt none of it, so
        # its samples stay new (before, the later rounds on the serving version took them for
        # learnt); its progress is in its manifest, which a promotion adopts
        after = dataclasses.replace(ctx.state, round=after.round)
    try:
        save_state(ctx.cfg.state_dir, after)
    except OSError as exc:
        if not is_storage_error(exc):
            raise
        log.warning("round %d: the learner's progress not saved (%s); it is taken from %s's "
                    "manifest", round_no, exc, version)
        unsaved.append("progress")
    return figures, unsaved


def recent_losses(registry, window: int, names: dict[int, str] | None = None) -> dict:
    """The gate's memory of recent rounds: AP and recall at ``model.conf`` each class lost
    since its best point among the last ``window`` promoted versions (``gate.forgetting_window``;
    :func:`_recorded_loss`), from one read of their manifests. The registry's history is the
    promoted chain as it stands: a rolled-back version is no longer in it, a fleet version is.

    Args:
        registry: the model registry.
        window: promoted versions to look back over (0: none).
        names: class id -> name now (None: as recorded; see :func:`_recorded_loss`).

    Returns:
        ``{"prior_loss": {...}, "prior_recall_loss": {...}, "prior_false_positive_rise": x}``
        (the last: false detections per held-out image added since the lowest point, from the
        manifests' ``gate_false_positive_step``), keyword arguments of
        :func:`edgecl.continual.gate.judge_results`.
    """
    manifests = _window_manifests(registry, window)
    rise = _recorded_loss(manifests, "gate_false_positive_step", None)
    return {"prior_loss": _recorded_loss(manifests, "gate_steps", names),
            "prior_recall_loss": _recorded_loss(manifests, "gate_recall_steps", names),
            "prior_false_positive_rise": rise.get(WHOLE_MODEL, 0.0)}


WHOLE_MODEL = ""
""":func:`_recorded_loss`'s key for a step recorded for the whole model (one number)."""

STEP_BOUNDS = {"gate_steps": 1.0, "gate_recall_steps": 1.0, "gate_false_positive_step": 10_000.0}
"""The largest step each manifest record can hold (AP and recall move within 0..1; false
detections per image are bounded as ``gate.max_false_positives_rise`` is): a value beyond it
(a hand-edited or damaged manifest) is passed over, as one that is no number."""


def _plausible_step(value, bound: float) -> float | None:
    """``value`` as a float when it is a finite number within ``[-bound, bound]``, else None
    (before: a 401-digit integer failed every round with OverflowError, and 1e308 vetoed every
    later round with a 300-digit reason)."""
    from edgecl.data.answers import finite_number

    if not finite_number(value):
        return None
    return float(value) if abs(float(value)) <= bound else None


def _window_manifests(registry, window: int) -> list[dict]:
    """The manifests of the last ``window`` promoted versions, oldest first (an unreadable one
    as an empty one)."""
    from edgecl.errors import RegistryError

    manifests = []
    for version in registry.history()[-int(window):] if window > 0 else []:
        try:
            manifests.append(registry.manifest(version))
        except RegistryError:
            manifests.append({})
    return manifests


def _recorded_loss(manifests: list[dict], key: str,
                   names: dict[int, str] | None) -> dict[str, float]:
    """What each class lost since its best point among promoted versions' manifests (see
    :func:`edgecl.continual.gate.prior_class_loss`), from the steps they recorded.

    Args:
        manifests: the manifests, oldest first (:func:`_window_manifests`).
        key: the manifests' record of steps: ``gate_steps`` (AP) or ``gate_recall_steps``
            (recall at ``model.conf``), class name -> step; or one number for the whole
            model (``gate_false_positive_step``), read under :data:`WHOLE_MODEL`.
        names: class id -> name now: each version's steps, recorded under the names its
            classes had then, count for the class of the same id (a class renamed since keeps
            its loss; a new class that took a freed name starts with none). None: as recorded.

    Returns:
        class name -> AP (or recall) lost (empty when nothing was recorded).
    """
    from edgecl.continual.gate import prior_class_loss
    from edgecl.models.classes import named_now

    steps = []
    bound = STEP_BOUNDS.get(key, 1.0)
    for manifest in manifests:
        metrics = manifest.get("metrics") or {}
        recorded = metrics.get(key)
        if not isinstance(recorded, dict):  # one number for the whole model
            step = _plausible_step(recorded, bound)
            steps.append({} if step is None else {WHOLE_MODEL: step})
            continue
        recorded = {str(k): step for k, step in ((k, _plausible_step(v, bound))
                                                 for k, v in recorded.items()) if step is not None}
        then = manifest.get("classes")
        if names is not None and isinstance(then, dict):
            recorded = named_now(recorded, then, names)
        steps.append(recorded)
    return prior_class_loss(steps)


def _calibrate(ctx: RoundContext, model, names: dict[int, str]):
    """Fit the accepted candidate's per-class calibrator on the human-verified held-out slice.

    Returns:
        ``(calibrator, report)``, or ``(None, None)`` when there is no held-out sample.
    """
    from edgecl.calibration.posthoc import fit_for_version

    ids = ctx.snapshot.ids(held_out=True)
    if not ids:
        return None, None
    backend = _backend(model, names, ctx.cfg, EVAL_CONF, EVAL_MAX_DET)
    return fit_for_version(backend, ctx.snapshot.image_paths(ids),
                           [s.labels for s in ctx.snapshot.get(ids)],
                           target_precision=ctx.cfg.labels.pseudo_precision, names=names)


class _PhaseClock:
    """Wall-clock seconds per named phase of a round (``with clock("train"): ...``)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - t0, 3)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN: map it to None."""
    return None if value is None or np.isnan(value) else float(value)


def pooled_dece(results) -> float | None:
    """D-ECE of a version's evaluations (one per task), its detections pooled over the tasks:
    the figure ``/metrics``, ``monitor summary`` and the Forgetting page give (before, the
    manifest held the plain mean of the per-task figures, 0.540 beside their 0.453).

    Args:
        results: :class:`~edgecl.continual.evaluate.EvalResult` objects.

    Returns:
        The D-ECE, or None where no evaluation binned a detection.
    """
    from edgecl.calibration.dece import dece_from_bins, merge_bins

    bins = [r.reliability for r in results if r.reliability is not None]
    if bins:
        try:
            value = dece_from_bins(merge_bins(bins))
        except ValueError:  # bins of other edges (no evaluation of this code makes them)
            value = float("nan")
        return None if np.isnan(value) else value
    dece = [r.dece for r in results if r.dece is not None and not np.isnan(r.dece)]
    return float(np.mean(dece)) if dece else None


def _manifest(ctx: RoundContext, names, ft, verdict, candidate: dict, export_meta: dict,
              reason: str, replay_ids: list[int]) -> dict:
    young = ctx.young_steps()
    return {
        "parent": ctx.parent_label, "config_hash": config_hash(ctx.cfg),
        "classes": {int(k): v for k, v in names.items()},
        "merged_classes": {str(k): int(v) for k, v in sorted(ctx.merges.items())},
        "memory_snapshot": ctx.snapshot.snapshot_id, "trigger": reason,
        "reason": verdict.reason, "replay_strategy": ctx.cfg.replay.strategy,
        "replay_samples": len(replay_ids), "new_samples": len(ctx.new_records),
        "learnt_up_to": max((r.id for r in ctx.new_records), default=0),
        "learnt_from": int(ctx.state.last_sample_id),
        "ider": ctx.cfg.ider.enabled,
        "training": {"steps": ft.steps, "seconds": round(ft.seconds, 2),
                     "stopped_reason": ft.stopped_reason, "mean_loss": ft.mean_loss,
                     "final_loss": ft.final_loss, "budget_s": ctx.cfg.learner.budget_s,
                     **({} if young is None else {"backbone_steps": young + int(ft.steps)})},
        "metrics": {"per_task_map50_95": {t: r.map50_95 for t, r in candidate.items()},
                    "per_task_recall": {t: r.recall for t, r in candidate.items()},
                    "per_class_map50_95": {names.get(int(c), str(c)): _finite(v)
                                           for r in candidate.values()
                                           for c, v in (r.per_class_ap50_95 or {}).items()},
                    "dece": pooled_dece(candidate.values()),
                    "dece_protocol": DECE_PROTOCOL,
                    "acc_parent": _finite(verdict.acc_parent), "gate_drops": verdict.drops,
                    "gate_steps": verdict.steps, "gate_recall_steps": verdict.recall_steps,
                    "gate_false_positive_step": verdict.false_positive_step,
                    "gate_mode": verdict.mode, "not_gated": list(verdict.not_gated)},
        **export_meta,
    }
