"""``edgecl models list | add | promote | rollback | verify | prune``: the versioned model registry."""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from edgecl.arguments import input_path, print_json_line
from edgecl.commands.common import add_config_args, config_from_args, require_state_dir
from edgecl.errors import ConfigError
from edgecl.logs import one_line
from edgecl.models.registry import version_name
from edgecl.runtime.promote import promote_version, rollback_version


def add_parser(sub) -> None:
    """Register the ``models`` command group.

    Args:
        sub: the top-level sub-parsers object.
    """
    p = sub.add_parser("models", help="list, add, promote, discard, roll back, verify or prune "
                                      "model versions")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    lst = msub.add_parser("list", help="list versions")
    add_config_args(lst)
    lst.add_argument("--json", action="store_true", help="print one JSON list")
    lst.add_argument("--all", action="store_true",
                     help="one line per pruned version too (by default a run of pruned versions "
                          "is one line; --json always lists each)")
    lst.set_defaults(func=list_command)
    add = msub.add_parser("add", help="load, warm and stage a model file as a new version")
    add_config_args(add)
    add.add_argument("path", type=input_path, help="model file (.pt, .onnx, .engine, or an OpenVINO .xml with "
                                  "its .bin beside it)")
    add.add_argument("--promote", action="store_true", help="promote it right away")
    add.set_defaults(func=add_command)
    pro = msub.add_parser("promote", help="make a version current (the running loop swaps to it)")
    add_config_args(pro)
    pro.add_argument("version", type=version_name,
                     help="version to make current (v0003; v3 or 3 name it too)")
    pro.add_argument("--no-load-check", action="store_true",
                     help="skip test-loading the model before promoting")
    pro.set_defaults(func=promote_command)
    dis = msub.add_parser("discard", help="reject a staged version that never served (a "
                                          "candidate added without --promote)")
    add_config_args(dis)
    dis.add_argument("version", type=version_name, help="version to reject (v0003; v3 or 3)")
    dis.set_defaults(func=discard_command)
    rb = msub.add_parser("rollback", help="return to the previously promoted version")
    add_config_args(rb)
    rb.set_defaults(func=rollback_command)
    ver = msub.add_parser("verify", help="check a version's files against their manifest sha256")
    add_config_args(ver)
    ver.add_argument("version", nargs="?", type=version_name,
                     help="version (default: the current one; v3 or 3 name v0003)")
    ver.add_argument("--all", action="store_true",
                     help="check every version whose files are kept (all but pruned ones: "
                          "those a rollback could return to, staged and rejected ones), not "
                          "only one (--json: one object per version, as a list)")
    ver.add_argument("--json", action="store_true", help="print one JSON object")
    ver.set_defaults(func=verify_command)
    prune = msub.add_parser("prune", help="apply the retention rule (export.keep_promoted, "
                                          "export.keep_rejected) and bound the engine cache")
    add_config_args(prune)
    prune.add_argument("--json", action="store_true", help="print one JSON object")
    prune.set_defaults(func=prune_command)


def _registry(args, create: bool = False, writes: bool = False):
    """The state directory's registry; only ``models add`` (``create``) may start a new state
    directory (a typo in --state-dir must not leave an empty one behind). A command that
    ``writes`` (prune, rollback) may make the registry in an existing state directory; any
    other reads a state directory with no registry yet as one with no version, and writes
    nothing there (not even the registry's lock file)."""
    from edgecl.models.registry import Registry

    cfg = config_from_args(args)
    if not create:
        require_state_dir(cfg)
    return Registry(Path(cfg.state_dir) / "models", create=create or writes)


def _options(args):
    from edgecl.runtime.app import inference_options

    return inference_options(config_from_args(args))


