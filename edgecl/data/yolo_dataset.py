"""Find the images (and where their labels are) of the YOLO dataset layouts users have.

Layouts, tried in this order (ultralytics' rules, ``check_det_dataset`` / ``get_img_files``):

1. an ultralytics ``data.yaml`` (the file, or a folder holding exactly one dataset yaml):
   ``path`` (the root; default the yaml's folder), ``train``/``val``/``test`` (``validation``
   is read as ``val``) each a folder, an image-list ``.txt`` or a list of those, relative to
   the root; Roboflow's ``../train/images`` entries are tried without their ``../`` too, as
   ultralytics does; a ``path`` that does not exist here (the folder of the machine the yaml
   was written on) gives way, with a warning, to the yaml's own folder when every split is
   found there; ``names`` a list or ``{id: name}`` mapping (every class a name of its
   own, in any case and spelling of separators; ids, and ``nc`` without ``names``, below
   :data:`MAX_CLASSES`; ``nc`` beside ``names`` their number); a path written in the yaml or
   an image list may not hold a NUL byte (a one-line error naming the file and line);
2. the Roboflow export without a yaml: ``train/``, ``valid/`` (or ``val/``), ``test/`` each
   holding ``images/`` (and ``labels/``);
3. any other folder: its images, recursively (only those under ``images/`` when it has one).

Labels always follow :func:`edgecl.data.labels.label_path_for` (last ``/images/`` ->
``/labels/``, ``.txt``; with no ``images`` folder in the path, the ``.txt`` beside the image).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from edgecl.config import DataFileLoader
from edgecl.data.class_names import name_clash
from edgecl.data.images import is_image
from edgecl.data.labels import MAX_CLASSES, label_path_for
from edgecl.errors import ConfigError, encoding_problem, link_problem, missing_path, yaml_problem
from edgecl.input_files import (MAX_LIST_BYTES, missing_file_why, read_data_file,
                                read_input_text, regular_file_problem)

log = logging.getLogger(__name__)
_SAID_PATH_FALLBACK: set[Path] = set()  # data.yaml files whose 'path:' fallback was said
_SAID_ENTRY_FALLBACK: set[tuple[Path, str]] = set()  # (data.yaml, split) relocations said

SPLIT_NAMES = ("train", "val", "test")
_ROBOFLOW_SPLITS = {"train": ("train",), "val": ("valid", "val", "validation"), "test": ("test",)}
_COMPANION_SUFFIXES = frozenset({".txt", ".xml", ".json", ".yaml", ".yml", ".md", ".cache", ".csv",
                                 ".npy", ".names", ".data", ""})
"""Suffixes that belong to a dataset without being frames: not reported as ignored files
(``.names`` and ``.data``: darknet's ``obj.names`` and ``obj.data``, in CVAT's "YOLO 1.1")."""
_YAML_ERRORS = (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError)
"""What reading a yaml file may raise: ValueError for an integer beyond Python's digit limit,
RecursionError for nesting deeper than the parser's stack."""


