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

SERVER_SECTIONS = ("fleet", "disk")
"""The sections the text form shows of a fleet server's folder that holds no device's state."""

NEEDS_A_PERSON = ("waiting_for_room", "waiting_for_model", "backoff")
"""Learner states of a running runtime that the status names a problem (``/healthz`` reads
them as degraded; a round waiting for its first held-out sample or for an import does not)."""

SECTIONS = ("runtime", "serving", "round", "learning", "memory", "operator", "classes", "fleet",
            "disk")


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
    from edgecl.commands.fleet import device_entries

    cfg = config_from_args(args)
    require_state_dir(cfg)
    state = Path(cfg.state_dir)
    report: dict = {"state_dir": str(state), "device": bool(device_entries(state))}
    problems: list[str] = []
    readers = {"runtime": _runtime, "serving": _serving, "round": _round,
               "learning": lambda s: _learning(
                   s, cfg.learner, args.config is not None or bool(getattr(args, "overrides", ())),
                   report["runtime"].get("pid")),
               "memory": lambda s: _memory(args, s, report["learning"].get("last_sample_id")),
               "operator": lambda s: _operator(cfg), "classes": _classes, "fleet": _fleet,
               "disk": _disk}
    for name in SECTIONS:  # the learning section before the memory, which counts its backlog
        try:
            report[name] = readers[name](state)
        except (EdgeclError, OSError, ValueError, TypeError, KeyError, RecursionError) as exc:
            # a damaged or hand-edited part (a record of other types, nested 100,000 deep)
            # hides no other
            report[name] = {"unreadable": _one_line(exc)}
        # the disk's problem says what the runtime does about it (the runtime section's)
        problems += _problems_of(name, dict(report[name], runtime=report["runtime"])
                                 if name == "disk" else report[name])
    not_learnt = report["memory"].pop("not_learnt", None)
    if "unreadable" not in report["learning"]:
        report["learning"]["not_learnt"] = not_learnt
        report["learning"]["memory_unreadable"] = "unreadable" in report["memory"]
    report["problems"] = problems
    if args.json:
        print_json_line(report)
    else:
        print(render(report))
    return 1 if problems else 0


def _one_line(exc: BaseException) -> str:
    from edgecl.logs import one_line

    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename:
        text = f"{exc.filename}: {exc.strerror or exc}"
    return one_line(text)


def _runtime(state: Path) -> dict:
    """Whether a runtime holds the state directory (its pid), or runs detect-only beside it
    (its state directory could not be written at its start), and an import stores into it."""
    from edgecl.runtime.lock import detect_only_lock, holder_pid, import_running, pid_left

    pid = holder_pid(state)
    detecting = holder_pid(*detect_only_lock(state)) if pid is None else None
    running = pid is not None or detecting is not None
    return {"running": running, "pid": pid if pid is not None else detecting,
            "detect_only": detecting is not None, "import_running": import_running(state),
            "unclean_pid": None if running else pid_left(state)}


