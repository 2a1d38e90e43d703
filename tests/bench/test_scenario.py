"""The built-in scenario generator, the tasks.yaml loader and ``edgecl scenario make``."""

import argparse
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.data.scenario import (JPEG_QUALITY, MARKER_NAME, generate_frames, iter_scenario_frames, make_scenario,
                                   split_counts)
from edgecl.data.tasks import label_path_for, load_tasks
from edgecl.commands import scenario as scenario_cmd
from edgecl.errors import ConfigError
from edgecl.data.labels import read_yolo_labels

SMALL = dict(tasks=3, images_per_task=12, imgsz=64)


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_scenario(tmp_path_factory.mktemp("scn") / "out", seed=3, **SMALL)


def test_split_counts_hand_computed():
    assert split_counts(60, (0.7, 0.15, 0.15)) == {"train": 42, "val": 9, "test": 9}
    assert split_counts(12, (0.7, 0.15, 0.15)) == {"train": 8, "val": 2, "test": 2}
    assert split_counts(4, (0.8, 0.0, 0.2)) == {"train": 3, "val": 0, "test": 1}


def test_tasks_yaml_exact_format(small):
    text = small.read_text()
    assert text.splitlines()[:7] == [
        "names: {0: car, 1: truck, 2: person, 3: bicycle, 4: boat, 5: drone}",
        "tasks:",
        "  - name: t1",
        "    classes: [0, 1]",
        "    train: tasks/t1/train.txt",
        "    val: tasks/t1/val.txt",
        "    test: tasks/t1/test.txt",
    ]
    assert (small.parent / MARKER_NAME).is_file()


def test_layout_every_image_labelled_and_classes_seen(small):
    task_set = load_tasks(small)
    assert task_set.nc == 6
    assert [t.classes for t in task_set.tasks] == [(0, 1), (2, 3), (4, 5)]
    for i, task in enumerate(task_set.tasks):
        assert (len(task.train), len(task.val), len(task.test)) == (8, 2, 2)
        allowed = set(task_set.seen_classes(i))
        for split in ("train", "val", "test"):
            for image in task.split(split):
                assert image.parent == small.parent / "images" / task.name / split
                assert cv2.imread(str(image)).shape == (64, 64, 3)
                labels = read_yolo_labels(label_path_for(image)).labels
                assert set(labels[:, 0].astype(int)) <= allowed
    first = (small.parent / "tasks" / "t1" / "train.txt").read_text().splitlines()[0]
    assert first == "images/t1/train/t1_train_00000.jpg"
    assert label_path_for(small.parent / first) == small.parent / "labels/t1/train/t1_train_00000.txt"


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_scenario(tmp_path / "a", seed=7, tasks=2, images_per_task=6, imgsz=64)
    b = make_scenario(tmp_path / "b", seed=7, tasks=2, images_per_task=6, imgsz=64)
    c = make_scenario(tmp_path / "c", seed=8, tasks=2, images_per_task=6, imgsz=64)
    ha, hb, hc = _hashes(a.parent), _hashes(b.parent), _hashes(c.parent)
    assert ha == hb
    assert len(ha) == 2 * 6 * 2 + 2 * 3 + 2  # images+labels, list files, tasks.yaml+marker
    images = [k for k in ha if k.endswith(".jpg")]
    assert all(ha[k] != hc[k] for k in images)


def test_in_memory_frames_match_written_files(small):
    frames = list(iter_scenario_frames(seed=3, **SMALL))
    assert len(frames) == 3 * 12
    root = small.parent
    for image, labels, task, name in frames:
        split = name.split("_")[1]
        assert name.startswith(task + "_")
        written = read_yolo_labels(root / "labels" / task / split / f"{name}.txt").labels
        np.testing.assert_allclose(written, labels, atol=1e-6)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        assert ok and encoded.tobytes() == (root / "images" / task / split / f"{name}.jpg").read_bytes()


