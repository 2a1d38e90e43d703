"""Promotion and rollback in one place: the registry's ``current`` pointer, the monitor's record
and the learner's progress agree."""

from __future__ import annotations

from pathlib import Path


def promote_version(state_dir: str | Path, version: str, expected_current: str | None = None,
                    previous: list | None = None) -> bool:
    """Promote a registry version and mark its round as promoted in the metrics database.

    The learner's progress follows the version now serving: the samples it learnt count as
    learnt, and those it did not (learnt only by the version it replaces, or by rounds since)
    are new, so the next round learns them; a version promoted again after a rollback does not
    learn its own samples twice. A version that records no progress (an older release made it)
    leaves the progress as it was; an unreadable progress file is said in a warning and left.

    The registry's switch is the promotion; the metrics database follows it. When that write
    fails (a full disk), the promotion stands and a warning says so: the database is brought
    in line later (:func:`sync_monitor`: the runtime's supervisor retries, every start does).

    Args:
        state_dir: the state directory.
        version: registry version name.
        expected_current: promote only from this current version (see
            :meth:`~edgecl.models.registry.Registry.promote`).
        previous: when given, the version current before is appended to it (read under the
            registry's lock: what a log line may call the version replaced).

    Returns:
        True when the metrics database follows the promotion, False when it lags behind.

    Raises:
        RegistryError: unknown, rejected or corrupt version (nothing changed).
        NotFoundError / ConflictError: ``expected_current`` is unknown, not current, or
            ``version`` itself (nothing changed).
        StorageError: ``current`` could not be switched, or the progress could not be moved
            back before it (nothing changed).
    """
    import logging

    from edgecl.errors import EdgeclError
    from edgecl.models.registry import Registry
    from edgecl.runtime.monitor import Monitor

    registry = Registry(Path(state_dir) / "models")
    learnt = _progress_of(registry, version)
    # moved back once the version passed its checks, before the switch: a failed switch then
    # only leaves samples to learn again, and a refused version changes nothing (before, a
    # refused promote of a rejected version set the progress back to 0)
    def before_switch() -> None:  # its checks passed: nothing above ran for a refused one
        seed_version_classes(state_dir, registry, version)
        _move_progress(state_dir, learnt, version, back=True)

    before = registry.promote(version, expected_current=expected_current,
                              before_switch=before_switch)
    if previous is not None:
        previous.append(before)
    _move_progress(state_dir, learnt, version, back=False)
    lost = classes_lost(state_dir, registry.manifest(version),
                        registry.manifest(before) if before else None)
    if lost:  # a team's checkpoint of fewer classes, an older version: before, not a word
        shown = ", ".join(lost[:8]) + (f" and {len(lost) - 8} more" if len(lost) > 8 else "")
        logging.getLogger(__name__).warning(
            "%s does not detect %s, which %s detected, until a round learns %s on top of it "
            "(the samples stay in the replay memory)", version, shown, before,
            "them" if len(lost) > 1 else "it")
    try:
        Monitor(state_dir).set_version_status(version, "promoted")
    except (EdgeclError, OSError) as exc:
        logging.getLogger(__name__).warning(
            "%s promoted; the metrics database still shows its round as before (%s); it is "
            "brought in line once it can be written", version, exc)
        return False
    return True



def classes_lost(state_dir: str | Path, manifest: dict, replaced: dict | None) -> list[str]:
    """The classes a version about to serve would stop detecting: those the version it
    replaces detects (its head's ids) and its own head lacks, by the names the class registry
    gives them now (a class renamed since is the class it was, by id); merged ones aside.

    Args:
        state_dir: the state directory (its class registry).
        manifest: the version's manifest (``classes``: id -> name; a version that names none,
            a model built from a ``.yaml``, is not judged).
        replaced: the manifest of the version serving now (None: none serves).

    Returns:
        Class names, by id; empty when nothing is lost (a round's version grows its head, a
        device's first model replaces none).
    """
    names = manifest.get("classes")
    before = (replaced or {}).get("classes")
    if not all(isinstance(n, (dict, list)) and n for n in (names, before)):
        return []
    return classes_lacking(state_dir, len(names), len(before))