def _serving(state: Path) -> dict:
    """The version marked current, with its engine, classes and ACC (``version`` None: the
    device serves the model it was started with), and ``damaged``: why the current pointer or
    the version's manifest or essential files are unusable (sha256 checked, as a start does)."""
    from edgecl.models.registry import damaged_current_way_out
    from edgecl.runtime.console import serving_engine

    models = state / "models"
    if not models.is_dir():
        return {"version": None}
    registry = _read_registry(state)
    damaged = registry.damaged_current()
    versions = registry.list()
    current = next((v for v in versions if v.current), None)
    # what a person can serve instead (before: 'models rollback' was named where no version
    # was left to roll back to)
    out: dict = {"version": None, "versions": len(versions), "damaged": damaged or None,
                 "staged": [v.version for v in versions if v.status == "staged"],
                 "fix": damaged_current_way_out(versions)}
    if current is None:
        return out
    if not damaged:  # its files' sha256 (a 10 MB engine: milliseconds) as a start checks them
        found = ([current.reason] if current.status == "corrupt"
                 else registry.verify(current.version, essential_only=True))
        if found:
            more = f" and {len(found) - 1} more" if len(found) > 1 else ""
            out["damaged"] = (f"the serving version {current.version} is damaged ({found[0]}{more}):"
                              f" the runtime serves the newest intact version from its next start")
    names = current.manifest.get("classes")
    if isinstance(names, (dict, list)) and names:  # classes taught since it was made
        from edgecl.runtime.promote import classes_lacking

        out["not_detected"] = classes_lacking(state, len(names))
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
    from edgecl.boot import CLOCK_SET_S, iso_time
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
        out["cut_short_staged"] = _round_staged(state)
    path = folder / "last_round.json"
    data = _json_object(path, "the next round's result replaces it (delete it to clear this line)")
    if data is not None:
        try:
            result = RoundResult.from_json(data)
        except (ValueError, TypeError, KeyError) as exc:  # a record hand-edited to other types
            raise ValueError(f"{path} holds no round's result ({_one_line(exc)}); the next "
                             f"round's result replaces it (delete it to clear this line)") from None
        # the round's own clock where it kept one (a copy of the file has the copy's time)
        ended_s = (result.started_s + result.seconds if result.started_s >= CLOCK_SET_S
                   else path.stat().st_mtime)
        now = _version_status(state, result.version) if result.version else None
        status = result.status.value
        if status == "staged" and now in ("promoted", "retired"):
            status = "promoted"  # the round staged it, the supervisor (or a person) promoted it
        if now == "staged":  # who promotes it: the next start, or a person
            now = "held" if _held_for_person(state, result.version) else now
        out["last"] = {"round": result.round, "status": status, "version_status": now,
                       "reason": result.reason, "version": result.version,
                       "trigger": result.trigger, "seconds": round(result.seconds, 1),
                       "ended": iso_time(ended_s),
                       "ended_ago_s": round(max(0.0, time.time() - ended_s))}
    return out


def _held_for_person(state: Path, version: str) -> bool:
    """Whether a round's staged version waits for a person ('edgecl learn --no-promote'), not
    for the next start's promotion."""
    from edgecl.models.registry import promoted_at_start

    return not promoted_at_start(
        _read_registry(state).manifest(version))


def _read_registry(state: Path):
    """``STATE/models`` as it is: status writes nothing (no repair of a damaged record)."""
    from edgecl.models.registry import Registry

    return Registry(state / "models", create=False, repair=False)


def _round_staged(state: Path) -> str | None:
    """The newest version a round staged and nobody promoted yet (the next start promotes
    it: :func:`edgecl.runtime.learner.promote_leftover_staged`), or None."""
    from edgecl.models.registry import promoted_at_start

    if not (state / "models").is_dir():
        return None
    registry = _read_registry(state)
    return next((v for v in reversed(registry.staged_versions())
                 if promoted_at_start(registry.manifest(v))), None)


def _version_status(state: Path, version: str) -> str:
    """A version's status in the registry now (``promoted`` while it serves, ``retired``,
    ``staged``, ``rejected``, ``pruned``, ``corrupt``), or ``missing`` (its folder deleted):
    a round's record says what the round made, not what became of it."""
    from edgecl.models.registry import VERSION_RE

    models = state / "models"
    if not VERSION_RE.match(version) or not (models / version).is_dir():
        return "missing"
    return _read_registry(state).status(version)


def _json_object(path: Path, fix: str) -> dict | None:
    """A JSON object read from ``path``; None when the file is absent.

    Args:
        path: the file.
        fix: what a person does about a damaged one (said after the damage).

    Raises:
        ValueError: the file holds no JSON object: one line naming it, what is wrong and
            ``fix`` (before, Python's own words: "'utf-8' codec can't decode byte 0xf0").
    """
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not text (damaged); {fix}") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path} is not readable JSON ({str(exc) or 'nested too deeply'}); "
                         f"{fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object; {fix}")
    return data


SETTINGS_SOURCES = ("runtime", "last_run", "config", "defaults")
"""Where the learning section's settings come from: the running runtime's record, the last
run's record (:mod:`edgecl.runtime.run_record`), ``--config``, or edgecl's defaults."""