def list_command(args: argparse.Namespace) -> int:
    """Print the registry's versions, each with the engine that serves it and the INT8 gate's say."""
    from edgecl.runtime.console import (int8_gate, metrics_named_now, registry_names_now,
                                        serving_engine)

    registry = _registry(args)
    versions = registry.list()
    rows = [(v, serving_engine(registry, v), int8_gate(v.manifest)) for v in versions]
    problems = {v.version: serve_problem(registry, v, engine) for v, engine, _ in rows}
    if args.json:
        names, former = registry_names_now(Path(registry.root).parent)
        print_json_line([dict(v.to_json(), **engine, int8=gate, serve_problem=problems[v.version],
                              origin=(v.manifest or {}).get("origin") or None,
                              metrics=metrics_named_now(v.metrics or {}, v.manifest, names,
                                                        former))
                         for v, engine, gate in rows])
        return 0
    if not versions:
        print("no trained versions yet: the device serves the model it was started with until a "
              "learning round's version is promoted")
    damaged = registry.damaged_current()
    if damaged:  # nothing is marked current then: say why instead of listing as if all is well
        print(f"warning: {damaged}; 'edgecl models promote VERSION' sets it again",
              file=sys.stderr)
    width = max([len(engine["engine_label"] or "-") for _, engine, _ in rows] + [6])
    for run in ([row] for row in rows) if args.all else pruned_runs(rows):
        if len(run) > 1:
            print(f"  {run[0][0].version}..{run[-1][0].version} pruned    ({len(run)} versions whose "
                  "files were removed; --all lists each)")
            continue
        v, engine, gate = run[0]
        mark = "*" if v.current else " "
        acc_text = _acc_text(v.metrics)
        reason = f" ({v.reason})" if v.reason else ""  # derived: consistent with the status
        origin = str((v.manifest or {}).get("origin") or "")
        if origin.startswith("fleet round"):  # before: told apart from a local round nowhere
            server = ((v.manifest or {}).get("fleet") or {}).get("server")
            reason += f" [{origin}{f' of {server}' if isinstance(server, str) else ''}]"
        refused = f" [INT8 refused: {gate['reason']}]" if gate and gate["refused"] else ""
        label = engine["engine_label"] or "-"
        broken = f" [{problems[v.version]}]" if problems[v.version] else ""
        print(f"{mark} {v.version} {v.status:<9} {label:<{width}} {v.created}{acc_text}{reason}"
              f"{refused}{broken}")
    return 0


def _acc_text(metrics: dict) -> str:
    """`` ACC 0.005 over 4 classes``: a version's ACC with what it averages (the gate's reason
    beside it may average fewer: the classes with enough held-out boxes)."""
    acc = metrics.get("acc")
    if isinstance(acc, bool) or not isinstance(acc, (int, float)):
        return ""
    nouns = {"classes": ("class", "classes"), "tasks": ("task", "tasks")}
    kind, over = metrics.get("kind"), ""
    columns = metrics.get("per_class_map50_95" if kind == "classes" else "per_task_map50_95")
    if kind in nouns and isinstance(columns, dict) and columns:
        over = f" over {len(columns)} {nouns[kind][len(columns) > 1]}"
    return f" ACC {acc:.3f}{over}"


def pruned_runs(rows: list) -> list[list]:
    """Rows grouped for the text listing: each run of consecutive pruned versions in one group,
    every other row alone (a device that learns for months prunes hundreds of versions).

    Args:
        rows: ``(VersionInfo, engine, gate)`` in version order.

    Returns:
        Groups of rows, in order.
    """
    groups: list[list] = []
    for row in rows:
        if row[0].status == "pruned" and groups and groups[-1][-1][0].status == "pruned":
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def serve_problem(registry, info, engine: dict) -> str | None:
    """What keeps a version from serving the engine its manifest chose (a deleted or unsafe file).

    Args:
        registry: the :class:`~edgecl.models.registry.Registry`.
        info: the version's :class:`~edgecl.models.registry.VersionInfo`.
        engine: what :func:`edgecl.runtime.console.serving_engine` found for it.

    Returns:
        One line saying what is wrong, what serves instead and what to do, or ``None`` when the
        version serves what it chose (or is not meant to serve: rejected, pruned, corrupt).
    """
    from edgecl.errors import RegistryError
    from edgecl.models.registry import is_essential_file
    from edgecl.runtime.console import NOT_SERVING

    if info.status in NOT_SERVING:
        return None
    see = f"see 'edgecl models verify {info.version}'"
    for name in sorted(n for n in info.files if is_essential_file(n, info.files)):
        try:
            registry.file_path(info.version, name)
        except RegistryError as exc:
            start = " (a start rolls back from it)" if info.current else ""
            return f"cannot serve: {exc}{start}; {see}"
    if engine.get("engine") is None:
        try:
            registry.model_path(info.version)
        except RegistryError as exc:
            return f"cannot serve: {exc}; {see}"
        return None
    chosen = info.manifest.get("serve")
    if "serve" in info.manifest and not isinstance(chosen, str):
        return (f"manifest 'serve' is {str(chosen)[:70]!r}, not a file name: "
                f"{engine['engine_label']} serves instead; {see}")
    if not isinstance(chosen, str) or chosen == engine.get("engine_file"):
        return None
    try:
        registry.file_path(info.version, chosen)
    except RegistryError as exc:
        return f"{exc}: {engine['engine_label']} serves instead; {see}"
    return None