def test_objects_small_cluttered_and_earlier_classes_rare():
    sizes, earlier, total, frames = [], 0, 0, 0
    for f in generate_frames(tasks=5, images_per_task=60, imgsz=160, seed=0):
        t = int(f.task[1:]) - 1
        assert set(f.labels[:, 0].astype(int)) <= set(range(2 * t + 2))
        earlier += int((f.labels[:, 0] < 2 * t).sum())
        total += len(f.labels)
        frames += 1
        sizes.extend(np.maximum(f.labels[:, 3], f.labels[:, 4]) * 160)
    sizes = np.array(sizes)
    assert frames == 300
    assert total / frames >= 1.5
    assert 0 < earlier < 0.1 * total
    assert sizes.max() <= 45 and np.median(sizes) < 30 and sizes.min() >= 2


def test_tasks_do_not_depend_on_later_tasks():
    short = [f.image for f in generate_frames(tasks=1, images_per_task=5, imgsz=48, seed=2)]
    longer = [f.image for f in generate_frames(tasks=2, images_per_task=5, imgsz=48, seed=2)][:5]
    assert all(np.array_equal(a, b) for a, b in zip(short, longer))


def test_generation_is_fast():
    t0 = time.perf_counter()
    n = sum(1 for _ in iter_scenario_frames(tasks=5, images_per_task=60, imgsz=160, seed=0))
    assert n == 300
    assert time.perf_counter() - t0 < 15.0  # about 0.7 s on 2 shared CPU cores


def test_regenerates_previous_scenario_and_refuses_foreign_folder(tmp_path):
    out = tmp_path / "out"
    make_scenario(out, tasks=2, images_per_task=8, imgsz=48)
    make_scenario(out, tasks=1, images_per_task=4, imgsz=48)
    assert sorted(p.name for p in (out / "images").iterdir()) == ["t1"]
    assert len(list((out / "images").rglob("*.jpg"))) == 4
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="refusing"):
        make_scenario(foreign, tasks=1, images_per_task=4, imgsz=48)
    assert (foreign / "keep.txt").read_text() == "precious"


def test_a_folder_with_a_scenario_json_is_rewritten_only_when_a_scenario_made_all_of_it(tmp_path):
    dataset = tmp_path / "dataset"  # a user's dataset that merely holds a scenario.json
    (dataset / "images").mkdir(parents=True)
    (dataset / "images" / "flight1.jpg").write_bytes(b"precious pixels")
    (dataset / MARKER_NAME).write_text('{"notes": "mine"}')
    with pytest.raises(ConfigError, match="holds scenario.json, which no scenario there wrote"):
        make_scenario(dataset, tasks=1, images_per_task=4, imgsz=48)  # before: deleted images/
    (dataset / MARKER_NAME).write_text('{"tasks": 1, "images_per_task": 4, "imgsz": 48, "seed": 0}')
    with pytest.raises(ConfigError, match="holds scenario.json, which no scenario there wrote"):
        make_scenario(dataset, tasks=1, images_per_task=4, imgsz=48)  # not all a scenario's keys
    assert (dataset / "images" / "flight1.jpg").read_bytes() == b"precious pixels"

    earlier = tmp_path / "earlier"
    make_scenario(earlier, tasks=2, images_per_task=4, imgsz=48)
    (earlier / "labels" / "t1" / "train.cache").write_bytes(b"ultralytics cache")
    (earlier / "images" / "t1" / "train" / ".t1_train_00000.jpg.k2j4ab_9.tmp").write_bytes(b"")
    (earlier / ".new-scenario.pid999999.tmp" / "images").mkdir(parents=True)  # a killed run
    for mine in ("images/t1/train/my_notes.txt", "images/t7/val/t7_val_00001.jpg",
                 "images/t1/train/t1_train_99999.jpg", ".notes.tmp", "images/.draft.tmp",
                 "images/t1/train/.t1_train_00000.jpg.mine.tmp",
                 ".new-scenario.pid999999.tmp/thesis.docx"):
        path = earlier / mine
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("kept")
        with pytest.raises(ConfigError, match=f"it holds {re.escape(mine)}, which no scenario "
                                              f"there wrote"):
            make_scenario(earlier, tasks=2, images_per_task=6, imgsz=48)
        assert path.read_text() == "kept"
        path.unlink()
        if "t7" in mine:
            shutil.rmtree(earlier / "images" / "t7")
    make_scenario(earlier, tasks=1, images_per_task=6, imgsz=48)  # cache and temp files are its own
    assert len(list((earlier / "images").rglob("*.jpg"))) == 6
    assert sorted(p.name for p in earlier.iterdir()) == ["images", "labels", MARKER_NAME, "tasks",
                                                         "tasks.yaml"]


