"""Importers (YOLO, VOC, COCO), `edgecl dataset import`, `labels import` and split-tasks."""

import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgecl.cli import main
from edgecl.data.convert import write_yolo_dataset
from edgecl.data.importers import ImportItem, Skip, detect_format, is_ignore_name, iter_labelled
from edgecl.data.splits import parse_ratios, parse_task_spec, split_tasks
from edgecl.data.tasks import load_tasks
from edgecl.errors import ConfigError, LabelError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import marked_image  # noqa: E402

W, H = 64, 48


def _jpg(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", marked_image(path, value, H, W))
    path.write_bytes(data.tobytes())


def _truncated(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 255, (H, W, 3), dtype=np.uint8))
    path.write_bytes(data.tobytes()[:300])


def _voc_xml(filename: str, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    objs = "".join(f"<object><name>{n}</name><difficult>0</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, b in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{objs}</annotation>")


@pytest.fixture()
def voc(tmp_path) -> Path:
    """5 annotations: 2 good (one with a DontCare), 1 broken XML, 1 missing image, 1 truncated JPEG."""
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    _jpg(root / "JPEGImages" / "a.jpg")
    _jpg(root / "JPEGImages" / "b.jpg")
    _truncated(root / "JPEGImages" / "e.jpg")
    (root / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", [("Car", (11, 11, 31, 21)),
                                                                  ("DontCare", (1, 1, 5, 5))]))
    (root / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", [("Person", (41, 1, 51, 41))]))
    (root / "Annotations" / "c.xml").write_text("<annotation><object>")
    (root / "Annotations" / "d.xml").write_text(_voc_xml("d.jpg", [("Car", (1, 1, 9, 9))]))
    (root / "Annotations" / "e.xml").write_text(_voc_xml("e.jpg", [("Car", (1, 1, 9, 9))]))
    return root


@pytest.fixture()
def coco(tmp_path) -> Path:
    """CVAT layout: annotations/instances_default.json + images/; crowd, ignore and broken entries."""
    root = tmp_path / "coco"
    for name in ("x.jpg", "y.jpg", "z.jpg", "w.jpg"):
        _jpg(root / "images" / name)
    _truncated(root / "images" / "t.jpg")
    data = {  # images/w.jpg: another file (images/x.jpg names x.jpg again: a duplicate image)
        "images": [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "y.jpg"},
                   {"id": 3, "file_name": "missing.jpg"}, {"id": 4, "file_name": "z.jpg"},
                   {"id": 5, "file_name": "t.jpg"}, {"id": 6, "file_name": "images/w.jpg"}],
        "categories": [{"id": 7, "name": "truck"}, {"id": 8, "name": "ignore"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [10, 10, 20, 10], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 64, 48], "iscrowd": 1},
            {"id": 3, "image_id": 1, "category_id": 8, "bbox": [1, 1, 4, 4]},
            {"id": 4, "image_id": 2, "category_id": 9, "bbox": [30, 5, 10, 30]},
            {"id": 5, "image_id": 4, "category_id": 9, "bbox": [5, 5, "x", 3]},
            {"id": 6, "image_id": 6, "category_id": 9, "bbox": [70, 5, 10, 10]},
        ]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(json.dumps(data))
    return root


@pytest.fixture()
def yolo(tmp_path) -> Path:
    """Roboflow export: data.yaml + train/valid; a class-9 row, a missing label, a truncated image."""
    root = tmp_path / "yolo"
    for split, stems in (("train", ("p", "q", "r", "s")), ("valid", ("v",))):
        (root / split / "labels").mkdir(parents=True)
        for stem in stems:
            _jpg(root / split / "images" / f"{stem}.jpg")
    _truncated(root / "train" / "images" / "t.jpg")
    (root / "train" / "labels" / "p.txt").write_text("\ufeff0 0.5 0.5 0.25 0.5\n0 0.5 0.5 0.25 0.5\n")
    (root / "train" / "labels" / "q.txt").write_text("9 0.5 0.5 0.2 0.2\n")  # class beyond names
    (root / "train" / "labels" / "r.txt").write_text("")  # background
    (root / "train" / "labels" / "t.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "valid" / "labels" / "v.txt").write_text("1 0.1 0.1 0.3 0.1 0.2 0.4\n")  # polygon
    (root / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\n"
                                    "names: ['bike', 'DontCare']\n")
    return root


def _collect(path, fmt="auto"):
    out = list(iter_labelled(path, fmt))
    return [i for i in out if isinstance(i, ImportItem)], [s for s in out if isinstance(s, Skip)]


def test_detect_format(voc, coco, yolo):
    assert detect_format(voc) == "voc" and detect_format(coco) == "coco"
    # before: Annotations/ given itself was read as a YOLO folder: "no images (...) in it"
    assert detect_format(voc / "Annotations") == "voc"
    assert [i.source.name for i in _collect(voc / "Annotations")[0]] == ["a.jpg", "b.jpg"]
    assert detect_format(coco / "annotations" / "instances_default.json") == "coco"
    assert detect_format(yolo) == "yolo" and detect_format(yolo / "data.yaml") == "yolo"
    assert is_ignore_name("DontCare") and is_ignore_name("ignored_regions") and not is_ignore_name("car")


def test_an_image_given_as_the_dataset_is_refused_naming_every_kind_of_dataset(voc):
    """Before: 'a.jpg is a file; expected a dataset folder or a data.yaml': the COCO json and
    the VOC xml an import also takes were not named."""
    image = voc / "JPEGImages" / "a.jpg"
    for call in (lambda: detect_format(image), lambda: iter_labelled(image)):
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value) == (f"{image} is a file, not a dataset: give a dataset folder "
                                     f"(YOLO, Pascal VOC or COCO), a data.yaml, a COCO .json or "
                                     f"a Pascal VOC .xml")


