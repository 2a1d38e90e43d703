"""``edgecl bench cl``: the class-incremental benchmark (strategies x budgets x seeds).

The protocol is in :mod:`edgecl.bench.cl_protocol`, the data view in
:mod:`edgecl.bench.cl_data`, the tables and plots in :mod:`edgecl.bench.cl_report`.  This
module parses the options, plans the runs, skips those already in ``OUT/results.json``
(same strategy, budget, seed, data hash and settings), runs the others one by one (the file
is rewritten atomically after each), then writes ``table.md`` and the PNGs and prints one
JSON summary as the last stdout line.

Strategies may carry modifiers (``er+lwf``, ``class_balanced+pl+lwf``, ``finetune+lwf``; see
:mod:`edgecl.bench.cl_protocol`); every run also records the D-ECE after its last task, raw and
after the post-hoc calibrator, with the protocol.  While it runs, a second progress bar shows
the steps and loss of the current training (or the images of the current evaluation) with the
time left.

The default configuration (built-in scenario, 5 tasks x 200 images at 160 px, finetune, er,
far and joint, budgets 5 % and 10 %, one seed, 200 steps per task and 1,000 for task 1) is the
scenario's.  For real footage see docs/bench_hituav/README.md: there task 1's model was
trained once by ultralytics' own trainer and is passed with ``--first-task-model``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

from edgecl.arguments import print_json_line, scenario_only_options
from edgecl.atomic import atomic_write_json
from edgecl.bench.cl_protocol import (
    JOINT_LABELS,
    MODIFIERS,
    NO_BUDGET_STRATEGIES,
    ProtocolSettings,
    RunSpec,
    split_strategy,
)
from edgecl.errors import ConfigError, did_you_mean
from edgecl.data.task_sources import task_split_path

DEFAULT_STRATEGIES = "finetune,er,far,joint"
DEFAULT_BUDGETS = "0.05,0.10"
RESULTS = "results.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the benchmark's options to ``parser``.

    Args:
        parser: the ``bench cl`` parser.
    """
    from edgecl.arguments import (finite_non_negative_float, finite_positive_float,
                                  non_negative_int, output_path, positive_int, seed_count,
                                  thread_count_or_default, torch_device, train_image_size)

    add = parser.add_argument
    add("--data", default="scenario",
        help="YOLO dataset folder with a tasks.yaml, the tasks.yaml itself, or 'scenario' "
             "(generate the built-in scenario into OUT/scenario; default)")
    add("--tasks", type=positive_int, default=None, help="scenario: number of tasks (default 5)")
    add("--images-per-task", type=positive_int, default=None,
        help="scenario: images per task, all splits (default 200: 140 train, 30 test)")
    add("--scenario-seed", type=non_negative_int, default=None, help="scenario: generator seed (default 0)")
    add("--strategies", default=DEFAULT_STRATEGIES,
        help="comma list of finetune, joint, er, mir, mir-virtual, far, class_balanced, each "
             "optionally with modifiers +lwf (distillation of the previous model), +pl "
             "(pseudo-labels of old classes on new images), +ider (IDER from task 2 on), e.g. "
             f"class_balanced+lwf (default {DEFAULT_STRATEGIES})")
    add("--budgets", default=DEFAULT_BUDGETS,
        help="comma list of replay budgets as fractions of the earlier tasks' training images "
             f"(0.05 or 5%%; default {DEFAULT_BUDGETS}); finetune and joint ignore them")
    add("--seeds", type=seed_count, default=1, help="number of seeds, 0..N-1 (default 1)")
    add("--ider", choices=("on", "off"), default="off", help="train with IDER (default off)")
    add("--steps-per-task", type=positive_int, default=200,
        help="optimiser steps per task from task 2 on (default 200)")
    add("--first-task-steps", type=positive_int, default=1000,
        help="optimiser steps for task 1, learnt from scratch once per seed and shared by "
             "every strategy (default 1000)")
    add("--epochs", type=non_negative_int, default=0,
        help="train this many epochs per task instead of a number of steps (0: use steps)")
    add("--task-budget-s", type=finite_non_negative_float, default=0.0, help="wall-clock cap per task (0: none)")
    add("--imgsz", type=train_image_size, default=160,
        help="image size for the scenario, training, evaluation (default 160)")
    add("--batch", type=positive_int, default=8, help="training batch size (default 8)")
    add("--lr", type=finite_positive_float, default=0.002, help="AdamW learning rate (default 0.002)")
    add("--device", type=torch_device, default="cpu",
        help="cpu, cuda, cuda:<index> or auto (default cpu)")
    add("--precision", choices=("auto", "fp32", "bf16"), default="auto",
        help="training arithmetic, as learner.precision (auto: bf16 where the device computes "
             "it natively; part of the results' key)")
    add("--threads", type=thread_count_or_default, default=0, help="torch threads (0: torch's default)")
    add("--first-task-model", default="",
        help="checkpoint to use as the model after task 1 instead of training it (its classes "
             "must be task 1's; identified in results by its sha256)")
    add("--distill-cls", type=finite_non_negative_float, default=1.0, help="+lwf: weight of the class term (default 1)")
    add("--distill-box", type=finite_non_negative_float, default=1.0, help="+lwf: weight of the box term (default 1)")
    add("--distill-conf", type=float, default=0.25,
        help="+lwf: old-model score above which a box is distilled (default 0.25)")
    add("--pseudo-conf", type=float, default=0.5,
        help="+pl: score an old-class detection needs to become a label (default 0.5)")
    add("--pseudo-iou", type=float, default=0.3,
        help="+pl: largest IoU of a pseudo-label with a labelled box (default 0.3)")
    add("--report-only", action="store_true",
        help="run nothing: write table.md and the plots from the finished runs of the plan")
    add("--out", required=True, type=output_path,
        help="output folder (results.json, table.md, PNGs, work/)")
    add("--json", action="store_true",
        help="accepted as by every benchmark: the last stdout line is always the JSON summary")


