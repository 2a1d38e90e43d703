"""Where a task split (tasks.yaml) is wanted and a dataset is given, the error says how to make
one: before, ``bench learn --data VOC`` said "no class names; add a data.yaml", ``bench cl --data
DATASET`` "no tasks.yaml at DATASET/tasks.yaml", and ``bench field --data FOLDER`` refused even
a folder holding a tasks.yaml ("is not a tasks.yaml file")."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.cli import main
from edgecl.data.task_sources import load_task_source, task_split_path
from edgecl.errors import ConfigError


def _jpg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", np.full((48, 64, 3), 90, np.uint8))[1].tobytes())


def _voc(root: Path) -> Path:
    _jpg(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir(parents=True)
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>64</width><height>48</height>"
        "</size><object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
        "<ymax>20</ymax></bndbox></object></annotation>")
    return root


def _coco(root: Path) -> Path:
    _jpg(root / "images" / "a.jpg")
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "car"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]}]}))
    return root


def _yolo(root: Path) -> Path:
    _jpg(root / "images" / "a.jpg")
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("path: .\ntrain: images\nnames: {0: car}\n")
    return root


@pytest.mark.parametrize("make, words", [(_voc, "a Pascal VOC dataset"),
                                         (_coco, "a COCO dataset")])
def test_a_voc_or_coco_folder_given_for_a_task_split_names_the_two_commands(tmp_path, make,
                                                                           words):
    data = make(tmp_path / "flights")
    with pytest.raises(ConfigError) as info:
        task_split_path(str(data))
    assert str(info.value) == (
        f"--data {data}: no tasks.yaml (a class-incremental split of a dataset) in the folder; "
        f"it looks like {words}: convert it with 'edgecl dataset import {data} --out DIR', then "
        f"split it into tasks with 'edgecl dataset split-tasks DIR --tasks \"a,b;c\" --out "
        f"DIR/tasks.yaml'")


def test_a_yolo_folder_given_for_a_task_split_names_split_tasks_into_it(tmp_path):
    data = _yolo(tmp_path / "yolo")
    with pytest.raises(ConfigError, match=r"; to split it into tasks: 'edgecl dataset split-tasks "
                                          rf"{data} --tasks \"a,b;c\" --out {data}/tasks.yaml'$"):
        task_split_path(str(data), "--data")
    (data / "tasks.yaml").write_text("names: {0: car}\n")
    assert task_split_path(str(data)) == data / "tasks.yaml"   # the folder holding one
    assert task_split_path(str(data / "tasks.yaml")) == data / "tasks.yaml"
    with pytest.raises(ConfigError, match=rf"^--data: no such file or directory: {tmp_path}/gone$"):
        task_split_path(str(tmp_path / "gone"))


@pytest.mark.parametrize("bench", ["learn", "cl", "field"])
def test_each_benchmark_says_how_to_split_a_voc_folder(tmp_path, capsys, bench):
    data = _voc(tmp_path / "voc")
    code = main(["bench", bench, "--data", str(data), *(["--out", str(tmp_path / "o")]
                                                          if bench != "learn" else [])])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --data {data}: no tasks.yaml") and \
        f"convert it with 'edgecl dataset import {data} --out DIR'" in err, err
    assert "no class names" not in err and "Traceback" not in err


def test_a_voc_folder_as_a_task_source_names_the_conversion(tmp_path):
    data = _voc(tmp_path / "voc")
    with pytest.raises(ConfigError) as info:
        load_task_source(data)
    assert str(info.value) == (
        f"{data} looks like a Pascal VOC dataset: convert it with 'edgecl dataset import {data} "
        f"--out DIR' and give DIR, an ultralytics YOLO dataset (read as one task; 'edgecl "
        f"dataset split-tasks DIR' splits it into several)")
    assert load_task_source(_yolo(tmp_path / "yolo")).names == {0: "car"}