def test_voc_import_counts_ignore_and_broken(voc):
    items, skips = _collect(voc)
    assert [i.source.name for i in items] == ["a.jpg", "b.jpg"]
    a, b = items
    assert a.names == ["Car"] and a.ignored == 1
    np.testing.assert_allclose(a.xyxy, [[10, 10, 30, 20]])  # 1-based VOC pixels, like ultralytics
    np.testing.assert_allclose(a.yolo_labels({"Car": 3}), [[3, 20 / W, 15 / H, 20 / W, 10 / H]], rtol=1e-6)
    assert b.names == ["Person"]
    assert sorted(s.reason for s in skips) == ["bad annotation", "missing image", "unreadable image"]
    assert any("e.jpg: truncated JPEG" in s.message for s in skips)


def test_coco_import_crowd_ignore_broken(coco):
    items, skips = _collect(coco)
    assert [i.source.name for i in items] == ["x.jpg", "y.jpg"]
    x, y = items
    assert x.names == ["truck"] and x.ignored == 2  # iscrowd + "ignore" category
    np.testing.assert_allclose(x.xyxy, [[10, 10, 30, 20]])
    assert y.names == ["dog"]
    assert sorted(s.reason for s in skips) == ["bad annotation", "bad box", "missing image", "unreadable image"]


def test_a_coco_crowd_flag_written_as_text_is_read_as_its_value(tmp_path):
    """Before: ``"iscrowd": "0"`` (exporters that write numbers as strings) read as a crowd,
    and the object was dropped as an ignore region; "1" and "true" stay crowds."""
    root = tmp_path / "coco"
    _jpg(root / "images" / "a.jpg")
    flags = ["0", " false", "", 0, 0.0, False, None, "1", "TRUE", 1, True, "1.0", "2", "on"]
    data = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": k, "image_id": 1, "category_id": 1, "iscrowd": flag,
                             "bbox": [2 + 3 * k, 2, 4, 4]} for k, flag in enumerate(flags)]}
    (root / "annotations.json").write_text(json.dumps(data))
    (item,), skips = _collect(root)
    assert not skips
    assert item.names == ["car"] * 7 and item.ignored == 7  # "1.0" is 1.0: a crowd too
    np.testing.assert_allclose(item.xyxy[:, 0], [2 + 3 * k for k in range(7)])


def test_a_coco_file_name_differing_from_its_image_in_suffix_case_finds_it(tmp_path):
    """Before: 'DJI_0001.jpg' in the JSON beside DJI_0001.JPG on the card (a camera writes
    capitals, a labelling tool lower case) was 'image not found', although VOC found it."""
    root = tmp_path / "coco"
    _jpg(root / "images" / "DJI_0001.JPG")
    _jpg(root / "images" / "sub" / "DJI_0002.Jpg")
    data = {"images": [{"id": 1, "file_name": "DJI_0001.jpg"},
                       {"id": 2, "file_name": "sub/DJI_0002.jpg"},
                       {"id": 3, "file_name": "dji_0001.jpg"}],  # the stem's case differs
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [1, 1, 5, 5]}
                            for k in (1, 2, 3)]}
    (root / "annotations.json").write_text(json.dumps(data))
    items, skips = _collect(root)
    assert sorted(i.source.relative_to(root).as_posix() for i in items) == [
        "images/DJI_0001.JPG", "images/sub/DJI_0002.Jpg"]
    assert [s.reason for s in skips] == ["missing image"]


def test_a_polygon_only_coco_annotation_gives_its_enclosing_box(tmp_path):
    """Before: an annotation with a polygon segmentation and no bbox (some exporters leave it
    out) refused its whole image as 'no valid bbox'."""
    root = tmp_path / "coco"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        _jpg(root / "images" / name)
    data = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"},
                       {"id": 3, "file_name": "c.jpg"}, {"id": 4, "file_name": "d.jpg"}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1,
                 "segmentation": [[10, 12, 30, 12, 20, 25], [28, 20, 34, 22, 30, 26]]},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [], "segmentation": [[1, 2, 5, 2, 3, 8]]},
                {"id": 3, "image_id": 2, "category_id": 1,
                 "segmentation": {"size": [48, 64], "counts": "abc"}},  # an RLE mask: no polygon
                {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5],
                 "segmentation": [[0, 0, 60, 0, 60, 40]]},  # its bbox stands
                {"id": 5, "image_id": 3, "category_id": 1, "bbox": [0, 0, 0, 0],  # zeros written
                 "segmentation": [[40, 30, 50, 30, 45, 38]]},
                {"id": 6, "image_id": 4, "category_id": 1, "bbox": [0, 0, 0, 0],  # zeros, RLE
                 "segmentation": {"size": [48, 64], "counts": [0, 10, 100]}}]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances.json").write_text(json.dumps(data))
    items, skips = _collect(root)
    by_name = {i.source.name: i for i in items}
    np.testing.assert_allclose(by_name["a.jpg"].xyxy, [[10, 12, 34, 26], [1, 2, 5, 8]])
    np.testing.assert_allclose(by_name["c.jpg"].xyxy, [[1, 1, 6, 6], [40, 30, 50, 38]])
    assert [s.reason for s in skips] == ["bad annotation"] * 2  # d.jpg: its car not dropped
    assert "d.jpg" not in by_name and "annotation 6 has no valid bbox" in skips[1].message
    assert skips[0].message.endswith("annotation 3 has no valid bbox [x, y, w, h] (four finite "
                                     "numbers): None, and its segmentation is an RLE mask, no "
                                     "polygon")


