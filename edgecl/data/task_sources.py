"""What a user gives as a task source, resolved: a ``tasks.yaml`` (or a folder holding one), or
a plain YOLO dataset read as one task; and, where a class-incremental split was wanted but a
dataset was given, how to make one (``dataset import``, ``dataset split-tasks``)."""

from __future__ import annotations

from pathlib import Path

import yaml

from edgecl.config import DataFileLoader
from edgecl.data.importers import FORMAT_NAMES, detect_format
from edgecl.data.tasks import TaskSet, TaskSpec, load_tasks
from edgecl.errors import ConfigError, missing_path
from edgecl.frames import STREAM_TASK
from edgecl.input_files import missing_file_why, read_data_file, regular_file_problem


def task_split_hint(path: str | Path) -> str:
    """How to make a class-incremental task split (a ``tasks.yaml``) of a labelled dataset
    given where one was wanted.

    Args:
        path: the dataset path given.

    Returns:
        For a Pascal VOC or COCO dataset, the ``dataset import`` then ``dataset split-tasks``
        commands; for a YOLO one, the ``split-tasks`` command; ``""`` where the path does
        not exist or is an archive (its own error says so).
    """
    try:
        detected = detect_format(path)
    except ConfigError:
        return ""
    split = "edgecl dataset split-tasks {0} --tasks \"a,b;c\" --out {0}/tasks.yaml"
    if detected == "yolo":
        return f"to split it into tasks: '{split.format(path)}'"
    return (f"it {_conversion(path, detected)}, then split it into tasks with "
            f"'{split.format('DIR')}'")


def _conversion(path: str | Path, fmt: str) -> str:
    """``looks like a Pascal VOC dataset: convert it with 'edgecl dataset import PATH --out
    DIR'`` for a dataset of format ``fmt`` (``voc``, ``coco``) where a YOLO one is read."""
    return (f"looks like {FORMAT_NAMES[fmt]}: convert it with 'edgecl dataset import {path} "
            f"--out DIR'")


def taskset_from_dataset(path: str | Path, task_name: str = STREAM_TASK) -> TaskSet:
    """A YOLO dataset (``data.yaml``, Roboflow export, images/labels folder) as a one-task set.

    Every class of the dataset is introduced by the single task; its splits are the
    dataset's ``train``/``val``/``test`` (a folder without splits is all ``train``).

    Args:
        path: what :func:`edgecl.data.yolo_dataset.find_dataset` accepts.
        task_name: the task's name; by default :data:`edgecl.frames.STREAM_TASK`, the task of
            a camera's frames: one dataset has no tasks, so the learner treats its frames as a
            deployment's (replay of earlier rounds, per-class evaluation and gate).

    Returns:
        The :class:`TaskSet` (``path`` is the yaml, or the folder).

    Raises:
        ConfigError: unreadable dataset, no class names (a ``data.yaml`` with ``names`` is
            needed; a Pascal VOC or COCO dataset is named as one, with the command that
            converts it), or no training images.
    """
    from edgecl.data.yolo_dataset import find_dataset

    dataset = find_dataset(path)
    where = dataset.yaml_path or dataset.root
    if not dataset.names:
        fmt = detect_format(path)
        if fmt != "yolo":  # read as YOLO, a VOC or COCO folder has no names
            raise ConfigError(f"{path} {_conversion(path, fmt)} and give DIR, an ultralytics "
                              f"YOLO dataset (read as one task; 'edgecl dataset split-tasks DIR' "
                              f"splits it into several)")
        raise ConfigError(f"{where}: no class names; add a data.yaml with 'names' (ultralytics "
                          f"format)")
    train = dataset.images("train") or dataset.images("all")
    if not train:
        raise ConfigError(f"{where}: no training images")
    task = TaskSpec(name=task_name, classes=tuple(sorted(dataset.names)), train=tuple(train),
                    val=tuple(dataset.images("val")), test=tuple(dataset.images("test")))
    return TaskSet(names=dict(dataset.names), tasks=(task,), path=Path(where))


def task_split_path(data: str | Path, option: str = "--data") -> Path:
    """The ``tasks.yaml`` a command's option names: the file itself, or the one in the folder.

    Args:
        data: what the user gave.
        option: the option's name, said in the error.

    Returns:
        The ``tasks.yaml`` path (it exists; :func:`load_tasks` reads and checks it).

    Raises:
        ConfigError: nothing there, or a folder (a dataset) holding no ``tasks.yaml``: the
            error says how to make one (:func:`edgecl.data.importers.task_split_hint`).
    """
    path = Path(data).expanduser()
    yaml_path = path / "tasks.yaml" if path.is_dir() else path
    if yaml_path.is_file():
        return yaml_path
    if not path.exists():
        raise ConfigError(f"{option}: {missing_path(path)}")
    why = missing_file_why(yaml_path)
    if not path.is_dir() or why != "not found":
        raise ConfigError(f"{option}: {yaml_path} is {why}")
    hint = task_split_hint(path)
    raise ConfigError(f"{option} {data}: no tasks.yaml (a class-incremental split of a dataset) "
                      f"in the folder" + (f"; {hint}" if hint else ""))


def load_task_source(path: str | Path) -> TaskSet:
    """Load a ``tasks.yaml``, or read a plain YOLO dataset as one task (what ``tasks://`` takes).

    Args:
        path: a ``tasks.yaml`` (a yaml with ``tasks``), a folder holding one, or anything
            :func:`taskset_from_dataset` accepts.

    Returns:
        The :class:`TaskSet`.

    Raises:
        ConfigError: as :func:`load_tasks` or :func:`taskset_from_dataset`.
    """
    path = Path(path).expanduser()
    if path.is_dir() and ((path / "tasks.yaml").exists() or (path / "tasks.yaml").is_symlink()):
        return load_tasks(path / "tasks.yaml")  # which says what a pipe or dangling link is
    if regular_file_problem(path, folder_ok=True):
        return load_tasks(path)  # which says what it is
    if path.is_file():
        try:
            data = yaml.load(read_data_file(path), Loader=DataFileLoader)
        except (OSError, yaml.YAMLError, ValueError, RecursionError):  # load_tasks says what
            data = None
        if not isinstance(data, dict) or "tasks" in data or "train" not in data:
            return load_tasks(path)
    return taskset_from_dataset(path)