def parse_strategies(text: str) -> list[str]:
    """Split and check a strategy list.

    Args:
        text: comma-separated names.

    Returns:
        The names in order, without duplicates.

    Raises:
        ConfigError: an unknown or empty list.
    """
    from edgecl.continual.strategies import STRATEGIES

    valid = [*NO_BUDGET_STRATEGIES, *STRATEGIES]
    # any case, as --backends takes them (before: 'ER' refused, 'ONNX' taken)
    names = list(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    if not names:
        raise ConfigError("--strategies: no strategy given")
    for name in names:
        base, modifiers = split_strategy(name)
        if base not in valid:
            hint = did_you_mean(base, valid)
            raise ConfigError(f"--strategies: unknown strategy '{base}' "
                              f"(choose from {', '.join(valid)}){hint}")
        for modifier in modifiers:
            if modifier not in MODIFIERS:
                hint = did_you_mean(modifier, MODIFIERS)
                raise ConfigError(f"--strategies: unknown modifier '+{modifier}' in '{name}' "
                                  f"(choose from {', '.join(MODIFIERS)}){hint}")
        if base == "joint" and modifiers:
            raise ConfigError(f"--strategies: '{name}': joint (the upper bound) takes no modifier")
    return names


def parse_budgets(text: str) -> list[float]:
    """Parse replay budgets: fractions (``0.05``) or percentages (``5%``), in (0, 1].

    Args:
        text: comma-separated budgets.

    Returns:
        Sorted distinct fractions.

    Raises:
        ConfigError: a value that is not a number in (0, 1] (or (0 %, 100 %]).
    """
    out = set()
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        try:
            value = float(item[:-1]) / 100 if item.endswith("%") else float(item)
        except ValueError:
            raise ConfigError(f"--budgets: '{item}' is not a number") from None
        if not 0.0 < value <= 1.0:
            raise ConfigError(f"--budgets: '{item}' must be a fraction in (0, 1] (e.g. 0.05 or 5%)")
        out.add(round(value, 6))
    return sorted(out)


def plan_runs(strategies: list[str], budgets: list[float], seeds: int) -> list[RunSpec]:
    """Every run, seed by seed; finetune and joint once per seed with budget None.

    Raises:
        ConfigError: a replay strategy without any budget, or fewer than one seed.
    """
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    def no_budget(name: str) -> bool:
        return split_strategy(name)[0] in NO_BUDGET_STRATEGIES

    if not budgets and not all(no_budget(s) for s in strategies):
        raise ConfigError("--budgets: replay strategies need at least one budget")
    return [RunSpec(s, None if no_budget(s) else b, seed)
            for seed in range(seeds) for s in strategies
            for b in ([None] if no_budget(s) else budgets)]


def resolve_data(args: argparse.Namespace, out: Path, make: bool = True) -> Path:
    """The ``tasks.yaml`` to use (generating the scenario when ``--data scenario``).

    Args:
        args: parsed options.
        out: the output folder.
        make: generate the scenario when ``OUT/scenario`` is not the one asked for; False
            (``--report-only``, which writes no data) refuses instead.

    Raises:
        ConfigError: no tasks.yaml at the given place, bad scenario parameters, or (without
            ``make``) no scenario of these parameters in ``OUT/scenario``.
    """
    if args.data != "scenario":
        return task_split_path(args.data)
    from edgecl.data.scenario import MARKER_NAME, make_scenario

    folder = out / "scenario"
    if folder.is_symlink():  # the scenario it points at is the user's, not the benchmark's
        raise ConfigError(f"--out: {folder} is a link (to {os.readlink(folder)}); the benchmark "
                          f"writes its own scenario there: remove the link, or give --data the "
                          f"scenario's tasks.yaml")
    wanted = {"tasks": args.tasks, "images_per_task": args.images_per_task,
              "imgsz": args.imgsz, "seed": args.scenario_seed}
    marker = folder / MARKER_NAME
    if (folder / "tasks.yaml").is_file() and marker.is_file():
        try:
            params = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            params = None  # a damaged marker: make_scenario names it
        if isinstance(params, dict) and all(params.get(k) == v for k, v in wanted.items()):
            return folder / "tasks.yaml"
    if not make:
        raise ConfigError(f"--report-only: {folder} holds no scenario of these settings (--tasks, "
                          f"--images-per-task, --imgsz, --scenario-seed): no run was made on it")
    return make_scenario(folder, **wanted)


def _check_outputs(out: Path) -> None:
    """Refuse, before any training, an ``--out`` whose results or report cannot be written
    there: a folder that takes no new file, or a folder where ``results.json``,
    ``table.md`` or a plot goes (found, before, only when the first run had trained); and
    one whose ``table.md`` or plots no benchmark wrote (no ``results.json`` beside them: they
    were replaced).

    Raises:
        ConfigError: naming the path and what the system said.
    """
    import tempfile

    from edgecl.bench.cl_report import BARS_PNG, CURVE_PNG, FINAL_PNG, HEATMAP_PNG

    for name in (RESULTS, "table.md", BARS_PNG, CURVE_PNG, FINAL_PNG, HEATMAP_PNG):
        path = out / name
        if path.exists() and not path.is_file():
            raise ConfigError(f"--out: {path} is not a file (a folder?): the benchmark writes its "
                              f"{'results' if name == RESULTS else 'report'} there; move it away")
        if name != RESULTS and path.exists() and not (out / RESULTS).exists():
            raise ConfigError(f"--out {out} holds {name} but no {RESULTS}: no benchmark wrote "
                              f"it, and it would be replaced; give another --out")
    try:
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-check."):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write there ({exc.strerror or exc}); give "
                          f"another --out") from None


