"""The ``tasks.yaml`` contract: a class-incremental sequence of tasks over a YOLO dataset.

Format (image lists hold one image path a line, relative to the yaml's folder or absolute)::

    names: {0: car, 1: truck, 2: person}
    tasks:
      - name: t1
        classes: [0, 1]
        train: tasks/t1/train.txt
        val: tasks/t1/val.txt
        test: tasks/t1/test.txt

Labels follow the ordinary YOLO rule: ``.../images/.../x.jpg`` -> ``.../labels/.../x.txt``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from edgecl.config import DataFileLoader
from edgecl.data.class_names import name_clash
from edgecl.data.labels import label_path_for
from edgecl.data.yolo_dataset import path_from_text, path_is_file
from edgecl.errors import (ConfigError, did_you_mean, encoding_problem, link_problem,
                           yaml_problem)
from edgecl.input_files import (MAX_DATA_FILE_BYTES, MAX_LIST_BYTES, missing_file_why,
                                read_input_text, regular_file_problem)

__all__ = ["SPLITS", "TaskSpec", "TaskSet", "label_path_for", "load_tasks", "format_tasks_yaml"]

SPLITS = ("train", "val", "test")
_TOP_KEYS = ("names", "tasks")
_TASK_KEYS = ("name", "classes") + SPLITS
_NONEMPTY_SPLITS = ("train", "test")


@dataclass(frozen=True)
class TaskSpec:
    """One task of a class-incremental sequence.

    Attributes:
        name: task name (unique within the set).
        classes: class ids this task introduces.
        train: absolute image paths of the training split.
        val: absolute image paths of the validation split (may be empty).
        test: absolute image paths of the test split.
    """

    name: str
    classes: tuple[int, ...]
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    test: tuple[Path, ...]

    def split(self, split: str) -> tuple[Path, ...]:
        """Return the image paths of one split.

        Args:
            split: ``train``, ``val`` or ``test``.

        Returns:
            The absolute image paths.

        Raises:
            ValueError: unknown split name.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split '{split}'; expected one of {', '.join(SPLITS)}")
        return getattr(self, split)


@dataclass(frozen=True)
class TaskSet:
    """All tasks of a scenario, in order, with the class names.

    Attributes:
        names: class id -> name for every class of the sequence (ids 0..nc-1).
        tasks: the tasks in the order they are learnt.
        path: the ``tasks.yaml`` they were loaded from.
    """

    names: dict[int, str]
    tasks: tuple[TaskSpec, ...]
    path: Path

    @property
    def nc(self) -> int:
        """Number of classes over all tasks."""
        return len(self.names)

    def seen_classes(self, index: int) -> tuple[int, ...]:
        """Classes introduced by tasks ``0..index`` (inclusive).

        Args:
            index: task position in :attr:`tasks`.

        Returns:
            Sorted class ids.
        """
        return tuple(sorted(c for t in self.tasks[:index + 1] for c in t.classes))


LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
"""What ``str.splitlines`` breaks a line at (this reader and ultralytics' alike)."""


def unlistable(path_text: str) -> str | None:
    """Why a path cannot be a line of an image list file and be read back as written (lines
    are split at :data:`LINE_BREAKS`, stripped, and a ``#`` starts a comment), or ``None``.

    Args:
        path_text: the path as the list would hold it.

    Returns:
        ``"it holds a line break"``, ``"it starts or ends with white space"``, ``"it starts
        with #"``, or ``None``.
    """
    if any(ch in LINE_BREAKS for ch in path_text):
        return "it holds a line break"
    if path_text != path_text.strip():
        return "it starts or ends with white space"
    if path_text.startswith("#"):
        return "it starts with #"
    return None

def _fail(path: Path, what: str) -> ConfigError:
    return ConfigError(f"{path}: {what}")


def _check_keys(path: Path, where: str, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            hint = did_you_mean(key, allowed)
            raise _fail(path, f"unknown key '{key}' in {where}{hint}")
    missing = [k for k in allowed if k not in data and k != "val"]
    if missing:
        raise _fail(path, f"{where} is missing '{missing[0]}'")


def _parse_names(path: Path, raw: object) -> dict[int, str]:
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict) or not raw:
        raise _fail(path, "'names' must be a non-empty mapping {id: name} or list of names")
    names: dict[int, str] = {}
    for key, value in raw.items():
        if isinstance(key, bool) or not isinstance(key, int) or key < 0:
            raise _fail(path, f"class id {key!r} in 'names' must be an integer >= 0")
        if not isinstance(value, str) or not value.strip():
            raise _fail(path, f"class {key} in 'names' needs a non-empty name, got {value!r}")
        names[key] = value.strip()
    if sorted(names) != list(range(len(names))):
        raise _fail(path, f"class ids in 'names' must be 0..{len(names) - 1} without gaps")
    clash = name_clash(names)  # the rule a data.yaml's names follow
    if clash:
        raise _fail(path, clash)
    return dict(sorted(names.items()))