def _learning(state: Path, learner, config_given: bool, running_pid: int | None) -> dict:
    """The serving model's progress (``learner/state.json``: its round, the last sample id it
    learnt), the settings that start the next round and what a due round waits for;
    ``not_learnt`` is filled in from the memory (:func:`_memory`).

    The settings are the running runtime's (its record: a start with overrides is read as it
    runs), else the last run's, else the config's (``settings_from``: one of
    :data:`SETTINGS_SOURCES`)."""
    from edgecl.continual.round_state import state_from_json, state_path
    from edgecl.runtime.run_record import RUN_RECORD_FILE, learner_settings, read_run_record

    progress = _json_object(state_path(state), "the runtime's next start rebuilds it from the "
                                               "model versions")
    learnt = state_from_json(progress) if progress is not None else None
    settings = learner_settings(learner)
    source = "config" if config_given else "defaults"
    record = read_run_record(state)
    out: dict = {"learner_state": None, "waits": None, "waits_since": None, "run_started": None,
                 "record_unreadable": None}
    path = state / RUN_RECORD_FILE
    if record is not None and not _settings_ok(record["learner"]):  # hand-edited to other types
        record = None
    if record is None and path.exists():  # before: the defaults shown, as if none were kept
        out["record_unreadable"] = (f"{path} is unreadable: the settings shown are the "
                                    f"config's; the runtime's next start writes it again")
    if record is not None:
        settings = {k: record["learner"].get(k, v) for k, v in settings.items()}
        running = running_pid is not None and record.get("pid") == running_pid
        source = "runtime" if running else "last_run"
        out["run_started"] = str(record.get("started") or "") or None
        if running:
            out["learner_state"] = str(record.get("learner_state") or "") or None
            why, since = record.get("learner_why"), record.get("learner_since")
            out["waits"] = why if isinstance(why, str) and why else None
            out["waits_since"] = since if isinstance(since, str) and since else None
    return dict(settings, settings_from=source, not_learnt=None, **out,
                round=learnt.round if learnt else 0,
                last_sample_id=learnt.last_sample_id if learnt else 0)