def test_yolo_import_roboflow_yaml(yolo):
    items, skips = _collect(yolo)
    by_name = {i.source.name: i for i in items}
    assert sorted(by_name) == ["p.jpg", "r.jpg"]
    assert by_name["p.jpg"].names == ["bike"]  # BOM read, duplicate row dropped
    np.testing.assert_allclose(by_name["p.jpg"].xyxy, [[24, 12, 40, 36]])
    assert by_name["r.jpg"].names == []  # empty label file: background
    reasons = sorted(s.reason for s in skips)
    # v.jpg: a DontCare polygon alone; before, stored as showing no object
    assert reasons == ["no label file", "only ignored objects", "refused label", "unreadable image"]
    assert next(s.message for s in skips if s.reason == "only ignored objects").endswith(
        "v.txt: its only annotations are 1 ignore region(s), which are not learnt; the image is "
        "not stored as one showing no object")
    assert any("q.txt:1: class 9 exceeds" in s.message for s in skips)


def test_a_scenario_folder_or_its_tasks_yaml_imports_with_its_class_names(tmp_path, capsys):
    """Before: the built-in scenario's folder imported as class_0..class_3 (its names are only in
    its tasks.yaml), and the tasks.yaml itself was refused as "not an ultralytics data.yaml"."""
    from edgecl.data.scenario import make_scenario

    scen = tmp_path / "scen"
    make_scenario(scen, tasks=2, images_per_task=6, imgsz=64, seed=0)
    for given in (scen, scen / "tasks.yaml"):
        items, skips = _collect(given)
        assert len(items) == 12 and not skips
        assert {n for i in items for n in i.names} == {"car", "truck", "person", "bicycle"}
    out = tmp_path / "ds"
    assert main(["dataset", "import", str(scen), "--out", str(out)]) == 0
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {
        0: "car", 1: "truck", 2: "person", 3: "bicycle"}
    elsewhere = tmp_path / "elsewhere" / "split.yaml"    # a split written away from its images
    assert main(["dataset", "split-tasks", str(out), "--tasks", "car,truck;person,bicycle",
                 "--out", str(elsewhere)]) == 0
    items, skips = _collect(elsewhere)
    assert len(items) == 12 and not skips
    assert {n for i in items for n in i.names} == {"car", "truck", "person", "bicycle"}
    (scen / "tasks.yaml").write_text("names: {0: car}\ntasks: [{name: t1}]\n")  # broken
    with pytest.raises(ConfigError, match="tasks.yaml"):
        _collect(scen / "tasks.yaml")
    items, _ = _collect(scen)                   # a broken tasks.yaml beside them names nothing
    assert {n for i in items for n in i.names} <= {"class_0", "class_1", "class_2", "class_3"}