def test_a_scenario_that_fails_half_way_leaves_the_earlier_one_or_nothing(tmp_path, monkeypatch):
    import edgecl.data.scenario as scenario

    written = []

    def failing(out, frame):
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        written.append(frame.name)
        return real(out, frame)

    real = scenario._write_frame
    monkeypatch.setattr(scenario, "_write_frame", failing)
    with pytest.raises(OSError, match="No space left"):
        make_scenario(tmp_path / "new" / "out", tasks=1, images_per_task=8, imgsz=48)
    assert list(tmp_path.iterdir()) == []  # before the first scenario: nothing
    monkeypatch.undo()
    earlier = make_scenario(tmp_path / "out", tasks=1, images_per_task=8, imgsz=48)
    before = _hashes(earlier.parent)
    written.clear()
    monkeypatch.setattr(scenario, "_write_frame", failing)
    with pytest.raises(OSError, match="No space left"):  # before: the earlier one was gone
        make_scenario(tmp_path / "out", tasks=2, images_per_task=8, imgsz=48, seed=3)
    assert _hashes(earlier.parent) == before


def test_a_run_killed_while_swapping_leaves_a_folder_the_next_run_rewrites(tmp_path, monkeypatch):
    import edgecl.data.scenario as scenario

    out = tmp_path / "out"
    make_scenario(out, tasks=1, images_per_task=8, imgsz=48)

    rmtree = shutil.rmtree

    def killed(out_dir, staging):
        (out_dir / "tasks.yaml").unlink()
        rmtree(out_dir / "images")
        os.replace(staging / "images", out_dir / "images")
        raise KeyboardInterrupt  # stands for a kill -9 between two renames

    monkeypatch.setattr(scenario, "_swap_in", killed)
    monkeypatch.setattr(shutil, "rmtree", lambda *a, **k: None)  # a kill cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        make_scenario(out, tasks=2, images_per_task=8, imgsz=48)
    monkeypatch.undo()
    assert any(scenario.STAGING_RE.fullmatch(p.name) for p in out.iterdir())
    yaml_path = make_scenario(out, tasks=2, images_per_task=8, imgsz=48)
    assert len(load_tasks(yaml_path).tasks) == 2
    assert not any(scenario.STAGING_RE.fullmatch(p.name) for p in out.iterdir())


@pytest.mark.parametrize("kwargs, match", [
    (dict(tasks=7), "tasks x classes_per_task"),
    (dict(imgsz=16), "imgsz"),
    (dict(imgsz=1_000_000), r"imgsz must be in 32\.\.4096, got 1000000"),  # 8 TiB of pixels before
    (dict(seed=-1), "seed"),
    (dict(splits=(0.5, 0.5, 0.0)), "splits"),
    (dict(images_per_task=1), r"too small for splits \(0\.7, 0\.15, 0\.15\): at least 2 leave a "
                              r"training image"),  # before: no minimum named
])
def test_bad_parameters(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_scenario(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x" / "tasks.yaml").exists()


def _dataset(tmp_path: Path, yaml_text: str, lists: dict[str, list[str]]) -> Path:
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / name).write_bytes(b"x")
    for rel, lines in lists.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("".join(line + "\n" for line in lines))
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml_text)
    return path


GOOD_LISTS = {"l/train.txt": ["images/a.jpg"], "l/val.txt": [], "l/test.txt": ["# comment", "images/b.jpg"]}
TASK = "  - name: t1\n    classes: [0]\n    train: l/train.txt\n    val: l/val.txt\n    test: l/test.txt\n"


