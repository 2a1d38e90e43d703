"""``edgecl fleet simulate``: a fleet server and N devices as local processes on loopback.

Each device gets its own state directory and a different share of the data (task ``j`` of the
``tasks.yaml`` goes to device ``j mod N``, so devices see different classes); its memory is
filled with the train and val images of its tasks (ground truth, the memory holds some out).
The server and the devices then run ``R`` fleet rounds over Flower on ``127.0.0.1``.

Yardsticks, all scored per class on the test splits of every task (by class name):

* **fleet**: each device's current model after each round's adoption;
* **alone**: each device fine-tuning on its own memory only, round after round, with the same
  per-round training (same code, budget and steps, from the same initial model);
* **joint**: one model fine-tuned the same way on all devices' data together (the target's
  reference: every device should reach >= 0.8 x its AP on every class; a class whose joint AP
  is below :data:`JOINT_FLOOR` is reported as unmeasurable rather than as a ratio of noise).

The baselines train without FedProx's proximal term (``fleet.proximal_mu``) and with the full
class loss (``fleet.restrict_class_loss``): both belong to federated training only.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from edgecl.config import Config, load_config
from edgecl.errors import ConfigError, EdgeclError
from edgecl.logs import basic_config

log = logging.getLogger(__name__)

TARGET_RATIO = 0.8
# Below this joint AP50-95 a class's ratio is noise (the reference itself detects nothing).
JOINT_FLOOR = 0.05


@dataclass(frozen=True)
class SimSize:
    """How big a simulation is.

    Attributes:
        imgsz: image and model input side (pixels).
        images_per_task: scenario images per task (all splits) when ``--data scenario``.
        steps: optimiser steps per device and round.
        first_steps: steps of the first round, which starts from a freshly built model
            (0: ``steps``), as a local first round gets more.
        batch: training batch.
        budget_s: time budget per device and round (seconds).
        holdout: memory share held out for evaluation and the gate.
        seed: scenario and model seed.
    """

    imgsz: int = 64
    images_per_task: int = 40
    steps: int = 30
    first_steps: int = 0
    batch: int = 8
    budget_s: float = 300.0
    holdout: float = 0.2
    seed: int = 0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SIM_KEYS = {
    "state_dir": "--out", "model.imgsz": "--imgsz", "learner.imgsz": "--imgsz",
    "learner.max_steps": "--steps", "learner.first_round_max_steps": "--first-steps",
    "learner.budget_s": "--budget-s", "learner.first_round_budget_s": "--budget-s",
    "learner.batch": "--batch", "memory.seed": "--seed", "fleet.seed": "--seed",
    "fleet.rounds": "--rounds", "fleet.min_devices": "--devices",
    "fleet.server_address": "--port (on 127.0.0.1)",
}
"""Keys a simulation sets from its own options (key -> option)."""
SIM_FIXED = ("learner.device", "learner.epochs", "learner.bn_recalibration_batches",
             "memory.holdout_fraction", "export.tensorrt", "learner.enabled", "ider.enabled",
             "fleet.device_name", "fleet.round_timeout_s", "fleet.retry_s")
"""Keys every simulated device has as the simulation needs them (loopback, CPU, sizes)."""


def check_size(size: SimSize) -> None:
    """Check the sizes a simulation was given, naming the option of a wrong one (the config
    key it becomes would mean nothing to the user who typed ``--steps``).

    Raises:
        ConfigError: a value the devices' configuration would refuse.
    """
    from edgecl.config import RULES

    for option, key, value in (("--steps", "learner.max_steps", size.steps),
                               ("--first-steps", "learner.first_round_max_steps",
                                size.first_steps or size.steps),
                               ("--budget-s", "learner.budget_s", size.budget_s),
                               ("--batch", "learner.batch", size.batch),
                               ("--seed", "fleet.seed", size.seed),
                               ("--imgsz", "learner.imgsz", size.imgsz)):
        problem = RULES[key].problem(value)
        if problem:
            raise ConfigError(f"fleet simulate {option}: {problem}")


def check_user_overrides(overrides) -> None:
    """Refuse a ``section.key=value`` setting that the simulation itself sets (it would be
    replaced without a word).

    Args:
        overrides: the command line's settings.

    Raises:
        ConfigError: one names such a key (and the option that sets it, where there is one).
    """
    for text in overrides:
        key = text.split("=", 1)[0]
        if key in SIM_KEYS:
            raise ConfigError(f"{text}: fleet simulate sets {key} from {SIM_KEYS[key]}; use that "
                              f"option instead")
        if key in SIM_FIXED:
            raise ConfigError(f"{text}: fleet simulate sets {key} itself (devices on this "
                              f"machine's CPU, over loopback)")


def device_config(base: tuple | None, state: Path, size: SimSize, address: str, name: str,
                  devices: int, rounds: int) -> Config:
    """A simulated device's (or the server's) configuration: the user's settings (``base``:
    ``(config file or None, overrides)``) with the simulation's sizes and addresses over them."""
    overrides = [f"state_dir={state}", f"model.imgsz={size.imgsz}", f"learner.imgsz={size.imgsz}",
                 f"learner.max_steps={size.steps}",
                 f"learner.first_round_max_steps={size.first_steps or size.steps}",
                 f"learner.budget_s={size.budget_s}", f"learner.first_round_budget_s={size.budget_s}",
                 f"learner.batch={size.batch}", "learner.device=cpu", "learner.epochs=1000",
                 "learner.bn_recalibration_batches=2", f"memory.holdout_fraction={size.holdout}",
                 f"memory.seed={size.seed}", "export.tensorrt='off'", "learner.enabled=false",
                 "ider.enabled=false", f"fleet.server_address={address}",
                 f"fleet.device_name={name}", f"fleet.min_devices={devices}",
                 f"fleet.rounds={rounds}", f"fleet.seed={size.seed}", "fleet.round_timeout_s=1800",
                 "fleet.retry_s=1"]
    path, user = base if base is not None else (None, ())
    return load_config(path, [*user, *overrides])