def test_unknown_format_and_missing_path(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset format"):
        iter_labelled(tmp_path, "kitti")
    with pytest.raises(ConfigError, match="no such file"):
        iter_labelled(tmp_path / "absent")
    with pytest.raises(ConfigError, match="no Pascal VOC annotations"):
        iter_labelled(tmp_path, "voc")


def test_dataset_import_writes_yolo_dataset(voc, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["dataset", "import", str(voc), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["imported"] == 2 and result["skipped"] == 3 and result["ignored_regions"] == 1
    assert result["reasons"] == {"bad annotation": 1, "missing image": 1, "unreadable image": 1}
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "Car", 1: "Person"} and data["train"] == "images"
    assert (out / "images" / "a.jpg").read_bytes() == (voc / "JPEGImages" / "a.jpg").read_bytes()
    assert (out / "labels" / "a.txt").read_text() == "0 0.312500 0.312500 0.312500 0.208333\n"
    assert main(["dataset", "import", str(voc), "--out", str(out)]) == 2  # not empty: one line
    assert "exists and is not empty" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")  # an empty FILE was called a folder that is not empty
    assert main(["dataset", "import", str(voc), "--out", str(tmp_path / "afile")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: --out {tmp_path / 'afile'} exists and is a "
                                               f"file, not a folder; name a new folder")


def test_dataset_import_coco_keeps_category_order(coco, tmp_path):
    result = write_yolo_dataset(coco / "annotations" / "instances_default.json", tmp_path / "o")
    assert result["names"] == {0: "truck", 1: "dog"} and result["imported"] == 2


def test_a_yolo_folder_naming_no_class_keeps_its_ids(tmp_path):
    """Before: ids went by first appearance: a folder whose first image showed class 3 wrote it
    as class 0 (names 0: class_3, 1: class_1), so a checkpoint or names list made for the
    original ids read car as truck."""
    src = tmp_path / "src"
    for stem, rows in (("a", "3 0.5 0.5 0.2 0.2\n"),
                       ("b", "1 0.3 0.3 0.1 0.1\n3 0.6 0.6 0.2 0.2\n"),
                       ("c", "20000 0.5 0.5 0.2 0.2\n")):  # a typo'd id: not 20,001 classes
        _jpg(src / "images" / f"{stem}.jpg")
        (src / "labels").mkdir(parents=True, exist_ok=True)
        (src / "labels" / f"{stem}.txt").write_text(rows)
    result = write_yolo_dataset(src, tmp_path / "out")
    assert result["reasons"] == {"refused label": 1}  # the label rule bounds class ids
    assert not (tmp_path / "out" / "labels" / "c.txt").exists()
    # ids 0 and 2 have no box: named all the same, as ultralytics refuses a hole in the names
    assert result["names"] == {0: "class_0", 1: "class_1", 2: "class_2", 3: "class_3"}
    assert [line.split()[0] for line in (tmp_path / "out" / "labels" / "a.txt").read_text()
            .splitlines()] == ["3"]
    assert [line.split()[0] for line in (tmp_path / "out" / "labels" / "b.txt").read_text()
            .splitlines()] == ["1", "3"]


def _flights(root: Path) -> Path:
    """18 images of 6 flights: F1/F2 show cars, F3/F5 bikes, F4/F6 people (F4_000 a car too)."""
    content = {"F1": "0", "F2": "0", "F3": "1", "F5": "1", "F4": "2", "F6": "2"}
    for f, cls in content.items():
        for k in range(3):
            _jpg(root / "images" / f"{f}_{k:03d}.jpg")
            rows = f"{cls} 0.5 0.5 0.2 0.2\n" + ("0 0.2 0.2 0.1 0.1\n" if f == "F4" and k == 0 else "")
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "labels" / f"{f}_{k:03d}.txt").write_text(rows)
    _jpg(root / "images" / "bg.jpg")
    (root / "labels" / "bg.txt").write_text("")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car, 1: Bicycle, 2: person}\n")
    return root


def test_split_tasks_first_task_wins_and_groups_stay_together(tmp_path):
    root = _flights(tmp_path / "ds")
    out = tmp_path / "cl" / "tasks.yaml"
    report = split_tasks(root, "car;bicycle;person", out, group_by=r"^(F\d)_", ratios="0.5,0,0.5", seed=3)
    assert report["unassigned"] == 1 and report["groups"] == 6
    task_set = load_tasks(out)
    assert [t.classes for t in task_set.tasks] == [(0,), (1,), (2,)]
    t1, t2, t3 = task_set.tasks
    assert {p.name for p in t1.train + t1.test} == {f"{f}_{k:03d}.jpg" for f in ("F1", "F2") for k in range(3)} | {
        "F4_000.jpg"}  # F4_000 shows a car: it goes to the first task holding its classes
    split_of = {}
    for t in task_set.tasks:
        for s in ("train", "val", "test"):
            for p in t.split(s):
                split_of.setdefault(p.name[:2], set()).add(s)
    assert all(len(s) == 1 for s in split_of.values())  # one flight, one split, across tasks
    assert split_of["F1"] != split_of["F2"] and split_of["F3"] != split_of["F5"]


def test_split_tasks_bad_input_one_line(tmp_path):
    root = _flights(tmp_path / "ds")
    with pytest.raises(ConfigError, match="unknown class 'cat'"):
        split_tasks(root, "car;cat", tmp_path / "t.yaml")
    with pytest.raises(ConfigError, match="more than one task"):
        split_tasks(root, "car;car", tmp_path / "t.yaml")
    # before: "class 'car' appears in more than one task", of a single task
    with pytest.raises(ConfigError, match="^--tasks: task 1 names class 'car' twice$"):
        split_tasks(root, "car,Car", tmp_path / "t.yaml")
    # before: an empty --group-by (an unset shell variable) split frame by frame, unsaid
    for empty in ("", " "):
        with pytest.raises(ConfigError, match=f"^--group-by '{empty}' is empty: give a regular"):
            split_tasks(root, "car", tmp_path / "t.yaml", group_by=empty)
    with pytest.raises(ConfigError, match="--ratios"):
        split_tasks(root, "car", tmp_path / "t.yaml", ratios="0.5,0.5")
    for bad in ("nan,0.1,0.2", "0.7,0.1,inf"):
        with pytest.raises(ConfigError, match="three finite numbers"):
            split_tasks(root, "car", tmp_path / "t.yaml", ratios=bad)
    with pytest.raises(ConfigError, match="--ratios: train and test must each be a share above 0"):
        split_tasks(root, "car", tmp_path / "t.yaml", ratios="1e308,0,1e-300")


def test_a_task_no_image_goes_to_says_why(tmp_path):
    """Before: "gets no train images: 0 image(s) in 0 group(s) are too few"."""
    root = _flights(tmp_path / "ds")
    for f in ("F3", "F5"):  # every bicycle rides beside a car
        for k in range(3):
            (root / "labels" / f"{f}_{k:03d}.txt").write_text("1 0.5 0.5 0.2 0.2\n0 0.2 0.2 0.1 0.1\n")
    with pytest.raises(ConfigError) as err:
        split_tasks(root, "car;Bicycle;person", tmp_path / "t.yaml")
    assert str(err.value).startswith("task t2 (Bicycle) ")
    assert str(err.value).endswith(
        "gets no images: an image goes to the first task whose classes it shows, and none shows "
        "this task's classes without a class of an earlier task (or none shows them at all)")


def test_ratios_whose_sum_overflows_are_normalised():
    # 1e308 * 3 is inf: dividing by the sum gave 0, 0, 0 and a KeyError: None in the split
    assert parse_ratios("1e308,1e308,1e308") == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert parse_ratios("1.5e308,0,1.5e308") == pytest.approx((0.5, 0.0, 0.5))
    assert parse_ratios("7,1,2") == pytest.approx((0.7, 0.1, 0.2))


def test_shares_that_miss_one_are_read_as_weights_with_a_warning(caplog):
    """0.5,0.6,0.2 (0.1 meant?) was renormalised without a word; weights such as 7,1,2 and
    shares that sum to 1 stay quiet."""
    with caplog.at_level(logging.WARNING, logger="edgecl.data.splits"):
        assert parse_ratios("7,1,2") == pytest.approx((0.7, 0.1, 0.2))
        assert parse_ratios("0.7,0.1,0.2") == pytest.approx((0.7, 0.1, 0.2))
        assert not caplog.messages
        assert parse_ratios("0.5,0.6,0.2") == pytest.approx((0.5 / 1.3, 0.6 / 1.3, 0.2 / 1.3))
    assert caplog.messages == ["--ratios 0.5,0.6,0.2 sum to 1.3, not 1: read as weights, train "
                               "0.385, val 0.462, test 0.154"]


def test_split_tasks_cli_with_huge_ratios(tmp_path, capsys):
    root = _flights(tmp_path / "ds")
    out = tmp_path / "t.yaml"
    assert main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle", "--ratios",
                 "1e308,0,1e308", "--group-by", r"^(F\d)_", "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert all(t["train"] > 0 and t["test"] > 0 for t in result["tasks"])
    with pytest.raises(ConfigError, match="not a regular expression"):
        split_tasks(root, "car", tmp_path / "t.yaml", group_by="(")
    with pytest.raises(ConfigError, match="gets no test images"):  # one group for all
        split_tasks(root, "car;bicycle", tmp_path / "t.yaml", group_by=r"^(F)")
    assert parse_task_spec("car,OTHER-vehicle;2", {0: "car", 1: "OtherVehicle", 2: "p"}) == [(0, 1), (2,)]


def test_task_names_match_in_any_script_and_unicode_form():
    """Before: every letter outside a-z was dropped, so two Chinese names were one class (the
    second matched the first) and a composed 'Café' matched no decomposed one."""
    names = {0: "行人", 1: "汽车", 2: "Cafe\u0301", 3: "car"}
    assert parse_task_spec("汽车;行人", names) == [(1,), (0,)]
    assert parse_task_spec("Caf\u00e9 , CAR", names) == [(2, 3)]
    with pytest.raises(ConfigError, match="unknown class '卡车'"):
        parse_task_spec("卡车", names)
    digits = {k: str(k + 1) for k in range(9)}  # a Roboflow export: classes "1" .. "9"
    assert parse_task_spec("9;1", digits) == [(8,), (0,)]
    with pytest.raises(ConfigError, match="unknown class '0'"):  # before: id 0, class "1"
        parse_task_spec("0;9", digits)


def test_dataset_import_writes_names_as_the_registry_stores_them(tmp_path):
    """Before: a VOC name with a decomposed accent was written as read, and 'split-tasks
    --tasks Café' (typed composed) called it unknown."""
    root = tmp_path / "voc"
    for k, name in enumerate(["Cafe\u0301", " Car ", "Caf\u00e9", "Car"]):
        _jpg(root / "JPEGImages" / f"{k}.jpg", 40 + 50 * k)
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{k}.xml").write_text(
            f"<annotation><filename>{k}.jpg</filename><object><name>{name}</name><bndbox>"
            f"<xmin>5</xmin><ymin>5</ymin><xmax>30</xmax><ymax>30</ymax></bndbox></object>"
            f"</annotation>", encoding="utf-8")
    report = write_yolo_dataset(root, tmp_path / "out")
    assert report["names"] == {0: "Caf\u00e9", 1: "Car"} and report["boxes"] == {"Caf\u00e9": 2, "Car": 2}
    assert yaml.safe_load((tmp_path / "out" / "data.yaml").read_text(encoding="utf-8"))["names"] == {
        0: "Caf\u00e9", 1: "Car"}
    split_tasks(tmp_path / "out", "Caf\u00e9;car", tmp_path / "t.yaml", ratios="0.5,0,0.5")
    assert [t.classes for t in load_tasks(tmp_path / "t.yaml").tasks] == [(0,), (1,)]