def test_loader_accepts_valid_file_with_list_names(tmp_path):
    path = _dataset(tmp_path, "names: [car, boat]\ntasks:\n" + TASK, GOOD_LISTS)
    task_set = load_tasks(path)
    assert task_set.names == {0: "car", 1: "boat"}
    task = task_set.tasks[0]
    assert task.train == ((tmp_path / "images" / "a.jpg").resolve(),)
    assert task.val == () and len(task.test) == 1


@pytest.mark.parametrize("yaml_text, lists, match", [
    ("names: {0: car}\ntasks: [\n", GOOD_LISTS, "cannot parse YAML at line"),
    ("names: {0: car}\ntask:\n" + TASK, GOOD_LISTS, "unknown key 'task'.*did you mean 'tasks'"),
    ("names: {0: car}\ntasks:\n" + TASK.replace("[0]", "[3]"), GOOD_LISTS, "class id 3 is not in 'names'"),
    ("names: {0: car, 2: boat}\ntasks:\n" + TASK, GOOD_LISTS, "without gaps"),
    ("names: {0: car}\ntasks:\n" + TASK + TASK.replace("t1", "t2"), GOOD_LISTS, "class 0 \\(car\\) was already"),
    ("names: {0: car}\ntasks:\n" + TASK.replace("l/train.txt", "l/nope.txt"), GOOD_LISTS,
     "train list not found: .*l/nope.txt"),
    ("names: {0: car}\ntasks:\n" + TASK, {**GOOD_LISTS, "l/train.txt": ["images/zz.jpg"]},
     "train.txt:1: image not found: .*zz.jpg"),
    ("names: {0: car}\ntasks:\n" + TASK, {**GOOD_LISTS, "l/test.txt": []}, "test list .* has no images"),
    ("names: {0: car}\ntasks:\n" + TASK.replace("classes", "clases"), GOOD_LISTS, "did you mean 'classes'"),
    ("names: {0: car}\ntasks: []\n", GOOD_LISTS, "'tasks' must be a non-empty list"),
])
def test_loader_errors_are_one_line_and_name_the_file(tmp_path, yaml_text, lists, match):
    path = _dataset(tmp_path, yaml_text, lists)
    with pytest.raises(ConfigError, match=match) as info:
        load_tasks(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message


def test_loader_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="tasks file not found: .*absent.yaml"):
        load_tasks(tmp_path / "absent.yaml")


def test_command_make_prints_path_and_summary(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="edgecl")
    scenario_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["scenario", "make", "--out", str(tmp_path / "s"), "--tasks", "2",
                              "--images-per-task", "6", "--imgsz", "48", "--seed", "1"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str((tmp_path / "s" / "tasks.yaml").resolve())
    assert lines[1] == ("2 tasks, 4 classes, images train 8 / val 2 / test 2; "
                        "classes t1: car, truck; t2: person, bicycle")


def test_a_new_folder_where_a_run_was_killed_is_taken_and_a_live_run_is_waited_for(tmp_path):
    """Before: a run killed while it built into a new folder left only its hidden staging
    folder, and the next run refused the folder ('no scenario.json'); and two runs into one
    folder removed each other's staging folders and left it broken."""
    import subprocess

    out = tmp_path / "new"
    (out / ".new-scenario.pid999999.tmp" / "images" / "t1" / "train").mkdir(parents=True)
    (out / "lost+found").mkdir()  # a freshly made file system's: not the user's files
    make_scenario(out, tasks=1, images_per_task=4, imgsz=48)
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels", "lost+found",
                                                     MARKER_NAME, "tasks", "tasks.yaml"]
    live = subprocess.Popen(["sleep", "30"])
    try:
        (out / f".new-scenario.pid{live.pid}.tmp").mkdir()
        with pytest.raises(ConfigError, match=f"another scenario make \\(pid {live.pid}\\) "
                                              f"writes into"):
            make_scenario(out, tasks=1, images_per_task=4, imgsz=48)
        assert (out / f".new-scenario.pid{live.pid}.tmp").is_dir()
    finally:
        live.kill()
        live.wait()
    link = tmp_path / "card"
    link.symlink_to(tmp_path / "unmounted" / "deep")
    with pytest.raises(ConfigError, match="is a link to .*which does not exist"):
        make_scenario(link, tasks=1, images_per_task=4, imgsz=48)
    assert not (tmp_path / "unmounted").exists()