def check_security_settings(base: tuple, size: SimSize, devices: int, rounds: int) -> None:
    """Check the user's TLS and token settings as the simulation's server and devices will,
    before any folder or process exists (before, a missing certificate showed as a traceback
    from each spawned process, and the output folder was left behind).

    Args:
        base: the user's settings, ``(config file or None, overrides)``.
        size: the simulation's sizes.
        devices: number of devices.
        rounds: fleet rounds.

    Raises:
        ConfigError: one line naming the setting (an incomplete TLS trio, a file that is
            missing, not PEM or outside its dates, a key of another certificate).
    """
    from edgecl.fleet.client import check_client_security
    from edgecl.fleet.server import server_certificates

    cfg = device_config(base, Path("fleet-simulate-check"), size, "127.0.0.1:1", "check",
                        devices, rounds)
    if server_certificates(cfg) is not None:
        problem = loopback_handshake_problem(cfg.fleet.ca_cert, cfg.fleet.server_cert,
                                             cfg.fleet.server_key)
        if problem:  # the devices would retry for ever against files that cannot change
            raise ConfigError(f"fleet simulate connects its devices to 127.0.0.1 with these TLS "
                              f"settings, and the handshake fails: {problem} (fleet.server_cert "
                              f"must name 127.0.0.1 and be signed by fleet.ca_cert)")
    check_client_security(cfg)


def loopback_handshake_problem(ca_cert: str, server_cert: str, server_key: str,
                               timeout_s: float = 10.0) -> str:
    """Why a device trusting ``ca_cert`` would refuse the server certificate at 127.0.0.1, in
    one line (Python's ``ssl``, over a socket pair in this process); "" when it would not.

    Args:
        ca_cert: the CA certificate file the devices trust.
        server_cert: the server's certificate file.
        server_key: its key file.
        timeout_s: the longest wait for the handshake.
    """
    import socket
    import ssl
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(server_cert, server_key)
    client_ctx = ssl.create_default_context(cafile=ca_cert)
    ends = socket.socketpair()
    for end in ends:
        end.settimeout(timeout_s)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(ends[0], server_side=True):
                pass
        except (ssl.SSLError, OSError):  # the client's refusal is what is reported
            return

    server = threading.Thread(target=serve, name="edgecl-tls-check", daemon=True)
    server.start()
    try:
        with client_ctx.wrap_socket(ends[1], server_hostname="127.0.0.1"):
            return ""
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message or exc.reason or exc)
    except (ssl.SSLError, OSError) as exc:
        return str(getattr(exc, "reason", None) or exc)
    finally:
        for end in ends:
            end.close()
        server.join(timeout_s)


