"""The benchmark's view of a class-incremental dataset: filtered label copies ultralytics reads.

Class-incremental training must not see labels of classes that are introduced later, but a
YOLO dataset's label files hold every class.  :func:`prepare_view` therefore writes a work
copy of the dataset, once per dataset (keyed by :func:`data_hash`):

* ``<root>/images/<task>/<split>/<k>_<stem><suffix>``: hard links to the original images
  (a copy where a hard link is impossible).  Not symbolic links: ultralytics resolves image
  paths, which would lead it back to the original, unfiltered labels.
* ``<root>/labels/<task>/<split>/<k>_<stem>.txt``: the labels, class ids renumbered in order of
  introduction (task 1's classes first), and for ``train`` images only the classes of tasks up
  to the image's own task (what a memory would have stored when that task was learnt).
  ``test`` labels keep every introduced class: evaluation restricts itself to the task's own
  classes.
* ``<root>/images/<task>/joint<t>/...`` (and its labels): for ``joint`` at task ``t``, the
  training images of an earlier task labelled with every class of tasks ``0..t``: the upper
  bound learns from all the data seen so far with every known class labelled, as a model
  trained on everything at once would (a car image's bicycles are bicycles to it, not
  background).

Classes that no task introduces are dropped everywhere.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, link_or_copy
from edgecl.data.images import ImageError, file_deeper_than_8_bits, read_image
from edgecl.data.labels import labels_to_text, parse_yolo_label_text
from edgecl.data.tasks import TaskSet, label_path_for
from edgecl.errors import ConfigError, LabelError
from edgecl.input_files import MAX_LABEL_BYTES, label_bytes_for_hash, read_input_text

VIEW_SPLITS = ("train", "test")
MARKER = "view.json"
VIEW_VERSION = 3


@dataclass(frozen=True)
class DataView:
    """Work copy of a task sequence, classes renumbered 0..nc-1 in order of introduction.

    Attributes:
        root: folder of the copy.
        data_hash: :func:`data_hash` of the source (identifies it in results).
        task_names: task names in order.
        task_classes: renumbered class ids each task introduces.
        names: renumbered class id -> name.
        train: per task, the work-copy training images (labels filtered).
        test: per task, the work-copy test images.
        joint: per task ``t``, the earlier tasks' training images labelled with every class
            of tasks ``0..t`` (what ``joint`` replays; empty for the first task).
    """

    root: Path
    data_hash: str
    task_names: tuple[str, ...]
    task_classes: tuple[tuple[int, ...], ...]
    names: dict[int, str]
    train: tuple[tuple[Path, ...], ...]
    test: tuple[tuple[Path, ...], ...]
    joint: tuple[tuple[Path, ...], ...]

    @property
    def n_tasks(self) -> int:
        """Number of tasks."""
        return len(self.task_names)

    def seen_names(self, t: int) -> dict[int, str]:
        """Renumbered id -> name of the classes of tasks ``0..t``."""
        seen = [c for classes in self.task_classes[:t + 1] for c in classes]
        return {c: self.names[c] for c in sorted(seen)}


def class_remap(task_set: TaskSet) -> dict[int, int]:
    """Original class id -> id in order of introduction (task 1's classes are 0, 1, ...).

    Args:
        task_set: the loaded ``tasks.yaml``.

    Returns:
        The mapping for every class some task introduces.
    """
    order = [c for task in task_set.tasks for c in task.classes]
    return {c: i for i, c in enumerate(order)}


def filter_label_text(text: str, keep: dict[int, int], where: str = "labels",
                      nc: int | None = None) -> str:
    """Keep the label rows whose class is in ``keep`` and renumber them (THE label rule reads them).

    Args:
        text: YOLO label file contents (see :mod:`edgecl.data.labels`: BOM, polygons,
            duplicates, clipping).
        keep: original class id -> new id; rows of other classes are dropped.
        where: file name for error messages.
        nc: the dataset's class count: a row of a class id at or past it is refused (before,
            dropped without a word, held-out boxes too); ``None``: not checked.

    Returns:
        The filtered label text in :func:`edgecl.data.labels.labels_to_text` format
        (``""`` when no row is left).

    Raises:
        LabelError: the first refused row (``file:line: why``).
    """
    parsed = parse_yolo_label_text(text, where, nc)
    if parsed.refused:
        raise LabelError(parsed.refused[0])
    rows = [[keep[int(r[0])], *r[1:]] for r in parsed.labels if int(r[0]) in keep]
    return labels_to_text(np.array(rows, np.float32).reshape(-1, 5))


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix()


def data_hash(task_set: TaskSet) -> str:
    """Fingerprint of a task sequence: names, tasks, listed images (path, size) and labels.

    Args:
        task_set: the loaded ``tasks.yaml``.

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256()
    base = task_set.path.parent
    digest.update(json.dumps(sorted(task_set.names.items())).encode())
    for task in task_set.tasks:
        digest.update(json.dumps([task.name, list(task.classes)]).encode())
        for split in VIEW_SPLITS:
            digest.update(split.encode())
            for image in task.split(split):
                label = label_path_for(image)
                digest.update(f"{_rel(image, base)}:{image.stat().st_size}\n".encode())
                digest.update(label_bytes_for_hash(label))
    return digest.hexdigest()[:16]