def test_a_second_split_beside_a_first_never_rewrites_the_first_ones_lists(tmp_path):
    """Every split of a folder shared tasks/: tasks_seed5.yaml rewrote tasks/t1/train.txt, and
    tasks.yaml silently pointed at the later split (images of one task in two tasks)."""
    root = _flights(tmp_path / "ds")
    first = tmp_path / "cl" / "tasks.yaml"
    split_tasks(root, "car;bicycle;person", first, group_by=r"^(F\d)_", ratios="0.5,0,0.5")
    before = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path / "cl").rglob("*.txt")}
    assert sorted(str(p) for p in before)[0] == "cl/tasks/t1/test.txt"
    second = tmp_path / "cl" / "tasks seed:5.yaml"  # a stem YAML must quote
    split_tasks(root, "car;person", second, ratios="0.5,0,0.5", seed=5)
    after = {p.relative_to(tmp_path): p.read_text() for p in (tmp_path / "cl" / "tasks").rglob("*.txt")}
    assert after == before
    assert [t.classes for t in load_tasks(first).tasks] == [(0,), (1,), (2,)]
    assert [t.classes for t in load_tasks(second).tasks] == [(0,), (2,)]
    assert (tmp_path / "cl" / "tasks seed:5" / "t2" / "train.txt").is_file()