def _baseline_config(*args) -> Config:
    """A baseline's configuration (:func:`device_config`), without FedProx's proximal term or the
    restricted class loss: the alone and joint models are not federated."""
    import dataclasses

    cfg = device_config(*args)
    return dataclasses.replace(cfg, fleet=dataclasses.replace(cfg.fleet, proximal_mu=0.0,
                                                              restrict_class_loss=False))


def fill_memory(cfg: Config, taskset, tasks) -> int:
    """Store the train and val images of some tasks in a device's memory (ground truth).

    Only the boxes of each task's own classes are kept (a later task's frames may show earlier
    classes; as in ``edgecl bench cl``, a task labels its own classes only). Class ids are the
    device's own: each scenario class name is looked up (or added) in its class registry.

    Returns:
        Samples stored.
    """
    import numpy as np

    from edgecl.continual.memory import STREAM_TASK, Sample, memory_from_config
    from edgecl.data.images import read_image
    from edgecl.data.labels import label_path_for, read_yolo_labels
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(cfg.state_dir)
    ids = {c: registry.id_for(taskset.names[c]) for t in tasks for c in t.classes}
    memory = memory_from_config(cfg)
    stored = 0
    try:
        for task in tasks:
            for path in (*task.train, *task.val):
                lp = label_path_for(path)
                labels = read_yolo_labels(lp).labels if lp.is_file() else np.zeros((0, 5), np.float32)
                labels = labels[np.isin(labels[:, 0].astype(int), list(task.classes))].copy()
                if len(labels):
                    labels[:, 0] = [ids[int(c)] for c in labels[:, 0]]
                sample = Sample(read_image(path), labels, task=STREAM_TASK, source=str(path))
                if memory.add(sample) is not None:
                    stored += 1
    finally:
        memory.close()
    return stored


def _server_main(cfg: Config) -> None:
    basic_config(logging.INFO, "%(asctime)s %(levelname)s fleet server: %(message)s")
    from edgecl.fleet.server import ServerStopped, quiet_flower_logs, run_server
    from edgecl.runtime.learner import die_with_parent

    quiet_flower_logs(logging.WARNING)  # the round table and the server's own lines tell it
    die_with_parent()
    try:
        run_server(cfg)
    except ServerStopped as exc:  # the simulation stopped it (a device died, Ctrl-C): one line
        import signal

        name = signal.Signals(exc.signum).name if exc.signum else "a signal"
        log.info("fleet server stopped by %s after %d finished round(s); a simulation does not "
                 "resume: run it again with a new --out", name, exc.saved_round)


def _device_main(cfg: Config, yaml_path: str, once: bool, max_wait_s: float) -> None:
    """A simulated device's process: :func:`edgecl.fleet.client.client_main`, ended with the
    simulation (its SIGTERM unwinds it; Ctrl-C, which reaches the whole process group, is the
    simulation's to handle, as for a device's runtime)."""
    from edgecl.fleet.client import client_main
    from edgecl.runtime.learner import die_with_parent
    from edgecl.stop_signals import unwind_once_on_stop_signals

    unwind_once_on_stop_signals(ignore_sigint=True, spawned=True)
    die_with_parent()
    client_main(cfg, yaml_path, once, max_wait_s)


BASELINE_ROUND = "round-{:04d}.json"
"""File name of the baselines' scores after one round (in ``OUT/baselines``)."""


