"""``edgecl bench soak``: an accelerated long run, to show that nothing grows.

The full device runtime (:class:`edgecl.runtime.app.Runtime`: capture, inference, sinks, replay
memory, learner supervisor, hot swap, monitor) runs at full speed over a looping labelled
``dir://`` source (the built-in scenario written to disk) with a tiny detector (the scenario's
initial YOLO11n at a small input size, exported to ONNX by default), while learning rounds run
every ``--learn-every-s`` seconds with small budgets. Every ``--sample-every-s`` seconds it records
the process's resident memory, open file descriptors, threads and the bytes of the state
directory; the JSON summary compares the end with the start and with the first sample taken
after warm-up (a quarter of the frames), where a flat run shows ~0 growth.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import signal
import threading
import time
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.stop_signals import raise_stop

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Add the soak benchmark's options."""
    from edgecl.arguments import finite_non_negative_float, positive_int, train_image_size

    p.add_argument("--frames", type=positive_int, default=200_000, help="frames to run (default 200000)")
    p.add_argument("--imgsz", type=train_image_size, default=64,
                   help="scenario, model and training size")
    p.add_argument("--tasks", type=positive_int, default=2, help="scenario tasks (looped)")
    p.add_argument("--images-per-task", type=positive_int, default=30, help="scenario images per task")
    p.add_argument("--backend", choices=("onnx", "torch"), default="onnx",
                   help="initial model file type (onnx: exported once, ~1.5 ms a frame at 64)")
    p.add_argument("--learn-every-s", type=finite_non_negative_float, default=60.0,
                   help="start a learning round every N seconds (0: no learning)")
    p.add_argument("--capacity", type=positive_int, default=300, help="replay memory capacity, samples")
    p.add_argument("--sample-every-s", type=finite_non_negative_float, default=30.0,
                   help="seconds between two resource samples")
    p.add_argument("--work-dir", help="where the scenario, the initial model and the state go "
                                      "(default: a temporary folder, removed at the end); its "
                                      "state/ folder must not exist yet or be empty")
    p.add_argument("--json", action="store_true", help="(kept for symmetry; output is JSON)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def rss_bytes() -> int:
    """Resident set size of this process in bytes (``VmRSS`` of ``/proc/self/status``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds() -> int:
    """Open file descriptors of this process (``/proc/self/fd``; -1 where unavailable)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return -1


class ResourceSampler:
    """Takes resource samples at most every ``every_s`` seconds (from the supervise tick).

    Args:
        state_dir: the state directory whose disk bytes are measured.
        every_s: seconds between two samples.
        stream: where progress lines go (``None``: silent).
    """

    def __init__(self, state_dir: Path, every_s: float, stream=None):
        self.state_dir = state_dir
        self.every_s = every_s
        self.stream = stream
        self.samples: list[dict] = []
        self._t0 = time.monotonic()
        self._last_s = -float("inf")

    def sample(self, frames: int, rounds: int) -> dict:
        """Record one sample now.

        Args:
            frames: frames processed so far.
            rounds: learning rounds finished so far.

        Returns:
            ``{"t_s", "frames", "rounds", "rss_bytes", "fds", "threads", "disk_bytes"}``.
        """
        from edgecl.bench.memory_bench import du_bytes

        point = {"t_s": round(time.monotonic() - self._t0, 1), "frames": frames, "rounds": rounds,
                 "rss_bytes": rss_bytes(), "fds": open_fds(), "threads": threading.active_count(),
                 "disk_bytes": du_bytes(self.state_dir) if self.state_dir.exists() else 0}
        self.samples.append(point)
        self._last_s = time.monotonic()
        if self.stream is not None:
            print(f"[soak] t={point['t_s']:.0f}s frames={frames} rounds={rounds} "
                  f"rss={point['rss_bytes'] / 2**20:.1f}MiB fds={point['fds']} "
                  f"threads={point['threads']} disk={point['disk_bytes'] / 2**20:.1f}MiB",
                  file=self.stream, flush=True)
        return point

    def maybe_sample(self, frames: int, rounds: int) -> None:
        """Sample if ``every_s`` has passed since the last sample."""
        if time.monotonic() - self._last_s >= self.every_s:
            self.sample(frames, rounds)


def growth(samples: list[dict], frames: int) -> dict:
    """The last sample taken while running minus the first one at or after a quarter of the
    frames (after warm-up: imports, first round, memory filled).

    Args:
        samples: resource samples in time order, taken while the runtime ran.
        frames: frames asked for.

    Returns:
        ``{"from_frames", "to_frames", "rss_bytes", "fds", "threads", "disk_bytes"}``, the
        last four as differences; where fewer than two samples qualify they are None, with a
        ``note`` (before: 0, a flat run in a script's eyes, for a run too short to tell).
    """
    base = next((s for s in samples if s["frames"] >= frames // 4), samples[-1])
    end = samples[-1]
    keys = ("rss_bytes", "fds", "threads", "disk_bytes")
    if base is end:
        return {"from_frames": base["frames"], "to_frames": end["frames"],
                **dict.fromkeys(keys), "note": "too few samples after warm-up to measure "
                "growth: run more frames, or sample more often (--sample-every-s)"}
    return {"from_frames": base["frames"], "to_frames": end["frames"],
            **{k: end[k] - base[k] for k in keys}}


def soak_config(state_dir: Path, imgsz: int, learn_every_s: float, capacity: int):
    """The configuration of the soak: a tiny model, small memory, small learning budgets.

    Args:
        state_dir: the state directory.
        imgsz: model and training image size.
        learn_every_s: seconds between rounds (0: learner disabled).
        capacity: replay memory capacity.

    Returns:
        The validated :class:`~edgecl.config.Config`.
    """
    from edgecl.config import load_config

    learn = learn_every_s > 0
    return load_config(None, [
        f"state_dir={state_dir}", f"model.imgsz={imgsz}", "model.threads=1",
        "runtime.warmup_runs=1", f"memory.capacity={capacity}", f"memory.max_bytes={64 * 2**20}",
        "memory.holdout_fraction=0.25", f"learner.enabled={'true' if learn else 'false'}",
        "learner.trigger_new_samples=0", f"learner.trigger_interval_s={learn_every_s if learn else 0}",
        "learner.trigger_new_class=false", f"learner.imgsz={imgsz}", "learner.batch=4",
        "learner.max_steps=3", "learner.first_round_max_steps=5", "learner.budget_s=30",
        "learner.first_round_budget_s=60", "learner.bn_recalibration_batches=1",
        "learner.device=cpu", "replay.strategy=er", "replay.samples=8", "export.tensorrt='off'",
        "labels.mode=ground_truth", "server.enabled=false"])


def prepare(work: Path, args: argparse.Namespace) -> tuple[str, Path]:
    """Write the scenario and the initial model (once per work folder).

    Args:
        work: the work folder.
        args: parsed options.

    Returns:
        ``(source_uri, model_path)``.
    """
    from edgecl.bench.demo import initial_model
    from edgecl.data.scenario import make_scenario

    yaml_path = make_scenario(work / "scenario", tasks=args.tasks,
                              images_per_task=args.images_per_task, imgsz=args.imgsz, seed=0)
    model = initial_model(yaml_path, work / "initial.pt", args.imgsz)
    # the device knows every class of the labelled folder, as a team's would after 'labels
    # import': a dir:// source carries ids only, and frames of unknown ids are not stored
    from edgecl.data.tasks import load_tasks
    from edgecl.models.classes import ClassRegistry

    names = load_tasks(yaml_path).names
    ClassRegistry(work / "state").add([names[i] for i in sorted(names)])
    if args.backend == "onnx":
        from edgecl.models.checkpoint import load_checkpoint
        from edgecl.models.export import export_onnx

        net, meta = load_checkpoint(model)
        model = export_onnx(net, work / "initial.onnx", imgsz=args.imgsz, names=meta.get("names"))
    return f"dir://{work / 'scenario' / 'images'}?loop=1", model


class DistinctPasses:
    """A looping folder source whose every pass differs from the others in its first 4 bytes,
    as a camera's frames do: the replay memory refuses an image it already holds
    (``duplicate_frame``), so without this it would store nothing after the first pass and the
    soak would no longer exercise adds and evictions.

    Args:
        inner: the opened ``dir://...?loop=1`` source (everything but ``read`` is its own).
        images: images in one pass.
    """

    def __init__(self, inner, images: int):
        self.inner = inner
        self.images = max(1, int(images))
        self._read = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def read(self):
        """The inner source's next frame, its first 4 bytes set to the pass number after the
        first pass (``None`` at the end)."""
        frame = self.inner.read()
        if frame is None:
            return None
        passed = self._read // self.images
        self._read += 1
        if passed == 0:
            return frame
        import dataclasses

        import numpy as np

        image = frame.image.copy()
        image.reshape(-1)[:4] = np.frombuffer(passed.to_bytes(4, "little"), np.uint8)
        return dataclasses.replace(frame, image=image)


def _rounds(runtime) -> int:
    supervisor = getattr(runtime, "supervisor", None)
    return len(getattr(supervisor, "rounds", ()) or ()) if supervisor is not None else 0


def _rounds_stopped(runtime) -> int:
    """Rounds still running when the soak's frames ran out, stopped with nothing kept (before,
    a soak too short for its first round said only "rounds": 0)."""
    supervisor = getattr(runtime, "supervisor", None)
    return int(getattr(supervisor, "rounds_stopped", 0) or 0) if supervisor is not None else 0


def run_soak(args: argparse.Namespace, work: Path) -> dict:
    """Run the soak in ``work`` and return its summary.

    Args:
        args: parsed options.
        work: the work folder (scenario, initial model, ``state/``).

    Returns:
        The JSON-ready summary (see :func:`run`).

    A run Ctrl-C or SIGTERM stopped returns what it measured, with ``interrupted`` (the
    signal's name) and ``stop_signal`` (its number): :func:`run` prints it, then stops as the
    signal asks (before, every sample taken was thrown away).
    """
    from edgecl.runtime.app import RunOptions, Runtime

    uri, model = prepare(work, args)
    state_dir = work / "state"
    cfg = soak_config(state_dir, args.imgsz, args.learn_every_s, args.capacity)
    if model.suffix == ".onnx":  # rounds start from the checkpoint it was exported from
        import dataclasses

        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, path=str(model.with_suffix(".pt"))))
    sampler = ResourceSampler(state_dir, args.sample_every_s, None if args.quiet else sys.stderr)
    runtime = Runtime(cfg, RunOptions(source_uri=uri, model=str(model), max_frames=args.frames,
                                      quiet=True),
                      supervise_hook=lambda rt: sampler.maybe_sample(rt.loop.frames_done, _rounds(rt)))
    from edgecl.runtime.sources import open_source

    from edgecl.models.classes import ClassRegistry

    inner = open_source(uri, cfg.source)
    # the scenario's names, which its images folder has no data.yaml to give (before: a warning
    # that the labels name no class, about data the benchmark made itself)
    inner.names = ClassRegistry(state_dir).names()
    runtime.build(source=DistinctPasses(inner, len(getattr(inner, "images", ())) or 1))
    start = sampler.sample(0, 0)
    report = runtime.run()
    running = sampler.samples[1:] or [start]
    end = sampler.sample(report.frames, _rounds(runtime))  # after shutdown: nothing left behind
    versions = runtime.registry.list() if runtime.registry is not None else []
    return {"frames": report.frames, "fps": report.fps, "elapsed_s": report.elapsed_s,
            "backend": args.backend, "imgsz": args.imgsz, "learn_every_s": args.learn_every_s,
            "rounds": _rounds(runtime), "rounds_stopped": _rounds_stopped(runtime),
            "versions": len(versions),
            "model_version": report.model_version, "start": start, "end": end,
            "growth_after_warmup": growth(running, args.frames),
            "samples": sampler.samples, "loop": report.to_json(),
            **({"interrupted": signal.Signals(runtime.stop_signal or signal.SIGINT).name,
                "stop_signal": runtime.stop_signal} if runtime.interrupted else {})}


def check_work_dir(work: Path, command: str = "bench soak") -> None:
    """Refuse a work folder whose ``state/`` holds anything: an earlier run's state (a soak
    would continue its memory, versions and disk use, and the growth would mean nothing; the
    console benchmark would serve another model's class registry) or a folder the benchmark
    did not make. Nothing is removed: the user decides.

    Args:
        work: the ``--work-dir`` folder (it may not exist yet).
        command: the benchmark, as the message names it.

    Raises:
        ConfigError: ``work/state`` exists and is not an empty folder.
    """
    from edgecl.errors import ConfigError

    state = work / "state"
    missing = not (state.exists() or state.is_symlink())
    if missing or (state.is_dir() and not any(state.iterdir())):
        return
    raise ConfigError(f"{command}: --work-dir {work} already holds {state} (an earlier run's "
                      f"state; the benchmark starts from an empty one): remove it or use "
                      f"another --work-dir")


def run(args: argparse.Namespace) -> int:
    """Run the soak and print its summary as one JSON line.

    The summary has ``frames``, ``fps``, ``elapsed_s``, ``rounds``, ``rounds_stopped`` (running
    at the end, stopped with nothing kept), ``versions``, ``start``
    (before the loop starts) and ``end`` (after shutdown) samples (``rss_bytes``, ``fds``,
    ``threads``, ``disk_bytes``), ``samples`` (every sample, in time order),
    ``growth_after_warmup`` (see :func:`growth`) and the loop's report.

    Returns:
        0.

    A soak stopped by Ctrl-C or SIGTERM prints what it measured, with ``"interrupted"``, then
    stops as the signal asks (the command line's own line follows).

    Raises:
        ConfigError: ``--work-dir`` holds the state of an earlier run.
        KeyboardInterrupt: Ctrl-C (the command line exits 130); SigtermExit: SIGTERM (143).
    """
    if args.work_dir:
        work = Path(args.work_dir)
        check_work_dir(work)
        work.mkdir(parents=True, exist_ok=True)
        summary = run_soak(args, work)
    else:
        work = Path(tempfile.mkdtemp(prefix="edgecl-soak-"))
        try:
            summary = run_soak(args, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_json_line({k: v for k, v in summary.items() if k != "stop_signal"})
    if "interrupted" in summary:
        raise_stop(summary["stop_signal"])  # the command line exits 130 (Ctrl-C) or 143
    return 0
