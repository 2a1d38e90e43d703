"""The built-in class-incremental scenario: drone-camera-like sequences in YOLO format.

Each task introduces ``classes_per_task`` new classes. A task's frames come as short,
temporally coherent sequences: the camera pans over a procedurally textured ground map,
objects move smoothly, and each sequence has its own lighting, haze, sensor noise and blur.
Objects are small (about 5-25 % of the image side), partly hidden by tree canopies or each
other, among unlabelled clutter; rarely an object of an earlier task appears (labelled).

The same generator feeds :func:`make_scenario` (files) and :func:`iter_scenario_frames`
(in memory, used by ``synthetic://``). For a given seed the output is identical, byte for byte.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from edgecl.atomic import atomic_write_bytes, atomic_write_text, fsync_dir, process_alive
from edgecl.config import RULES
from edgecl.data import scenery, sprites
from edgecl.data.labels import label_path_for, labels_to_text
from edgecl.data.tasks import SPLITS, format_tasks_yaml
from edgecl.errors import ConfigError
from edgecl.frames import empty_labels

MARKER_NAME = "scenario.json"
JPEG_QUALITY = 95
SEQUENCE_FRAMES = (8, 16)          # min, max frames per sequence
OBJECTS_PER_SEQUENCE = (1, 7)      # min, max (exclusive) objects of the task's classes
EARLIER_CLASS_PROB = 0.15          # chance that a sequence also shows an earlier-task object
MIN_VISIBLE_FRACTION = 0.35        # less visible than this (occluded or out of frame): no label
MAX_IMAGES_PER_TASK = 50_000       # 14 trillion asked for ran until the disk was full


@dataclass(frozen=True)
class ScenarioFrame:
    """One generated frame.

    Attributes:
        image: uint8 BGR (imgsz, imgsz, 3).
        labels: float32 (N, 5) YOLO rows ``cls, cx, cy, w, h`` (normalised).
        task: task name (``t1``, ``t2``, ...).
        split: ``train``, ``val`` or ``test``.
        name: stable file stem, e.g. ``t1_train_00007``.
    """

    image: np.ndarray
    labels: np.ndarray
    task: str
    split: str
    name: str


@dataclass
class _Actor:
    cls: int
    bgr: np.ndarray
    alpha: np.ndarray
    x: float
    y: float
    heading: float
    speed: float
    turn: float
    flies: bool


def class_names(tasks: int, classes_per_task: int = 2) -> dict[int, str]:
    """Class names used by a scenario with this many tasks.

    Args:
        tasks: number of tasks.
        classes_per_task: classes each task introduces.

    Returns:
        ``{id: name}`` for ids ``0 .. tasks * classes_per_task - 1``.
    """
    return {i: sprites.CLASSES[i].name for i in range(tasks * classes_per_task)}


def split_counts(images_per_task: int, splits: tuple[float, float, float]) -> dict[str, int]:
    """Number of images per split for one task (train and test get at least one).

    Args:
        images_per_task: images of one task over all splits.
        splits: fractions for train, val, test (sum 1).

    Returns:
        ``{"train": n, "val": n, "test": n}`` summing to ``images_per_task``.
    """
    n_val = int(round(splits[1] * images_per_task))
    n_test = max(1, int(round(splits[2] * images_per_task)))
    return {"train": images_per_task - n_val - n_test, "val": n_val, "test": n_test}


def check_params(tasks: int, images_per_task: int, imgsz: int, seed: int,
                 splits: tuple[float, float, float] = (0.7, 0.15, 0.15), classes_per_task: int = 2) -> None:
    """Validate scenario parameters.

    Args:
        tasks: number of tasks.
        images_per_task: images per task over all splits.
        imgsz: square image side in pixels.
        seed: non-negative seed.
        splits: train, val, test fractions.
        classes_per_task: classes each task introduces.

    Raises:
        ConfigError: one line naming the bad parameter.
    """
    limit = len(sprites.CLASSES)
    if tasks < 1 or classes_per_task < 1 or tasks * classes_per_task > limit:
        raise ConfigError(f"scenario: tasks x classes_per_task must be 1..{limit}, "
                          f"got {tasks} x {classes_per_task}")
    low, high = int(RULES["model.imgsz"].lo), int(RULES["model.imgsz"].hi)  # the detector's range
    if not low <= imgsz <= high:
        raise ConfigError(f"scenario: imgsz must be in {low}..{high}, got {imgsz}")
    if seed < 0:
        raise ConfigError(f"scenario: seed must be >= 0, got {seed}")
    if images_per_task > MAX_IMAGES_PER_TASK:
        raise ConfigError(f"scenario: images_per_task must be at most {MAX_IMAGES_PER_TASK}, got "
                          f"{images_per_task}")
    if len(splits) != 3 or min(splits) < 0 or splits[0] <= 0 or splits[2] <= 0 \
            or not math.isclose(sum(splits), 1.0, abs_tol=1e-6):
        raise ConfigError(f"scenario: splits must be 3 fractions (train, val, test) summing to 1 "
                          f"with train and test > 0, got {tuple(splits)}")
    if split_counts(images_per_task, splits)["train"] < 1:
        least = next(n for n in range(1, 10_000) if split_counts(n, splits)["train"] >= 1)
        raise ConfigError(f"scenario: images_per_task={images_per_task} is too small for splits "
                          f"{splits}: at least {least} leave a training image")


def _spawn_actor(rng: np.random.Generator, cls: int, imgsz: int, scale: float, view_xy: tuple[float, float]
                 ) -> _Actor:
    kind = sprites.CLASSES[cls]
    lo, hi = kind.size_frac
    length_px = float(np.clip(rng.uniform(lo, hi) * scale, 0.05, 0.25)) * imgsz
    bgr, alpha = sprites.render_sprite(kind, length_px, rng)
    x, y = (view_xy[i] + float(rng.uniform(0.05, 0.95)) * imgsz for i in range(2))
    speed = float(rng.uniform(*kind.speed_frac)) * imgsz
    return _Actor(cls, bgr, alpha, x, y, float(rng.uniform(0, 2 * np.pi)), speed, kind.turn_rad, kind.flies)


def _draw_actor(frame: np.ndarray, owner: np.ndarray, ident: int, actor: _Actor, cam: tuple[int, int],
                shadow_px: float, sun: tuple[float, float]) -> tuple[np.ndarray, int, int]:
    cx, cy = actor.x - cam[0], actor.y - cam[1]
    bgr, alpha, x0, y0 = scenery.place_sprite(actor.bgr, actor.alpha, cx, cy, -math.degrees(actor.heading))
    shadow = cv2.GaussianBlur(alpha, (0, 0), 1.5) if actor.flies else alpha
    scenery.blend_patch(frame, None, shadow, x0 + int(round(sun[0] * shadow_px)),
                        y0 + int(round(sun[1] * shadow_px)), opacity=0.45)
    hit = scenery.blend_patch(frame, bgr, alpha, x0, y0)
    if hit is not None:
        rows, cols, a = hit
        owner[rows, cols][a > 0.5] = ident
    return alpha, x0, y0


def _label_for(cls: int, alpha: np.ndarray, x0: int, y0: int, owner: np.ndarray, ident: int) -> list | None:
    solid = alpha > 0.5
    total = int(solid.sum())
    if total == 0 or (owner == ident).sum() < MIN_VISIBLE_FRACTION * total:
        return None
    ys, xs = np.nonzero(solid)
    h, w = owner.shape
    bx0, by0 = max(0, x0 + xs.min()), max(0, y0 + ys.min())
    bx1, by1 = min(w, x0 + xs.max() + 1), min(h, y0 + ys.max() + 1)
    if bx1 - bx0 < 2 or by1 - by0 < 2:
        return None
    return [cls, (bx0 + bx1) / 2 / w, (by0 + by1) / 2 / h, (bx1 - bx0) / w, (by1 - by0) / h]


def _render_frame(ground: np.ndarray, cam: tuple[int, int], actors: list[_Actor], canopies: list,
                  imgsz: int, look: scenery.Look) -> tuple[np.ndarray, np.ndarray]:
    frame = ground[cam[1]:cam[1] + imgsz, cam[0]:cam[0] + imgsz].astype(np.float32)
    owner = np.zeros((imgsz, imgsz), np.int16)
    placed = {}
    numbered = list(enumerate(actors, start=1))
    layers = [p for p in numbered if not p[1].flies], [p for p in numbered if p[1].flies]
    for layer_index, layer in enumerate(layers):
        for ident, actor in layer:
            shadow_px = (0.12 if actor.flies else 0.02) * imgsz
            placed[ident] = _draw_actor(frame, owner, ident, actor, cam, shadow_px, look.sun_dir)
        if layer_index == 0:
            for bgr, alpha, wx, wy in canopies:
                hit = scenery.blend_patch(frame, bgr, alpha, wx - cam[0], wy - cam[1])
                if hit is not None:
                    owner[hit[0], hit[1]][hit[2] > 0.5] = 0
    rows = [_label_for(actors[i - 1].cls, *placed[i], owner, i) for i in sorted(placed)]
    rows = [r for r in rows if r is not None]
    labels = np.array(rows, np.float32).reshape(-1, 5) if rows else empty_labels()
    return frame, labels


def _sequence(rng: np.random.Generator, n_frames: int, imgsz: int, new_classes: list[int],
              old_classes: list[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    look = scenery.random_look(rng)
    direction = float(rng.uniform(0, 2 * np.pi))
    speed_px = float(rng.uniform(0.004, 0.02)) * imgsz
    vx, vy = speed_px * math.cos(direction), speed_px * math.sin(direction)
    margin = imgsz // 4
    span_x, span_y = int(abs(vx) * n_frames) + 1, int(abs(vy) * n_frames) + 1
    map_w, map_h = imgsz + span_x + 2 * margin, imgsz + span_y + 2 * margin
    start = (margin + (span_x if vx < 0 else 0), margin + (span_y if vy < 0 else 0))
    clutter = int(rng.integers(6, 16) * map_w * map_h / imgsz ** 2)
    ground = scenery.make_ground_map(rng, map_h, map_w, clutter)
    cams = [(int(round(start[0] + vx * f)), int(round(start[1] + vy * f))) for f in range(n_frames)]
    scale = float(rng.uniform(0.8, 1.2))
    chosen = list(rng.choice(new_classes, size=int(rng.integers(*OBJECTS_PER_SEQUENCE))))
    if old_classes and rng.random() < EARLIER_CLASS_PROB:
        chosen.append(int(rng.choice(old_classes)))
    actors = [_spawn_actor(rng, int(c), imgsz, scale, cams[int(rng.integers(n_frames))]) for c in chosen]
    canopies = []
    for _ in range(int(rng.integers(0, 4))):
        bgr, alpha = sprites.canopy_sprite(rng, float(rng.uniform(0.1, 0.25)) * imgsz)
        view = cams[int(rng.integers(n_frames))]
        canopies.append((bgr, alpha, view[0] + int(rng.integers(0, imgsz)) - alpha.shape[1] // 2,
                         view[1] + int(rng.integers(0, imgsz)) - alpha.shape[0] // 2))
    for f in range(n_frames):
        frame, labels = _render_frame(ground, cams[f], actors, canopies, imgsz, look)
        yield scenery.finish_frame(frame, look, (vx, vy), rng), labels
        for a in actors:
            a.heading += float(rng.normal(0.0, a.turn)) if a.turn > 0 else 0.0
            a.x += a.speed * math.cos(a.heading)
            a.y += a.speed * math.sin(a.heading)


def generate_frames(tasks: int = 5, images_per_task: int = 60, imgsz: int = 160, seed: int = 0,
                    splits: tuple[float, float, float] = (0.7, 0.15, 0.15), classes_per_task: int = 2,
                    only_split: str | None = None) -> Iterator[ScenarioFrame]:
    """Generate the scenario frame by frame: task by task, splits train, val, test.

    Every (task, split) pair has its own random stream seeded by ``(seed, task, split)``, so a
    task's frames do not depend on how many tasks follow it.

    Args:
        tasks: number of tasks.
        images_per_task: images per task over all splits.
        imgsz: square image side in pixels.
        seed: non-negative seed.
        splits: train, val, test fractions.
        classes_per_task: classes each task introduces.
        only_split: generate only this split (``train``, ``val`` or ``test``).

    Yields:
        :class:`ScenarioFrame` objects.

    Raises:
        ConfigError: invalid parameters.
    """
    check_params(tasks, images_per_task, imgsz, seed, tuple(splits), classes_per_task)
    if only_split not in (None,) + SPLITS:
        raise ConfigError(f"scenario: unknown split '{only_split}'; expected one of {', '.join(SPLITS)}")
    counts = split_counts(images_per_task, tuple(splits))
    for t in range(tasks):
        new = list(range(t * classes_per_task, (t + 1) * classes_per_task))
        old = list(range(t * classes_per_task))
        for s, split in enumerate(SPLITS):
            if only_split is not None and split != only_split:
                continue
            rng = np.random.default_rng([seed, t, s])
            done = 0
            while done < counts[split]:
                n = min(counts[split] - done, int(rng.integers(SEQUENCE_FRAMES[0], SEQUENCE_FRAMES[1] + 1)))
                for image, labels in _sequence(rng, n, imgsz, new, old):
                    yield ScenarioFrame(image, labels, f"t{t + 1}", split, f"t{t + 1}_{split}_{done:05d}")
                    done += 1


def iter_scenario_frames(tasks: int = 5, images_per_task: int = 60, imgsz: int = 160, seed: int = 0,
                         **options) -> Iterator[tuple[np.ndarray, np.ndarray, str, str]]:
    """Generate the scenario in memory (no files), as ``make_scenario`` would write it.

    Args:
        tasks: number of tasks.
        images_per_task: images per task over all splits.
        imgsz: square image side in pixels.
        seed: non-negative seed.
        **options: ``splits``, ``classes_per_task``, ``only_split`` (see :func:`generate_frames`).

    Yields:
        ``(image_bgr, labels (N, 5) float32, task_name, name)``.
    """
    for f in generate_frames(tasks, images_per_task, imgsz, seed, **options):
        yield f.image, f.labels, f.task, f.name


def _write_frame(out: Path, frame: ScenarioFrame) -> str:
    rel = Path("images") / frame.task / frame.split / f"{frame.name}.jpg"
    ok, jpg = cv2.imencode(".jpg", frame.image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ConfigError(f"scenario: JPEG encoding failed for {out / rel}")
    atomic_write_bytes(out / rel, jpg.tobytes())
    atomic_write_text(out / label_path_for(rel), labels_to_text(frame.labels))
    return rel.as_posix()


MARKER_KEYS = frozenset({"tasks", "images_per_task", "imgsz", "seed", "splits",
                         "classes_per_task", "jpeg_quality"})
"""The keys of the ``scenario.json`` that :func:`make_scenario` writes, all of them."""
STAGING_RE = re.compile(r"\.new-scenario\.pid(\d+)\.tmp")
"""The folder inside ``out`` where a scenario is built before it takes the old one's place."""
_FILE_RE = re.compile(r"(images|labels)/t(\d+)/(train|val|test)/t(\d+)_(train|val|test)_(\d{5,})"
                      r"\.(jpg|txt)|labels/t(\d+)/(train|val|test)\.cache|tasks/t(\d+)/(train|val|test)"
                      r"\.txt|scenario\.json|tasks\.yaml")