def _baselines_main(cfgs: list[Config], yaml_path: str, task_names: list[list[str]], rounds: int,
                    results_dir: Path) -> None:
    """All baselines (alone x N, joint) in one process at the learner's priority, round by round.

    Each baseline's memory is filled first; then every round trains each baseline once and
    writes their scores to ``results_dir/round-NNNN.json`` (atomically), so that a round's
    report can be printed as soon as the fleet has finished the same round.

    Args:
        cfgs: the baselines' configurations (the joint one last).
        yaml_path: the ``tasks.yaml``.
        task_names: per baseline, the names of the tasks whose train and val images it holds.
        rounds: rounds to train.
        results_dir: where the round files go.

    Raises:
        SystemExit: code 2 after one logged line when a baseline fails on an edgecl error.
    """
    basic_config(logging.WARNING, "%(asctime)s %(levelname)s baselines: %(message)s")
    from edgecl.atomic import atomic_write_json
    from edgecl.continual.finetune import apply_low_priority
    from edgecl.data.task_sources import load_task_source
    from edgecl.runtime.learner import die_with_parent
    from edgecl.stop_signals import unwind_once_on_stop_signals

    unwind_once_on_stop_signals(ignore_sigint=True, spawned=True)  # Ctrl-C: the simulation
    die_with_parent()
    apply_low_priority(cfgs[0].learner)
    try:
        taskset = load_task_source(yaml_path)
        test_paths = [p for t in taskset.tasks for p in t.test]
        alone = []
        for cfg, wanted in zip(cfgs, task_names):
            fill_memory(cfg, taskset, [t for t in taskset.tasks if t.name in wanted])
            alone.append(_Alone(cfg))
        for rnd in range(1, rounds + 1):
            scores = [a.train_round(rnd, taskset, test_paths) for a in alone]
            atomic_write_json(results_dir / BASELINE_ROUND.format(rnd), {"round": rnd, "scores": scores})
    except EdgeclError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from None


class _Alone:
    """A baseline that fine-tunes on its own memory only, round after round, with the fleet's
    per-round training, from the fleet's starting model."""

    def __init__(self, cfg: Config):
        from edgecl.fleet.device import FleetDevice
        from edgecl.fleet.weights import global_from_checkpoint, initial_global

        self.cfg = cfg
        if cfg.fleet.initial_model:  # the same start (and architecture) as the fleet's
            self.arrays, self.names, self.arch = global_from_checkpoint(cfg.fleet.initial_model)
        else:
            self.arrays, self.names, self.arch = initial_global(cfg.fleet.seed), [], None
        self.device = FleetDevice(cfg)

    def train_round(self, rnd: int, taskset, test_paths) -> dict:
        """Train one round and score the result per class name on the test images."""
        from edgecl.fleet.device import score_by_name
        from edgecl.fleet.weights import build_model

        fit = self.device.fit(self.arrays, self.names, rnd, arch=self.arch)
        if not fit.skipped:
            self.arrays, self.names = fit.arrays, fit.names
        model = (build_model(self.arrays, self.names, dict(enumerate(self.names)),
                             seed=self.cfg.fleet.seed, arch=self.arch) if self.names else None)
        return score_by_name(model, dict(enumerate(self.names)), taskset.names, test_paths,
                             self.cfg.learner.imgsz, self.cfg.fleet.seed)


def _ratio(fleet: dict, joint: dict) -> dict:
    """fleet AP / joint AP per class, for the classes whose joint AP reaches :data:`JOINT_FLOOR`."""
    return {name: round((fleet.get(name) or 0.0) / ref, 3) for name, ref in joint.items()
            if ref is not None and ref >= JOINT_FLOOR}