def classes_lacking(state_dir: str | Path, head: int, upto: int | None = None) -> list[str]:
    """The device's classes a head of ``head`` classes lacks (ids ``head`` to ``upto - 1``;
    ``upto`` None: every id the class registry has), by their names now; a class merged into
    another is left out (it has no samples of its own, and its name means the other class).

    Args:
        state_dir: the state directory (its class registry).
        head: classes the head has (ids ``0 .. head - 1``).
        upto: first id not asked about (None: past the registry's last).

    Returns:
        Class names, by id; empty where the registry cannot be read (said where it is read).
    """
    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry

    try:
        classes = ClassRegistry(state_dir)
        merged = classes.merged()
        device = classes.names()
    except EdgeclError:
        return []
    end = upto if upto is not None else max(device, default=-1) + 1
    return [device[cid] for cid in range(head, end) if cid in device and cid not in merged]


def seed_version_classes(state_dir: str | Path, registry, version: str) -> list[str]:
    """Give the class registry the classes of a version about to serve that it lacks: a
    checkpoint added with ``models add`` (staged only, its classes are not the device's) and
    promoted later, or one whose add was killed between staging and its promotion (before, the
    registry stayed empty, and a later import numbered its classes afresh: the model's Car was
    the registry's Person, and rounds learnt them swapped).

    Args:
        state_dir: the state directory (its class registry).
        registry: the model registry.
        version: the version being promoted (a model built from a ``.yaml`` names no classes
            of its own: nothing is added).

    Returns:
        The names added.

    Raises:
        ConflictError, LabelError: its class ids name other classes than the registry's
            (``class id 0 is 'Car' in the class registry but 'Person' in the checkpoint``).
    """
    from edgecl.models.classes import ClassRegistry
    from edgecl.ultra import is_model_yaml

    manifest = registry.manifest(version)
    names = manifest.get("classes") or {}
    if not names or is_model_yaml(str(manifest.get("source") or "")):
        return []
    added = ClassRegistry(state_dir).seed(names)
    if added:
        import logging

        logging.getLogger(__name__).info("class registry: %d class(es) from %s (%s)", len(added),
                                         version, ", ".join(added[:5]))
    return added


def serving_instead(registry, version: str) -> str | None:
    """The version serving now when it is not the one a round's ``version`` was learnt on: a
    rollback or a promotion came while the round ran. Promoting it then would undo that (a
    rollback made during a round was followed by the round's version, learnt on the version
    rolled back from).

    Args:
        registry: the model registry.
        version: a version a round staged (its manifest names its ``parent``).

    Returns:
        The serving version's name, or ``None`` when the round's parent still serves (or
        nothing serves, or the manifest names no parent).
    """
    from edgecl.errors import RegistryError

    try:
        parent = registry.manifest(version).get("parent")
    except RegistryError:
        return None
    serving = registry.current()
    return serving if serving and isinstance(parent, str) and parent and parent != serving else None


def merged_since(state_dir: str | Path, registry, version: str) -> list[str]:
    """The classes merged (``edgecl classes merge``) while ``version``'s round ran: it learnt
    and judged them apart, as its snapshot labelled them.

    Args:
        state_dir: the state directory (its class registry).
        registry: the model registry.
        version: a version a round staged (its manifest's ``merged_classes``: the merges as
            the round began; a manifest without it is not checked).

    Returns:
        ``["Auto into Car", ...]``; empty when none (or when either side cannot be read).
    """
    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry

    try:
        then = registry.manifest(version).get("merged_classes")
        if not isinstance(then, dict):
            return []
        classes = ClassRegistry(state_dir)
        now, names = classes.merged(), classes.names()
    except (EdgeclError, OSError):
        return []
    then = {str(k): v for k, v in then.items()}
    return [f"{names.get(c, c)} into {names.get(t, t)}" for c, t in sorted(now.items())
            if then.get(str(c)) != t]


def not_promoted_because(state_dir: str | Path, registry, version: str) -> tuple[str, str] | None:
    """Why a round's staged ``version`` is not promoted, if it is not: a rollback or a
    promotion came while the round ran (:func:`serving_instead`), or a class merge did
    (:func:`merged_since`; before, such a version was promoted, gated as if the merged class
    were apart, "the parent scores 0 on Auto, a class it did not know").

    Args:
        state_dir: the state directory.
        registry: the model registry.
        version: the round's version.

    Returns:
        ``(serving, warning)``: the version serving instead (for :func:`hold_unpromoted`) and
        one line to log; ``None`` when it is promoted.
    """
    serving = serving_instead(registry, version)
    if serving:
        return serving, (f"{version} is not promoted: it was learnt on the version that served "
                         f"when its round began, and {serving} serves now (rolled back or "
                         f"promoted since); 'edgecl models promote {version}' serves it")
    merged = merged_since(state_dir, registry, version)
    current = registry.current()
    if merged and current:
        return current, (f"{version} is not promoted: {', '.join(merged[:4])} merged while its "
                         f"round ran, which learnt and judged the classes apart; the next round "
                         f"learns its samples with the merge ('edgecl models promote {version}' "
                         f"serves it anyway)")
    return None