def load_results(path: Path) -> list[dict]:
    """Read ``results.json`` (empty when absent).

    Raises:
        ConfigError: the file is not a JSON list (it is left untouched).
    """
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}); move it away to start afresh") from None
    except (RecursionError, ValueError) as exc:  # nested thousands deep; an integer of 5000 digits
        raise ConfigError(f"{path}: not a results file ({str(exc).splitlines()[0][:120]}); move "
                          f"it away to start afresh") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path}: expected a list of runs; move it away to start afresh")
    seen: dict[str, int] = {}
    for index, record in enumerate(data, 1):
        problem = _record_problem(record)
        key = json.dumps([record.get(k) for k in ("strategy", "budget", "seed", "data_hash",
                                                  "settings")], sort_keys=True, default=str)
        if not problem and key in seen:  # counted as two seeds of one run
            problem = f"it repeats run {seen[key]}"
        if problem:
            raise ConfigError(f"{path}: run {index} is damaged ({problem}); remove that run from "
                              f"the file (it is then run again) or move the file away")
        seen[key] = index
    return data


def _number(value, low: float = -1e6, high: float = 1e6) -> bool:
    """A finite number (not a bool) in ``[low, high]``."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value) and low <= value <= high
    except OverflowError:  # an integer of thousands of digits
        return False


def _shown(value) -> str:
    """``repr`` of a value from results.json, at most 40 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's digit limit
        text = "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."