@dataclass
class YoloDataset:
    """The images of a dataset, by split, and what was learnt while finding them.

    Attributes:
        root: the dataset's root folder.
        layout: ``data.yaml``, ``roboflow`` or ``folder`` (``tasks.yaml`` for the images of a
            class-incremental task list, as :mod:`edgecl.data.importers` reads one).
        splits: split name (``train``, ``val``, ``test``; ``all`` for a plain folder) ->
            image paths in name order.
        names: class id -> name from the yaml (``None`` when the layout names no classes).
        yaml_path: the ``data.yaml`` read, if any.
        ignored: suffix -> count of files that are neither images nor dataset companions
            (labels, annotations, yaml, ...), e.g. ``{".gif": 2}``; each file counted once, also
            when two splits name the same folder.
        ignored_files: those files, in the order found.
        kpt_values: keypoint values per label row of a pose dataset (``kpt_shape: [K, D]``
            in its yaml: K x D; 0 for a detection dataset).
    """

    root: Path
    layout: str
    splits: dict[str, list[Path]]
    names: dict[int, str] | None = None
    yaml_path: Path | None = None
    ignored: Counter = field(default_factory=Counter)
    ignored_files: list[Path] = field(default_factory=list)
    kpt_values: int = 0

    def images(self, split: str = "all") -> list[Path]:
        """The image paths of one split, or of every split in order (``all``).

        Args:
            split: a key of :attr:`splits` or ``all``.

        Returns:
            The paths (a split the dataset lacks gives an empty list); with ``all``, an image
            listed by two splits (``val: images`` equal to ``train: images``) appears once.
        """
        if split == "all":
            return list(dict.fromkeys(p for paths in self.splits.values() for p in paths))
        return list(self.splits.get(split, []))

    def dangling_link(self) -> str | None:
        """Why the first link to nothing among :attr:`ignored_files` cannot be followed (an
        ``images`` folder linked to a card not mounted), in one line; None when there is none.

        Returns:
            E.g. ``"ds/images is a symbolic link to /mnt/card, which does not exist
            (unmounted?)"`` (:func:`~edgecl.errors.link_problem`), or None.
        """
        return next((problem for p in self.ignored_files if p.is_symlink()
                     for problem in [link_problem(p)] if problem), None)

    def describe(self) -> str:
        """A short description: layout and image count per split."""
        counts = ", ".join(f"{s} {len(p)}" for s, p in self.splits.items())
        where = self.yaml_path or self.root
        return f"{self.layout} {where} ({counts})"