def check_loadable(registry, version: str, args: argparse.Namespace) -> None:
    """Verify a version's files, then load and warm its model once.

    Raises:
        RegistryError: a file fails its integrity check.
        ModelLoadError: the model cannot load or run.
    """
    registry.check_integrity(version)
    backend = registry.load_serving(version, _options(args), warmup_runs=1)
    backend.close()


def _held_already(registry, path: Path) -> str | None:
    """The newest version, neither pruned nor rejected, staged from a file with ``path``'s
    bytes (its manifest's sha256 of ``model<suffix>``) whose copy is intact, or None (a
    version whose copy was damaged since is no reason to refuse the good file)."""
    from edgecl.errors import EdgeclError
    from edgecl.models.base import sha256_file

    entry = f"model{path.suffix.lower()}"
    try:
        digest = sha256_file(path)
    except OSError:  # the add itself says why it cannot read the file
        return None
    for version in reversed(registry.versions()):
        try:
            manifest = registry.manifest(version)
        except EdgeclError:
            continue
        if (manifest.get("status") not in ("pruned", "rejected")
                and str(manifest.get("files", {}).get(entry, "")).lower() == digest
                and registry.file_intact(version, entry)):  # a damaged copy: staged anew
            return version
    return None


def add_command(args: argparse.Namespace) -> int:
    """Load and warm a model file, stage it (and optionally promote it)."""
    from edgecl.errors import EdgeclError, special_file_problem
    from edgecl.models.classes import ClassRegistry
    from edgecl.ultra import is_model_yaml

    special = special_file_problem(args.path)
    if special:  # said first: /dev/zero or a named pipe was read for its hash, for ever
        raise ConfigError(f"cannot add: {special}")
    cfg = config_from_args(args)
    state = Path(cfg.state_dir)
    existed = state.exists()
    registry = _registry(args, create=True)
    held = _held_already(registry, Path(args.path)) if existed else None
    if held is not None:  # before: staged again, 5 MB a copy, which prune keeps while staged
        print(f"{args.path} is already {held} (the same file): nothing added")
        if args.promote and registry.current() != held:
            promote_version(cfg.state_dir, held)  # its classes join the registry there
            print(f"promoted {held}")
        return 0
    classes = ClassRegistry(cfg.state_dir)
    seeds = not is_model_yaml(args.path)

    def refuse_other_classes(names: dict) -> None:
        """Before a copy is staged (before: staged and rejected, a copy of the model kept)."""
        conflict = classes.conflict(names)
        if conflict:  # 'edgecl run' would serve it under the device's names: car boxes named boat
            raise ConfigError(f"{args.path}: {conflict}; nothing was added (use a model trained "
                              f"with these class ids, or another --state-dir)")
        problem = classes.seed_problem(names) if seeds else None
        if problem:
            raise ConfigError(f"{args.path}: {problem}; nothing was added")

    try:
        version = registry.add(args.path, opts=_options(args), accept_classes=refuse_other_classes)
    except BaseException:
        if not existed:  # a refused first model leaves no empty state directory behind
            _remove_if_only_skeleton(state)
        raise
    names = registry.manifest(version).get("classes") or {}
    added = []
    known = classes.names()
    if names and seeds and not args.promote and known:
        # only staged, for a trial: its new classes join the registry when it is promoted
        # (before: added for the device's life now)
        later = [n for cid, n in sorted((int(k), v) for k, v in names.items())
                 if cid >= len(known)]
        if later:
            print(f"class registry unchanged: {len(later)} class(es) of the model "
                  f"({', '.join(later[:5])}{', ...' if len(later) > 5 else ''}) join it when "
                  f"it is promoted")
    elif names and seeds:
        # its class ids become the device's now (the first model; or it serves now), so that
        # labels imported next map onto them by name (before, an import numbered its classes
        # afresh and the head's rows were renamed)
        try:
            added = classes.seed(names)
        except EdgeclError as exc:  # the registry changed since the check above
            _reject(cfg, registry, version, f"class names refused: {exc}")
            raise ConfigError(f"{args.path}: {exc}; staged as {version} and rejected") from None
    print(one_line(f"staged {version} from {args.path}"))
    if added:
        print(f"class registry: {len(added)} class(es) from the model "
              f"({', '.join(added[:5])}{', ...' if len(added) > 5 else ''})")
    if args.promote:
        promote_version(cfg.state_dir, version)
        print(f"promoted {version}")
    if Path(args.path).suffix.lower() == ".pt":
        _warn_unlearnable(cfg, Path(args.path))
    if Path(args.path).suffix.lower() not in (".pt", ".yaml", ".yml"):
        from edgecl.continual.round import base_checkpoint
        from edgecl.runtime.labels import uncertain_band_problem

        band = uncertain_band_problem(
            cfg, registry.manifest(version).get("nms_score_threshold"), version)
        if band:  # an export with NMS inside: the labels' band below its threshold sees nothing
            print(f"warning: {band}", file=sys.stderr)

        if base_checkpoint(cfg) is None:
            given = (f"model.path {cfg.model.path} is no trained .pt checkpoint; set it to the "
                     if cfg.model.path else "set model.path to the ")
            print(f"warning: {version} holds no .pt checkpoint, so no learning round can "
                  f"fine-tune it while it serves; {given}ultralytics .pt checkpoint it was "
                  f"exported from, or add that checkpoint instead", file=sys.stderr)
    return 0