def _record_problem(record: dict) -> str:
    """What a results.json run lacks for the report (``""``: nothing): the fields
    :func:`run_record` writes, with their types."""
    if not isinstance(record.get("strategy"), str):
        return "strategy is not a name"
    if not (record.get("budget") is None or _number(record["budget"], 0.0, 1.0)):
        return f"budget is {_shown(record['budget'])}, not a fraction in [0, 1]"
    if not _number(record.get("seed"), 0):
        return f"seed is {_shown(record.get('seed'))}, not a number >= 0"
    for name in ("seconds", "first_task_s"):
        if not ((name == "first_task_s" and record.get(name) is None)
                or _number(record.get(name), 0.0, 1e9)):
            return f"{name} is {_shown(record.get(name))}, not a number of seconds"
    for name in ("acc", "bwt", "forgetting", "dece"):  # fractions of mAP, or their changes
        if not (record.get(name) is None or _number(record[name], -1.0, 1.0)):
            return f"{name} is {_shown(record[name])}, not a number in [-1, 1]"
    tasks, matrix = record.get("tasks"), record.get("matrix")
    if not isinstance(tasks, list) or not tasks:
        return "tasks is not a list of task names"
    if not (isinstance(matrix, list) and len(matrix) == len(tasks)
            and all(isinstance(row, list) and len(row) == len(tasks)
                    and all(v is None or _number(v, 0.0, 1.0) for v in row) for row in matrix)):
        return f"matrix is not {len(tasks)} x {len(tasks)} mAP values in [0, 1]"
    calibration = record.get("calibration")
    if calibration is not None and not (
            isinstance(calibration, dict)
            and all(calibration.get(k) is None or _number(calibration[k], 0.0, 1.0)
                    for k in ("dece_raw", "dece_posthoc"))):
        return "calibration is not D-ECE figures"
    return ""