def test_a_group_by_that_matches_no_name_is_refused_and_a_partial_one_is_said(tmp_path, capsys):
    """A regex matching nothing silently split frame by frame ('1056 group(s)', exit 0)."""
    root = _flights(tmp_path / "ds")
    out = tmp_path / "t.yaml"
    with pytest.raises(ConfigError, match=r"--group-by 'nomatch\(\\d\+\)' matches none of the 18 "
                                          r"image names a task takes \(e\.g\. F1_000\.jpg\)"):
        split_tasks(root, "car;bicycle;person", out, group_by=r"nomatch(\d+)")
    assert not out.exists()
    code = main(["dataset", "split-tasks", str(root), "--tasks", "car;bicycle;person", "--group-by",
                 r"^(F[1-4])_", "--ratios", "0.5,0,0.5", "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().err.strip() == (
        "warning: 6 image name(s) did not match --group-by '^(F[1-4])_'; each of them is its own "
        "group (split frame by frame)")


def test_split_tasks_cli_json(tmp_path, capsys):
    root = _flights(tmp_path / "ds")
    out = tmp_path / "t.yaml"
    assert main(["dataset", "split-tasks", str(root), "--tasks", "car,bicycle;person", "--ratios", "0.5,0,0.5",
                 "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [t["classes"] for t in result["tasks"]] == [["car", "Bicycle"], ["person"]]
    assert sum(t["train"] + t["val"] + t["test"] for t in result["tasks"]) == 18


def test_dataset_import_from_the_wrong_folder_level_says_where_the_dataset_is(voc, tmp_path, capsys,
                                                                            caplog):
    """One level up, or the VOC dataset's JPEGImages/: 1,074 warnings ('no label file'), then an
    error that did not say a VOC dataset was right there."""
    for src, hint in ((tmp_path, "holds Pascal VOC dataset folder(s) one level down"),
                      (voc / "JPEGImages", "looks like the image folder of a Pascal VOC dataset: "
                                           f"give the folder holding Annotations/ and JPEGImages/ ({voc})")):
        code = main(["dataset", "import", str(src), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and hint in err, err
        assert "WARNING" not in caplog.text


def _shared_stem_dataset(root: Path) -> Path:
    """y.jpg and y.png both take labels/y.txt (written for y.jpg); z.jpg has its own; labels/
    also holds gone.txt (its image deleted) and kept.txt, whose image a list leaves out."""
    _jpg(root / "images" / "y.jpg", 40)
    ok, data = cv2.imencode(".png", marked_image(root / "images" / "y.png", 200, H, W))
    (root / "images" / "y.png").write_bytes(data.tobytes())
    _jpg(root / "images" / "z.jpg", 90)
    (root / "labels").mkdir(parents=True)
    for stem in ("y", "z", "gone"):
        (root / "labels" / f"{stem}.txt").write_text("0 0.25 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car}\n")
    return root


def test_two_images_taking_one_label_file_are_skipped_and_a_label_without_image_is_said(tmp_path, capsys):
    """Before: y.png was imported with y.jpg's boxes (overlap 0) and labels/gone.txt was not
    mentioned; now both images are skipped as ambiguous and the orphan is counted."""
    root = _shared_stem_dataset(tmp_path / "ds")
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["z.jpg"]
    assert [(s.source.name, s.reason) for s in skips] == [
        ("y.jpg", "shared label file"), ("y.png", "shared label file"),
        ("gone.txt", "label without image")]
    assert skips[0].message == (f"{root / 'images' / 'y.jpg'}: its label file "
                                f"{root / 'labels' / 'y.txt'} is also that of y.png (same name, "
                                f"another suffix): whose boxes are they? Rename one image and give "
                                f"it its own label file")
    assert skips[2].message == (f"{root / 'labels' / 'gone.txt'}: a label file no image takes (no "
                                f"image named gone in {root / 'images'})")
    out = write_yolo_dataset(root, tmp_path / "out")
    assert (out["imported"], out["skipped"]) == (1, 3)
    assert out["reasons"] == {"shared label file": 2, "label without image": 1}
    # an image an image list leaves out is not an orphan's image; a names file, a README are
    # no labels
    _jpg(root / "images" / "kept.jpg", 120)
    (root / "labels" / "kept.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (root / "labels" / "classes.txt").write_text("car\n")
    (root / "labels" / "README.txt").write_text("Labels exported 2026-11-02 by the field team\n")
    (root / "train.txt").write_text("images/z.jpg\n")
    (root / "data.yaml").write_text("train: train.txt\nval: train.txt\nnames: {0: car}\n")
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["z.jpg"]
    assert [(s.source.name, s.reason) for s in skips] == [("gone.txt", "label without image")]
    # split-tasks leaves the two images out too, and a dir:// stream delivers them unlabelled
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: car}\n")
    report = split_tasks(root, "car", tmp_path / "cl" / "tasks.yaml", ratios="0.5,0,0.5")
    assert report["bad_labels"] == 2
    from edgecl.runtime.sources import open_source

    source = open_source(f"dir://{root}")
    labels = {f.name: f.labels for f in source}
    assert labels["images/y.jpg"] is None and labels["images/y.png"] is None
    assert labels["images/z.jpg"].shape == (1, 5) and source.stats.bad_labels == 2


def test_a_dataset_whose_images_folder_is_a_dangling_link_says_so(tmp_path, capsys):
    """Before: 'no images (.jpg, ...) in DS' while images/ pointed at a card not mounted; now the
    one-line error names the link and where it leads."""
    root = tmp_path / "ds"
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "images").symlink_to(tmp_path / "nocard")
    with pytest.raises(ConfigError) as caught:
        iter_labelled(root, "yolo")
    assert str(caught.value).endswith(f"{root / 'images'} is a symbolic link to {tmp_path / 'nocard'}, "
                                      f"which does not exist (unmounted?)")
    assert main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(root)]) == 2
    err = capsys.readouterr().err
    assert "symbolic link" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_labelimgs_flat_voc_folder_is_found_as_voc(tmp_path, capsys):
    """Before: labelImg's default layout (a.jpg beside a.xml, no Annotations/) was read as a
    YOLO folder: "nothing imported ... an image folder holds no labels"; with --format voc the
    skip of an xml without its image named a JPEGImages/ folder that does not exist."""
    flat = tmp_path / "flat"
    _jpg(flat / "a.jpg")
    _jpg(flat / "b.JPG", 120)
    _jpg(flat / "unlabelled.jpg", 160)
    (flat / "a.xml").write_text(_voc_xml("a.jpg", [("car", (11, 11, 31, 21))]))
    (flat / "b.xml").write_text(_voc_xml("b", [("person", (41, 1, 51, 41))]))
    (flat / "gone.xml").write_text(_voc_xml("gone.jpg", [("car", (1, 1, 9, 9))]))
    (flat / "classes.txt").write_text("car\nperson\n")
    assert detect_format(flat) == "voc"
    items, skips = _collect(flat)
    assert [(i.source.name, i.names) for i in items] == [("a.jpg", ["car"]), ("b.JPG", ["person"])]
    assert [(s.source.name, s.reason) for s in skips] == [
        ("gone.xml", "missing image"), ("unlabelled.jpg", "no annotation file")]
    assert skips[0].message == f"{flat / 'gone.xml'}: image gone.jpg not found in {flat}"
    # a YOLO folder with xml files beside (a label file, a data.yaml) stays YOLO
    (flat / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert detect_format(flat) == "yolo"
    (flat / "a.txt").unlink()
    (flat / "data.yaml").write_text("train: .\nval: .\nnames: [car]\n")
    assert detect_format(flat) == "yolo"


def test_yaml_boolean_class_names_are_named_as_ultralytics_names_them(tmp_path, caplog):
    """Before: names: [yes, no] was refused ("class 0 in 'names' needs a name, got True"),
    while ultralytics trains on it with the classes named 'True' and 'False', as a checkpoint
    trained on it names them."""
    root = tmp_path / "switch"
    _jpg(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.2 0.2 0.1 0.1\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [yes, no, 'on']\n")
    out = write_yolo_dataset(root, tmp_path / "out")
    assert out["names"] == {0: "True", 1: "False", 2: "on"}
    assert out["boxes"] == {"True": 1, "False": 1}
    warned = [r.getMessage() for r in caplog.records if "YAML booleans" in r.getMessage()]
    assert warned == [f"{root / 'data.yaml'}: 'names' holds YAML booleans (yes, no, on, off, "
                      f"true or false written without quotes): class 0 'True', 1 'False', as "
                      f"ultralytics names them; quote the words in the file to keep them"]


def test_an_image_link_to_nothing_is_one_skip_not_two(tmp_path):
    """Before: images/gone.jpg linking to nothing was skipped ("a link to nothing"), and its
    label file a second time, as "a label file no image takes (no image named gone ...)"."""
    root = tmp_path / "ds"
    _jpg(root / "images" / "a.jpg")
    (root / "images" / "gone.jpg").symlink_to(tmp_path / "card" / "gone.jpg")
    (root / "labels").mkdir()
    for stem in ("a", "gone"):
        (root / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["a.jpg"]
    assert [(s.source.name, s.reason) for s in skips] == [("gone.jpg", "not an image")]
    assert skips[0].message == (f"{root / 'images' / 'gone.jpg'} is a symbolic link to "
                                f"{tmp_path / 'card' / 'gone.jpg'}, which does not exist "
                                f"(unmounted?)")


def test_a_box_given_many_times_is_counted_once_by_labels_import(tmp_path, capsys):
    """Before: a COCO annotation repeated 400,000 times was counted as 400,000 'Car' boxes in
    'labels import''s summary, while 600 rows were stored. ('dataset import' writes them as
    convert_coco does, repeats and all.)"""
    root = tmp_path / "coco"
    _jpg(root / "images" / "a.jpg")
    annotations = [{"id": k, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}
                   for k in range(1, 51)]
    annotations += [{"id": 60, "image_id": 1, "category_id": 1, "bbox": [10, 10, 5, 5]},
                    {"id": 61, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]}]
    data = {"images": [{"id": 1, "file_name": "a.jpg"}],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}],
            "annotations": annotations}
    (root / "annotations.json").write_text(json.dumps(data))
    [item], skips = _collect(root)
    assert len(item.names) == 52 and not skips  # as written
    distinct = item.distinct()
    assert distinct.names == ["car", "car", "truck"]
    np.testing.assert_allclose(distinct.xyxy, [[1, 1, 6, 6], [10, 10, 15, 15], [1, 1, 6, 6]])
    code = main(["labels", "import", str(root), "--state-dir", str(tmp_path / "state"), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and result["boxes"] == {"car": 2, "truck": 1}


def test_an_image_with_more_boxes_than_an_answer_may_hold_is_refused_by_the_memory():
    """Before: 100,000 distinct boxes of one imported image were stored, and the next round
    took 1.2 GB; an operator's answer was already bounded at 1,000 boxes."""
    from edgecl.continual.memory.records import check_labels
    from edgecl.data.answers import MAX_BOXES

    def rows(n):
        side = np.linspace(0.01, 0.99, 40)
        grid = np.array([[0, x, y, 0.005, 0.005] for x in side for y in side], np.float32)
        return grid[:n]

    assert len(check_labels(rows(MAX_BOXES), "a.jpg")) == MAX_BOXES
    with pytest.raises(LabelError, match=f"^a.jpg: {MAX_BOXES + 1} boxes: at most {MAX_BOXES} "
                                         f"per image$"):
        check_labels(rows(MAX_BOXES + 1), "a.jpg")


def test_each_reader_names_the_classes_of_each_image_from_its_labels_alone(tmp_path):
    """What the held-out plan of an import reads before any image is decoded: per image, the
    class names its labels name (ignore classes left out, an image whose labels are refused
    absent), the same for YOLO, VOC and COCO."""
    yolo = tmp_path / "yolo"
    (yolo / "labels").mkdir(parents=True)
    for stem, rows in (("a", "0 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n"), ("b", "1 0.5 0.5 0.2 0.2\n"),
                       ("c", ""), ("d", "7 0.5 0.5 0.2 0.2\n")):
        _jpg(yolo / "images" / f"{stem}.jpg")
        (yolo / "labels" / f"{stem}.txt").write_text(rows)
    (yolo / "data.yaml").write_text("train: images\nval: images\nnames: [car, DontCare, person]\n")
    shown = iter_labelled(yolo, "yolo").image_classes()
    assert {p.name: sorted(n) for p, n in shown.items()} == {"a.jpg": ["car", "person"],
                                                             "b.jpg": [], "c.jpg": []}
    voc = tmp_path / "voc"
    (voc / "Annotations").mkdir(parents=True)
    for stem, names in (("a", ["boat", "boat", "kayak"]), ("b", [])):
        _jpg(voc / "JPEGImages" / f"{stem}.jpg")
        objects = "".join(f"<object><name>{n}</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
                          f"<xmax>20</xmax><ymax>20</ymax></bndbox></object>" for n in names)
        (voc / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{stem}.jpg</filename>{objects}</annotation>")
    shown = iter_labelled(voc, "voc").image_classes()
    assert {p.name: sorted(n) for p, n in shown.items()} == {"a.jpg": ["boat", "kayak"], "b.jpg": []}
    coco = tmp_path / "coco"
    for stem in ("a", "b"):
        _jpg(coco / "images" / f"{stem}.jpg")
    (coco / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "truck"}, {"id": 2, "name": "bus"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 9, 9]},
                        {"id": 2, "image_id": 1, "category_id": 9, "bbox": [1, 1, 9, 9]}]}))
    shown = iter_labelled(coco, "coco").image_classes()
    assert {p.name: sorted(n) for p, n in shown.items()} == {"a.jpg": ["bus"], "b.jpg": []}


