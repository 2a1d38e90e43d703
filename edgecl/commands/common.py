"""Argument helpers shared by the command modules."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
from pathlib import Path

from edgecl.config import Config, MemoryConfig, load_config
from edgecl.errors import ConfigError


OVERRIDES_HELP = "Any section.key=value argument overrides the config (e.g. memory.capacity=50)."


def pad_to_columns(text: str, columns: int) -> str:
    """``text`` padded with spaces to ``columns`` terminal columns: a wide character (CJK,
    most emoji; Unicode's East Asian Width W or F) takes two, a combining mark none. Python's
    ``:<N`` counts characters, so a table with a column of Chinese class names came out
    shifted against its ASCII rows.

    Args:
        text: what goes in the column.
        columns: the column's width in terminal columns.

    Returns:
        ``text`` and the spaces that fill the column (none when it is wider already).
    """
    import unicodedata

    used = sum(0 if unicodedata.combining(ch) else
               2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)
    return text + " " * max(0, columns - used)


def add_config_args(parser: argparse.ArgumentParser, state_dir: bool = True) -> None:
    """Add ``--config`` (and ``--state-dir``) to a command parser, each taken once.

    Args:
        parser: the sub-command's parser.
        state_dir: also add ``--state-dir``.
    """
    if parser.epilog is None:  # the command's own help names them too, not only edgecl --help
        parser.epilog = OVERRIDES_HELP
    parser.add_argument("--config", help="deployment YAML (default: built-in defaults)")
    if state_dir:
        parser.add_argument("--state-dir", help="state directory (instead of the config's state_dir)")


def refuse_option_and_override(args: argparse.Namespace, key: str, option: str) -> None:
    """Refuse an option given beside an override of the config key it sets.

    Args:
        args: parsed arguments (``overrides`` and the option's value).
        key: the dotted config key (``source.uri``).
        option: the option that sets it (``--source``).

    Raises:
        ConfigError: both are given with two values (before, the option won without a word).
    """
    given = getattr(args, option.lstrip("-").replace("-", "_"), None)
    if given is None:
        return
    for text in getattr(args, "overrides", None) or ():
        name, _, value = text.partition("=")
        if name.strip() == key and _as_path(value.strip()) != _as_path(given.strip()):
            raise ConfigError(f"{option} {given!r} and the override {text!r} set {key} to two "
                              f"values: give one")


def _as_path(text: str) -> str:
    """A value as the path it names once ``~``, ``.`` and ``..`` are read (a URI unchanged)."""
    return text if "://" in text else os.path.abspath(os.path.expanduser(text))


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by ``--config`` with overrides and ``--state-dir`` applied.

    Args:
        args: parsed arguments (``config``, ``overrides``, optional ``state_dir``).

    Returns:
        The effective configuration.

    Raises:
        ConfigError: a ``--state-dir`` that names no directory (``''`` would be the built-in
            default's, or the current directory).
    """
    refuse_option_and_override(args, "state_dir", "--state-dir")
    cfg = load_config(getattr(args, "config", None), getattr(args, "overrides", ()))
    state_dir = getattr(args, "state_dir", None)
    if state_dir is not None:
        cfg = dataclasses.replace(cfg, state_dir=check_state_dir_option(state_dir))
    return cfg


def check_state_dir_option(value: str) -> str:
    """A ``--state-dir`` as given (a leading ``~`` made a home folder, as ``state_dir``'s is
    and as a shell does but not after ``=``), refused when it names no directory.

    Raises:
        ConfigError: ``''`` or blank (it would be the built-in default's, or the current
            directory), or a path holding a line break or another control character.
    """
    if not value.strip():
        raise ConfigError(f"--state-dir must name a directory, got {value!r}")
    from edgecl.config import RULES

    problem = RULES["state_dir"].problem(value)
    if problem is not None:  # a line break: every round's image lists split (all failed)
        raise ConfigError(f"--state-dir: {problem}")
    return os.path.expanduser(value)


def skipped_annotations_note(result: dict) -> str:
    """``"; annotations of no image skipped N"`` for an import's summary line, or ``""``.

    Args:
        result: the import's ``--json`` summary (``annotations_skipped``).
    """
    n = result["annotations_skipped"]
    return f"; annotations of no image skipped {n}" if n else ""


def new_classes_note(result: dict, state_dir: str) -> str:
    """``"; new classes: Persn (close to Person; if Persn is the typo: edgecl classes merge
    --state-dir=state -- Persn Person; if Person is: ... -- Person Persn)"`` for an answer's, a
    correction's or an import's summary, or ``""``. Either name may be the slip (an import's
    correct name can meet an operator's earlier typo), so both merges are named, the new name's
    first. Each command runs as printed: each word quoted for a POSIX shell, the folder in the
    same word as ``--state-dir`` and ``--`` before the names (either may start with ``-``).

    Args:
        result: its ``--json`` summary (``classes_added``, ``similar_classes``).
        state_dir: the device's state directory.
    """
    new = result.get("classes_added") or []
    if not new:
        return ""
    similar = result.get("similar_classes") or {}
    shown = []
    for name in new:
        close = similar.get(name)
        if close:
            merge = ["edgecl", "classes", "merge", f"--state-dir={state_dir}", "--"]  # one word:
            into_known = shlex.join(merge + [name, close])  # a folder may start with -
            into_new = shlex.join(merge + [close, name])
            shown.append(f"{name} (close to {close}; if {name} is the typo: {into_known}; "
                         f"if {close} is: {into_new})")
        else:
            shown.append(name)
    return f"; new classes: {', '.join(shown)}"


def former_names_note(result: dict, state_dir: str = "") -> str:
    """A note for the new classes of an import or an answer named as a class was before a
    ``classes rename`` (before, only an import's ``--json`` said so: a team importing more
    'Person' boxes, or an operator answering 'Person', after renaming Person to pedestrian got
    a second class for the same objects, unsaid). The merge it names runs as printed, as
    :func:`new_classes_note`'s.

    Args:
        result: the import's or answer's ``--json`` summary (``classes_added``,
            ``former_names``: name -> the class it named before a rename).
        state_dir: the device's state directory.

    Returns:
        One line, or ``""``.
    """
    added = set(result.get("classes_added") or ())
    renamed = {old: new for old, new in (result.get("former_names") or {}).items() if old in added}
    if not renamed:
        return ""
    merge = ["edgecl", "classes", "merge", f"--state-dir={state_dir}", "--"]
    said = "; ".join(f"'{old}' named class '{new}' before a classes rename: its boxes made a new "
                     f"class '{old}' ({shlex.join(merge + [old, new])} makes them one)"
                     for old, new in renamed.items())
    return f"note: {said}"


def dropped_regions_note(result: dict) -> str:
    """``"ignore regions dropped N"`` for an import's summary line, with ``"; difficult boxes
    left out M"`` where a VOC dataset marked some and ``"; boxes with no area dropped K"``
    where some had none, and how many images' boxes were scaled from a declared size.

    Args:
        result: the import's ``--json`` summary (``ignored_regions``, ``difficult_dropped``,
            ``empty_boxes``, ``rescaled_from_declared_size``, ``rescaled_example``).
    """
    n = result.get("difficult_dropped", 0)
    difficult = f"; difficult boxes left out {n} (VOC <difficult>1)" if n else ""
    k = result.get("empty_boxes", 0)
    empty = f"; boxes with no area dropped {k} (under 1 px wide or high)" if k else ""
    r = result.get("rescaled_from_declared_size", 0)
    rescaled = (f"; boxes of {r} image(s) scaled from the size their annotation declares (e.g. "
                f"{result.get('rescaled_example', '')}: right for images downscaled after "
                f"labelling, a wrong <size> otherwise)" if r else "")
    return f"ignore regions dropped {result['ignored_regions']}{difficult}{empty}{rescaled}"


def memory_given(args: argparse.Namespace) -> bool:
    """Whether a command was given memory settings: a ``--config`` file, or an override of a
    ``memory.*`` key (even one equal to the default).

    Args:
        args: parsed arguments (``config``, ``overrides``).

    Returns:
        True when the command's own memory settings are to be used as given.
    """
    return bool(getattr(args, "config", None)) or any(
        str(o).split("=", 1)[0].strip().startswith("memory.") for o in getattr(args, "overrides", ()))


def with_device_memory(cfg: Config, given: bool | None = None, say: bool = True) -> Config:
    """``cfg`` with the memory settings the device's runtime recorded in its replay memory
    (:func:`edgecl.continual.memory.store.recorded_memory_config`), for a tool that opens a
    device's memory: run without the device's config, it would otherwise evict down to the
    default ``capacity``/``max_bytes`` on open and draw held-out samples with another seed.

    Args:
        cfg: the command's configuration.
        given: whether the command was given memory settings (:func:`memory_given`); None:
            when they differ from the defaults.
        say: log the info line (a command that only reads logs it at debug level: it was
            printed on every ``classes list`` or ``memory stats``).

    Returns:
        ``cfg`` itself when its memory settings were given,
        nothing is recorded or the settings agree, else a copy with the recorded ``memory``
        section (one info line names what differs).
    """
    import logging
    from pathlib import Path

    from edgecl.continual.memory.store import recorded_memory_config

    if given is None:
        given = cfg.memory != MemoryConfig()
    if given:  # memory settings given (a config file, key=value): used as given
        return cfg
    recorded = recorded_memory_config(Path(cfg.state_dir) / "memory")
    if recorded is None or recorded == cfg.memory:
        return cfg
    differ = [f"{k}={v}" for k, v in dataclasses.asdict(recorded).items()
              if getattr(cfg.memory, k) != v]
    logging.getLogger(__name__).log(logging.INFO if say else logging.DEBUG,
                                    "replay memory settings of the device's runtime used "
                                    "(%s), not this command's", ", ".join(differ))
    return dataclasses.replace(cfg, memory=recorded)


def refuse_smaller_memory(cfg: Config) -> None:
    """Refuse memory bounds below those the device's runtime keeps, for a command that writes
    to the memory (``labels import|answer|accept|skip``, ``learn``): opening it with them would
    evict the device's samples for good, while its runtime goes on with its own bounds.

    Args:
        cfg: the command's configuration (after :func:`with_device_memory`).

    Raises:
        ConfigError: one line naming the key, both values and what to do.
    """
    from pathlib import Path

    from edgecl.continual.memory.store import holdout_slots, recorded_memory_config

    root = Path(cfg.state_dir) / "memory"
    recorded = recorded_memory_config(root)
    if recorded is None:
        _refuse_unrecorded_overflow(cfg, root)
        return
    way_out = ("give no memory settings (the device's are used), or change it in the device's "
               "config (its runtime evicts at its next start)")
    for key in ("capacity", "max_bytes"):
        mine, device = getattr(cfg.memory, key), getattr(recorded, key)
        if mine < device:
            raise ConfigError(f"memory.{key}={mine} is below the {device} this device's runtime "
                              f"keeps: this command would evict the device's samples for good; "
                              f"{way_out}")
    held, device_held = holdout_slots(cfg.memory), holdout_slots(recorded)
    train, device_train = cfg.memory.capacity - held, recorded.capacity - device_held
    if held < device_held or train < device_train:  # before: evicted, and said "to fit capacity"
        which = (f"{held} held-out slots instead of {device_held}" if held < device_held
                 else f"{train} training slots instead of {device_train}")
        raise ConfigError(f"memory.holdout_fraction={cfg.memory.holdout_fraction:g} leaves "
                          f"{which} (the device's runtime keeps memory.holdout_fraction="
                          f"{recorded.holdout_fraction:g}): this command would evict the "
                          f"device's samples for good; {way_out}")


def _refuse_unrecorded_overflow(cfg: Config, root) -> None:
    """Refuse memory bounds that the stored samples exceed, for a memory that records no
    settings of its runtime (written by a release before they were recorded, and not opened
    by a runtime since): opened with them, it would evict for good what its device keeps.

    Raises:
        ConfigError: one line naming the bound exceeded and what to do.
    """
    from edgecl.continual.memory import INDEX_FILE, ReplayMemory
    from edgecl.errors import EdgeclError

    if not (root / INDEX_FILE).is_file():
        return
    try:
        with ReplayMemory(root, cfg.memory, verify_on_open=False, read_only=True) as memory:
            problems = memory.bound_problems()
    except (EdgeclError, OSError):  # the command's own open says what is wrong, in its words
        return
    if problems:
        raise ConfigError(f"the replay memory {root} holds more than this command's memory "
                          f"settings allow ({problems[0]}), and it records no settings of its "
                          f"device's runtime (no runtime has opened it yet, an older release "
                          f"wrote it, or its index was rebuilt): this command would evict the "
                          f"device's samples for good; give the device's config (--config), or "
                          f"run 'edgecl run' on it once so that it records them")


STATE_ENTRIES = frozenset({"memory", "models", "learner", "metrics", "fleet", "classes.json",
                           "classes.backup.json", "last_round.json", "lock", "classes.lock",
                           "import.lock"})
"""What a device's state directory holds (any of them; its own lock files included): a folder
that holds other files but none of these is no state directory, and a command that reads one
does not make one there (``--state-dir /`` made ``/labels``, ``/memory`` and ``/models``).
``labels/`` is no mark: a YOLO dataset and a replay memory hold one too."""


STATE_FOLDERS = ("memory", "models", "labels", "learner", "metrics", "fleet")
"""The folders of a state directory that edgecl owns (a folder of one's own beside them, an
export, say, is the user's)."""


def inside_state_folders(state_dir, path) -> bool:
    """Whether ``path`` is the state directory itself or lies in one of its own folders
    (:data:`STATE_FOLDERS`); links resolved, a link that loops is no error here.

    Args:
        state_dir: the state directory.
        path: a path a command was given.
    """
    state = Path(os.path.realpath(Path(state_dir).expanduser()))
    target = Path(os.path.realpath(Path(path).expanduser()))
    if target == state:
        return True
    return any(target == state / name or state / name in target.parents for name in STATE_FOLDERS)


def require_state_dir(cfg: Config) -> None:
    """Refuse a state directory that does not exist or holds no edgecl state (a typo must not
    create one).

    Args:
        cfg: the configuration.

    Raises:
        EdgeclError: the folder does not exist, a file stands there, or it holds other files
            but none of :data:`STATE_ENTRIES`.
    """
    from pathlib import Path

    from edgecl.errors import EdgeclError, file_as_state_dir

    if Path(cfg.state_dir).exists() and not Path(cfg.state_dir).is_dir():
        raise EdgeclError(file_as_state_dir(cfg.state_dir))
    refuse_unreachable_state_dir(cfg.state_dir)
    if not Path(cfg.state_dir).is_dir():
        raise EdgeclError(f"{cfg.state_dir}: no such state directory (start a device there with "
                          f"'edgecl run --state-dir {cfg.state_dir} ...', 'edgecl models add "
                          f"MODEL.pt --promote --state-dir {cfg.state_dir}' or 'edgecl labels "
                          f"import --state-dir {cfg.state_dir} FOLDER', or check --state-dir)")
    try:
        held = {p.name for p in Path(cfg.state_dir).iterdir()}
    except OSError:
        return  # unreadable: the command's own open says why
    if held and not held & STATE_ENTRIES:  # an empty folder: a device not started yet
        raise EdgeclError(f"{cfg.state_dir} holds files but no edgecl state (none of memory/, "
                          f"models/, learner/, classes.json): check --state-dir, or start a "
                          f"device in an empty folder ('edgecl run' or 'edgecl labels import')")


def require_writable_state_dir(cfg: Config, what: str) -> None:
    """Refuse, before anything starts, a state directory this process cannot write (a
    read-only mount, another user's folder): a command that writes it at every step (a fleet
    device's rounds) said so only then, once a round.

    Args:
        cfg: the configuration.
        what: what needs to write there, for the message (``"a fleet device"``).

    Raises:
        StorageError: the folder, or its ``learner/``, ``models/`` or ``memory/``, cannot be
            written (``os.access``: a read-only file system counts, also for root).
    """
    import os
    from pathlib import Path

    from edgecl.errors import StorageError

    root = Path(cfg.state_dir)
    for folder in (root, root / "learner", root / "models", root / "memory"):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise StorageError(f"{folder}: cannot write there ({what} writes its class registry, "
                               f"models and round files in the state directory): make it "
                               f"writable, or use another --state-dir")


def refuse_unreachable_state_dir(state_dir: str) -> None:
    """Refuse a state directory behind a symbolic link that loops or leads nowhere (a card not
    mounted), naming the link, before a command makes anything there.

    Raises:
        EdgeclError: one line naming the link and where it leads.
    """
    from edgecl.errors import EdgeclError, link_problem

    why = link_problem(state_dir)
    if why:
        raise EdgeclError(f"state directory {why}")