def _files_under(folder: Path) -> Iterator[Path]:
    """Every file under a folder, hidden files and folders left out, following linked folders
    (an SD card's ``DCIM`` linked into a dataset) but entering each real folder once (a link
    back to a parent ends there instead of looping); an unreadable folder is passed over."""
    entered: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in entered:
            dirs[:] = []
            continue
        entered.add((st.st_dev, st.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def _scan_dir(folder: Path, ignored: dict[Path, None]) -> list[Path]:
    """The images under a folder (:func:`_files_under`), in name order; the files that are
    neither images nor dataset companions are added to ``ignored`` (a dict used as an ordered
    set: a folder scanned twice adds each file once)."""
    images = []
    for p in _files_under(folder):
        if not p.is_file():  # a FIFO, a device, a link to nothing: no frame, said as such
            ignored[p] = None
            continue
        if is_image(p):
            images.append(p)
        elif p.suffix.lower() not in _COMPANION_SUFFIXES and p.name.upper() not in ("LICENSE", "README"):
            ignored[p] = None
    return sorted(images, key=lambda q: q.relative_to(folder).as_posix())


def _ignored_fields(ignored: dict[Path, None]) -> dict:
    """The ``ignored`` and ``ignored_files`` fields of a :class:`YoloDataset`."""
    return {"ignored": Counter(p.suffix.lower() for p in ignored), "ignored_files": list(ignored)}


def path_from_text(text: str, where: str) -> Path:
    """A path written in a dataset file, ``~`` expanded (kept as written for an unknown user).

    Args:
        text: the path as written.
        where: the file and line or field it comes from (named in the error).

    Returns:
        The path (relative paths stay relative).

    Raises:
        ConfigError: the text holds a NUL byte, which no file name can, or a character no file
            name can be encoded with (a lone surrogate: an emoji escaped as two ``\\u`` codes).
    """
    if "\0" in text:
        raise ConfigError(f"{where}: path {text!r} contains a NUL byte")
    try:
        os.fsencode(text)
    except UnicodeEncodeError:
        raise ConfigError(f"{where}: path {text!r} is not valid Unicode text (a lone surrogate; "
                          f"was an emoji written as two \\u escapes?)") from None
    try:
        return Path(text).expanduser()
    except RuntimeError:  # "~someone" with no such user: a literal folder name, as in a shell
        return Path(text)


def path_is_file(path: Path) -> bool:
    """``path.is_file()`` that is also False where the system refuses the name itself.

    Args:
        path: the path (e.g. built from a dataset file's text).

    Returns:
        True for an existing regular file; False for anything else, a name too long for the
        file system or holding a NUL byte included.
    """
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def path_exists(path: Path, folder: bool = False) -> bool:
    """``path.exists()`` (``is_dir()`` with ``folder``), False for a name the system refuses.

    Args:
        path: the path (e.g. built from a dataset file's text).
        folder: ask whether it is a folder.

    Returns:
        Whether it exists (is a folder); False for a name too long or holding a NUL byte.
    """
    try:
        return path.is_dir() if folder else path.exists()
    except (OSError, ValueError):
        return False


def _read_image_list(list_path: Path) -> list[Path]:
    try:
        text = read_input_text(list_path, MAX_LIST_BYTES, "an image list", "utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read image list {list_path}: {encoding_problem(exc)}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read image list {list_path}: {exc.strerror or exc}") from None
    out, moved = [], 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        p = path_from_text(line, f"{list_path}:{lineno}")
        windows = _windows_written(line)
        p = p if p.is_absolute() and not windows else list_path.parent / p
        if not path_exists(p) and (windows or Path(line).is_absolute()):
            here = foreign_path_here(line, list_path.parent)  # a list another machine wrote
            if here is not None:
                moved += 1
                p = here
        out.append(p)
    if moved:
        log.warning("%s: %d listed image(s) do not exist where it says (written on another "
                    "machine?); read from below %s instead", list_path, moved, list_path.parent)
    return [p.resolve() for p in out if is_image(p)]


def _yaml_root(yaml_path: Path, data: dict) -> Path:
    raw = data.get("path")
    if not raw:
        return yaml_path.parent
    if not isinstance(raw, str):
        raise ConfigError(f"{yaml_path}: 'path' must be a folder path, got {raw!r:.80}")
    root = path_from_text(raw, f"{yaml_path}: 'path'")
    if root.is_absolute():
        return root
    for candidate in (yaml_path.parent / root, Path.cwd() / root):
        if path_exists(candidate, folder=True):
            return candidate.resolve()
    # not resolved: a link on the way (a card not mounted) is then named where it is used
    return (yaml_path.parent / root).absolute()


_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]|\\")
"""A path as Windows writes it (``C:\\data\\images``, ``\\\\server\\share``, any backslash)."""


def _windows_written(text: str) -> bool:
    """Whether a path in a dataset file was written on Windows (and is read elsewhere)."""
    return bool(_WINDOWS_PATH.search(text)) and os.sep != "\\"


def foreign_path_here(written: str, base: Path) -> Path | None:
    """Where a path another machine wrote (``/home/alice/ds/images/train``,
    ``C:\\Users\\alice\\ds\\images\\train``) lies below ``base``: the longest tail of its
    parts that exists there (``images/train``), or None.

    Args:
        written: the path as the dataset file writes it.
        base: the folder the dataset file is in.

    Returns:
        The existing path below ``base``, or None when no tail exists there.
    """
    parts = [p for p in re.split(r"[\\/]+", written) if p and p not in (".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    for start in range(len(parts) - 1):  # the longest tail first; never the last part alone
        candidate = base.joinpath(*parts[start:])
        if path_exists(candidate, folder=True) or path_exists(candidate):
            return candidate
    return None


def _resolve_entry(yaml_path: Path, root: Path, split: str, entry: object) -> list[Path]:
    if not isinstance(entry, str) or not entry.strip():
        raise ConfigError(f"{yaml_path}: '{split}' must be a path or a list of paths, got {entry!r}")
    windows = _windows_written(entry)
    p = path_from_text(entry, f"{yaml_path}: '{split}'")
    p = first = p if p.is_absolute() and not windows else root / p
    if not path_exists(p) and entry.replace("\\", "/").startswith("../"):
        # Roboflow writes ../train/images next to the yaml (ultralytics' fix), on Windows ..\
        p = root / entry[3:].replace("\\", "/")
    if not path_exists(p) and (windows or Path(entry).is_absolute()):
        # written on another machine (a Colab or Windows path): its tail beside the yaml
        here = foreign_path_here(entry, yaml_path.parent)
        if here is not None:
            if (yaml_path, split) not in _SAID_ENTRY_FALLBACK:
                _SAID_ENTRY_FALLBACK.add((yaml_path, split))
                log.warning("%s: '%s' path %s does not exist here; read from %s, beside the "
                            "yaml", yaml_path, split, entry, here)
            return [here.resolve()]
        if windows:  # before: the yaml's folder and the Windows path glued into one
            raise ConfigError(f"{yaml_path}: '{split}' path {entry} is a Windows path, and no "
                              f"folder of its tail lies beside the yaml; write it relative to "
                              f"the yaml (e.g. images/train)")
    if not path_exists(p):
        link = link_problem(first) or link_problem(p)
        if link:  # a link to a card not mounted: name the link, not only where it leads
            raise ConfigError(f"{yaml_path}: '{split}' path {link}")
        raise ConfigError(f"{yaml_path}: '{split}' path not found: {p.resolve()}")
    return [p.resolve()]


_BOOLEAN_NAMES_WARNED: set[str] = set()
"""The data.yaml files whose boolean class names were warned of (once a process)."""


def _parse_names(yaml_path: Path, data: dict) -> dict[int, str] | None:
    """The class names of a ``data.yaml``'s mapping (``class_<id>`` for ``nc`` alone).

    Raises:
        ConfigError: naming the file: ``names`` not a list or mapping, a bad id or name, an
            ``nc`` that is not the number of names, or one class name under two ids (also
            spelt otherwise: :func:`edgecl.data.class_names.name_clash`).
    """
    raw = data.get("names")
    if raw is None:
        nc = data.get("nc")
        if nc is None:
            return None
        if (isinstance(nc, bool) or not isinstance(nc, (int, float)) or not math.isfinite(nc)
                or nc != int(nc) or nc <= 0):  # before: 0, -1 or '4' read as no nc at all
            raise ConfigError(f"{yaml_path}: 'nc' must be a whole number of classes >= 1, got "
                              f"{str(nc)[:40]!r}")
        nc = int(nc)
        if nc > MAX_CLASSES:
            raise ConfigError(f"{yaml_path}: 'nc' {nc} is above the limit of {MAX_CLASSES} classes")
        return {i: f"class_{i}" for i in range(nc)}
    if isinstance(raw, list):
        raw = dict(enumerate(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{yaml_path}: 'names' must be a list or a mapping {{id: name}}")
    names, booleans = {}, []
    for key, value in raw.items():
        cid = _class_id_key(key)
        if cid is None:
            raise ConfigError(f"{yaml_path}: class id {key!r} in 'names' is not an integer >= 0")
        if cid >= MAX_CLASSES:
            raise ConfigError(f"{yaml_path}: class id {str(cid)[:40]} in 'names' is above the limit of "
                              f"{MAX_CLASSES} classes")
        name = str(value) if isinstance(value, bool) else class_name_text(value)
        if name is None:
            raise ConfigError(f"{yaml_path}: class {cid} in 'names' needs a name, got {value!r:.80}")
        if isinstance(value, bool):  # ultralytics names the class str(True), so must a device
            booleans.append(f"{cid} '{name}'")
        names[cid] = name
    if booleans and str(yaml_path) not in _BOOLEAN_NAMES_WARNED:
        _BOOLEAN_NAMES_WARNED.add(str(yaml_path))
        log.warning("%s: 'names' holds YAML booleans (yes, no, on, off, true or false written "
                    "without quotes): class %s, as ultralytics names them; quote the words in "
                    "the file to keep them", yaml_path, ", ".join(booleans))
    nc = data.get("nc")
    if nc is not None and (isinstance(nc, bool) or not isinstance(nc, (int, float)) or nc != len(raw)):
        raise ConfigError(f"{yaml_path}: 'nc' is {nc!r:.40} but 'names' lists {len(raw)} classes; make "
                          f"them agree (or leave 'nc' out)")
    clash = name_clash(names)
    if clash:
        raise ConfigError(f"{yaml_path}: {clash}")
    return dict(sorted(names.items()))


def class_name_text(value: object) -> str | None:
    """A class name as a dataset file wrote it, as text: a string or a number (ultralytics
    applies ``str``), stripped.

    Args:
        value: the value read (yaml, json, text file).

    Returns:
        The name; ``None`` for no usable name (null, empty, a boolean such as yaml's ``no``,
        a list or a mapping), which the caller refuses naming the class.
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return str(value).strip() or None


def _class_id_key(key: object) -> int | None:
    """A ``names`` key as a class id: an int, digits, or an integral float (``2.0``, as the
    label rule reads a class id); ``None`` for anything else (``2.5``, ``1e3``, ``true``)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key if key >= 0 else None
    if isinstance(key, float):
        return int(key) if key.is_integer() and key >= 0 else None
    if isinstance(key, str) and re.fullmatch(r"\d+(\.0*)?", key.strip()):
        return int(key.strip().split(".")[0])  # not via float: 400 digits would overflow it
    return None


def _parse_data_yaml(yaml_path: str | Path) -> tuple[Path, object]:
    """A dataset yaml read and parsed once: ``(its resolved path, what it holds)``.

    Raises:
        ConfigError: it cannot be read or parsed.
    """
    yaml_path = Path(yaml_path).expanduser().resolve()
    try:
        return yaml_path, yaml.load(read_data_file(yaml_path), Loader=DataFileLoader)
    except _YAML_ERRORS as exc:
        raise ConfigError(f"cannot read dataset yaml {yaml_path}{yaml_problem(exc)}") from None


def _read_data_yaml(parsed: tuple[Path, object]) -> tuple[Path, dict, Path, dict[str, list[Path]]]:
    """An ultralytics ``data.yaml`` (as :func:`_parse_data_yaml` gives it) without listing its
    images.

    Returns:
        ``(the yaml's resolved path, its mapping, the dataset root, split -> the folders,
        image files or image lists its entries name)``.

    Raises:
        ConfigError: as :func:`load_data_yaml`.
    """
    yaml_path, data = parsed
    if not isinstance(data, dict) or "train" not in data:
        raise ConfigError(f"{yaml_path}: not an ultralytics data.yaml (needs 'train', 'val' and 'names')")
    if "val" not in data and "validation" in data:
        data["val"] = data["validation"]
    root = _yaml_root(yaml_path, data)
    if not path_exists(root, folder=True) and _entries(yaml_path, data, yaml_path.parent):
        # a download's yaml naming the folder of the machine it was made on (Colab's
        # /content/datasets/...), its splits beside it: before, a dead end
        if yaml_path not in _SAID_PATH_FALLBACK:  # a command reads the yaml more than once
            _SAID_PATH_FALLBACK.add(yaml_path)
            log.warning("%s: 'path' %s does not exist here; the dataset's splits were found "
                        "beside the yaml, in %s", yaml_path, data.get("path"), yaml_path.parent)
        root = yaml_path.parent
    return yaml_path, data, root, _entries(yaml_path, data, root, strict=True)


def _entries(yaml_path: Path, data: dict, root: Path,
             strict: bool = False) -> dict[str, list[Path]] | None:
    """The paths each split entry of a ``data.yaml`` names under ``root``.

    Raises:
        ConfigError: with ``strict``, an entry that is malformed or names no path (else None
            is returned).
    """
    entries = {}
    try:
        for split in SPLIT_NAMES:
            entry = data.get(split)
            if entry:
                entries[split] = [p for item in (entry if isinstance(entry, list) else [entry])
                                  for p in _resolve_entry(yaml_path, root, split, item)]
    except ConfigError:
        if strict:
            raise
        return None
    return entries


def load_data_yaml(yaml_path: str | Path) -> YoloDataset:
    """Read an ultralytics ``data.yaml`` (detection) and list its images per split.

    Args:
        yaml_path: the yaml file.

    Returns:
        The :class:`YoloDataset` (layout ``data.yaml``).

    Raises:
        ConfigError: unreadable yaml, no ``train`` key, a split path that does not exist
            (naming it), a malformed ``names``.
    """
    return _yaml_dataset(_parse_data_yaml(yaml_path))


def _yaml_dataset(parsed: tuple[Path, object]) -> YoloDataset:
    """:func:`load_data_yaml` of a yaml already parsed (:func:`_parse_data_yaml`)."""
    yaml_path, data, root, entries = _read_data_yaml(parsed)
    ignored: dict[Path, None] = {}
    splits: dict[str, list[Path]] = {}
    for split, paths in entries.items():
        images: list[Path] = []
        for p in paths:
            if p.is_dir():
                images += _scan_dir(p, ignored)
            elif is_image(p):
                images.append(p)
            else:
                images += _read_image_list(p)
        splits[split] = images
    return YoloDataset(root=root, layout="data.yaml", splits=splits, names=_parse_names(yaml_path, data),
                       yaml_path=yaml_path, kpt_values=_kpt_values(yaml_path, data),
                       **_ignored_fields(ignored))


def _kpt_values(yaml_path: Path, data: object) -> int:
    """Keypoint values per label row of a pose dataset's yaml (``kpt_shape: [K, D]``, D 2 or
    3, as ultralytics writes it): K x D; 0 without ``kpt_shape``.

    Raises:
        ConfigError: a ``kpt_shape`` that is not ``[K, D]`` with K >= 1 and D 2 or 3.
    """
    shape = data.get("kpt_shape") if isinstance(data, dict) else None
    if shape is None:
        return 0
    if (not isinstance(shape, list) or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
            or shape[0] < 1 or shape[0] > MAX_CLASSES or shape[1] not in (2, 3)):
        raise ConfigError(f"{yaml_path}: 'kpt_shape' must be [keypoints, 2 or 3] (a pose "
                          f"dataset), got {str(shape)[:40]}")
    return shape[0] * shape[1]


def find_data_yaml(folder: Path) -> Path | None:
    """The dataset yaml at the top of a folder (``data.yaml``, else the only yaml with ``train``).

    Args:
        folder: the folder.

    Returns:
        Its path, or ``None`` when the folder holds none (a ``tasks.yaml`` is not one).
    """
    named = folder / "data.yaml"
    if named.is_file():
        return named
    if os.path.lexists(named):  # before: passed over, the dataset's names lost (a pipe, a
        # folder, a link that loops or leads nowhere), and its labels read as the device's ids
        raise ConfigError(f"{named} is {missing_file_why(named)}")
    found = []
    for p in sorted(folder.glob("*.y*ml")):
        if p.suffix not in (".yaml", ".yml") or not p.is_file():
            continue
        try:
            data = yaml.load(read_data_file(p), Loader=DataFileLoader)
        except _YAML_ERRORS:
            continue
        if isinstance(data, dict) and "train" in data and "tasks" not in data:
            found.append(p)
    return found[0] if len(found) == 1 else None


def roboflow_splits(folder: Path) -> dict[str, Path]:
    """The split folders of a Roboflow-style export (``train/``, ``valid/``, ``test/``).

    Args:
        folder: the dataset folder.

    Returns:
        Split name (``train``, ``val``, ``test``) -> folder; empty when ``train/`` is missing.
    """
    found = {}
    for split, candidates in _ROBOFLOW_SPLITS.items():
        for name in candidates:
            if (folder / name).is_dir():
                found[split] = folder / name
                break
    return found if "train" in found else {}


def find_dataset(path: str | Path) -> YoloDataset:
    """Find the images of a dataset in any of the layouts of the module docstring.

    Args:
        path: a ``data.yaml``, a Roboflow export folder, or any folder of images.

    Returns:
        The :class:`YoloDataset`.

    Raises:
        ConfigError: a yaml that is not a readable ``data.yaml``, or a missing path.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(missing_path(path))
    path = path.resolve()
    special = regular_file_problem(path, folder_ok=True)
    if special:  # before: "no images in" a pipe or a device
        raise ConfigError(f"{path} is {special}; expected a dataset folder or a data.yaml")
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise ConfigError(f"{path} is a file; expected a dataset folder or a data.yaml")
        yaml_path, path = path, path.parent  # a names-only yaml names its folder's classes
    else:
        yaml_path = find_data_yaml(path)
    names = None
    if yaml_path is not None:
        parsed = _parse_data_yaml(yaml_path)
        names = _names_only(*parsed)
        if names is None:
            return _yaml_dataset(parsed)
        kpt_values = _kpt_values(*parsed)
    else:
        kpt_values = 0
    ignored: dict[Path, None] = {}
    splits = roboflow_splits(path)
    if splits:
        scanned = {s: _scan_dir(d, ignored) for s, d in splits.items()}
        return YoloDataset(root=path, layout="roboflow", splits=scanned, names=names,
                           kpt_values=kpt_values, **_ignored_fields(ignored))
    folder = path / "images" if (path / "images").is_dir() else path
    scanned = {"all": _scan_dir(folder, ignored)}
    return YoloDataset(root=path, layout="folder", splits=scanned,
                       names=names if names is not None else _enclosing_names(path),
                       kpt_values=kpt_values, **_ignored_fields(ignored))


def _names_only(yaml_path: Path, data: object) -> dict[int, str] | None:
    """The class names of a yaml (``data``, parsed) that holds ``names`` (or ``nc``) and no
    ``train``: a folder's class names, as some tools write them beside ``images/`` and
    ``labels/`` (before: refused as "not an ultralytics data.yaml", though the folder itself
    imports). None for any other yaml, which :func:`load_data_yaml`'s rule then reads (and
    refuses with its own reason).

    Raises:
        ConfigError: its ``names`` are broken (:func:`_parse_names`).
    """
    if not isinstance(data, dict) or "train" in data or ("names" not in data and "nc" not in data):
        return None
    return _parse_names(yaml_path, data)


def _enclosing_names(folder: Path) -> dict[int, str] | None:
    """The class names of the ``data.yaml`` one or two levels up whose splits hold this
    folder's images: one split of an export given alone (``export/train`` of a Roboflow
    download, whose ``data.yaml`` sits beside ``train/``; ``dataset/images/train`` of the
    ultralytics layout, whose ``data.yaml`` sits beside ``images/``) keeps its class names
    instead of ``class_<id>``.

    Args:
        folder: the folder given (it holds no dataset yaml itself).

    Returns:
        The names, or ``None`` when no readable yaml up there lists images of this folder.

    Raises:
        ConfigError: the yaml lists this folder's images but its ``names`` are broken (before,
            they were passed over in silence, and every labelled frame of a stream was then
            refused for a class id no registry held).
    """
    for above in dict.fromkeys((folder.parent, folder.parent.parent)):
        yaml_path = find_data_yaml(above) if above != folder else None
        if yaml_path is None:
            continue
        try:
            yaml_path, data, _, entries = _read_data_yaml(_parse_data_yaml(yaml_path))
        except ConfigError:
            continue  # a yaml that cannot say which folders it covers names nothing here
        for p in (p for paths in entries.values() for p in paths):  # no folder listed: a
            if p.is_dir() or is_image(p):                              # split's entries say
                if p.is_relative_to(folder) or folder.is_relative_to(p):  # where it is
                    return _parse_names(yaml_path, data)
            elif any(q.is_relative_to(folder) for q in _read_image_list(p)):
                return _parse_names(yaml_path, data)
    return None


def labels_report(images: list[Path]) -> tuple[int, Path | None, list[Path]]:
    """How many images have a label file where the YOLO rule puts it.

    Args:
        images: image paths.

    Returns:
        ``(count with a label file, the label path looked at for the first image with none
        there, the label paths where something else stands: a pipe, a device, a folder, a
        link that leads nowhere)``.
    """
    found, first_missing, odd = 0, None, []
    for image in images:
        label = label_path_for(image)
        if path_is_file(label):
            found += 1
        elif missing_file_why(label) != "not found":
            odd.append(label)
        elif first_missing is None:
            first_missing = label
    return found, first_missing, odd