def test_a_folder_that_cannot_be_emptied_keeps_the_new_scenario_whole(tmp_path, monkeypatch):
    """Before: a read-only folder in the earlier scenario failed its removal half-way: its
    tasks.yaml and part of its images were gone, and no new scenario was in place."""
    out = tmp_path / "out"
    make_scenario(out, tasks=1, images_per_task=4, imgsz=48)
    real = shutil.rmtree

    def refused(path, *a, **k):
        if ".new-scenario." in str(path) and not k.get("ignore_errors"):
            raise PermissionError(13, "Permission denied", str(path) + "/old/images/t1")
        return real(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", refused)
    with pytest.raises(ConfigError, match="the new scenario is in .*, but the earlier one's files "
                                          "could not all be removed"):
        make_scenario(out, tasks=2, images_per_task=4, imgsz=48)
    monkeypatch.undo()
    assert len(load_tasks(out / "tasks.yaml").tasks) == 2  # the new one, whole


def _killed_mid_swap(tmp_path, finish_marker: bool):
    """An earlier 1-task scenario in ``out`` and a 2-task one in a dead run's staging folder,
    left as a kill -9 leaves them inside ``_swap_in``."""
    import edgecl.data.scenario as scenario

    out = tmp_path / "out"
    make_scenario(out, tasks=1, images_per_task=8, imgsz=48)
    before = _hashes(out)
    staging = out / ".new-scenario.pid999999.tmp"
    new = make_scenario(tmp_path / "new", tasks=2, images_per_task=8, imgsz=48).parent
    new.rename(staging)
    (staging / "old").mkdir()
    for sub in ("tasks.yaml", "images", "labels", "tasks"):
        os.replace(out / sub, staging / "old" / sub)
    os.replace(staging / "images", out / "images")  # killed here, or after the marker:
    if finish_marker:
        for sub in ("labels", "tasks", MARKER_NAME):
            os.replace(staging / sub, out / sub)
    return scenario, out, staging, before


def test_a_swap_killed_half_way_is_undone_or_finished_by_the_next_run(tmp_path):
    """Before: a kill -9 between the swap's renames left the earlier scenario hidden in the
    staging folder, which the next run deleted before it had built anything; and a folder the
    next run refused for good ('holds images/t1/test/t1_test_00001.jpg')."""
    scenario, out, staging, before = _killed_mid_swap(tmp_path / "a", finish_marker=False)
    scenario._recover(out, staging)
    assert {k: v for k, v in _hashes(out).items() if not k.startswith(".new-scenario")} == before
    scenario, out, staging, _ = _killed_mid_swap(tmp_path / "b", finish_marker=True)
    scenario._recover(out, staging)
    assert len(load_tasks(out / "tasks.yaml").tasks) == 2  # the new one, finished
    scenario, out, staging, _ = _killed_mid_swap(tmp_path / "c", finish_marker=False)
    yaml_path = make_scenario(out, tasks=3, images_per_task=8, imgsz=48)  # the next run
    assert len(load_tasks(yaml_path).tasks) == 3
    assert not staging.exists()


def test_a_class_with_no_training_box_in_its_task_is_warned_of(tmp_path, caplog):
    """Before: 4 tasks of 30 images (seed 2) gave bicycle 12 boxes, all in t2's val and test
    splits: no round could learn it, and nothing said so."""
    import logging

    with caplog.at_level(logging.WARNING, logger="edgecl.data.scenario"):
        make_scenario(tmp_path / "small", tasks=4, images_per_task=30, imgsz=96, seed=2)
    assert caplog.messages == [
        "scenario: bicycle has no box in its task's training images at 30 images per task (seed "
        "2): no round learns it; give more images per task"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edgecl.data.scenario"):
        make_scenario(tmp_path / "enough", tasks=2, images_per_task=60, imgsz=96, seed=0)
    assert not caplog.messages