def _warn_unlearnable(cfg, path: Path) -> None:
    """Say at once when the learner's settings do not fit an added checkpoint (a P6 model at
    a ``learner.imgsz`` that is no multiple of 64, IDER on an end-to-end head): before, it was
    added without a word and ``run`` refused to start."""
    from edgecl.continual.finetune import settings_problem
    from edgecl.errors import EdgeclError
    from edgecl.models.checkpoint import load_checkpoint

    try:
        model, _ = load_checkpoint(path)
    except EdgeclError:
        return  # added above, so readable; a round reports anything else
    problem = settings_problem(model, 0, cfg.ider.enabled, path.name, imgsz=int(cfg.learner.imgsz))
    if problem:
        print(f"warning: no round can fine-tune it with this configuration: {problem}",
              file=sys.stderr)


def _reject(cfg, registry, version: str, reason: str) -> None:
    """Mark an added version rejected and apply the registry's retention rule
    (``export.keep_rejected``), as a round does: refused adds retried in a loop kept a full copy
    of the model each."""
    from edgecl.errors import EdgeclError

    registry.set_status(version, "rejected", reason)
    try:
        registry.prune(cfg.export.keep_promoted, cfg.export.keep_rejected)
    except (EdgeclError, OSError) as exc:  # the refusal is what the user must read
        print(f"warning: the registry was not pruned: {exc}", file=sys.stderr)


def _remove_if_only_skeleton(state: Path) -> None:
    """Delete a state directory this command created when it holds nothing but empty folders
    and lock files (the registry's skeleton); anything else stays."""
    files = [p for p in state.rglob("*") if not p.is_dir()]
    if all(p.name.endswith(".lock") for p in files):
        shutil.rmtree(state, ignore_errors=True)


def promote_command(args: argparse.Namespace) -> int:
    """Promote a version after checking its files and that it loads."""
    registry = _registry(args)
    if registry.current() == args.version and args.version in registry.versions():
        registry.check_integrity(args.version)  # a script's repeated promotion: done already
        print(f"{args.version} is already the current version; nothing changed")
        return 0
    if not args.no_load_check:
        check_loadable(registry, args.version, args)
    promote_version(config_from_args(args).state_dir, args.version)
    print(f"promoted {args.version}")
    return 0


def discard_command(args: argparse.Namespace) -> int:
    """Reject a staged version that never served (:meth:`Registry.discard`)."""
    _registry(args, writes=True).discard(args.version)
    print(f"discarded {args.version}: no start promotes it, and 'edgecl models prune' removes "
          f"its files with the rejected versions beyond export.keep_rejected")
    return 0


def rollback_command(args: argparse.Namespace) -> int:
    """Roll back to the previous promoted version."""
    from edgecl.continual.round_state import load_state

    state_dir = config_from_args(args).state_dir
    version = rollback_version(state_dir, _registry(args, writes=True))
    print(f"rolled back to {version}")
    state = load_state(state_dir)
    if state.trigger_from_id > state.last_sample_id:
        first, last = state.last_sample_id + 1, state.trigger_from_id
        count = _given_back(state_dir, state)
        print(f"the {'' if count is None else f'{count} '}training sample(s) the versions "
              f"rolled back had learnt (ids {first}-{last}, held-out ones aside) are learnt "
              f"again by the next round, which starts when "
              f"new samples arrive or on 'edgecl learn'; 'edgecl labels withdraw ID' takes a "
              f"wrong answer out first")
    return 0