def filtered_copy(image: Path, dst: Path, keep: dict[int, int], nc: int | None = None) -> None:
    """Link ``image`` to ``dst`` and write its labels beside it (ultralytics layout), keeping and
    renumbering the rows of the classes in ``keep`` (:func:`filter_label_text`).

    Args:
        image: an image with its YOLO label file beside it (none: no boxes).
        dst: the copy's path (under an ``images/`` folder).
        keep: original class id -> new id; rows of other classes are dropped.
        nc: the dataset's class count (:func:`filter_label_text`).

    Raises:
        LabelError: a malformed label row, a class id at or past ``nc``, or a label file
            that cannot be read (a pipe, a device, over a label file's size).
        ConfigError: an image that cannot be read or decoded.
    """
    src_label = label_path_for(image)
    try:
        text = (read_input_text(src_label, MAX_LABEL_BYTES, "a label file", "utf-8-sig")
                if src_label.exists() else "")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabelError(f"cannot read label file {src_label}: "
                         f"{getattr(exc, 'strerror', None) or exc}") from None
    try:
        deeper = file_deeper_than_8_bits(image)
    except OSError as exc:
        raise ConfigError(f"cannot read image {image}: {exc.strerror or exc}") from None
    try:  # before: ultralytics skipped it, naming the work copy and "No module named 'pi_heif'"
        read_image(image)
    except ImageError as exc:
        raise ConfigError(f"{exc}; fix the file, or take it out of the task's list") from None
    if deeper:  # ultralytics would train on its high byte
        eight_bit_copy(image, dst)
    else:
        link_or_copy(image, dst)
    atomic_write_text(label_path_for(dst), filter_label_text(text, keep, str(src_label), nc))


def eight_bit_copy(image: Path, dst: Path) -> None:
    """Write ``image`` to ``dst`` in ``dst``'s format with the 8-bit pixels edgecl reads
    (:func:`edgecl.data.images.read_image`: a 16-bit sample stretched by the image's own range).

    Raises:
        ImageError: ``image`` does not decode.
        LabelError: the pixels cannot be encoded in ``dst``'s format.
    """
    import cv2

    ok, data = cv2.imencode(dst.suffix, read_image(image))
    if not ok:
        raise LabelError(f"{image}: cannot write its 8-bit copy as {dst.suffix}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, data.tobytes())


def _view_path(root: Path, task: str, split: str, index: int, image: Path) -> Path:
    return root / "images" / task / split / f"{index:05d}_{image.stem}{image.suffix}"


def _keep_seen(task_set: TaskSet, t: int, remap: dict[int, int]) -> dict[int, int]:
    """Original id -> new id of the classes of tasks ``0..t``."""
    allowed = set(task_set.seen_classes(t))
    return {c: n for c, n in remap.items() if c in allowed}


def _write_copies(root: Path, task: str, split: str, images, keep: dict[int, int],
                  write: bool, nc: int) -> tuple[Path, ...]:
    paths = tuple(_view_path(root, task, split, k, image) for k, image in enumerate(images))
    if write:
        for image, img in zip(images, paths):
            filtered_copy(image, img, keep, nc)
    return paths


def _write_split(root: Path, task_set: TaskSet, t: int, split: str, remap: dict[int, int],
                 write: bool) -> tuple[Path, ...]:
    task = task_set.tasks[t]
    keep = _keep_seen(task_set, t, remap) if split == "train" else remap
    return _write_copies(root, task.name, split, task.split(split), keep, write, task_set.nc)


def _write_joint(root: Path, task_set: TaskSet, t: int, remap: dict[int, int],
                 write: bool) -> tuple[Path, ...]:
    keep = _keep_seen(task_set, t, remap)
    return tuple(path for earlier in task_set.tasks[:t]
                 for path in _write_copies(root, earlier.name, f"joint{t}",
                                           earlier.split("train"), keep, write, task_set.nc))


def prepare_view(task_set: TaskSet, work_dir: str | Path, write: bool = True) -> DataView:
    """Write (or reuse) the filtered work copy of a task sequence.

    Args:
        task_set: the loaded ``tasks.yaml``.
        work_dir: parent folder; the copy goes to ``work_dir/data-<hash>``.
        write: False describes the copy without writing a file (``--report-only``: a report
            of finished runs rewrote the whole work copy, and failed in a read-only folder).

    Returns:
        The :class:`DataView`.

    Raises:
        LabelError: a malformed label row (naming file and line).
    """
    digest = data_hash(task_set)
    root = Path(work_dir).expanduser().resolve() / f"data-{digest}"
    marker = root / MARKER
    expected = {"version": VIEW_VERSION, "data_hash": digest, "source": str(task_set.path)}
    try:
        reuse = not write or json.loads(marker.read_text(encoding="utf-8")) == expected
    except (OSError, ValueError, RecursionError):  # absent, or damaged: rebuilt
        reuse = False
    if not reuse:
        shutil.rmtree(root, ignore_errors=True)
    remap = class_remap(task_set)
    # INVARIANT: the marker is written last; a copy without it is rebuilt from scratch.
    splits = {s: tuple(_write_split(root, task_set, t, s, remap, not reuse)
                       for t in range(len(task_set.tasks))) for s in VIEW_SPLITS}
    joint = tuple(_write_joint(root, task_set, t, remap, not reuse)
                  for t in range(len(task_set.tasks)))
    if not reuse:
        atomic_write_json(marker, expected)
    return DataView(root=root, data_hash=digest,
                    task_names=tuple(t.name for t in task_set.tasks),
                    task_classes=tuple(tuple(remap[c] for c in t.classes) for t in task_set.tasks),
                    names={new: task_set.names[old] for old, new in remap.items()},
                    train=splits["train"], test=splits["test"], joint=joint)