def simulate(data: str, devices: int, rounds: int, out: str | Path, size: SimSize | None = None,
             base: tuple | None = None, progress=print, timeout_s: float = 24 * 3600,
             port: int = 0) -> dict:
    """Run a fleet simulation on this machine (see the module docstring).

    Args:
        data: a ``tasks.yaml`` (or a folder holding one), or ``scenario`` to generate one
            task per device.
        devices: number of devices (>= 2).
        rounds: fleet rounds (>= 1).
        out: output folder (device states, server state, scenario, ``summary.json``).
        size: sizes (default :class:`SimSize`).
        base: the user's settings, ``(config file or None, section.key=value overrides)``;
            the simulation's sizes and addresses replace theirs (an override of one of those
            keys is refused: :func:`check_user_overrides`).
        progress: callable printing one report line.
        timeout_s: give up when the fleet has not finished after this many seconds.
        port: the server's TCP port on 127.0.0.1 (0: one free now; before, always so, and a
            firewalled or shared machine could not choose it).

    Returns:
        The summary (the ``--json`` line's fields, plus ``rounds_detail``).

    Raises:
        ConfigError: bad counts, fewer tasks than devices, or the fleet processes failed.
    """
    from edgecl.atomic import atomic_write_json
    from edgecl.data.task_sources import load_task_source
    from edgecl.data.tasks import refuse_trained_test_images
    from edgecl.fleet.server import fleet_dir
    from edgecl.fleet.store import GlobalStore

    size = size or SimSize()
    if base is not None:
        check_user_overrides(base[1])
    if devices < 2:
        raise ConfigError(f"fleet simulate needs at least 2 devices, got {devices}")
    if rounds < 1:
        raise ConfigError(f"fleet simulate needs at least 1 round, got {rounds}")
    check_size(size)
    user = load_config(*base) if base is not None else None
    if user is not None:
        check_security_settings(base, size, devices, rounds)
    if user is not None and user.fleet.initial_model:
        from edgecl.fleet.weights import global_from_checkpoint

        # a start the fleet cannot use (an end-to-end head, not a .pt): one line now, not a
        # dead server process and every device waiting for it
        global_from_checkpoint(user.fleet.initial_model)
    out = Path(out).expanduser().resolve()
    earlier = [n for n in ("summary.json", "server", "joint", "device0") if (out / n).exists()]
    if earlier:  # its device and server states would be replaced without a word
        raise ConfigError(f"--out {out} holds an earlier fleet simulation ({earlier[0]}); give "
                          f"another --out, or remove that folder to run again there")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:  # a setup that fails (bad sizes, too few tasks) leaves no folder it created
        if data == "scenario":
            from edgecl.data import sprites
            from edgecl.data.scenario import make_scenario

            most = len(sprites.CLASSES) // 2  # each device's task brings 2 of the sprite classes
            if devices > most:
                raise ConfigError(f"--devices {devices}: the built-in scenario gives each device "
                                  f"2 of its {len(sprites.CLASSES)} classes, so at most {most} "
                                  f"devices (give --data a tasks.yaml with a task per device)")
            data = str(make_scenario(out / "scenario", tasks=devices,
                                     images_per_task=size.images_per_task, imgsz=size.imgsz,
                                     seed=size.seed))
        taskset = refuse_trained_test_images(load_task_source(data))
        yaml_path = str(taskset.path)
        if len(taskset.tasks) < devices:
            raise ConfigError(f"{yaml_path} has {len(taskset.tasks)} tasks for {devices} devices: "
                              f"each device needs at least one")
    except EdgeclError:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shares = [[t for j, t in enumerate(taskset.tasks) if j % devices == i] for i in range(devices)]
    address = f"127.0.0.1:{port or free_port()}"
    names = [f"device{i}" for i in range(devices)]
    fleet_cfgs = [device_config(base, _fresh(out / n), size, address, n, devices, rounds) for n in names]
    for cfg, share, n in zip(fleet_cfgs, shares, names):
        stored = fill_memory(cfg, taskset, share)
        progress(f"{n}: {stored} samples of classes "
                 f"{sorted(taskset.names[c] for t in share for c in t.classes)}")
    server_cfg = device_config(base, _fresh(out / "server"), size, address, "server", devices, rounds)
    jobs = [(_baseline_config(base, _fresh(out / f"alone-{n}"), size, address, n, devices, rounds),
             share) for share, n in zip(shares, names)]
    jobs.append((_baseline_config(base, _fresh(out / "joint"), size, address, "joint", devices,
                                  rounds), list(taskset.tasks)))
    progress(f"fleet: server and {devices} devices on {address}; baselines (alone x {devices}, "
             f"joint) in a process beside them; each round's report comes when the fleet and "
             f"the baselines have both finished it")
    results_dir = _fresh(out / "baselines")
    report = _RoundReport(fleet_dir(server_cfg), results_dir, names, rounds, progress)
    started = time.monotonic()
    ctx = mp.get_context("spawn")
    baselines = ctx.Process(target=_baselines_main, name="edgecl-fleet-baselines", daemon=True,
                            args=([c for c, _ in jobs], yaml_path,
                                  [[t.name for t in share] for _, share in jobs], rounds, results_dir))
    baselines.start()
    try:
        records = _run_fleet(server_cfg, fleet_cfgs, yaml_path, timeout_s,
                             watch=[baselines], on_tick=report.poll)
        fleet_s = time.monotonic() - started
        if len(records) < rounds:
            raise ConfigError(f"the fleet finished {len(records)} of {rounds} rounds; see the log above")
        report.poll(fleet_done=True)
        if report.printed < rounds:
            progress(f"fleet: its {_rounds(rounds)} took {fleet_s:.0f} s; waiting for the baselines "
                     f"(round {report.baseline_rounds()} of {rounds} done)")
        deadline = started + timeout_s
        while baselines.is_alive():
            baselines.join(1.0)
            report.poll(fleet_done=True)
            if time.monotonic() > deadline and baselines.is_alive():
                raise ConfigError(f"the baselines did not finish within {timeout_s:.0f} s")
        if baselines.exitcode != 0:
            raise ConfigError(f"the baselines' process failed (exit code {baselines.exitcode}); "
                              f"see the log above")
        report.poll(fleet_done=True)
    finally:
        if baselines.is_alive():
            baselines.terminate()
            baselines.join(10)
    progress(f"fleet: {_rounds(rounds)} in {fleet_s:.0f} s; baselines in "
             f"{time.monotonic() - started:.0f} s")
    detail = report.detail
    if len(detail) < rounds:
        raise ConfigError(f"only {len(detail)} of {rounds} rounds have both fleet and baseline "
                          f"scores; see the log above")
    joint = [row["joint"] for row in detail]
    last = detail[-1]
    summary = {"devices": devices, "rounds": rounds, "joint_per_class_ap": joint[-1],
               "per_device": [{"device": d["device"], "per_class_ap": d["per_class_ap"],
                               "alone_per_class_ap": d["alone_per_class_ap"]} for d in last["devices"]],
               "bytes_per_round": int(round(sum(r["bytes"] for r in detail) / len(detail)))}
    ratios = [_ratio(d["per_class_ap"], joint[-1]) for d in last["devices"]]
    flat = [v for r in ratios for v in r.values() if v is not None]
    summary["target"] = {"ratio": TARGET_RATIO, "min_ratio": min(flat) if flat else None,
                         "met": (min(flat) >= TARGET_RATIO) if flat else None,
                         "unmeasurable": sorted(n for n, v in joint[-1].items()
                                                if v is None or v < JOINT_FLOOR)}
    atomic_write_json(out / "summary.json", {**summary, "rounds_detail": detail,
                                             "fleet_seconds": round(fleet_s, 1),
                                             "server_rounds": GlobalStore(out / "server" / "fleet").rounds()})
    return summary


