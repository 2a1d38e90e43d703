"""``edgecl bench learn``: an edgecl learning round's training against ultralytics' own trainer.

One process, the same images, image size, batch and thread count for both:

1. **Parent**: a YOLO11n trained on the first task (edgecl's first-round fine-tuner, cached in
   ``--cache-dir`` so a rerun skips it). Both trainers start each run from this checkpoint.
2. **Throughput** (``--steps`` steps, ``--repeats`` times, interleaved ``E U U E E U ...`` so
   that a change of machine load hits both alike): edgecl's :class:`FineTuner` as
   ``edgecl.continual.round`` runs it (later round: ``learner.freeze_layers``, BatchNorm
   re-estimation included) and ``YOLO(parent).train(...)`` with the same optimiser (AdamW),
   learning rate and augmentation, one optimiser step per batch (``nbs=batch``), no warm-up,
   ``plots=False, amp=False, workers=0, val=False``. Images per second = steps x batch over
   the wall time from the trainer call to its last step (setup and dataset scan included).
3. **Equal wall time**: each trainer gets the same ``--seconds`` from its call, then both are
   scored by edgecl's evaluator on the held-out test images of both tasks (mAP50-95).
4. **Round split**: one real round (``edgecl.continual.round.run_round``) on a scratch state
   directory whose memory holds the first task (learnt) and the second (new): seconds of
   ``select``, ``train``, ``evaluate``, ``calibrate``, ``export`` and ``stage``.

Medians over the repeats are reported; per-repeat figures are kept in ``repeats``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.errors import ConfigError

SCENARIO_TASKS = 2
SCENARIO_IMAGES_PER_TASK = 150
PARTS = ("throughput", "map", "round")
"""The benchmark's parts, in the order they run (``--skip`` names some of them)."""
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "edgecl" / "bench-learn"