def _given_back(state_dir, state) -> int | None:
    """How many training samples a rollback gave back to the next round, as the runtime counts
    them (:meth:`~edgecl.continual.round_state.LearnerState.given_back`); ``None`` when the
    memory cannot be read now (the ids alone are said then)."""
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.errors import EdgeclError

    root = Path(state_dir) / "memory"
    if not (root / INDEX_FILE).is_file():
        return None
    try:
        with ReplayMemory(root, None, verify_on_open=False, read_only=True) as memory:
            return state.given_back(memory.records(held_out=False))
    except (EdgeclError, OSError):
        return None


def verify_command(args: argparse.Namespace) -> int:
    """Check one version's files (default: current), or with ``--all`` every version that is
    not pruned; exit 1 when a problem is found."""
    from edgecl.errors import RegistryError
    from edgecl.models.registry import damaged_current_way_out

    registry = _registry(args)
    if args.all:
        if args.version:
            raise RegistryError("give a version or --all, not both")
        # a version whose manifest is damaged is checked too: it fails, and says why
        versions = [v.version for v in registry.list() if v.status != "pruned"]
        if not versions:
            return _nothing_to_verify(args)
    else:
        damaged = registry.damaged_current() if not args.version else None
        if damaged:  # before: "unknown version v0004", of the pointer it was asked to check
            message = f"current: {damaged}; {damaged_current_way_out(registry.list())}"
            if args.json:
                print_json_line({"version": None, "ok": False, "problems": [message],
                                 "can_serve": False})
            else:
                print(message)
            return 1
        version = args.version or registry.current()
        if version is None and not registry.versions():
            return _nothing_to_verify(args)
        if version is None:
            raise RegistryError(f"no current model version to verify; name one (known: "
                                f"{', '.join(registry.versions())})")
        registry.check_version(version)  # a typo is one error line, not a failed check
        versions = [version]
    reports = []
    for version in versions:
        problems = registry.verify(version)
        essential = set(registry.verify(version, essential_only=True))
        reports.append({"version": version, "ok": not problems, "problems": problems,
                        "can_serve": not essential})
        if not args.json:
            print(f"{version}: ok" if not problems else
                  "\n".join(f"{version}: {p}{_verify_note(p, essential)}" for p in problems))
        else:  # stdout holds the JSON only; a log still says what failed
            for problem in problems:
                print(f"{version}: {problem}{_verify_note(problem, essential)}", file=sys.stderr)
    if args.json:
        print_json_line(reports if args.all else reports[0])
    return 1 if any(not r["ok"] for r in reports) else 0


def _nothing_to_verify(args) -> int:
    """``models verify`` of a device with no model version yet: nothing is damaged, exit 0
    (before: exit 2 and 'name one', with none to name: a check after every stop failed on
    each fresh device)."""
    if args.json:
        print_json_line([] if args.all else {"version": None, "ok": True, "problems": [],
                                             "can_serve": False})
    else:
        print("no model version yet: nothing to verify (a first round, or 'edgecl models add "
              "PATH --promote', makes one)")
    return 0


def _verify_note(problem: str, essential: set[str]) -> str:
    """What a problem of ``models verify`` means for serving ("" for an essential one, and
    for a serve entry's, which says it)."""
    from edgecl.models.registry import SERVE_ENTRY_PROBLEM

    if problem in essential:
        return ""
    if SERVE_ENTRY_PROBLEM in problem:  # the manifest's serve entry (Registry.verify)
        return ""
    if re.search(r"\.json\b", problem):  # a record beside the model (is_record_file)
        return " (a record beside the model: not used; the version still serves)"
    return " (an engine built from the version's model: the next intact engine serves)"


def prune_command(args: argparse.Namespace) -> int:
    """Apply the registry's retention rule and bound the engine cache."""
    cfg = config_from_args(args)
    result = _registry(args, writes=True).prune(cfg.export.keep_promoted, cfg.export.keep_rejected,
                                   engine_cache_entries=cfg.export.engine_cache_entries)
    if args.json:
        print_json_line(result)
        return 0
    print(f"kept {', '.join(result['kept']) or 'nothing'}; pruned {len(result['pruned'])} version(s)"
          f"{' (' + ', '.join(result['pruned']) + ')' if result['pruned'] else ''}, "
          f"{result['freed_bytes']} bytes freed")
    for version, why in result["skipped"].items():
        print(f"skipped {version}: {why}")
    return 0