def test_an_image_annotated_only_with_ignored_objects_is_skipped_not_stored_as_background(tmp_path):
    """Before: a VOC image whose only objects were difficult or DontCare, or a COCO image whose
    only annotations were ``iscrowd``, was stored as showing no object, teaching those objects
    as background."""
    voc = tmp_path / "voc"
    for stem in ("a", "b", "c"):
        _jpg(voc / "JPEGImages" / f"{stem}.jpg")
    (voc / "Annotations").mkdir()
    difficult = ("<object><name>car</name><difficult>1</difficult><bndbox><xmin>5</xmin>"
                 "<ymin>5</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>")
    (voc / "Annotations" / "a.xml").write_text(_voc_xml("a.jpg", [("DontCare", (2, 2, 9, 9))])
                                               .replace("</annotation>", difficult + "</annotation>"))
    (voc / "Annotations" / "b.xml").write_text(_voc_xml("b.jpg", [])
                                               .replace("</annotation>", difficult + "</annotation>"))
    (voc / "Annotations" / "c.xml").write_text(_voc_xml("c.jpg", []))  # no object: background
    items, skips = _collect(voc)
    assert [i.source.name for i in items] == ["c.jpg"] and items[0].names == []
    assert [(s.source.name, s.reason) for s in skips] == [("a.xml", "only ignored objects"),
                                                          ("b.xml", "only ignored objects")]
    assert skips[0].message.endswith("a.xml: its only annotations are 1 ignore region(s) and 1 "
                                     "difficult object(s), which are not learnt; the image is not "
                                     "stored as one showing no object")
    assert "its only annotations are 1 difficult object(s)," in skips[1].message
    coco = tmp_path / "coco"
    for name in ("a.jpg", "b.jpg"):
        _jpg(coco / "images" / name)
    (coco / "annotations.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 20], "iscrowd": 1},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [2, 2, 20, 20], "iscrowd": 1},
                        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [30, 2, 9, 9]}]}))
    items, skips = _collect(coco)
    assert [(i.source.name, i.names, i.ignored) for i in items] == [("b.jpg", ["person"], 1)]
    assert [s.reason for s in skips] == ["only ignored objects"]
    assert "images[0] (a.jpg): its only annotations are 1 ignore region(s)," in skips[0].message