def _read_list(yaml_path: Path, task: str, split: str, rel: object) -> tuple[Path, ...]:
    if not isinstance(rel, str) or not rel.strip():
        raise _fail(yaml_path, f"task '{task}': '{split}' must be a path to an image list")
    list_path = path_from_text(rel, f"{yaml_path}: task '{task}': '{split}'")
    list_path = list_path if list_path.is_absolute() else yaml_path.parent / list_path
    special = regular_file_problem(list_path)
    if special:
        raise _fail(yaml_path, f"task '{task}': {split} list {list_path} is {special}")
    if not path_is_file(list_path):
        raise _fail(yaml_path, f"task '{task}': {split} list not found: {list_path}")
    images = []
    try:
        text = read_input_text(list_path, MAX_LIST_BYTES, "an image list")
    except UnicodeDecodeError as exc:
        raise _fail(yaml_path, f"task '{task}': cannot read {list_path}: "
                               f"{encoding_problem(exc)}") from None
    except OSError as exc:
        raise _fail(yaml_path, f"task '{task}': cannot read {list_path}: "
                               f"{exc.strerror or exc}") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        image = path_from_text(line, f"{list_path}:{lineno}")
        image = image if image.is_absolute() else yaml_path.parent / image
        if not path_is_file(image):
            why = missing_file_why(image)
            raise ConfigError(f"{list_path}:{lineno}: image not found: {image}" if why == "not found"
                              else f"{list_path}:{lineno}: image {image} is {why}")
        images.append(image.resolve())
    if not images and split in _NONEMPTY_SPLITS:
        raise _fail(yaml_path, f"task '{task}': {split} list {list_path} has no images")
    return tuple(images)


def _parse_task(path: Path, index: int, raw: object, names: dict[int, str], seen: set[int]) -> TaskSpec:
    where = f"tasks[{index}]"
    if not isinstance(raw, dict):
        raise _fail(path, f"{where} must be a mapping with name, classes, train, val, test")
    _check_keys(path, where, raw, _TASK_KEYS)
    name = raw["name"]
    if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
        raise _fail(path, f"{where}: 'name' must be a non-empty string")
    name = str(name).strip()
    classes = raw["classes"]
    if isinstance(classes, int) and not isinstance(classes, bool):
        classes = [classes]
    if not isinstance(classes, list) or not classes:
        raise _fail(path, f"task '{name}': 'classes' must be a non-empty list of class ids")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int) or c not in names:
            raise _fail(path, f"task '{name}': class id {c!r} is not in 'names' (0..{len(names) - 1})")
        if c in seen:
            raise _fail(path, f"task '{name}': class {c} ({names[c]}) was already introduced")
        seen.add(c)
    lists = {s: _read_list(path, name, s, raw[s]) if s in raw else () for s in SPLITS}
    return TaskSpec(name=name, classes=tuple(classes), **lists)