_TEMP_RE = re.compile(r"(.*/)?\.(.+)\.[a-z0-9_]{8}\.tmp")  # tempfile.mkstemp's, beside its file


def _scenario_made(params: dict):
    """A test of whether a relative path is a file a scenario of these parameters writes (or
    ultralytics' label cache of one), or ``None``: parameters no scenario writes."""
    try:
        tasks, per_task, per_class = (int(params["tasks"]), int(params["images_per_task"]),
                                      int(params["classes_per_task"]))
        splits = tuple(float(v) for v in params["splits"])
        check_params(tasks, per_task, 64, 0, splits, per_class)
        counts = split_counts(per_task, splits)
    except (KeyError, TypeError, ValueError, OverflowError, ConfigError):
        return None

    def made(rel: str) -> bool:
        m = _FILE_RE.fullmatch(rel)
        if m is None:
            return False
        if m.group(1):  # an image or its label file
            t, split, index = int(m.group(2)), m.group(3), int(m.group(6))
            return (m.group(4) == m.group(2) and m.group(5) == split
                    and (m.group(1) == "images") == (m.group(7) == "jpg")
                    and 1 <= t <= tasks and index < counts[split])
        t = m.group(8) or m.group(10)
        return t is None or 1 <= int(t) <= tasks

    return made