def _finite(value) -> float | None:
    """JSON has no NaN: map it to None."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def run_record(spec: RunSpec, settings: ProtocolSettings, view, outcome: dict) -> dict:
    """The results.json entry of a finished run (metrics from the accuracy matrix).

    Args:
        spec: the run.
        settings: protocol settings.
        view: the :class:`~edgecl.bench.cl_data.DataView`.
        outcome: what :func:`~edgecl.bench.cl_protocol.run_protocol` returned.

    Returns:
        JSON-ready dict.
    """
    import numpy as np

    from edgecl.continual import metrics

    matrix = outcome["matrix"]
    dece = [v for v in outcome["dece"] if v is not None and math.isfinite(v)]
    return {"strategy": spec.strategy, "budget": spec.budget, "seed": spec.seed,
            "ider": settings.ider, "data_hash": view.data_hash, "settings": settings.key(),
            "tasks": list(view.task_names),
            "matrix": [[_finite(v) for v in row] for row in matrix],
            "acc": _finite(metrics.acc(matrix)), "bwt": _finite(metrics.bwt(matrix)),
            "forgetting": _finite(metrics.mean_forgetting(matrix)),
            "forgetting_per_task": [_finite(v) for v in metrics.forgetting(matrix)],
            "dece": _finite(np.mean(dece)) if dece else None,
            "dece_per_task": [_finite(v) for v in outcome["dece"]],
            "calibration": _calibration_record(outcome.get("calibration")),
            "seconds": round(outcome["seconds"], 1),
            "first_task_s": round(outcome.get("first_task_s", 0.0), 1), "log": outcome["tasks"],
            **({"joint_labels": JOINT_LABELS} if spec.base == "joint" else {})}


def _calibration_record(report: dict | None) -> dict | None:
    if not report:
        return None
    return {"dece_raw": _finite(report.get("dece_raw")),
            "dece_posthoc": _finite(report.get("dece_posthoc")),
            "n_detections": report.get("n_detections"), "protocol": report.get("protocol")}


def same_run(record: dict, spec: RunSpec, settings: ProtocolSettings, data_hash: str) -> bool:
    """Whether a stored record is the run ``spec`` under these settings and data (a ``joint``
    record also with today's labelling of its replayed images, :data:`JOINT_LABELS`)."""
    return (record.get("strategy") == spec.strategy and record.get("budget") == spec.budget
            and record.get("seed") == spec.seed and record.get("data_hash") == data_hash
            and record.get("settings") == settings.key()
            and (spec.base != "joint" or record.get("joint_labels") == JOINT_LABELS))


def _settings(args: argparse.Namespace) -> ProtocolSettings:
    for name in ("steps_per_task", "first_task_steps", "imgsz", "batch"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.epochs < 0 or not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--epochs must be >= 0 and --lr a finite number > 0, got "
                          f"{args.epochs} and {args.lr}")
    for name in ("distill_cls", "distill_box", "task_budget_s"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value}")
    for name in ("distill_conf", "pseudo_conf", "pseudo_iou"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(args, name)}")
    first = ""
    if args.first_task_model:
        from edgecl.input_files import regular_file_problem

        path = Path(args.first_task_model).expanduser()
        special = regular_file_problem(path)
        if special:  # a folder, a pipe, a device: before, "no file at" it
            raise ConfigError(f"--first-task-model: {path} is {special}")
        if not path.is_file():
            raise ConfigError(f"--first-task-model: no file at {path}")
        first = str(path.resolve())
        _check_first_task_model(path, args.imgsz)
    return ProtocolSettings(imgsz=args.imgsz, batch=args.batch, lr=args.lr,
                            steps_per_task=args.steps_per_task,
                            first_task_steps=args.first_task_steps, epochs=args.epochs,
                            task_budget_s=args.task_budget_s, ider=args.ider == "on",
                            distill_cls=args.distill_cls, distill_box=args.distill_box,
                            distill_conf=args.distill_conf, pseudo_conf=args.pseudo_conf,
                            pseudo_iou=args.pseudo_iou, first_task_model=first,
                            device=args.device, precision=args.precision)


def _check_first_task_model(path: Path, imgsz: int) -> None:
    """Refuse a task-1 checkpoint that does not load, before any data is made (a junk file was
    refused only after the scenario and the work folder were written); warn when it was
    trained at another input size than ``--imgsz`` (a 320 px model evaluated at 64 px scored
    0 in every cell, without a word).

    Raises:
        ConfigError: the checkpoint cannot be loaded (what the loader says).
    """
    from edgecl.errors import ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint, longer_side

    try:
        trained = longer_side(load_checkpoint(path)[1].get("imgsz"))
    except ModelLoadError as exc:
        raise ConfigError(f"--first-task-model: {exc}") from None
    if trained and trained != int(imgsz):
        logging.getLogger(__name__).warning(
            "--first-task-model %s was trained at %d px; this run trains and evaluates every "
            "task at --imgsz %d (give --imgsz %d to match it)", path, trained, imgsz, trained)


def _architecture(path) -> str:
    """The architecture of a checkpoint as the header names it (``YOLOv8n`` for a model built
    from ``yolov8n.yaml``; the header said YOLO11n whatever the task-1 model was)."""
    from edgecl.errors import ModelLoadError
    from edgecl.models.checkpoint import load_checkpoint

    try:
        model, _ = load_checkpoint(path)
    except ModelLoadError:  # the run refuses it with its own line
        return "the given model"
    yaml = getattr(model, "yaml", None)
    stem = Path(str(yaml.get("yaml_file") or "")).stem if isinstance(yaml, dict) else ""
    if not stem:
        return "a custom architecture"
    return "YOLO" + stem[4:] if stem.lower().startswith("yolo") else stem


def _header(yaml_path: Path, view, settings: ProtocolSettings, seeds: int) -> list[str]:
    training = (f"{settings.epochs} epoch(s) per task" if settings.epochs else
                f"{settings.first_task_steps} steps for task 1, {settings.steps_per_task} per later task")
    start = "YOLO11n from scratch"
    if settings.first_task_model:
        start = (f"{_architecture(settings.first_task_model)}, task 1's model given "
                 f"(`{settings.first_task_model}`)")
        training = (f"{settings.epochs} epoch(s) per later task" if settings.epochs else
                    f"{settings.steps_per_task} steps per later task")
    sizes = ", ".join(f"{n} {len(tr)}/{len(te)}" for n, tr, te in
                      zip(view.task_names, view.train, view.test))
    return [f"- data: `{yaml_path}` (hash {view.data_hash}); train/test images per task: {sizes}",
            "- classes per task: " + "; ".join(
                f"{n}: {', '.join(view.names[c] for c in classes)}"
                for n, classes in zip(view.task_names, view.task_classes)),
            (f"- {start}, {settings.imgsz} px, batch {settings.batch}, AdamW lr "
             f"{settings.lr}, {training}; IDER {'on' if settings.ider else 'off'}; "
             f"seeds 0..{seeds - 1}"),
            ("- ACC: mean box mAP50-95 over all tasks after the last task; BWT: mean over earlier "
             "tasks of (final mAP - mAP right after learning it); forgetting: mean of (best "
             "earlier mAP - final mAP)"),
            (f"- modifiers: +lwf distillation (class weight {settings.distill_cls}, box weight "
             f"{settings.distill_box}, box where the old score > {settings.distill_conf}); +pl "
             f"pseudo-labels of old classes (score >= {settings.pseudo_conf}, IoU with a "
             f"labelled box <= {settings.pseudo_iou}); +ider IDER from task 2 on")]


class _Bars:
    """Two tqdm bars: finished tasks over all runs, and steps/images within the current phase
    (training steps with the loss, evaluation images), each with its time left.

    When stderr is not a terminal (a log file, a CI job) the bars are off: their carriage
    returns and cursor moves made one unreadable line of a log. One plain line per finished
    task says the progress there instead.
    """

    def __init__(self, total_tasks: int):
        from tqdm import tqdm

        self._tqdm = tqdm
        try:
            self.plain = not sys.stderr.isatty()
        except (AttributeError, ValueError):  # replaced by an object without it, or closed
            self.plain = True
        self.tasks = tqdm(total=total_tasks, desc="bench cl", unit="task", file=sys.stderr,
                          mininterval=1.0, dynamic_ncols=True, position=0, disable=self.plain)
        self.total_tasks = total_tasks
        self.done_tasks = 0
        self.started = time.monotonic()
        self.inner = None
        self.label = ""

    def task_done(self) -> None:
        """Count a finished task (a plain line when the bars are off)."""
        self.tasks.update(1)
        self.done_tasks += 1
        if self.plain:
            print(f"bench cl: {self.done_tasks}/{self.total_tasks} tasks done ({self.label}), "
                  f"{time.monotonic() - self.started:.0f} s", file=sys.stderr, flush=True)

    def phase(self, desc: str, total: int, unit: str) -> None:
        """Start a phase bar (``total`` 0: unknown)."""
        if self.inner is not None:
            self.inner.close()
        self.inner = self._tqdm(total=total or None, desc=f"  {self.label}: {desc}", unit=unit,
                                file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
                                position=1, leave=False, disable=self.plain)

    def advance(self, n: int = 1, postfix: str = "") -> None:
        """Advance the phase bar."""
        if self.inner is not None:
            self.inner.update(n)
            if postfix:
                self.inner.set_postfix_str(postfix, refresh=False)

    def close(self) -> None:
        """Close both bars."""
        if self.inner is not None:
            self.inner.close()
        self.tasks.close()


def _execute(pending: list[RunSpec], done: list[dict], settings, view, results_path: Path) -> None:
    from tqdm import tqdm

    from edgecl.bench.cl_protocol import run_protocol
    from edgecl.bench.cl_report import group_label

    bars = _Bars(len(pending) * view.n_tasks)
    try:
        for spec in pending:
            label = f"{group_label(spec.strategy, spec.budget)} seed {spec.seed}"
            bars.tasks.set_postfix_str(label)
            bars.label = label
            outcome = run_protocol(view, spec, settings, on_task=lambda _t: bars.task_done(),
                                   progress=bars)
            record = run_record(spec, settings, view, outcome)
            done.append(record)
            atomic_write_json(results_path, done)
            tqdm.write(_run_line(label, record), file=sys.stdout)
    finally:
        bars.close()


def _run_line(label: str, record: dict) -> str:
    """One human-readable line for a finished run."""
    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    cal = record.get("calibration") or {}
    first = record.get("first_task_s") or 0.0
    shared = (record.get("log") or [{}])[0].get("shared", True)
    timing = (f"{record['seconds'] - first:.0f} s after task 1"
              + ("" if shared else f"; task 1, shared by every run of this seed, {first:.0f} s"))
    return (f"{label}: ACC {pct(record['acc'])} BWT {pct(record['bwt'])} forgetting "
            f"{pct(record['forgetting'])} D-ECE {num(cal.get('dece_raw'))} -> post-hoc "
            f"{num(cal.get('dece_posthoc'))} ({timing})")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark (see the module docstring).

    Args:
        args: parsed options.

    Returns:
        0 on success.

    Raises:
        ConfigError: bad options, data or results file.
    """
    started = time.monotonic()
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # one line per finished run is the report; the fine-tuner's per-task INFO line is noise
        logging.getLogger("edgecl.continual.finetune").setLevel(logging.WARNING)
    scenario_only_options(args, {"tasks": 5, "images_per_task": 200, "scenario_seed": 0})
    strategies, budgets = parse_strategies(args.strategies), parse_budgets(args.budgets)
    plan = plan_runs(strategies, budgets, args.seeds)
    settings = _settings(args)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    from edgecl.bench.cl_data import prepare_view
    from edgecl.bench.cl_report import write_report
    from edgecl.data.tasks import load_tasks, refuse_trained_test_images

    if args.device.startswith("cuda"):  # before the scenario is generated, naming the option
        from edgecl.continual.finetune import resolve_device

        try:
            resolve_device(args.device)
        except ConfigError as exc:
            raise ConfigError(str(exc).replace("learner.device=", "--device ")) from None
    if args.data == "scenario" and args.tasks < 2:
        raise ConfigError(f"--tasks {args.tasks}: a continual-learning benchmark needs at least "
                          f"2 tasks (a learnt one, then a new one whose learning may forget it)")
    out = Path(args.out).expanduser().resolve()
    if args.report_only and not (out / RESULTS).is_file():
        raise ConfigError(f"--report-only: no finished run to report: {out / RESULTS} does not "
                          f"exist")
    made = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        _check_outputs(out)
        load_results(out / RESULTS)  # a damaged file: said before any data is made
        yaml_path = resolve_data(args, out, make=not args.report_only)
        taskset = refuse_trained_test_images(load_tasks(yaml_path))
        if len(taskset.tasks) < 2:
            raise ConfigError(f"--data {args.data}: a continual-learning benchmark needs at "
                              f"least 2 tasks; {yaml_path} has {len(taskset.tasks)}")
    except ConfigError:
        if made and not any(out.iterdir()):  # a refused start leaves no empty --out behind
            out.rmdir()
        raise
    view = prepare_view(taskset, out / "work", write=not args.report_only)
    results_path = out / RESULTS
    done = load_results(results_path)
    pending = [s for s in plan if not any(same_run(r, s, settings, view.data_hash) for r in done)]
    finished_before = len(plan) - len(pending)
    if args.report_only:
        pending = []
    _execute(pending, done, settings, view, results_path)
    mine = [r for r in done if any(same_run(r, s, settings, view.data_hash) for s in plan)]
    if args.report_only and not mine:
        raise ConfigError(f"--report-only: none of the {len(done)} run(s) in {results_path} was "
                          f"made with these strategies, budgets, seeds, settings and data")
    missing = [s for s in plan if not any(same_run(r, s, settings, view.data_hash) for r in mine)]
    left_out = ", ".join(f"{m.strategy}" + (f" {m.budget:.0%}" if m.budget is not None else "")
                         + f" seed {m.seed}" for m in missing[:6]) \
        + (" ..." if len(missing) > 6 else "")
    table, pngs, summary = write_report(mine, view.task_names, out,
                                        _header(yaml_path, view, settings, args.seeds))
    if missing:  # before: a table without them, and not a word (an interrupted run's report)
        from edgecl.atomic import atomic_write_text

        logging.getLogger(__name__).warning(
            "the report leaves out %d planned run(s) not made yet: %s; run the same command "
            "without --report-only to make them (finished runs are reused)", len(missing),
            left_out)
        # said in the file people share too, not only on stderr
        atomic_write_text(table, Path(table).read_text(encoding="utf-8")
                          + f"\nNot in this table: {left_out} (planned, not made yet).\n")
    print_json_line({
        "out": str(out), "results": str(results_path), "table": str(table),
        "plots": [str(p) for p in pngs], "data_hash": view.data_hash, "runs": len(mine),
        "new_runs": len(pending), "skipped_runs": finished_before,
        "missing_runs": [{"strategy": m.strategy, "budget": m.budget, "seed": m.seed}
                         for m in missing],
        "wall_s": round(time.monotonic() - started, 1),
        "summary": {label: {"strategy": e["strategy"], "budget": e["budget"], "seeds": e["seeds"],
                            "acc_pct": _pct(e["acc"]), "bwt_pct": _pct(e["bwt"])}
                    for label, e in summary.items()}})
    return 0


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)
