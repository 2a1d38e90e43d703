"""``edgecl status``: one screen saying what a device is doing, read from its state directory.

A team that reaches a robot over SSH asks the same questions first: is the runtime up, which
version serves, did the last round promote, is anything waiting to be learnt or labelled, is
the card filling up. Each answer comes from the state directory alone (the runtime need not
run; nothing is written, created or repaired), so it also works on a state directory copied
off a device. A part that cannot be read is shown as unreadable with the reason, and the rest
is still shown.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from edgecl.arguments import print_json_line
from edgecl.commands.common import add_config_args, config_from_args, require_state_dir
from edgecl.errors import EdgeclError

LOW_DISK_FRACTION = 0.05
"""Free space on the state directory's volume below which the status names it a problem."""

CLASSES_SHOWN = 12
"""Class names the text form lists (a COCO checkpoint brings 80; ``--json`` lists all)."""

SECTIONS = ("runtime", "serving", "round", "learning", "memory", "operator", "classes", "disk")


def add_parser(sub) -> None:
    """Register the ``status`` command.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("status", help="what the device is doing: runtime, serving version, "
                                      "last round, backlog, memory, queue, disk")
    add_config_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=status_command)


def status_command(args: argparse.Namespace) -> int:
    """Print the device's status (``--json``: one JSON object, each section a key, plus
    ``problems``: a list of one-line strings, empty when all is well).

    Args:
        args: parsed arguments (``state_dir``/``config``, ``json``).

    Returns:
        0 when no problem was found, 1 otherwise (for a service's watchdog or a script).

    Raises:
        EdgeclError: the state directory does not exist.
    """
    cfg = config_from_args(args)
    require_state_dir(cfg)
    state = Path(cfg.state_dir)
    report: dict = {"state_dir": str(state)}
    problems: list[str] = []
    readers = {"runtime": _runtime, "serving": _serving, "round": _round,
               "learning": lambda s: _learning(s, cfg.learner),
               "memory": lambda s: _memory(args, s, report["learning"].get("last_sample_id")),
               "operator": lambda s: _operator(cfg), "classes": _classes, "disk": _disk}
    for name in SECTIONS:  # the learning section before the memory, which counts its backlog
        try:
            report[name] = readers[name](state)
        except (EdgeclError, OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            # a damaged or hand-edited part (a record of other types, nested 100,000 deep)
            # hides no other
            report[name] = {"unreadable": _one_line(exc)}
        problems += _problems_of(name, report[name])
    last, serving = report["round"].get("last"), report["serving"]
    if last and last["status"] == "staged" and last["version"] == serving.get("version"):
        last["status"] = "promoted"  # the round staged it, the supervisor promoted it since
    not_learnt = report["memory"].pop("not_learnt", None)
    if "unreadable" not in report["learning"]:
        report["learning"]["not_learnt"] = not_learnt
    report["problems"] = problems
    if args.json:
        print_json_line(report)
    else:
        print(render(report, args.config is not None))
    return 1 if problems else 0


def _one_line(exc: BaseException) -> str:
    from edgecl.logs import one_line

    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    return one_line(text)


def _runtime(state: Path) -> dict:
    """Whether a runtime holds the state directory (its pid) and an import stores into it."""
    from edgecl.runtime.lock import holder_pid, import_running

    pid = holder_pid(state)
    return {"running": pid is not None, "pid": pid, "import_running": import_running(state)}


def _serving(state: Path) -> dict:
    """The version marked current, with its engine, classes and ACC (``version`` None: the
    device serves the model it was started with)."""
    from edgecl.models.registry import Registry
    from edgecl.runtime.console import serving_engine

    models = state / "models"
    if not models.is_dir():
        return {"version": None}
    registry = Registry(models, create=False)
    damaged = registry.damaged_current()
    versions = registry.list()
    current = next((v for v in versions if v.current), None)
    out: dict = {"version": None, "versions": len(versions), "damaged": damaged or None,
                 "staged": [v.version for v in versions if v.status == "staged"]}
    if current is None:
        return out
    names = current.manifest.get("classes")
    acc = current.metrics.get("acc")
    out.update(version=current.version, created=current.created,
               engine=serving_engine(registry, current)["engine_label"],
               classes=len(names) if isinstance(names, (dict, list)) else None,
               origin=str(current.manifest.get("origin") or "") or None,
               acc=acc if isinstance(acc, (int, float)) and not isinstance(acc, bool) else None)
    return out


def _round(state: Path) -> dict:
    """The round running now (from ``learner/running.json`` while ``learner/round.lock`` is
    held) and the last one that ended (``learner/last_round.json``)."""
    from edgecl.boot import iso_time
    from edgecl.continual.round_state import RoundResult
    from edgecl.runtime.learner import RUNNING_FILE, running_record
    from edgecl.runtime.lock import lock_held

    folder = state / "learner"
    out: dict = {"running": None, "last": None}
    running = folder / RUNNING_FILE
    record = running_record(running) or {}  # read as the learner reads it
    if lock_held(folder / "round.lock"):
        out["running"] = {k: record.get(k) for k in ("started", "trigger", "steps", "total_steps",
                                                    "elapsed_s", "budget_s")}
    elif running.exists():  # the next start says so and learns them again
        out["cut_short"] = str(record.get("started", ""))
    path = folder / "last_round.json"
    data = _json_object(path)
    if data is not None:
        result = RoundResult.from_json(data)
        ended_s = path.stat().st_mtime
        out["last"] = {"round": result.round, "status": result.status.value,
                       "reason": result.reason, "version": result.version,
                       "trigger": result.trigger, "seconds": round(result.seconds, 1),
                       "ended": iso_time(ended_s),
                       "ended_ago_s": round(max(0.0, time.time() - ended_s))}
    return out


def _json_object(path: Path) -> dict | None:
    """A JSON object read from ``path``; None when the file is absent.

    Raises:
        ValueError: the file holds no JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object")
    return data


def _learning(state: Path, learner) -> dict:
    """The serving model's progress (``learner/state.json``: its round, the last sample id it
    learnt) and the settings that start the next round; ``not_learnt`` is filled in from the
    memory (:func:`_memory`)."""
    from edgecl.continual.round_state import state_from_json, state_path

    progress = _json_object(state_path(state))
    learnt = state_from_json(progress) if progress is not None else None
    return {"enabled": learner.enabled, "trigger_new_samples": learner.trigger_new_samples,
            "trigger_interval_s": learner.trigger_interval_s, "not_learnt": None,
            "round": learnt.round if learnt else 0,
            "last_sample_id": learnt.last_sample_id if learnt else 0}


def _memory(args: argparse.Namespace, state: Path, last_sample_id: int | None) -> dict:
    """The replay memory's counts (as ``memory stats`` reads them: nothing repaired), and
    ``not_learnt``: its training samples stored after ``last_sample_id`` (``None``: the
    learner's progress could not be read)."""
    from edgecl.commands.memory import _open
    from edgecl.continual.memory import INDEX_FILE

    if not (state / "memory" / INDEX_FILE).is_file():
        return {"samples": 0, "not_learnt": None}
    with _open(args, verify=False) as memory:
        stats = memory.stats()
        not_learnt = (None if last_sample_id is None else
                      sum(r.id > last_sample_id for r in memory.records(held_out=False)))
    out = {k: stats[k] for k in ("samples", "capacity", "held_out", "bytes", "max_bytes",
                                 "per_origin")}
    return dict(out, not_learnt=not_learnt)


def _operator(cfg) -> dict:
    """Frames waiting for a person in the operator queue, and the longest wait (seconds)."""
    from edgecl.runtime.labels import OperatorQueue

    if not (Path(cfg.state_dir) / "queue").is_dir():
        return {"pending": 0}
    queue = OperatorQueue.from_config(cfg, create=False)
    return {"pending": len(queue.pending())}


def _classes(state: Path) -> dict:
    """The class registry's names, by id."""
    from edgecl.models.classes import ClassRegistry

    names = ClassRegistry(state).names()
    return {"names": {str(k): v for k, v in sorted(names.items())}}


def _disk(state: Path) -> dict:
    """Free and total bytes on the state directory's volume."""
    usage = shutil.disk_usage(state)
    return {"free_bytes": usage.free, "total_bytes": usage.total}


def _problems_of(name: str, section: dict) -> list[str]:
    """One line per thing in a section that needs a person."""
    if "unreadable" in section:
        return [f"{name}: unreadable: {section['unreadable']}"]
    out = []
    if name == "serving" and section.get("damaged"):
        out.append(f"serving: {section['damaged']} ('edgecl models verify' finds it)")
    if name == "round":
        last = section.get("last") or {}
        if last.get("status") == "failed":
            out.append(f"the last learning round failed: {last.get('reason')}")
    if name == "disk" and section["total_bytes"] and \
            section["free_bytes"] < LOW_DISK_FRACTION * section["total_bytes"]:
        out.append(f"the state directory's volume has {_size(section['free_bytes'])} free "
                   f"of {_size(section['total_bytes'])}")
    return out


def _size(n: int) -> str:
    """``12.3 GiB``, ``512.0 MiB``, ``3.0 KiB``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _ago(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def render(report: dict, config_given: bool) -> str:
    """The text form of :func:`status_command`'s report, one line per section.

    Args:
        report: the report's JSON object.
        config_given: whether the learner settings shown are the device's (``--config``).

    Returns:
        Lines ``  section    text``, then the problems.
    """
    lines = [report["state_dir"]]
    for name in SECTIONS:
        section = report[name]
        text = (f"unreadable: {section['unreadable']}" if "unreadable" in section
                else _TEXT[name](section, config_given))
        lines.append(f"  {name:<10} {text}")
    lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def _runtime_text(s: dict, _config_given: bool) -> str:
    text = f"running (pid {s['pid']})" if s["running"] else "not running"
    return text + (", an import is storing samples" if s["import_running"] else "")


def _serving_text(s: dict, _config_given: bool) -> str:
    if s["version"] is None:
        staged = f"; staged, not yet promoted: {', '.join(s['staged'])}" if s.get("staged") else ""
        return ("no trained version: the model the device was started with (model.path)"
                + staged)
    parts = [f"{s['version']} ({s['engine'] or 'no usable engine'})"]
    if s.get("classes") is not None:
        parts.append(f"{s['classes']} classes")
    parts.append(f"made {s['created']}" + (f" [{s['origin']}]" if s.get("origin") else ""))
    if s.get("acc") is not None:
        parts.append(f"held-out ACC {s['acc']:.3f}")
    return ", ".join(parts)


def _round_text(s: dict, _config_given: bool) -> str:
    running = s.get("running")
    if running is not None:
        done = (f", step {running['steps']}/{running['total_steps']}"
                if running.get("steps") is not None else "")
        return f"running since {running.get('started')} (trigger: {running.get('trigger')}){done}"
    last = s.get("last")
    cut = (f"; a round started {s['cut_short']} was cut short (the next start learns its samples"
           f" again)" if s.get("cut_short") else "")
    if last is None:
        return "none has ended yet" + cut
    what = f"round {last['round']} " if last.get("round") is not None else ""
    made = f" {last['version']}" if last.get("version") else ""
    reason = f": {last['reason']}" if last.get("reason") else ""
    return (f"{what}{last['status']}{made}, ended {_ago(last['ended_ago_s'])} ago "
            f"({last['ended']}, took {last['seconds']:.0f} s){reason}{cut}")


def _learning_text(s: dict, config_given: bool) -> str:
    if not s["enabled"]:
        return "learner.enabled is off: no round starts by itself ('edgecl learn' runs one)"
    if s["not_learnt"] is None:
        return "nothing stored yet"
    whose = "" if config_given else " (default settings: --config gives the device's)"
    triggers = []
    if s["trigger_new_samples"] > 0:
        triggers.append(f"{s['trigger_new_samples']} (learner.trigger_new_samples)")
    if s["trigger_interval_s"] > 0:
        triggers.append(f"every {s['trigger_interval_s']:g} s with any "
                        f"(learner.trigger_interval_s)")
    when = f"; a round starts at {' or '.join(triggers)}{whose}" if triggers else ""
    return f"{s['not_learnt']} training sample(s) not learnt yet{when}"


def _memory_text(s: dict, _config_given: bool) -> str:
    if not s["samples"] and "capacity" not in s:
        return "empty: nothing stored yet"
    origins = ", ".join(f"{k} {n}" for k, n in s["per_origin"].items() if n)
    return (f"{s['samples']}/{s['capacity']} samples ({s['held_out']} held out), "
            f"{_size(s['bytes'])} of {_size(s['max_bytes'])}"
            + (f"; labels from {origins}" if origins else ""))


def _operator_text(s: dict, _config_given: bool) -> str:
    n = s["pending"]
    return f"{n} frame(s) waiting for a person" if n else "no frame waiting for a person"


def _classes_text(s: dict, _config_given: bool) -> str:
    names = list(s["names"].values())
    more = (f" and {len(names) - CLASSES_SHOWN} more ('edgecl classes list')"
            if len(names) > CLASSES_SHOWN else "")
    return f"{len(names)}: {', '.join(names[:CLASSES_SHOWN])}{more}" if names else "none yet"


def _disk_text(s: dict, _config_given: bool) -> str:
    return (f"{_size(s['free_bytes'])} free of {_size(s['total_bytes'])} on the state "
            f"directory's volume")


_TEXT = {"runtime": _runtime_text, "serving": _serving_text, "round": _round_text,
         "learning": _learning_text, "memory": _memory_text, "operator": _operator_text,
         "classes": _classes_text, "disk": _disk_text}