def add_arguments(parser) -> None:
    """Arguments of ``edgecl bench learn``."""
    from edgecl.arguments import finite_positive_float, positive_int, thread_count, train_image_size

    parser.add_argument("--data", default="scenario",
                        help="DIR/tasks.yaml with at least 2 tasks, or 'scenario' (built in)")
    parser.add_argument("--steps", type=positive_int, default=30, help="training steps per throughput run")
    parser.add_argument("--imgsz", type=train_image_size, default=None,
                        help="image size (default learner.imgsz)")
    parser.add_argument("--batch", type=positive_int, default=None, help="batch (default learner.batch)")
    parser.add_argument("--threads", type=thread_count, default=None,
                        help="torch threads of both trainers (default learner.torch_threads)")
    parser.add_argument("--repeats", type=positive_int, default=3, help="interleaved throughput repeats")
    parser.add_argument("--seconds", type=finite_positive_float, default=120.0,
                        help="equal wall time each trainer gets before the held-out mAP, s")
    parser.add_argument("--map-repeats", type=positive_int, default=1,
                        help="equal-time runs per trainer (interleaved; the median is reported)")
    parser.add_argument("--parent-steps", type=positive_int, default=300,
                        help="steps of the parent model on the first task (cached)")
    parser.add_argument("--skip", type=skip_parts, default=frozenset(),
                        help="comma list of parts to leave out: throughput, map, round")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR),
                        help="where the scenario, the parent model and scratch runs are kept")
    parser.add_argument("--config", help="deployment YAML whose learner settings edgecl uses")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. learner.freeze_layers=10")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def skip_parts(text: str) -> frozenset[str]:
    """argparse type of ``--skip``: a comma list of parts to leave out, at least one kept.

    Args:
        text: e.g. ``"map,round"`` (empty: skip nothing).

    Returns:
        The named parts.

    Raises:
        argparse.ArgumentTypeError: an unknown part, or every part named (nothing would run).
    """
    parts = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(parts - set(PARTS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part {', '.join(map(repr, unknown))}; choose "
                                         f"from {', '.join(PARTS)}")
    if parts >= set(PARTS):
        raise argparse.ArgumentTypeError(f"skipping {', '.join(PARTS)} leaves nothing to run")
    return parts


@dataclass(frozen=True)
class Setup:
    """What every run of the benchmark shares.

    Attributes:
        cfg: configuration (learner section at the benchmark's image size and batch).
        names: class id -> name (both tasks).
        parent: the parent checkpoint both trainers start from.
        new: the round's new images (second task, train split).
        replay: replayed images (first task, train split, ``replay.samples`` at random).
        held_out: held-out images (test split of both tasks).
        work: scratch folder.
        threads: torch threads of both trainers.
    """

    cfg: object
    names: dict
    parent: Path
    new: tuple[Path, ...]
    replay: tuple[Path, ...]
    held_out: tuple[Path, ...]
    work: Path
    threads: int

    @property
    def images(self) -> list[Path]:
        """Training images (new + replayed)."""
        return [*self.new, *self.replay]


def load_taskset(data: str, cache_dir: Path, imgsz: int):
    """The benchmark's dataset: the built-in scenario (made once per image size) or a tasks.yaml.

    Args:
        data: ``scenario`` or a path to a tasks.yaml / dataset folder.
        cache_dir: where the scenario is written.
        imgsz: image size of the scenario.

    Returns:
        ``(TaskSet, tasks.yaml path)``.

    Raises:
        ConfigError: the dataset has fewer than two tasks (a round needs a learnt one and a new one).
    """
    from edgecl.data.scenario import make_scenario
    from edgecl.data.task_sources import task_split_path
    from edgecl.data.tasks import load_tasks, refuse_trained_test_images

    if data == "scenario":
        out = cache_dir / f"scenario-{imgsz}"
        yaml_path = out / "tasks.yaml"
        if not yaml_path.is_file():
            yaml_path = make_scenario(out, tasks=SCENARIO_TASKS,
                                      images_per_task=SCENARIO_IMAGES_PER_TASK, imgsz=imgsz, seed=0)
    else:
        yaml_path = task_split_path(data)
    taskset = refuse_trained_test_images(load_tasks(yaml_path))
    if len(taskset.tasks) < 2:
        raise ConfigError(f"bench learn needs a dataset with at least 2 tasks (a learnt one and a "
                          f"new one); {data} has {len(taskset.tasks)}")
    return taskset, yaml_path


def train_parent(taskset, yaml_path: Path, cfg, cache_dir: Path, steps: int, threads: int,
                 progress) -> Path:
    """Train (or reuse) the parent: YOLO11n for every class of the dataset, on the first task.

    Args:
        taskset: the dataset's tasks.
        yaml_path: its tasks.yaml (part of the cache key, with the settings).
        cfg: configuration (``learner`` section used).
        cache_dir: where the checkpoint is kept.
        steps: training steps.
        threads: torch threads.
        progress: ``callable(str)`` for progress lines.

    Returns:
        Path of the parent checkpoint.
    """
    from edgecl.bench.trained_model import cached_trained_model

    return cached_trained_model(list(taskset.tasks[0].train), dict(taskset.names), cfg.learner,
                                cache_dir, steps=steps, prefix="parent",
                                key_parts=(str(Path(yaml_path).resolve()),), threads=threads,
                                progress=progress, what=f"on task {taskset.tasks[0].name}")


def load_parent(path: Path):
    """Load the parent checkpoint as a fresh DetectionModel (float32, CPU)."""
    from edgecl.models.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    return model.float().cpu()


def edgecl_train(setup: Setup, *, steps: int, budget_s: float) -> dict:
    """Train the parent as a later learning round does (``FineTuner``, ``learner`` settings,
    with LwF distillation against the parent when ``learner.distill_cls_weight`` or
    ``distill_box_weight`` is above 0, as the runtime's rounds do by default; the teacher is
    copied from the parent at round start, inside the clock, as in a round).

    Args:
        setup: the benchmark's shared setup.
        steps: step limit.
        budget_s: wall-clock budget, seconds (the round's own budget rule).

    Returns:
        ``steps``, ``seconds`` (whole call), ``images_per_s`` and ``model``.
    """
    import torch

    from edgecl.config import IderConfig
    from edgecl.continual.finetune import FineTuner

    torch.set_num_threads(setup.threads)
    torch.manual_seed(0)
    model = load_parent(setup.parent)
    lc = setup.cfg.learner
    hooks = []
    if lc.distill_cls_weight > 0 or lc.distill_box_weight > 0:
        from edgecl.continual.distill import DistillHook

        # the hook copies the model at round start, before the first step: the parent itself
        hooks.append(DistillHook(model, cls_weight=lc.distill_cls_weight,
                                 box_weight=lc.distill_box_weight, conf=lc.distill_conf))
    t0 = time.perf_counter()
    result = FineTuner(model, setup.cfg.learner, IderConfig(), hooks=hooks).run(
        list(setup.new), list(setup.replay), budget_s=budget_s, max_steps=steps, epochs=10**6,
        device="cpu", freeze_layers=setup.cfg.learner.freeze_layers)
    seconds = time.perf_counter() - t0
    images = result.steps * setup.cfg.learner.batch
    return {"steps": result.steps, "seconds": round(seconds, 2),
            "images_per_s": round(images / seconds, 3), "model": model}


class _StopAt:
    """ultralytics callback: counts optimiser steps and stops at a step limit or a time budget
    (the same rule as edgecl's loop: stop when one more step would overrun the budget)."""

    def __init__(self, t0: float, max_steps: int, budget_s: float, threads: int):
        self.t0 = t0
        self.max_steps = max_steps
        self.budget_s = budget_s
        self.threads = threads
        self.steps = 0
        self.last = t0

    def on_pretrain_routine_start(self, trainer) -> None:
        """Apply the benchmark's thread count (ultralytics' select_device set its own)."""
        import torch

        torch.set_num_threads(self.threads)

    def on_train_batch_end(self, trainer) -> None:
        """Count the step; ask the trainer to stop once a limit is reached."""
        self.steps += 1
        self.last = time.perf_counter()
        elapsed = self.last - self.t0
        if self.steps >= self.max_steps or elapsed + elapsed / self.steps > self.budget_s:
            trainer.stop = True


def _ultralytics_data(setup: Setup) -> Path:
    """A data.yaml for ultralytics with the same training images and the held-out ones as val."""
    import yaml

    folder = setup.work / "ultralytics-data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.txt").write_text("".join(f"{p}\n" for p in setup.images), encoding="utf-8")
    (folder / "val.txt").write_text("".join(f"{p}\n" for p in setup.held_out), encoding="utf-8")
    data = {"path": str(folder), "train": str(folder / "train.txt"), "val": str(folder / "val.txt"),
            "names": {int(k): str(v) for k, v in setup.names.items()}}
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def ultralytics_train(setup: Setup, *, steps: int, budget_s: float) -> dict:
    """Train the parent with ultralytics' own trainer (``YOLO(parent).train``), offline.

    Same optimiser (AdamW), learning rate, augmentation, image size, batch and threads as the
    edgecl run; one optimiser step per batch (``nbs=batch``), no warm-up; nothing downloaded.

    Args:
        setup: the benchmark's shared setup.
        steps: step limit.
        budget_s: wall-clock budget from the call, seconds.

    Returns:
        ``steps``, ``seconds`` (call to last step), ``images_per_s`` and ``model``.
    """
    from edgecl.continual.yolo_train import AUGMENT_OVERRIDES
    from edgecl.ultra import ensure_offline

    ensure_offline()
    from ultralytics import YOLO

    lc = setup.cfg.learner
    data = _ultralytics_data(setup)
    yolo = YOLO(str(setup.parent), task="detect")
    t0 = time.perf_counter()
    stop = _StopAt(t0, steps, budget_s, setup.threads)
    yolo.add_callback("on_pretrain_routine_start", stop.on_pretrain_routine_start)
    yolo.add_callback("on_train_batch_end", stop.on_train_batch_end)
    yolo.train(data=str(data), epochs=10**4, imgsz=lc.imgsz, batch=lc.batch, nbs=lc.batch,
               workers=0, device="cpu", plots=False, amp=False, val=False,
               optimizer="AdamW", lr0=lc.lr, warmup_epochs=0, cache=False, seed=0,
               deterministic=False, verbose=False, project=str(setup.work / "ultralytics-runs"),
               name="train", exist_ok=True, **AUGMENT_OVERRIDES)
    seconds = stop.last - t0
    images = stop.steps * lc.batch
    return {"steps": stop.steps, "seconds": round(seconds, 2),
            "images_per_s": round(images / max(seconds, 1e-9), 3),
            "model": yolo.model.float().cpu().eval()}