def _marked(marker: Path):
    """:func:`_scenario_made` of the parameters a ``scenario.json`` holds (``None``: it cannot
    be read, or it is not exactly what :func:`make_scenario` writes)."""
    try:
        params = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(params, dict) or set(params) != MARKER_KEYS:
        return None
    return _scenario_made(params)


_FOLDER_RE = re.compile(r"(images|labels|tasks)(/t\d+(/(train|val|test))?)?")


def _foreign_file(out: Path) -> str | None:
    """The first entry under ``out`` that the earlier scenario there did not write (relative
    path), or None. That scenario's ``scenario.json`` must hold exactly the parameters
    :func:`make_scenario` writes; a file counts as the scenario's only where its path is one
    that scenario writes, or the temp file of such a write killed half-way
    (``.NAME.xxxxxxxx.tmp`` beside it). A staging folder that a run killed half-way left
    (:data:`STAGING_RE`) is checked the same way against its own ``scenario.json``, the
    earlier scenario it was replacing (its ``old/``) too; files of the scenario it holds may
    have been renamed into ``out`` already."""
    tests = []
    if (out / MARKER_NAME).exists() or (out / MARKER_NAME).is_symlink():
        test = _marked(out / MARKER_NAME)
        if test is None or (out / MARKER_NAME).is_symlink():
            return MARKER_NAME
        tests.append(test)
    for staging in (p for p in out.iterdir() if STAGING_RE.fullmatch(p.name)):
        if staging.is_symlink() or not staging.is_dir():
            return staging.name
        test = _marked(staging / MARKER_NAME)
        if test is not None:
            tests.append(test)

    def made(rel: str) -> bool:
        temp = _TEMP_RE.fullmatch(rel)
        name = f"{temp.group(1) or ''}{temp.group(2)}" if temp else rel
        return any(test(name) for test in tests)

    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if rel == "lost+found" and path.is_dir() and not path.is_symlink():
            continue  # a freshly made file system's
        top, _, inner = rel.partition("/")
        if STAGING_RE.fullmatch(top):  # a killed run's: its new scenario, and the old one
            rel = inner.removeprefix("old/") if inner not in ("", "old") else "."
        if rel == "." or (path.is_dir() and not path.is_symlink() and _FOLDER_RE.fullmatch(rel)):
            continue
        if rel.startswith("lost+found/") or path.is_symlink() or path.is_dir() or not made(rel):
            return path.relative_to(out).as_posix()
    return None