def hold_unpromoted(state_dir: str | Path, registry, version: str, serving: str) -> None:
    """After a round that is not promoted (:func:`not_promoted_because`): hold its version for a
    person, as ``edgecl learn --no-promote`` does (registry retention keeps it, and no restart
    promotes it; before, the next round's promotion pruned it, while the log said to promote
    it), and set the learner's progress back to what the serving version learnt (its samples
    were learnt only by a version that does not serve, so the next round learns them).

    Args:
        state_dir: the state directory.
        registry: the model registry.
        version: the round's version.
        serving: the version serving now.

    Raises:
        StorageError: the manifest or the progress cannot be written.
    """
    from edgecl.errors import RegistryError
    from edgecl.models.registry import MANUAL_PROMOTION

    registry.update_manifest(version, {"promote": MANUAL_PROMOTION})
    try:
        learnt = _progress_of(registry, serving)
    except RegistryError:
        return
    _move_progress(state_dir, learnt, serving, back=True, hold=True)


def _progress_of(registry, version: str) -> int | None:
    """The learner's progress a version records (the last sample id its round learnt; 0 for a
    user's model file, which learnt none of this memory), or None when it records none.

    Raises:
        RegistryError: unknown version or unreadable manifest.
    """
    manifest = registry.manifest(version)
    learnt = manifest.get("learnt_up_to", None if "parent" in manifest else 0)
    return learnt if _sample_id(learnt) else None


def _move_progress(state_dir: str | Path, learnt: int | None, version: str, back: bool,
                   hold: bool = False) -> None:
    """Set the learner's progress to ``learnt`` when that moves it back (``back``) or forward.

    With ``hold`` (a rollback made while a round ran), the samples it gives back start no
    round by themselves (``LearnerState.trigger_from_id``); a promotion gives them back to
    start one (a user's model added and promoted is fine-tuned on the memory).

    Raises:
        StorageError: moving back, the progress cannot be written (the promotion stops).
    """
    import logging

    from edgecl.continual.round_state import load_state, save_state
    from edgecl.errors import EdgeclError, storage_faults

    if learnt is None:
        return
    try:
        state = load_state(state_dir)
    except (EdgeclError, OSError) as exc:
        logging.getLogger(__name__).warning(
            "%s: the learner's progress is unreadable (%s); it is left as it is", version, exc)
        return
    if (learnt < state.last_sample_id) != back or learnt == state.last_sample_id:
        return
    if hold:
        state.roll_back_to(learnt)
    else:
        state.last_sample_id = learnt
    if back:
        with storage_faults(f"cannot promote {version}: the learner's progress cannot be set "
                            f"back to what it learnt; nothing changed"):
            save_state(state_dir, state)
        return
    try:
        save_state(state_dir, state)
    except OSError as exc:  # the promotion stands: its samples are learnt once more, no harm
        logging.getLogger(__name__).warning(
            "%s promoted; the learner's progress could not be moved to what it learnt (%s): "
            "the next round learns those samples again", version, exc)