def held_out_map(model, setup: Setup) -> float:
    """mAP50-95 of a model on the held-out images of both tasks (edgecl's evaluator).

    Args:
        model: DetectionModel.
        setup: the benchmark's shared setup.

    Returns:
        mAP50-95 over every class.
    """
    import torch

    from edgecl.continual.evaluate import evaluate_model
    from edgecl.continual.round import EVAL_CONF, EVAL_MAX_DET
    from edgecl.models.base import InferenceOptions
    from edgecl.models.torch_backend import TorchBackend

    torch.set_num_threads(setup.threads)
    opts = InferenceOptions(conf=EVAL_CONF, iou=setup.cfg.model.iou, max_det=EVAL_MAX_DET,
                            threads=setup.threads)
    backend = TorchBackend.from_model(model, setup.names, setup.cfg.learner.imgsz, opts)
    return float(evaluate_model(backend, [str(p) for p in setup.held_out]).map50_95)


def round_split(setup: Setup, taskset, steps: int) -> dict:
    """Run one real later round on a scratch state directory and return its time split.

    The memory gets the first task's images (marked learnt in the learner state) and then the
    second task's (new); ``model.path`` is the parent checkpoint, so the round is not a first one
    (replay is chosen, ``learner.freeze_layers`` applies, the parent is evaluated for the gate).
    The gate is opened wide so that calibration and export run and are timed (TensorRT off).

    Args:
        setup: the benchmark's shared setup.
        taskset: the dataset's tasks.
        steps: training steps of the round.

    Returns:
        ``select_s`` ... ``stage_s``, ``round_status``, ``round_steps``, ``round_train_images``.
    """
    import torch

    from edgecl.continual.memory import Sample, memory_from_config
    from edgecl.continual.round import run_round
    from edgecl.continual.round_state import LearnerState, save_state
    from edgecl.data.images import read_image
    from edgecl.data.labels import label_path_for, read_yolo_labels

    state = setup.work / "round-state"
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    cfg = setup.cfg
    cfg = replace(cfg, state_dir=str(state), model=replace(cfg.model, path=str(setup.parent)),
                  learner=replace(cfg.learner, max_steps=steps, budget_s=1e6),
                  # the gate accepts whatever a short round gives, so that calibrate and export
                  # (which only an accepted candidate gets) are timed too
                  gate=replace(cfg.gate, max_forgetting=1.0, min_acc_delta=-1.0),
                  export=replace(cfg.export, tensorrt="off"))
    from edgecl.models.classes import ClassRegistry

    ClassRegistry(state).seed(dict(sorted(setup.names.items())))  # as a device's import makes it
    memory = memory_from_config(cfg, dict(setup.names))
    last_ids = []
    try:
        for task in taskset.tasks[:2]:
            last_id = 0
            for path in [*task.train, *task.test]:
                labels = read_yolo_labels(label_path_for(path)).labels
                sample_id = memory.add(Sample(image=read_image(path), labels=labels,
                                              task=task.name, source=str(path)))
                last_id = max(last_id, sample_id or 0)
            last_ids.append(last_id)
    finally:
        memory.close()
    first = taskset.tasks[0]
    save_state(state, LearnerState(round=1, last_sample_id=last_ids[0], task_order=[first.name],
                                   learnt_tasks=[first.name],
                                   task_classes={first.name: sorted(first.classes)}))
    torch.set_num_threads(setup.threads)
    result = run_round(cfg, reason="bench learn")
    split = {f"{phase}_s": round(float(result.timings_s.get(phase, 0.0)), 2)
             for phase in ("select", "train", "evaluate", "calibrate", "export", "stage")}
    split.update({"round_status": result.status.value, "round_reason": result.reason,
                  "round_steps": result.steps, "round_new_samples": result.new_samples,
                  "round_replayed": result.replayed, "round_s": result.seconds})
    return split