def _settings_ok(learner: dict) -> bool:
    """Whether a run record's learner settings have the types a config gives them."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    return (isinstance(learner.get("enabled"), bool) and number(learner.get("trigger_new_samples"))
            and number(learner.get("trigger_interval_s"))
            and isinstance(learner.get("trigger_new_class", False), bool))


def _memory(args: argparse.Namespace, state: Path, last_sample_id: int | None) -> dict:
    """The replay memory's counts (as ``memory stats`` reads them: nothing repaired), and
    ``not_learnt``: its training samples stored after ``last_sample_id`` (``None``: the
    learner's progress could not be read)."""
    from edgecl.commands.memory import _open
    from edgecl.continual.memory import INDEX_FILE
    from edgecl.continual.memory.rebuild import index_problem

    if not (state / "memory" / INDEX_FILE).is_file():
        return {"samples": 0, "not_learnt": None}
    damaged = index_problem(state / "memory")  # SQLite reads pages lazily: a damaged one
    if damaged:  # read as a healthy memory until an import or an answer was refused
        raise ValueError(f"{damaged}; 'edgecl memory verify --rebuild-index' rebuilds it from "
                         f"the sample files (the runtime's next start does too)")
    with _open(args, verify=False) as memory:
        stats = memory.stats()
        not_learnt = (None if last_sample_id is None else
                      sum(r.id > last_sample_id for r in memory.records(held_out=False)))
    out = {k: stats[k] for k in ("samples", "capacity", "held_out", "bytes", "max_bytes",
                                 "per_origin")}
    return dict(out, not_learnt=not_learnt)


def _operator(cfg) -> dict:
    """Frames waiting for a person in the operator queue (``STATE/labels``, as ``edgecl
    labels pending`` reads it; before, a folder no queue uses was looked for, and every
    device read as having none waiting)."""
    from edgecl.runtime.labels import OperatorQueue

    queue = OperatorQueue.from_config(cfg, create=False)
    if not queue.root.is_dir():
        return {"pending": 0, "malformed": []}
    pending = queue.pending()
    return {"pending": len(pending), "malformed": queue.malformed()}


def _classes(state: Path) -> dict:
    """The class registry's names, by id, and the classes merged into another (``merged``:
    name -> the name it is merged into; before, a merged typo read as a class of its own)."""
    from edgecl.models.classes import ClassRegistry

    registry = ClassRegistry(state)
    names, merged = registry.names(), registry.merged()
    return {"names": {str(k): v for k, v in sorted(names.items())},
            "merged": {names[k]: names[v] for k, v in sorted(merged.items())
                       if k in names and v in names}}


def _fleet(state: Path) -> dict:
    """The fleet, as this folder takes part in it: the pid of a fleet client serving it
    (``edgecl fleet join``), the newest version adopted from a fleet round, and, for a fleet
    server's folder (``STATE/fleet``), its last round, classes and why its global model cannot
    be loaded, if it cannot."""
    from edgecl.commands.fleet import round_summary
    from edgecl.fleet.store import GlobalStore
    from edgecl.runtime.lock import FLEET_CLIENT_LOCK_NAME, holder_pid

    out: dict = {"client_pid": holder_pid(state, FLEET_CLIENT_LOCK_NAME), "adopted": None,
                 "server": None}
    if (state / "models").is_dir():
        for info in reversed(_read_registry(state).list()):
            origin = str(info.manifest.get("origin") or "")
            if origin.startswith("fleet round "):
                out["adopted"] = {"version": info.version, "origin": origin,
                                  "status": "serving" if info.current else info.status}
                break
    store = GlobalStore(state / "fleet")
    rounds = store.rounds()
    server_pid = holder_pid(store.root) if store.root.is_dir() else None
    # a server running its first round holds its lock before any round is written
    if rounds or (state / "fleet" / "global.json").exists() or server_pid is not None:
        names = next((r["names"] for r in reversed(rounds) if isinstance(r.get("names"), list)),
                     [])
        out["server"] = {"pid": server_pid, "round": store.last_round(),
                         "classes": [str(n) for n in names],
                         "last": round_summary(rounds[-1]) if rounds else None,
                         "problem": store.problem()}
    return out


def _disk(state: Path) -> dict:
    """Free and total bytes on the state directory's volume, and whether it is mounted
    read-only (a card the kernel remounted after errors: the runtime then only detects)."""
    from edgecl.runtime.volume import volume_read_only

    usage = shutil.disk_usage(state)
    return {"free_bytes": usage.free, "total_bytes": usage.total,
            "read_only": volume_read_only(state)}


def _problems_of(name: str, section: dict) -> list[str]:
    """One line per thing in a section that needs a person."""
    if "unreadable" in section:
        return [f"{name}: unreadable: {section['unreadable']}"]
    out = []
    if name == "runtime" and section.get("unclean_pid"):
        out.append(f"the runtime is not running and did not stop cleanly (pid "
                   f"{section['unclean_pid']}: killed, crashed or powered off); its next start "
                   f"checks what it left")
    if name == "operator" and section.get("malformed"):  # before: warnings on stderr only
        ids = section["malformed"]
        out.append(f"operator: {len(ids)} queue item(s) are damaged and not offered "
                   f"({', '.join(ids[:3])}{', ...' if len(ids) > 3 else ''}): 'edgecl labels "
                   f"skip ID' sets each aside")
    if name == "learning" and section.get("record_unreadable"):
        out.append(f"learning: {section['record_unreadable']}")
    if name == "serving" and section.get("damaged"):
        out.append(f"serving: {section['damaged']} ('edgecl models verify' lists what is damaged; "
                   f"{section['fix']})")
    if name == "round":
        last = section.get("last") or {}
        if last.get("status") == "failed":
            out.append(f"the last learning round failed: {last.get('reason')}")
    if name == "learning" and section.get("learner_state") in NEEDS_A_PERSON:
        out.append(f"learning: {section.get('waits') or section['learner_state']}")
    if name == "fleet" and (section.get("server") or {}).get("problem"):
        out.append(f"fleet: the server's global model cannot be loaded: "
                   f"{section['server']['problem']}")
    if name == "disk" and section.get("read_only"):
        # what the runtime does, as the runtime section read it (before: 'the runtime only
        # detects' of a full runtime whose card went read-only under it, and of none at all)
        runtime = section.get("runtime") or {}
        if runtime.get("detect_only"):
            does = ("the runtime only detects, storing, labelling and learning nothing, until "
                    "it can be written")
        elif runtime.get("running"):
            does = ("the running runtime detects but cannot store, label or learn (its writes "
                    "fail); started again now, it would only detect")
        else:
            does = "a runtime started now only detects, storing, labelling and learning nothing"
        out.append(f"the state directory's volume is mounted read-only (a card the kernel "
                   f"remounted after errors?): {does}; check the card (dmesg, fsck) and "
                   f"remount it read-write")
    if name == "disk" and section["total_bytes"] and \
            section["free_bytes"] < LOW_DISK_FRACTION * section["total_bytes"]:
        out.append(f"the state directory's volume has {_size(section['free_bytes'])} free "
                   f"of {_size(section['total_bytes'])}: 'edgecl models prune' frees older "
                   f"versions (also on a full disk), 'edgecl memory stats' shows what the "
                   f"replay memory holds; detection goes on meanwhile")
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


def render(report: dict) -> str:
    """The text form of :func:`status_command`'s report, one line per section.

    Args:
        report: the report's JSON object.

    Returns:
        Lines ``  section    text``, then the problems.
    """
    lines = [report["state_dir"]]
    server_only = not report.get("device") and (report.get("fleet") or {}).get("server")
    for name in SERVER_SECTIONS if server_only else SECTIONS:  # no device's lines: all "none"
        section = report[name]
        text = (f"unreadable: {section['unreadable']}" if "unreadable" in section
                else _TEXT[name](section))
        lines.append(f"  {name:<10} {text}")
    lines += [f"problem: {p}" for p in report["problems"]]
    return "\n".join(lines)


def _runtime_text(s: dict) -> str:
    text = f"running (pid {s['pid']})" if s["running"] else "not running"
    if s.get("unclean_pid"):
        text += (f"; the last runtime (pid {s['unclean_pid']}) did not stop cleanly (killed, "
                 f"crashed or powered off)")
    if s.get("detect_only"):
        text += (", only detecting: its state directory could not be written at its start "
                 "(nothing stored, labelled or learnt; it starts again in full once it can)")
    return text + (", an import is storing samples" if s["import_running"] else "")


def _serving_text(s: dict) -> str:
    if s["version"] is None and s.get("damaged"):
        return f"no usable version: {s['damaged']}"
    if s["version"] is None:
        staged = f"; staged, not yet promoted: {', '.join(s['staged'])}" if s.get("staged") else ""
        return ("no version yet: a start serves the file of model.path (or --model) until a "
                "round's version is promoted ('edgecl models add MODEL.pt --promote' makes a "
                "checkpoint the first version)" + staged)
    parts = [f"{s['version']} ({s['engine'] or 'no usable engine'})"]
    if s.get("classes") is not None:
        parts.append(f"{s['classes']} classes")
    if s.get("created"):
        parts.append(f"made {s['created']}" + (f" [{s['origin']}]" if s.get("origin") else ""))
    if s.get("acc") is not None:
        parts.append(f"held-out ACC {s['acc']:.3f}")
    lacking = s.get("not_detected") or []
    if lacking:  # before: nothing said the device had stopped detecting a taught class
        shown = ", ".join(lacking[:CLASSES_SHOWN]) + (", ..." if len(lacking) > CLASSES_SHOWN
                                                       else "")
        parts.append(f"does not detect {shown} yet (a round learns a class on top of it once "
                     f"the replay memory holds samples of it)")
    return ", ".join(parts)


def _round_text(s: dict) -> str:
    running = s.get("running")
    if running is not None:
        done = (f", step {running['steps']}/{running['total_steps']}"
                if running.get("steps") is not None else "")
        return f"running since {running.get('started')} (trigger: {running.get('trigger')}){done}"
    last = s.get("last")
    then = (f"the next start promotes {s['cut_short_staged']}, which it staged"
            if s.get("cut_short_staged") else "the next start learns its samples again")
    cut = f"; a round started {s['cut_short']} was cut short ({then})" if s.get("cut_short") else ""
    if last is None:
        return "none has ended yet" + cut
    what = f"round {last['round']} " if last.get("round") is not None else ""
    made = f" {last['version']}" if last.get("version") else ""
    since = _SINCE.get((last["status"], last.get("version_status")), "")
    made += since
    reason = f": {last['reason']}" if last.get("reason") else ""
    return (f"{what}{last['status']}{made}, ended {_ago(last['ended_ago_s'])} ago "
            f"({last['ended']}, took {last['seconds']:.0f} s){reason}{cut}")


_SINCE = {("promoted", "promoted"): " (serving)", ("promoted", "retired"): " (since retired)",
          ("staged", "staged"): " (not yet promoted: the runtime's next start promotes it; "
                                "'edgecl models discard' stops that)",
          ("staged", "held"): " (held for a person: 'edgecl models promote' serves it)",
          ("staged", "rejected"): " (since discarded)"}
_SINCE.update({(status, now): f" (now {now})" for status in ("promoted", "staged", "rejected")
               for now in ("pruned", "corrupt", "missing")})


def _learning_text(s: dict) -> str:
    if not s["enabled"]:
        return "learner.enabled is off: no round starts by itself ('edgecl learn' runs one)"
    if s.get("memory_unreadable"):  # before: "nothing stored yet" of a memory of 238 samples
        return "unknown: the replay memory cannot be read (see memory)"
    if s["not_learnt"] is None:
        return "nothing stored yet"
    whose = {"runtime": "", "config": "",
             "defaults": " (default settings: --config gives the device's)",
             "last_run": f" (as the last run, started {s.get('run_started')}, set it)",
             }.get(s.get("settings_from"), "")
    triggers = []
    if s["trigger_new_samples"] > 0:
        triggers.append(f"{s['trigger_new_samples']} (learner.trigger_new_samples)")
    if s["trigger_interval_s"] > 0:
        triggers.append(f"every {s['trigger_interval_s']:g} s with any "
                        f"(learner.trigger_interval_s)")
    if s.get("trigger_new_class"):
        triggers.append("a sample of a new class (learner.trigger_new_class)")
    when = f"; a round starts at {' or '.join(triggers)}{whose}" if triggers else ""
    since = f" (as the runtime said at {s['waits_since']})" if s.get("waits_since") else ""
    waits = f"; a due round waits{since}: {s['waits']}" if s.get("waits") else ""
    return f"{s['not_learnt']} training sample(s) not learnt yet{when}{waits}"


def _memory_text(s: dict) -> str:
    if not s["samples"] and "capacity" not in s:
        return "empty: nothing stored yet"
    origins = ", ".join(f"{k} {n}" for k, n in s["per_origin"].items() if n)
    return (f"{s['samples']}/{s['capacity']} samples ({s['held_out']} held out), "
            f"{_size(s['bytes'])} of {_size(s['max_bytes'])}"
            + (f"; labels from {origins}" if origins else ""))


def _operator_text(s: dict) -> str:
    n = s["pending"]
    return f"{n} frame(s) waiting for a person" if n else "no frame waiting for a person"


def _classes_text(s: dict) -> str:
    merged = s.get("merged") or {}
    names = [n for n in s["names"].values() if n not in merged]
    more = (f" and {len(names) - CLASSES_SHOWN} more ('edgecl classes list')"
            if len(names) > CLASSES_SHOWN else "")
    folded = (f"; merged: {', '.join(f'{a} into {b}' for a, b in list(merged.items())[:4])}"
              + (", ..." if len(merged) > 4 else "") if merged else "")
    return (f"{len(names)}: {', '.join(names[:CLASSES_SHOWN])}{more}{folded}" if names
            else "none yet")


def _fleet_text(s: dict) -> str:
    parts = []
    server = s.get("server")
    if server:
        classes = server["classes"]
        shown = ", ".join(classes[:CLASSES_SHOWN]) + (", ..." if len(classes) > CLASSES_SHOWN else "")
        running = (f"server running, pid {server['pid']}" if server.get("pid") is not None
                   else "server not running")
        parts.append(f"a fleet server's folder ({running}): round {server['round']}, "
                     f"{len(classes)} classes"
                     + (f" ({shown})" if classes else "")
                     + (f"; last {server['last']}" if server.get("last") else ""))
    if s.get("client_pid") is not None:
        parts.append(f"a fleet client serves this device (pid {s['client_pid']})")
    adopted = s.get("adopted")
    if adopted:
        parts.append(f"last adopted {adopted['origin']} as {adopted['version']} "
                     f"({adopted['status']})")
    return "; ".join(parts) if parts else "not in a fleet"


def _disk_text(s: dict) -> str:
    return (f"{_size(s['free_bytes'])} free of {_size(s['total_bytes'])} on the state "
            f"directory's volume" + (", mounted read-only" if s.get("read_only") else ""))


_TEXT = {"runtime": _runtime_text, "serving": _serving_text, "round": _round_text,
         "learning": _learning_text, "memory": _memory_text, "operator": _operator_text,
         "classes": _classes_text, "fleet": _fleet_text, "disk": _disk_text}