def _rounds(n: int) -> str:
    """``1 round``, ``3 rounds``."""
    return f"{n} round{'' if n == 1 else 's'}"


def _fresh(path: Path) -> Path:
    """An empty state directory (an earlier run's is removed)."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _run_fleet(server_cfg: Config, device_cfgs: list[Config], yaml_path: str, timeout_s: float,
               watch=(), on_tick=None) -> list[dict]:
    """Start the server and the devices as processes, wait for the server, collect its rounds.

    Args:
        server_cfg: the server's configuration.
        device_cfgs: the devices' configurations.
        yaml_path: the ``tasks.yaml``.
        timeout_s: give up after this many seconds.
        watch: other processes whose failure stops the fleet (the baselines).
        on_tick: called about once a second while the fleet runs (the round report).

    Returns:
        The server's round records.

    Raises:
        ConfigError: a device or watched process died, or the fleet ran past ``timeout_s``.
    """
    from edgecl.fleet.server import fleet_dir, require_flower
    from edgecl.fleet.store import GlobalStore

    require_flower()
    ctx = mp.get_context("spawn")
    server = ctx.Process(target=_server_main, args=(server_cfg,), name="edgecl-fleet-server", daemon=True)
    server.start()
    clients = [ctx.Process(target=_device_main, args=(cfg, yaml_path, True, 300.0),
                           name=f"edgecl-fleet-{cfg.fleet.device_name}", daemon=True)
               for cfg in device_cfgs]
    for proc in clients:
        proc.start()
    try:
        deadline = time.monotonic() + timeout_s
        while server.is_alive():
            server.join(1.0)
            # a device that died leaves the server waiting for it (Flower waits for
            # fleet.min_devices for up to a day): stop at once and say which
            if on_tick is not None:
                on_tick()
            dead = [p for p in (*clients, *watch) if p.exitcode is not None and p.exitcode != 0]
            if dead and server.is_alive():
                who = dead[0].name.removeprefix("edgecl-fleet-")
                raise ConfigError(f"the {who} process died "
                                  f"(exit code {dead[0].exitcode}) before the fleet finished; "
                                  f"see the log above")
            if time.monotonic() > deadline and server.is_alive():
                raise ConfigError(f"fleet simulation did not finish within {timeout_s:.0f} s")
        for proc in clients:
            proc.join(60)
    finally:
        # the devices first, all at once: stopped after their server, each warned that it could
        # not reach it and went on retrying (a Ctrl-C reaches the server, not the devices)
        stopping = [p for p in (*clients, server) if p.is_alive()]
        for proc in stopping:
            proc.terminate()
        for proc in stopping:
            proc.join(10)
    return GlobalStore(fleet_dir(server_cfg)).rounds()


class _RoundReport:
    """Prints each round's per-device table once the fleet and the baselines have both finished
    that round (the fleet's record from the server's round log, the baselines' from their round
    files), and keeps the rows for the summary.

    Args:
        fleet_root: the server's fleet folder (its ``rounds.jsonl``).
        results_dir: the baselines' round files.
        names: the devices' names, in order.
        rounds: rounds expected.
        progress: callable printing one line.
    """

    def __init__(self, fleet_root: Path, results_dir: Path, names: list[str], rounds: int, progress):
        from edgecl.fleet.store import GlobalStore

        self.store = GlobalStore(fleet_root)
        self.results_dir = results_dir
        self.names = names
        self.rounds = rounds
        self.progress = progress
        self.detail: list[dict] = []

    @property
    def printed(self) -> int:
        """Rounds reported so far."""
        return len(self.detail)

    def baseline_rounds(self) -> int:
        """Rounds the baselines have finished."""
        return sum(1 for r in range(1, self.rounds + 1)
                   if (self.results_dir / BASELINE_ROUND.format(r)).is_file())

    def poll(self, fleet_done: bool = False) -> None:
        """Report every round that has become complete since the last call.

        Args:
            fleet_done: the server has exited: a round's record is final even when it was
                only written when its model was saved (``partial``), without the adoption.
        """
        import json

        while self.printed < self.rounds:
            rnd = self.printed + 1
            path = self.results_dir / BASELINE_ROUND.format(rnd)
            records = {r["round"]: r for r in self.store.rounds()} if path.is_file() else {}
            if rnd not in records or (records[rnd].get("partial") and not fleet_done):
                return
            scores = json.loads(path.read_text())["scores"]
            row = _round_row(records[rnd], self.names, scores[:-1], scores[-1])
            self.detail.append(row)
            _print_round(row, self.progress)


def _round_row(rec: dict, names: list[str], alone: list[dict], joint: dict) -> dict:
    """One round's report row from the server's record and the baselines' scores."""
    adopt = rec.get("adoption", {})
    row = {"round": rec["round"], "bytes": rec.get("bytes", 0), "joint": joint, "devices": []}
    for i, n in enumerate(names):
        row["devices"].append({"device": i, "status": (adopt.get(n) or {}).get("status", "absent"),
                               "update": (rec.get("devices", {}).get(n) or {}).get("update", "absent"),
                               "per_class_ap": (adopt.get(n) or {}).get("test_ap") or {},
                               "alone_per_class_ap": alone[i]})
    return row


def _fmt(ap) -> str:
    return "  -  " if ap is None else f"{ap:.3f}"


def _print_round(row: dict, progress) -> None:
    """Print one round's table: per device and class, fleet AP / alone AP, then the joint AP;
    each device's row says what the server did with its update and what the device did with
    the global model (its gate's verdict)."""
    classes = list(row["joint"])
    labels = [f"device{d['device']} (update {d['update']}, model {d['status']})"
              for d in row["devices"]]
    width = max(len(label) for label in [*labels, "joint"])
    progress(f"round {row['round']}: {row['bytes'] / 1e6:.1f} MB on the wire; per-class AP50-95 "
             f"fleet / alone, and the model trained on all devices' data (joint)")
    progress("  " + " " * width + "".join(f" {c[:17]:^17}" for c in classes))
    for label, d in zip(labels, row["devices"]):
        cells = "".join(f" {_fmt(d['per_class_ap'].get(c)):>8}/{_fmt(d['alone_per_class_ap'].get(c)):<8}"
                        for c in classes)
        progress(f"  {label:<{width}}{cells}")
    progress(f"  {'joint':<{width}}" + "".join(f" {_fmt(row['joint'].get(c)):^17}" for c in classes))