def load_tasks(yaml_path: str | Path) -> TaskSet:
    """Load and validate a ``tasks.yaml`` (the contract every dataset goes through).

    Args:
        yaml_path: the file.

    Returns:
        The validated :class:`TaskSet` with absolute image paths.

    Raises:
        ConfigError: one line naming the file and what is wrong: missing or unparsable file,
            unknown or missing key, class id not in ``names``, a class introduced twice, a
            duplicate task name, a missing image list or listed image, an empty train/test list.
    """
    given = Path(yaml_path).expanduser()
    path = given.resolve()
    special = regular_file_problem(path)
    if special:
        raise ConfigError(f"tasks file {path} is {special}")
    if not path.is_file():
        why = link_problem(given)  # before: the link's target, called not found
        raise ConfigError(f"tasks file {why}" if why else f"tasks file not found: {path}")
    try:
        data = yaml.load(read_input_text(path, MAX_DATA_FILE_BYTES, "a tasks file"),
                         Loader=DataFileLoader)
    except yaml.YAMLError as exc:
        raise _fail(path, f"cannot parse YAML{yaml_problem(exc)}") from None
    except UnicodeDecodeError as exc:
        raise _fail(path, f"cannot read it: {encoding_problem(exc)}") from None
    except OSError as exc:
        raise _fail(path, f"cannot read it: {exc.strerror or exc}") from None
    except (ValueError, RecursionError) as exc:  # an integer beyond the digit limit, nesting too deep
        raise _fail(path, f"cannot parse YAML: {exc}") from None
    if not isinstance(data, dict):
        raise _fail(path, "must be a mapping with 'names' and 'tasks'")
    if "tasks" not in data and "train" in data:  # before: "unknown key 'train' in the top level"
        folder = Path(path).parent
        raise _fail(path, f"is a dataset's data.yaml, not a tasks.yaml (it has no 'tasks'): "
                          f"split it into tasks with 'edgecl dataset split-tasks {folder} --tasks "
                          f"\"a,b;c\" --out {folder}/tasks.yaml'")
    _check_keys(path, "the top level", data, _TOP_KEYS)
    names = _parse_names(path, data["names"])
    if not isinstance(data["tasks"], list) or not data["tasks"]:
        raise _fail(path, "'tasks' must be a non-empty list")
    seen: set[int] = set()
    tasks = []
    for i, raw in enumerate(data["tasks"]):
        task = _parse_task(path, i, raw, names, seen)
        if any(t.name == task.name for t in tasks):
            raise _fail(path, f"task name '{task.name}' is used twice")
        tasks.append(task)
    return TaskSet(names=names, tasks=tuple(tasks), path=path)


def refuse_trained_test_images(taskset: TaskSet) -> TaskSet:
    """Refuse a task sequence whose test image is also a training image (in any task): a
    benchmark scoring on it would score a model on what it learnt, and its held-out figures
    would be silently inflated. (Streaming such a file is fine; a val list may repeat the
    train list, as ultralytics datasets often do: nothing scores on val.)

    Args:
        taskset: the loaded tasks.

    Returns:
        ``taskset``.

    Raises:
        ConfigError: naming the image, both tasks and both lists.
    """
    trained = {}
    for task in taskset.tasks:
        for image in task.train:
            trained.setdefault(image, task.name)
    for task in taskset.tasks:
        for image in task.test:
            if image in trained:
                raise _fail(taskset.path, f"{image} is in task '{task.name}''s test list and in "
                                          f"task '{trained[image]}''s train list: a benchmark "
                                          f"must never score on a training image")
    return taskset


def yaml_scalar(text: str) -> str:
    """``text`` as a YAML scalar that reads back as the same string: plain where it is a
    plain word that YAML reads as that text, else double-quoted (before, ``split-tasks`` wrote
    class names as they were: a class ``"q"`` read back as ``q``, and ``0``, ``yes``, ``null``
    or ``a: b`` as a number, a boolean, nothing or a YAML error).

    Args:
        text: a class or task name.

    Returns:
        The scalar to write, e.g. ``car``, ``other vehicle`` or ``"yes"``.
    """
    import yaml

    text = str(text)
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9_ .-]*", text) and not text.endswith(" "):
        try:
            if yaml.safe_load(f"{{0: {text}}}") == {0: text}:
                return text
        except yaml.YAMLError:
            pass
    return json.dumps(text, ensure_ascii=False)


def format_tasks_yaml(names: dict[int, str], tasks: list[tuple[str, tuple[int, ...]]],
                      lists_dir: str = "tasks") -> str:
    """Render a ``tasks.yaml`` whose lists live at ``<lists_dir>/<name>/<split>.txt``.

    Args:
        names: class id -> name.
        tasks: ``(task name, classes introduced)`` in order.
        lists_dir: the folder of the lists, relative to the yaml (quoted in the YAML when it
            holds anything but letters, digits, ``_``, ``.`` and ``-``).

    Returns:
        The YAML text.
    """
    def path(name: str, split: str) -> str:
        text = f"{lists_dir}/{name}/{split}.txt"
        return text if re.fullmatch(r"[A-Za-z0-9_./-]+", text) else json.dumps(text)

    lines = ["names: {" + ", ".join(f"{i}: {yaml_scalar(n)}" for i, n in sorted(names.items()))
             + "}", "tasks:"]
    for name, classes in tasks:
        lines.append(f"  - name: {yaml_scalar(name)}")
        lines.append(f"    classes: [{', '.join(str(c) for c in classes)}]")
        lines.extend(f"    {s}: {path(name, s)}" for s in SPLITS)
    return "\n".join(lines) + "\n"
