"""``edgecl dataset split-tasks``: a YOLO dataset -> a class-incremental ``tasks.yaml``.

Each image goes to the FIRST task whose classes it holds (an image showing a car and a
person goes to the vehicles task when vehicles come first; its person box is then an
earlier-unseen class, which is what class-incremental learning faces). Images holding no
class of any task are left out and counted (``unassigned``).

Splits are drawn by GROUP: with ``group_by`` (a regular expression), images whose names give
the same value for its first group (e.g. flight and altitude of
``D_ALT_ANG_W_FRAME.jpg``: ``^(\\d+_\\d+)_``) always land in the same split, in every task,
so near-identical frames never sit on both sides of a split. Without it each image is its
own group. Each group goes to a split by greedy passes (each group to the split that brings
every task's train/val/test counts closest to ``ratios``), one largest group first and the
others in orders drawn from the seed; the seed then draws the split among those about as
balanced as the best one found, so another seed gives another split wherever several balanced
ones exist.

The image lists go beside the ``tasks.yaml``, in a folder named after it: ``tasks.yaml`` ->
``tasks/<task>/<split>.txt``, ``tasks_seed5.yaml`` -> ``tasks_seed5/<task>/...``, so a second
split written beside a first never rewrites the first one's lists (before, every split of a
folder shared ``tasks/``, and an earlier ``tasks.yaml`` silently pointed at the later split).

Output is all or nothing: every list is computed and checked before anything is written, then
written in a staging folder and swapped in (see :func:`_write_all`); a failure leaves the
previous ``tasks.yaml`` and lists (or nothing) in place.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

from edgecl.atomic import atomic_write_text, fsync_dir, temp_dir_for
from edgecl.config import DataFileLoader
from edgecl.data.class_names import loose_class_name, same_name_key
from edgecl.data.labels import (label_path_for, read_yolo_labels, shared_label_files,
                                shared_label_problem)
from edgecl.data.tasks import SPLITS, format_tasks_yaml, load_tasks, unlistable
from edgecl.data.yolo_dataset import find_dataset
from edgecl.errors import ConfigError, LabelError, did_you_mean, link_problem
from edgecl.input_files import read_data_file

log = logging.getLogger(__name__)


def _class_named(name: str, names: dict[int, str]) -> int | None:
    """The id of the dataset class ``name`` names: the one of the same :func:`same_name_key`
    (case and Unicode form aside), else the one of the same :func:`loose_class_name` (before,
    every letter outside a-z was dropped: two Chinese names were one, and a composed accent
    matched no decomposed one); ``None`` when none or several match."""
    for key in (same_name_key, loose_class_name):
        wanted = key(name)
        found = [i for i, n in names.items() if wanted and key(n) == wanted]
        if len(found) == 1:
            return found[0]
    return None


def parse_task_spec(spec: str, names: dict[int, str]) -> list[tuple[int, ...]]:
    """Parse ``"car,other_vehicle;bicycle;person"`` into class ids per task.

    Names match the dataset's as the class registry matches them: in any case, Unicode form
    and spelling of separators (``other_vehicle`` matches ``OtherVehicle``, a composed ``Café``
    the decomposed one; ``行人`` and ``汽车`` stay two), the exact spelling first; a number
    that is no class's name is read as a class id, unless some class is named by a number
    (a Roboflow export's ``"1"``, ``"2"``): then a number is a name only.

    Args:
        spec: tasks separated by ``;``, classes by ``,``.
        names: the dataset's class id -> name.

    Returns:
        Class ids of each task, in order.

    Raises:
        ConfigError: an empty task, an unknown name (with the closest one), a class twice.
    """
    tasks, seen = [], set()
    # where classes are named by numbers, a number is a name only (before, '0;9' over names
    # '1'..'9' read 0 as an id and 9 as a name, without a word)
    numbered = any(str(n).strip().isdigit() for n in names.values())
    for k, part in enumerate(spec.split(";"), start=1):
        ids = []
        for raw in (x.strip() for x in part.split(",")):
            if not raw:
                continue
            cid = _class_named(raw, names)  # a name first: Roboflow datasets name classes "1"
            if cid is None and raw.isdigit() and int(raw) in names and not numbered:
                cid = int(raw)
            if cid is None:
                raise ConfigError(f"--tasks: task {k}: unknown class '{raw}'"
                                  f"{did_you_mean(raw, names.values())} (dataset classes: "
                                  f"{', '.join(names.values())})")
            if cid in ids:
                raise ConfigError(f"--tasks: task {k} names class '{names[cid]}' twice")
            if cid in seen:
                raise ConfigError(f"--tasks: class '{names[cid]}' appears in more than one task")
            seen.add(cid)
            ids.append(cid)
        if not ids:
            raise ConfigError(f"--tasks: task {k} names no class (expected e.g. \"car,truck;person\")")
        tasks.append(tuple(ids))
    return tasks


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``"0.7,0.1,0.2"`` (train, val, test; normalised to sum 1, as weights: ``7,1,2``
    is the same; shares of at most 1 that do not sum to 1, a typo such as ``0.5,0.6,0.2``,
    are said in a warning).

    Args:
        text: three non-negative numbers.

    Returns:
        The normalised ratios.

    Raises:
        ConfigError: not three numbers >= 0 with train and test > 0.
    """
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if (len(values) != 3 or not all(math.isfinite(v) for v in values) or min(values) < 0
            or values[0] <= 0 or values[2] <= 0):
        raise ConfigError(f"--ratios must be three finite numbers train,val,test >= 0 with train "
                          f"and test > 0, got '{text}'")
    top = max(values)  # scale to at most 1 first: three finite values may overflow their sum
    values = [v / top for v in values]
    total = sum(values)
    ratios = tuple(v / total for v in values)
    if ratios[0] <= 0 or ratios[2] <= 0:  # a weight vanishing next to a huge one (1e-320 vs 1)
        raise ConfigError(f"--ratios: train and test must each be a share above 0 of the sum, "
                          f"got '{text}'")
    written = [float(x) for x in text.split(",")]
    if max(written) <= 1 and abs(sum(written) - 1) > 0.01:  # shares that miss 1: a typo?
        log.warning("--ratios %s sum to %.3g, not 1: read as weights, train %.3g, val %.3g, "
                    "test %.3g", text, sum(written), *ratios)
    return ratios


GROUP_BY_LIMIT_S = 2.0
"""Longest time ``--group-by`` may take on one image name: an expression with nested repeats
(``^(\\d*_?\\d*)*\\.png``) backtracks for hours on a name it does not match."""
GROUP_BY_TOTAL_S = 30.0
"""Longest time ``--group-by`` may take over all image names (each under the limit above, 78
names took 44 s: hours on a real dataset); a sane expression takes well under a second for
100,000 names."""
_search_budget = {"left_s": GROUP_BY_TOTAL_S}


def _shown(group_by: str | None) -> str:
    """``--group-by`` as a message quotes it: at most 80 characters (a 129 KB expression was
    echoed whole)."""
    text = str(group_by)
    return f"'{text}'" if len(text) <= 80 else f"'{text[:77]}...' ({len(text)} characters)"


class _GroupByTimeout(Exception):
    """Raised by the alarm of :func:`_group_by_deadline` inside a regular expression search."""


@contextlib.contextmanager
def _group_by_deadline(group_by: str | None):
    """Yield whether :func:`_group_of` may bound its searches to :data:`GROUP_BY_LIMIT_S` (a
    SIGALRM, which Python's ``re`` checks while it backtracks; only in the main thread of a
    system that has it: elsewhere searches are unbounded).

    Raises:
        ConfigError: a search took longer, naming the expression and the image name.
    """
    bounded = bool(group_by and hasattr(signal, "setitimer")
                   and threading.current_thread() is threading.main_thread())
    if not bounded:
        yield False
        return

    def expire(_signum, _frame):
        raise _GroupByTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    _search_budget["left_s"] = GROUP_BY_TOTAL_S
    try:
        yield True
    except _GroupByTimeout as exc:
        spent = (f"over {GROUP_BY_TOTAL_S:g} s over the image names"
                 if _search_budget["left_s"] <= GROUP_BY_LIMIT_S else
                 f"over {GROUP_BY_LIMIT_S:g} s on the image name "
                 f"{exc.args[0] if exc.args else '?'!r}")
        raise ConfigError(f"--group-by {_shown(group_by)} took {spent}: an expression with "
                          f"nested repeats such as (\\d*_?)* backtracks without end; write it "
                          f"without them (e.g. '^(.+)_\\d+\\.')") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _group_of(pattern: re.Pattern | None, image: Path, bounded: bool = False) -> tuple[str, bool]:
    """An image's group by ``pattern`` (its first group, else its whole match) and whether it
    matched (an image that does not is its own group); ``bounded``: inside
    :func:`_group_by_deadline`, the search is stopped after :data:`GROUP_BY_LIMIT_S`."""
    if pattern is None:
        return image.name, True
    if bounded:
        signal.setitimer(signal.ITIMER_REAL, min(GROUP_BY_LIMIT_S, max(
            0.001, _search_budget["left_s"])))
    started = time.monotonic()
    try:
        match = pattern.search(image.name)
    except _GroupByTimeout:
        raise _GroupByTimeout(image.name) from None
    finally:
        if bounded:
            signal.setitimer(signal.ITIMER_REAL, 0)
            _search_budget["left_s"] -= time.monotonic() - started
    if match is None:
        return image.name, False
    group = match.group(1) if pattern.groups else match.group(0)
    if group is None:  # '(a)|b' matched by its second branch: the first group took no part
        return image.name, False
    return group, True


SEARCH_WORK = 200_000
"""Greedy passes x groups that the split search may spend (64 passes up to 3,125 groups)."""
BALANCE_GAP = 0.02
"""A split counts as balanced as the best one found when the root mean square, over splits and
tasks, of the gap between its share of a task's images and the ratio is at most this much
(a fraction: 2 points) above the best's."""


def _assign_splits(groups: dict[str, Counter], task_totals: Counter, ratios: tuple[float, float, float],
                   seed: int) -> dict[str, str]:
    """Give each group a split: the most balanced of several greedy assignments.

    Each pass takes the groups in one order and gives each to the split that brings every
    task's counts closest to ``ratios``: the first pass largest group first, the others in
    fixed random orders (the same for every seed). The seed then draws the split among those
    about as balanced as the best one found (root-mean-square gap to the ratios within
    :data:`BALANCE_GAP` of the best's), so that another seed gives another split wherever
    several balanced ones exist (before, the seed only broke ties between groups of equal
    size: with a dozen flights every seed gave the same split). Splits that leave every task
    train and test images come first (else the caller names the task that lacks one).

    Args:
        groups: group -> images per task.
        task_totals: images per task.
        ratios: train, val, test fractions.
        seed: seed of the drawn orders.

    Returns:
        ``(group -> split name, its rank among the balanced splits (1: the most balanced),
        how many splits the seed chose among)``.
    """
    search = random.Random(0)  # the same candidates for every seed: the seed only chooses
    order = sorted(groups)
    search.shuffle(order)
    orders = [sorted(order, key=lambda g: -sum(groups[g].values()))]  # stable: ties keep the draw
    for _ in range(max(1, min(64, SEARCH_WORK // max(1, len(groups)))) - 1):
        order = sorted(groups)
        search.shuffle(order)
        orders.append(order)
    found: dict[tuple, tuple[bool, float]] = {}
    for order in orders:
        split_of = _greedy_splits(order, groups, task_totals, ratios)
        found[tuple(sorted(split_of.items()))] = (
            not _every_task_trains_and_tests(split_of, groups, task_totals),
            _imbalance(split_of, groups, task_totals, ratios))
    ranked = sorted(found, key=lambda k: (found[k], k))
    lacking, best = found[ranked[0]]
    terms = max(1, sum(1 for r in ratios if r > 0) * sum(1 for n in task_totals.values() if n))
    limit = terms * (math.sqrt(best / terms) + BALANCE_GAP) ** 2
    close = [k for k in ranked if found[k][0] == lacking and found[k][1] <= limit + 1e-12]
    chosen = random.Random(seed).randrange(len(close))  # as .choice draws: same split per seed
    return dict(close[chosen]), chosen + 1, len(close)


def _greedy_splits(order: list[str], groups: dict[str, Counter], task_totals: Counter,
                   ratios: tuple[float, float, float]) -> dict[str, str]:
    """One greedy pass over the groups in ``order`` (see :func:`_assign_splits`)."""
    filled: dict[str, Counter] = {s: Counter() for s in SPLITS}
    split_of = {}
    for g in order:
        best, best_cost = None, None
        for s, ratio in zip(SPLITS, ratios):
            if ratio <= 0:
                continue
            cost = 0.0
            for t, n in groups[g].items():
                target = ratio * task_totals[t]
                cost += ((filled[s][t] + n - target) ** 2 - (filled[s][t] - target) ** 2) / task_totals[t]
            if best_cost is None or cost < best_cost:
                best, best_cost = s, cost
        split_of[g] = best
        filled[best].update(groups[g])
    return split_of


def _filled(split_of: dict[str, str], groups: dict[str, Counter]) -> dict[str, Counter]:
    filled: dict[str, Counter] = {s: Counter() for s in SPLITS}
    for g, s in split_of.items():
        filled[s].update(groups[g])
    return filled


def _imbalance(split_of: dict[str, str], groups: dict[str, Counter], task_totals: Counter,
               ratios: tuple[float, float, float]) -> float:
    """Sum over splits and tasks of the squared gap between a split's share of the task's
    images and its ratio (0: every task split exactly as asked)."""
    filled = _filled(split_of, groups)
    return sum(((filled[s][t] - ratio * n) / n) ** 2
               for s, ratio in zip(SPLITS, ratios) for t, n in task_totals.items() if n)


def _every_task_trains_and_tests(split_of: dict[str, str], groups: dict[str, Counter],
                                 task_totals: Counter) -> bool:
    filled = _filled(split_of, groups)
    return all(filled["train"][t] and filled["test"][t] for t, n in task_totals.items() if n)


def _rel(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


MAX_LEFT_OUT_LISTED = 100
"""Images left out for their labels that ``split_tasks`` lists with why (all are counted)."""


def split_tasks(dataset: str | Path, tasks: str, out: str | Path, group_by: str | None = None,
                ratios: str | tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0) -> dict:
    """Write a class-incremental ``tasks.yaml`` over a YOLO dataset (module docstring).

    Args:
        dataset: a YOLO dataset with class names (a ``data.yaml`` or its folder).
        tasks: ``"car,other_vehicle;bicycle;person"``.
        out: the ``tasks.yaml`` to write; its image lists go to ``<its stem>/<task>/<split>.txt``
            beside it (``tasks.yaml`` -> ``tasks/t1/train.txt``).
        group_by: regular expression whose first group names an image's group.
        ratios: train, val, test fractions (``"0.7,0.1,0.2"`` or a tuple).
        seed: shuffling seed.

    Returns:
        ``{"tasks": [{"name", "classes", "train", "val", "test"}], "unassigned", "groups",
        "ungrouped", "bad_labels", "left_out", "balanced_splits", "split_rank", "tasks_yaml",
        "sequence_names"}`` (``bad_labels``: images left out for missing or refused labels, a
        label file another image takes too, or a path a list file cannot hold:
        :func:`edgecl.data.tasks.unlistable`; ``left_out``: the first
        :data:`MAX_LEFT_OUT_LISTED` of those left out for their labels, ``{"image", "why"}``,
        ``why`` naming the label file, its line and the rule)
        (``split_rank``: which of them the seed took, 1 the most balanced; ``balanced_splits``:
        how many splits, about equally balanced, the seed chose among; 1: every seed gives
        this split; ``sequence_names``: without ``group_by``, :func:`sequence_names` of the
        images a task took).

    Raises:
        ConfigError: no class names, a bad ``--tasks``, ``--ratios`` or ``--group-by`` (one
            that matches no image name included: the split would silently be frame by frame),
            a task left with an empty train or test split (too few groups), or ``out`` no
            ``.yaml`` / ``.yml`` file path (see :func:`_refuse_bad_out`). Nothing is written
            then.
        OSError: the disk refused a write; what was there before is left as it was, and no
            folder made for the output is left.
    """
    _refuse_bad_out(Path(out).expanduser())
    ds = find_dataset(dataset)
    if not ds.names:
        raise ConfigError(f"{ds.yaml_path or ds.root}: no class names (needs a data.yaml with 'names')")
    task_classes = parse_task_spec(tasks, ds.names)
    task_names = [f"t{t + 1}" for t in range(len(task_classes))]
    listed = _refuse_foreign_output(Path(out).expanduser(), task_names)
    ratio = parse_ratios(ratios) if isinstance(ratios, str) else tuple(ratios)
    if group_by is not None and not group_by.strip():  # an unset shell variable split frame by frame
        raise ConfigError(f"--group-by {group_by!r} is empty: give a regular expression whose "
                          f"first group names an image's group, or leave the option out")
    try:
        pattern = re.compile(group_by) if group_by else None
    except (re.error, OverflowError, RecursionError, ValueError) as exc:
        # OverflowError: a{99999999999}; RecursionError: thousands of nested groups
        raise ConfigError(f"--group-by {_shown(group_by)} is not a regular expression Python can "
                          f"use: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
                          ) from None
    task_of_class = {c: t for t, classes in enumerate(task_classes) for c in classes}
    assigned: dict[int, list[tuple[Path, str]]] = defaultdict(list)
    groups: dict[str, Counter] = defaultdict(Counter)
    unassigned = ungrouped = bad = 0
    left_out: list[dict] = []  # images left out for their labels, with why
    base_dir = Path(out).expanduser().resolve().parent
    shared = shared_label_files(ds.images())
    with _group_by_deadline(group_by) as bounded:  # a runaway expression: one line
        for image in ds.images():
            why = unlistable(_rel(image, base_dir))
            if why:  # a list file holds one path per line: it would be read back as another path
                log.warning("%r left out: %s, which a task list (one path per line) cannot hold; "
                            "rename it", str(image), why)
                bad += 1
                continue
            label_path = label_path_for(image)
            if label_path in shared and label_path.is_file():
                log.warning("%s left out: %s", image, shared_label_problem(image, label_path,
                                                                          shared[label_path]))
                bad += 1
                continue
            try:
                parsed = (read_yolo_labels(label_path, len(ds.names), ds.kpt_values)
                          if label_path.is_file() else None)
                why = (f"no label file {label_path}" if parsed is None
                       else parsed.refused[0] if parsed.refused else "")
            except LabelError as exc:
                why = str(exc)
            if why:  # before: counted alone, where 'dataset import' names file, line and why
                left_out.append({"image": str(image), "why": why})
                bad += 1
                continue
            present = [task_of_class[int(c)] for c in parsed.labels[:, 0] if int(c) in task_of_class]
            if not present:
                unassigned += 1
                continue
            group, matched = _group_of(pattern, image, bounded)
            ungrouped += not matched
            t = min(present)
            assigned[t].append((image, group))
            groups[group][t] += 1
    n_assigned = sum(len(v) for v in assigned.values())
    if pattern is not None and n_assigned and ungrouped == n_assigned:
        example = next(iter(assigned.values()))[0][0].name
        folders = len({img.parent for images in assigned.values() for img, _ in images})
        hint = (f"; it is matched against file names, and these images lie in {folders} folders: "
                f"'edgecl dataset import' writes each image's folders into its name "
                f"(flight01/frame_1.jpg -> flight01_frame_1.jpg)") if folders > 1 else ""
        raise ConfigError(f"--group-by {_shown(group_by)} matches none of the {n_assigned} image names "
                          f"a task takes (e.g. {example}): every image would be its own group, a split frame "
                          f"by frame; fix the expression (its first group names the group){hint}")
    totals = Counter({t: len(v) for t, v in assigned.items()})
    split_of, rank, choices = _assign_splits(groups, totals, ratio, seed)
    out = Path(out).expanduser().resolve()
    base = out.parent
    report, texts = [], {}
    for t, (name, classes) in enumerate(zip(task_names, task_classes)):
        lists = {s: sorted(img for img, g in assigned.get(t, []) if split_of[g] == s) for s in SPLITS}
        for s in ("train", "test"):
            if not lists[s] and not assigned.get(t):
                raise ConfigError(f"task {name} ({', '.join(ds.names[c] for c in classes)}) gets no "
                                  f"images: an image goes to the first task whose classes it "
                                  f"shows, and none shows this task's classes without a class of "
                                  f"an earlier task (or none shows them at all)")
            if not lists[s]:
                raise ConfigError(f"task {name} ({', '.join(ds.names[c] for c in classes)}) gets no {s} "
                                  f"images: {len(assigned.get(t, []))} image(s) in "
                                  f"{len({g for _, g in assigned.get(t, [])})} group(s) are too few")
        texts[name] = {s: "".join(_rel(p, base) + "\n" for p in lists[s]) for s in SPLITS}
        report.append({"name": name, "classes": [ds.names[c] for c in classes],
                       **{s: len(lists[s]) for s in SPLITS}})
    _write_all(base, out, texts, listed, SPLIT_MARK + "\n" + format_tasks_yaml(
        ds.names, list(zip(task_names, task_classes)), lists_dir=out.stem))
    sequences = None if pattern is not None else sequence_names(
        [img.stem for images in assigned.values() for img, _ in images], min_sequences=1)
    return {"tasks": report, "unassigned": unassigned, "groups": len(groups), "ungrouped": ungrouped,
            "bad_labels": bad, "left_out": left_out[:MAX_LEFT_OUT_LISTED],
            "balanced_splits": choices, "split_rank": rank, "tasks_yaml": str(out),
            "sequence_names": sequences}


SEQUENCE_NAME_RE = re.compile(r"^(.+)[_./-]\d+$")
"""An image name without suffix that ends in a frame number after a separator
(``1_60_30_0_00062``; ``uav0001/0000001`` for a sequence's folder, :func:`frame_name`): its
first group names the sequence."""
SEQUENCE_GROUP_BY = r"^(.+)[_.-]\d+\.[^.]+$"
"""The ``--group-by`` that :func:`sequence_names` suggests: the same rule on the file name
(``1_60_30_0_00062.jpg`` -> ``1_60_30_0``)."""


SEQUENCE_BLOCK_GROUP_BY = r"^(.+[_.-]\d*?)\d\.[^.]+$"
"""The ``--group-by`` that :func:`sequence_names` suggests for a single sequence, which a
group per sequence cannot split: blocks of 10 consecutive frame numbers (``img_0123.jpg`` ->
``img_012``), as an import holds out (:data:`FRAMES_PER_BLOCK`)."""


def sequence_names(stems: list[str], min_sequences: int = 2) -> dict | None:
    """Whether image names look like numbered frames of a few sequences, which a split without
    ``--group-by`` scatters over train and test (a test frame then has a near twin in train,
    and test scores read too high).

    Args:
        stems: the image names without suffix.
        min_sequences: fewest sequences that count (a split's ``--group-by`` needs two; the
            held-out blocks of an import, :func:`sequence_blocks`, take one).

    Returns:
        ``{"sequences", "frames", "example", "group_by"}`` when at least 80 % of the names are
        ``<sequence><separator><number>`` and the sequences hold 3 frames or more on average;
        else None. ``group_by``: :data:`SEQUENCE_GROUP_BY`, or for a single sequence
        :data:`SEQUENCE_BLOCK_GROUP_BY`.
    """
    prefixes = [m.group(1) for m in map(SEQUENCE_NAME_RE.match, stems) if m]
    if not stems or len(prefixes) < 0.8 * len(stems):
        return None
    n_sequences = len(set(prefixes))
    if n_sequences < max(1, int(min_sequences)) or len(prefixes) < 3 * n_sequences:
        return None
    return {"sequences": n_sequences, "frames": len(prefixes), "example": sorted(stems)[0],
            "group_by": SEQUENCE_GROUP_BY if n_sequences > 1 else SEQUENCE_BLOCK_GROUP_BY}


FRAMES_PER_BLOCK = 10
"""Consecutive frames of a numbered sequence that an import holds out or trains on together
(:func:`sequence_blocks`)."""


def frame_name(path: Path) -> str:
    """An image's name as :func:`sequence_blocks` reads it: its folder's name and its stem
    (``images/flight03_frame_0004``), so that frames numbered alike in two folders are two
    sequences; a stem of digits only is named by two folders (``uav0001/0000001`` under
    VisDrone's ``sequences/``, ``MOT17-02/img1/000001`` in MOTChallenge's layout, where every
    sequence's folder of frames is ``img1``).

    Args:
        path: the image file.
    """
    folders = [path.parent.name]
    if path.stem.isdigit():
        folders.insert(0, path.parent.parent.name)
    return "/".join([*(f for f in folders if f), path.stem])


def sequence_blocks(names: list[str], frames_per_block: int = FRAMES_PER_BLOCK,
                    min_blocks: int = 1) -> dict[str, tuple[str, int]]:
    """The blocks of consecutive frames an import's held-out draw takes together, when its image
    names look like numbered frames of a few sequences (:func:`sequence_names`): drawn one by
    one, a held-out frame has its neighbours, nearly the same picture, in training, and the
    held-out score measures memorisation.

    Args:
        names: the dataset's image names (:func:`frame_name`).
        frames_per_block: most frames per block, counted in frame-number order within a
            sequence (gaps in the numbering, frames sampled every few, do not matter).
        min_blocks: fewest blocks the import is cut into (blocks get smaller for a small
            import): the held-out draw holds out at least one block in every
            ``ceil(1 / memory.holdout_fraction)``, so fewer blocks could hold out none.

    Returns:
        name -> ``(sequence, block index)`` for every numbered frame, blocks numbered on
        across the sequences in name order (so that every group of blocks the draw stratifies
        over holds its share, however short each sequence); empty when the names are not such
        sequences (each image is then drawn on its own). One numbered series counts: the
        frames of one flight, or photos numbered as a camera takes them (blocks of those cost
        the draw nothing but its grain).
    """
    if sequence_names(names, min_sequences=1) is None:
        return {}
    frames: dict[str, list[tuple[int, str]]] = {}
    for name in dict.fromkeys(names):
        match = SEQUENCE_NAME_RE.match(name)
        if match:
            number = int(name[len(match.group(1)) + 1:])
            frames.setdefault(match.group(1), []).append((number, name))
    total = sum(len(numbered) for numbered in frames.values())
    size = max(1, min(int(frames_per_block), total // max(1, int(min_blocks))))
    blocks, first = {}, 0
    for sequence in sorted(frames):
        ordered = sorted(frames[sequence])
        for rank, (_, name) in enumerate(ordered):
            blocks[name] = (sequence, first + rank // size)
        first += math.ceil(len(ordered) / size)
    return blocks


def _refuse_bad_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot be a tasks.yaml, before anything is read or written.

    Args:
        out: the tasks.yaml to write.

    Raises:
        ConfigError: ``out`` is a folder; lies under a file (``/etc/passwd/x.yaml``), naming
            that file; or has no ``.yaml`` / ``.yml`` suffix (its image lists go to the folder
            named after its stem: without a suffix that is ``out`` itself).
    """
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; name the tasks.yaml file to write")
    for parent in out.parents:
        if parent.is_dir():
            break
        if parent.exists() or parent.is_symlink():
            what = "a file" if parent.is_file() else "a link to nothing or a special file"
            raise ConfigError(f"--out {out}: {parent} is {what}, not a folder; name a tasks.yaml "
                              f"in a folder")
    if out.suffix.lower() not in (".yaml", ".yml"):
        raise ConfigError(f"--out must be a .yaml (or .yml) file path, got {out}: the image lists "
                          f"go to a folder named after it")


SPLIT_MARK = "# written by edgecl dataset split-tasks; written again by it, it is replaced"
"""The first line of a ``tasks.yaml`` that ``dataset split-tasks`` wrote: only such a file, and
the list folders it names, are replaced by a later split into the same file."""


def _listed_task_folders(out: Path, data: dict) -> set[str]:
    """The ``<stem>/<task>/`` list folders that the split's ``tasks.yaml`` at ``out`` (parsed
    ``data``) names: those a later split into the same file may replace or remove."""
    folders = set()
    for task in data.get("tasks") or []:
        if not isinstance(task, dict):
            continue
        for split in SPLITS:
            path = task.get(split)
            if isinstance(path, str) and Path(path).parent.parent.as_posix() == out.stem \
                    and Path(path).name == f"{split}.txt":
                folders.add(Path(path).parent.name)
    return folders


def _refuse_foreign_output(out: Path, task_names: list[str]) -> set[str]:
    """Refuse an ``--out`` that would replace something this command did not write.

    An existing ``out`` must be a tasks.yaml (a mapping with a ``tasks`` list), and each
    existing ``tasks/<t>/`` folder the split will replace may hold only split lists, and only
    where that tasks.yaml exists (lists beside no tasks.yaml are a user's own): a data.yaml, a
    dataset's own folders or any other file are never overwritten.

    Args:
        out: the tasks.yaml to write.
        task_names: the task folders the split writes beside it.

    Returns:
        The list folders the existing ``out`` names (:func:`_listed_task_folders`): those of
        them that this split does not write are removed once it is written.

    Raises:
        ConfigError: naming the file or folder that would be replaced.
    """
    import yaml

    for path, what in ((out, "--out"), (out.parent / out.stem, "the image lists' folder")):
        why = link_problem(path)  # a loop, or a link to nothing (an unmounted card)
        if why:
            raise ConfigError(f"{what} {why}; name another tasks.yaml")
    if out.exists() and not out.is_file():  # a pipe would block the read below
        raise ConfigError(f"--out {out} exists and is not a regular file (a folder, a pipe or "
                          f"a device); name a new file")
    if out.exists():
        try:
            text = read_data_file(out, "a tasks.yaml")
            data = yaml.load(text, Loader=DataFileLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, RecursionError):
            text, data = "", None
        if not (isinstance(data, dict) and isinstance(data.get("tasks"), list)):
            raise ConfigError(f"--out {out} exists and is not a tasks.yaml: it would be "
                              f"overwritten; name a new file")
        if text.split("\n", 1)[0].strip() != SPLIT_MARK:
            raise ConfigError(f"--out {out} is a tasks.yaml that dataset split-tasks did not write "
                              f"(a scenario's, or one of your own): it and its lists would be "
                              f"replaced; name a new file (or remove it first, if it is an "
                              f"earlier split's)")
    listed = _listed_task_folders(out, data) if out.exists() else set()
    lists_dir = out.parent / out.stem
    if lists_dir.exists() and not lists_dir.is_dir():
        raise ConfigError(f"{lists_dir} is a file, not a folder of split lists: the image lists "
                          f"of --out {out.name} go there; name another tasks.yaml")
    lists = {f"{s}.txt" for s in SPLITS}
    for name in task_names:
        task = out.parent / out.stem / name
        if task.is_symlink() or (task.exists() and not task.is_dir()):
            raise ConfigError(f"{task} is not a folder of split lists: it would be replaced; "
                              f"write the tasks.yaml in another folder")
        if not task.is_dir():
            continue
        foreign = sorted(p.name for p in task.iterdir() if p.name not in lists or not p.is_file())
        if foreign:
            raise ConfigError(f"{task} holds {foreign[0]}, not only split lists: it would be "
                              f"replaced; write the tasks.yaml in another folder")
        held = sorted(p.name for p in task.iterdir())
        if held and name not in listed:  # lists that no split into this file wrote: the user's
            raise ConfigError(f"{task} holds {held[0]}, which no split into {out.name} wrote: it "
                              f"would be replaced; write the tasks.yaml in another folder")
    return listed


def _write_all(base: Path, out: Path, texts: dict[str, dict[str, str]], listed: set[str],
               yaml_text: str) -> None:
    """Write every task's lists and the ``tasks.yaml``, all or nothing.

    Everything is written in a hidden staging folder beside ``out`` first; then each
    ``<stem>/<task>/`` folder and the yaml are swapped in with ``os.replace`` (what was there
    moved aside) and the yaml is checked with :func:`load_tasks`. A failure at any step (full
    disk, a check failing) renames back what was there before and removes the staging folder,
    so no half-written split is ever left; the swaps and their undoing are renames only, which
    need no free space. The folders made for ``base`` are removed again on a failure.
    """
    made = list(itertools.takewhile(lambda p: not p.exists(), (base, *base.parents)))
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = temp_dir_for(out, ".split-tasks.", base)
    except OSError:
        _remove_empty(made)
        raise
    tasks_dir = base / out.stem
    created_tasks_dir = not tasks_dir.exists()
    moved: list[str] = []
    placed: list[str] = []
    old_yaml = staging / "old.yaml"
    yaml_swapped = False
    try:
        for name, per_split in texts.items():
            for s, text in per_split.items():
                atomic_write_text(staging / "new" / name / f"{s}.txt", text)
        atomic_write_text(staging / "new.yaml", yaml_text)
        (staging / "old").mkdir()
        tasks_dir.mkdir(exist_ok=True)
        for name in texts:
            dst = tasks_dir / name
            if dst.exists() or dst.is_symlink():
                os.replace(dst, staging / "old" / name)
                moved.append(name)
            os.replace(staging / "new" / name, dst)
            placed.append(name)
        if out.exists():
            os.replace(out, old_yaml)
        yaml_swapped = True
        os.replace(staging / "new.yaml", out)
        fsync_dir(base)
        load_tasks(out)  # the contract every consumer reads it through
        _remove_stale_lists(tasks_dir, listed - set(texts))
    except BaseException:
        if yaml_swapped:
            if old_yaml.exists():
                os.replace(old_yaml, out)
            elif out.exists():
                out.unlink()
        for name in placed:
            shutil.rmtree(tasks_dir / name, ignore_errors=True)
        for name in moved:
            os.replace(staging / "old" / name, tasks_dir / name)
        if created_tasks_dir and tasks_dir.is_dir() and not any(tasks_dir.iterdir()):
            tasks_dir.rmdir()
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(made)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_lists(tasks_dir: Path, stale: set[str]) -> None:
    """Remove the image-list folders of tasks that the earlier split into the same file named
    and this one has not (a 3-task split rewritten as 2 tasks left ``t3/`` behind): only
    folders that hold nothing but the ``train/val/test.txt`` lists this command writes (a
    folder of the same shape that no split named, ``my_experiment/``, is the user's)."""
    lists = {f"{s}.txt" for s in SPLITS}
    for name in sorted(stale):
        folder = tasks_dir / name
        if folder.is_symlink() or not folder.is_dir():
            continue
        names = {p.name for p in folder.iterdir()}
        if names and names <= lists and all((folder / n).is_file() for n in names):
            shutil.rmtree(folder, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders made for an output that failed, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