def _recently_written(staging: Path, quiet_s: float = 120.0) -> bool:
    """Whether a staging folder or one of its folders changed in the last ``quiet_s`` (a run
    building there writes every second; a pid taken by another process since a run was
    killed is no run)."""
    try:
        folders = [staging, *(p for p in staging.rglob("*") if p.is_dir())]
        return time.time() - max(p.stat().st_mtime for p in folders) < quiet_s
    except (OSError, ValueError):
        return False


def _check_out_dir(out: Path) -> None:
    """Check ``out`` can take a scenario: absent, empty (but for what a killed run left), or
    an earlier scenario and nothing else (see :func:`_foreign_file`).

    Raises:
        ConfigError: ``out`` is a file, a folder holding anything else (named), or another
            ``scenario make`` writes into it now.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"scenario output {out} exists and is not a directory")
    if not out.is_dir():
        return
    entries = [p for p in out.iterdir() if not (p.name == "lost+found" and p.is_dir())]
    for staging in (p for p in entries if STAGING_RE.fullmatch(p.name)):
        pid = int(STAGING_RE.fullmatch(staging.name).group(1))
        if pid != os.getpid() and pid < 2 ** 22 and process_alive(pid) and _recently_written(staging):
            raise ConfigError(f"another scenario make (pid {pid}) writes into {out} now; wait "
                              f"for it, or choose another folder (if no run is going on, "
                              f"remove {staging})")
    if entries and not (out / MARKER_NAME).exists() \
            and not all(STAGING_RE.fullmatch(p.name) for p in entries):
        raise ConfigError(f"refusing to write a scenario into non-empty directory {out} "
                          f"(no {MARKER_NAME}: not a previous scenario)")
    foreign = _foreign_file(out) if entries else None
    if foreign is not None:
        raise ConfigError(f"refusing to write a scenario into {out}: it holds {foreign}, "
                          f"which no scenario there wrote (choose an empty or new folder)")


def _recover(out: Path, staging: Path) -> None:
    """Finish or undo the swap of a run killed in :func:`_swap_in`, from what ``staging``
    holds: the new ``tasks.yaml`` alone left (its ``scenario.json`` in place already) is
    moved in, which completes the new scenario; otherwise the earlier scenario's folders in
    ``staging/old`` go back (the new ones that had replaced them going back to ``staging``),
    which makes the earlier scenario whole again. Renames only."""
    old = staging / "old"
    if not (staging / MARKER_NAME).exists() and (staging / "tasks.yaml").exists():
        os.replace(staging / "tasks.yaml", out / "tasks.yaml")
        return
    if not old.is_dir():
        return
    for sub in ("images", "labels", "tasks"):
        if (old / sub).exists():
            if (out / sub).exists() and not (staging / sub).exists():
                os.replace(out / sub, staging / sub)
            if not (out / sub).exists():
                os.replace(old / sub, out / sub)
    if (old / "tasks.yaml").exists() and not (out / "tasks.yaml").exists():
        os.replace(old / "tasks.yaml", out / "tasks.yaml")
    fsync_dir(out)


def _swap_in(out: Path, staging: Path) -> None:
    """Put the scenario built in ``staging`` (inside ``out``) in the place of the earlier one,
    by renames only (no space needed, the same file system even where ``out`` is a mount
    point): the earlier one's folders and ``tasks.yaml`` moved into ``staging/old`` (moved
    back if a rename fails), the new ones renamed in, ``scenario.json`` replaced and
    ``tasks.yaml`` last, so that at every moment a ``scenario.json`` stands there (a run killed
    meanwhile leaves a folder the next run recognises, :func:`_recover`, and rewrites).

    Raises:
        OSError: a rename failed; the earlier scenario is back in place (what could not be
            moved back stays in ``staging/old``).
    """
    old = staging / "old"
    old.mkdir()
    moved: list[str] = []
    try:
        for sub in ("tasks.yaml", "images", "labels", "tasks"):
            if (out / sub).exists() or (out / sub).is_symlink():
                os.replace(out / sub, old / sub)
                moved.append(sub)
        for sub in ("images", "labels", "tasks"):
            os.replace(staging / sub, out / sub)
    except OSError:
        for sub in reversed(moved):  # the earlier folders back; a new one in the way goes aside
            try:
                if (out / sub).exists() and not (staging / sub).exists():
                    os.replace(out / sub, staging / sub)
                os.replace(old / sub, out / sub)
            except OSError:
                continue  # left in staging/old: make_scenario says where
        raise
    os.replace(staging / MARKER_NAME, out / MARKER_NAME)
    os.replace(staging / "tasks.yaml", out / "tasks.yaml")
    fsync_dir(out)


def make_scenario(out_dir: str | Path, tasks: int = 5, images_per_task: int = 60, imgsz: int = 160,
                  seed: int = 0, splits: tuple[float, float, float] = (0.7, 0.15, 0.15),
                  classes_per_task: int = 2) -> Path:
    """Write the scenario as a YOLO dataset with a ``tasks.yaml``.

    Layout: ``images/<task>/<split>/<name>.jpg``, ``labels/<task>/<split>/<name>.txt``,
    ``tasks/<task>/<split>.txt`` and ``tasks.yaml`` (written last: a dataset without it is
    incomplete). The scenario is built whole in a hidden folder inside ``out_dir`` and then
    renamed into place, so that a run that fails or is killed half-way leaves the earlier
    scenario there (or nothing). A directory holding an earlier scenario (its
    ``scenario.json`` and only the files that scenario writes) is regenerated; any other
    non-empty directory is refused.

    Args:
        out_dir: output folder.
        tasks: number of tasks.
        images_per_task: images per task over all splits.
        imgsz: square image side in pixels.
        seed: non-negative seed.
        splits: train, val, test fractions.
        classes_per_task: classes each task introduces.

    Returns:
        Path of the written ``tasks.yaml``.

    Raises:
        ConfigError: invalid parameters or an unsuitable output directory.
    """
    splits = tuple(float(v) for v in splits)
    check_params(tasks, images_per_task, imgsz, seed, splits, classes_per_task)
    out = Path(out_dir).expanduser()
    if out.is_symlink() and not out.exists():
        raise ConfigError(f"scenario output {out} is a link to {os.readlink(out)}, which does not "
                          f"exist (an unmounted card?); name another folder")
    out = out.resolve()
    _check_out_dir(out)
    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    for leftover in out.iterdir():  # the staging folder of a run killed half-way (checked)
        if STAGING_RE.fullmatch(leftover.name) and leftover.is_dir() and not leftover.is_symlink():
            _recover(out, leftover)
            shutil.rmtree(leftover)
    staging = out / f".new-scenario.pid{os.getpid()}.tmp"
    try:  # built whole before the earlier scenario goes: a failure half-way leaves that one
        staging.mkdir()
        _write_scenario(staging, tasks, images_per_task, imgsz, seed, splits, classes_per_task)
        _check_out_dir(out)  # again: a file put there while this one was built is kept
        _swap_in(out, staging)
    except BaseException:
        if (staging / "old").is_dir() and any((staging / "old").iterdir()):
            raise ConfigError(f"the earlier scenario in {out} could not be put back whole; its "
                              f"files are in {staging / 'old'}: move them back into {out}") \
                from None
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # the folders this run made, deepest first, while empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    try:
        shutil.rmtree(staging)  # the earlier scenario, moved aside
    except OSError as exc:
        raise ConfigError(f"the new scenario is in {out}, but the earlier one's files could not "
                          f"all be removed ({exc.strerror or exc}: {exc.filename}); they are in "
                          f"{staging}: remove that folder") from None
    return out / "tasks.yaml"


def _write_scenario(out: Path, tasks: int, images_per_task: int, imgsz: int, seed: int,
                    splits: tuple[float, float, float], classes_per_task: int) -> Path:
    """The body of :func:`make_scenario`, writing into ``out``."""
    params = {"tasks": tasks, "images_per_task": images_per_task, "imgsz": imgsz, "seed": seed,
              "splits": list(splits), "classes_per_task": classes_per_task, "jpeg_quality": JPEG_QUALITY}
    atomic_write_text(out / MARKER_NAME, json.dumps(params, indent=2, sort_keys=True) + "\n")
    lists: dict[tuple[str, str], list[str]] = {}
    trained: set[int] = set()  # classes with a box in their own task's training images
    for f in generate_frames(tasks, images_per_task, imgsz, seed, splits, classes_per_task):
        lists.setdefault((f.task, f.split), []).append(_write_frame(out, f))
        if f.split == "train":
            task = int(f.task[1:]) - 1
            trained.update(int(c) for c in np.asarray(f.labels).reshape(-1, 5)[:, 0]
                           if int(c) // classes_per_task == task)
    names = class_names(tasks, classes_per_task)
    untrained = [names[c] for c in sorted(names) if c not in trained]
    if untrained:  # before: a class no round could learn, said nowhere (its task's AP its mate's)
        logging.getLogger(__name__).warning(
            "scenario: %s %s no box in %s task's training images at %d images per task (seed "
            "%d): no round learns %s; give more images per task", ", ".join(untrained),
            "has" if len(untrained) == 1 else "have", "its" if len(untrained) == 1 else "their",
            images_per_task, seed, "it" if len(untrained) == 1 else "them")
    task_defs = []
    for t in range(tasks):
        name = f"t{t + 1}"
        for split in SPLITS:
            atomic_write_text(out / "tasks" / name / f"{split}.txt",
                              "".join(p + "\n" for p in lists.get((name, split), [])))
        task_defs.append((name, tuple(range(t * classes_per_task, (t + 1) * classes_per_task))))
    yaml_path = out / "tasks.yaml"
    # INVARIANT: tasks.yaml is written last; a folder without it is an incomplete scenario.
    atomic_write_text(yaml_path, format_tasks_yaml(names, task_defs))
    return yaml_path