def test_without_background_skips_images_with_no_box_and_leaves_them_out_of_the_plan(tmp_path):
    """``labels import --skip-background``: a COCO export listing frames nobody labelled."""
    from edgecl.data.importers import without_background

    coco = tmp_path / "coco"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _jpg(coco / "images" / name)
    (coco / "annotations.json").write_text(json.dumps({
        "images": [{"id": k, "file_name": f"{s}.jpg"} for k, s in enumerate("abc", 1)],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [2, 2, 20, 20]}]}))
    items = without_background(iter_labelled(coco))
    assert [p.name for p in items.image_paths] == ["b.jpg"]
    out = list(items)
    assert [(o.source.name, getattr(o, "reason", None)) for o in out] == [
        ("a.jpg", "no object"), ("b.jpg", None), ("c.jpg", "no object")]
    assert all(o.message == "" for o in out if isinstance(o, Skip))  # counted, not listed


def test_a_folder_labelled_in_both_labelimg_modes_says_which_labels_it_read(tmp_path, capsys):
    """Before: a labelImg folder holding .txt and .xml beside its images was read as YOLO
    without a word about the .xml files."""
    from edgecl.data.importers import both_formats_note

    folder = tmp_path / "li"
    for k in range(2):
        _jpg(folder / f"a{k}.jpg")
        (folder / f"a{k}.txt").write_text("0 0.5 0.5 0.3 0.3\n")
        (folder / f"a{k}.xml").write_text(_voc_xml(f"a{k}.jpg", [("dog", (5, 5, 20, 20))]))
    (folder / "classes.txt").write_text("dog\n")
    note = (f"note: {folder} holds YOLO label files and 2 Pascal VOC .xml file(s) beside its "
            f"images: read as YOLO (the .txt files); give --format voc to read the .xml files "
            f"instead")
    assert both_formats_note(folder, "auto") == note
    assert both_formats_note(folder, "yolo") == ""
    assert main(["labels", "import", "--state-dir", str(tmp_path / "s"), str(folder)]) == 0
    assert note in capsys.readouterr().err
    for k in range(2):
        (folder / f"a{k}.txt").unlink()
    assert both_formats_note(folder, "auto") == ""  # read as VOC: nothing to say