def make_setup(args, progress) -> tuple[Setup, object]:
    """Build the configuration, dataset, parent and image lists the runs share.

    Args:
        args: parsed command-line arguments.
        progress: ``callable(str)`` for progress lines.

    Returns:
        ``(Setup, TaskSet)``.

    Raises:
        ConfigError: a bad configuration or a dataset with fewer than two tasks.
    """
    from edgecl.config import load_config

    cfg = load_config(args.config, list(args.overrides))
    lc = cfg.learner
    lc = replace(lc, imgsz=args.imgsz if args.imgsz is not None else lc.imgsz,
                 batch=args.batch if args.batch is not None else lc.batch)
    cfg = replace(cfg, learner=lc, model=replace(cfg.model, imgsz=lc.imgsz))
    threads = int(args.threads if args.threads is not None else lc.torch_threads)
    _check_learner_settings(cfg)
    cache_dir = Path(args.cache_dir).expanduser().resolve()  # ultralytics joins relative paths twice
    cache_dir.mkdir(parents=True, exist_ok=True)
    taskset, yaml_path = load_taskset(args.data, cache_dir, lc.imgsz)
    parent = train_parent(taskset, yaml_path, cfg, cache_dir, args.parent_steps, threads, progress)
    first, second = taskset.tasks[0], taskset.tasks[1]
    rng = random.Random(0)
    replay = rng.sample(list(first.train), min(cfg.replay.samples, len(first.train)))
    work = cache_dir / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    setup = Setup(cfg, dict(taskset.names), parent, tuple(second.train), tuple(replay),
                  tuple([*first.test, *second.test]), work, threads)
    return setup, taskset