def rollback_version(state_dir: str | Path, registry=None, expected_current: str | None = None) -> str:
    """Roll back to the previous promoted version, and rewind the learner's progress to it.

    The samples the retired versions had learnt are new again to the version now serving, so
    the next round learns them (a class taught only to a retired version included); they
    start no round by themselves (``LearnerState.trigger_from_id``): the next round starts when
    new samples arrive, or on ``edgecl learn``, not seconds after the rollback. A version
    staged from a user's model file learnt no sample; one from a release that did not record
    its progress leaves the learner's progress as it was.

    Args:
        state_dir: the state directory.
        registry: the open registry (``STATE/models`` when ``None``).
        expected_current: roll back only from this version (see
            :meth:`~edgecl.models.registry.Registry.rollback`).

    Returns:
        The version now current.

    Raises:
        RegistryError: no earlier intact version (nothing changed).
        NotFoundError / ConflictError: ``expected_current`` is unknown, or not current.
        StorageError: the progress or ``current`` cannot be written (a full disk): nothing
            changed. The progress is rewound before ``current`` switches, so a switch that
            then fails leaves only samples to be learnt again, never a rolled-back model that
            counts the retired versions' samples as learnt.
    """
    from edgecl.continual.round_state import load_state, save_state
    from edgecl.errors import storage_faults
    from edgecl.models.registry import Registry

    registry = registry or Registry(Path(state_dir) / "models")
    state = load_state(state_dir)  # read first: an unreadable progress file stops the rollback

    def rewind(target: str) -> None:
        """Rewind the learner's progress to what ``target`` learnt (before the switch)."""
        learnt = _progress_of(registry, target)
        if learnt is None:
            learnt = _learnt_before_retired(registry, target)
        if _sample_id(learnt) and learnt < state.last_sample_id:
            state.roll_back_to(learnt)
            with storage_faults("cannot roll back: the learner's progress cannot be rewound; "
                                "nothing changed"):
                save_state(state_dir, state)

    from edgecl.models.registry import NothingToRollBackError

    try:
        version = registry.rollback(before_switch=rewind, expected_current=expected_current)
    except NothingToRollBackError as exc:
        raise NothingToRollBackError(f"{exc}{_start_checkpoint_hint(registry)}") from None
    sync_monitor(state_dir, registry)
    return version


def _start_checkpoint_hint(registry) -> str:
    """How to serve again the checkpoint a device started from (``model.path``), which is no
    version a rollback reaches: ``"; the device started from the checkpoint best.pt ..."``, or
    ``""`` when no version names one as its parent (before, the refusal said nothing of it)."""
    import shlex

    from edgecl.errors import EdgeclError
    from edgecl.models.classes import ClassRegistry

    state = Path(registry.root).parent
    try:
        for version in registry.versions():
            parent = str(registry.manifest(version).get("parent") or "")
            if parent.startswith("checkpoint:"):
                name = parent.removeprefix("checkpoint:")
                recorded = ClassRegistry(state).seeding_checkpoint()  # its full path, if known
                path = recorded if recorded and Path(recorded).name == name else f"PATH/{name}"
                return (f"; the device started from the checkpoint {name} (model.path or "
                        f"--model), which is no version: 'edgecl models add "
                        f"{shlex.quote(path)} --promote --state-dir {shlex.quote(str(state))}' "
                        f"serves it again")
    except (EdgeclError, OSError, ValueError):  # the refusal itself is what matters
        return ""
    return ""


def _sample_id(value) -> bool:
    """Whether a manifest's progress value is a sample id (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _learnt_before_retired(registry, target: str) -> int | None:
    """What ``target`` had learnt, for a version that records no progress of its own (made by
    an older release): where the rounds that descend from it, up to the current version, each
    record the progress they started from (``learnt_from``), the smallest of those.

    Returns:
        A sample id, or ``None`` (said in one warning) when a version of that line records
        none either: the samples learnt since then are not learnt again.
    """
    import logging

    from edgecl.errors import RegistryError

    starts, version, seen = [], registry.current(), set()
    try:
        while version and version != target and version not in seen:  # a damaged chain may loop
            seen.add(version)
            manifest = registry.manifest(version)
            starts.append(manifest.get("learnt_from"))
            parent = manifest.get("parent")
            version = parent if isinstance(parent, str) else None
    except RegistryError:
        version = None
    if version == target and starts and all(_sample_id(v) for v in starts):
        return min(starts)
    logging.getLogger(__name__).warning(
        "rollback to %s: it records no learning progress (an older release made it), so the "
        "samples learnt since then count as learnt and the next round does not learn them "
        "again", target)
    return None


def sync_monitor(state_dir: str | Path, registry=None) -> bool:
    """Bring the metrics database's round statuses in line with the registry (a rollback, or
    a kill or a full disk between the registry's write and the monitor's). A fault is logged,
    not raised: the registry is what serves.

    Args:
        state_dir: the state directory.
        registry: the open registry (``STATE/models`` when ``None``).

    Returns:
        True when the database is in line, False when it could not be written.
    """
    import logging

    from edgecl.errors import EdgeclError
    from edgecl.models.registry import Registry
    from edgecl.runtime.monitor import Monitor, chain_statuses

    registry = registry or Registry(Path(state_dir) / "models")
    try:
        Monitor(state_dir).follow_registry(chain_statuses(registry))
    except (EdgeclError, OSError) as exc:
        logging.getLogger(__name__).warning("metrics database not brought in line with the "
                                            "model registry: %s", exc)
        return False
    return True