def _check_learner_settings(cfg) -> None:
    """Refuse learner settings the benchmark's YOLO11n cannot train with (``freeze_layers``
    past its head, IDER on an end-to-end head) before minutes of the parent's training.

    Raises:
        ConfigError: the settings and the model do not fit.
    """
    from edgecl.continual.finetune import settings_problem
    from edgecl.ultra import build_detection_model

    problem = settings_problem(build_detection_model(1), cfg.learner.freeze_layers,
                               cfg.ider.enabled, "the benchmark's YOLO11n")
    if problem:
        raise ConfigError(problem)


def _median(values: list[float]) -> float:
    """Median rounded to 3 decimals (NaN for no values)."""
    return round(statistics.median(values), 3) if values else float("nan")


def run_benchmark(args, progress=None) -> dict:
    """Run the benchmark and return its JSON-ready result.

    Args:
        args: parsed command-line arguments (see :func:`add_arguments`).
        progress: ``callable(str)`` for progress lines (default: stderr).

    Returns:
        The result dict (see the module docstring and the README's benchmark section).
    """
    import torch

    from edgecl.continual.finetune import resolve_precision
    from edgecl.ultra import ensure_offline

    ensure_offline()
    progress = progress or (lambda line: print(f"[bench learn] {line}", file=sys.stderr, flush=True))
    skip = args.skip if isinstance(args.skip, frozenset) else skip_parts(args.skip)
    setup, taskset = make_setup(args, progress)
    lc = setup.cfg.learner
    # edgecl's arithmetic (ultralytics' trainer runs float32 on a CPU: amp=False)
    precision = resolve_precision(lc.precision, torch.device("cpu"))
    out: dict = {"data": args.data, "parent": str(setup.parent),  # for bench perf --model
                 "imgsz": lc.imgsz, "batch": lc.batch, "steps": args.steps,
                 "threads": setup.threads, "freeze_layers": lc.freeze_layers,
                 "edgecl_precision": precision,
                 "train_images": len(setup.images), "replay_images": len(setup.replay),
                 "held_out_images": len(setup.held_out), "repeats": []}
    if "throughput" not in skip:
        runs = {"edgecl": edgecl_train, "ultralytics": ultralytics_train}
        order = ["edgecl", "ultralytics", "ultralytics", "edgecl"]
        for i in range(args.repeats):
            name_a, name_b = order[(2 * i) % 4], order[(2 * i + 1) % 4]
            row = {}
            for name in (name_a, name_b):
                res = runs[name](setup, steps=args.steps, budget_s=1e9)
                row[name] = {k: res[k] for k in ("steps", "seconds", "images_per_s")}
                progress(f"repeat {i + 1}: {name} {res['steps']} steps in {res['seconds']} s "
                         f"= {res['images_per_s']} images/s")
            out["repeats"].append(row)
        e = _median([r["edgecl"]["images_per_s"] for r in out["repeats"]])
        u = _median([r["ultralytics"]["images_per_s"] for r in out["repeats"]])
        ratios = [r["edgecl"]["images_per_s"] / r["ultralytics"]["images_per_s"]
                  for r in out["repeats"] if r["ultralytics"]["images_per_s"] > 0]
        out.update(edgecl_images_per_s=e, ultralytics_images_per_s=u,
                   ratio=round(e / u, 3) if u > 0 else None,
                   ratio_per_repeat_median=_median(ratios))
    if "map" not in skip:
        out["equal_time_s"] = args.seconds
        trainers = (("edgecl", edgecl_train), ("ultralytics", ultralytics_train))
        maps: dict[str, list[float]] = {"edgecl": [], "ultralytics": []}
        steps: dict[str, list[int]] = {"edgecl": [], "ultralytics": []}
        for i in range(args.map_repeats):
            for name, fn in trainers if i % 2 == 0 else trainers[::-1]:
                res = fn(setup, steps=10**9, budget_s=args.seconds)
                maps[name].append(held_out_map(res["model"], setup))
                steps[name].append(res["steps"])
                progress(f"{name}: {res['steps']} steps in {res['seconds']} s -> held-out "
                         f"mAP50-95 {maps[name][-1]:.4f}")
        for name in maps:
            out[f"{name}_map50_95"] = round(statistics.median(maps[name]), 4)
            out[f"{name}_equal_time_steps"] = statistics.median(steps[name])
            out[f"{name}_map50_95_runs"] = [round(m, 4) for m in maps[name]]
        out["parent_map50_95"] = round(held_out_map(load_parent(setup.parent), setup), 4)
    if "round" not in skip:
        progress(f"one real round on a scratch state directory ({args.steps} steps)")
        out.update(round_split(setup, taskset, args.steps))
    return out


def run(args) -> int:
    """Run ``edgecl bench learn`` and print its figures (one JSON line with ``--json``)."""
    from edgecl.atomic import json_safe

    result = json_safe(run_benchmark(args))
    if args.json:
        print_json_line(result)
    else:
        for key, value in result.items():
            if key != "repeats":
                print(f"{key}: {value}")
    return 0
