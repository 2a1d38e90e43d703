"""Folders laid out as labelling tools export them (CVAT, Label Studio, Roboflow) import with the
right images, names, ids and coordinates (images 64 x 48 px; expectations computed by hand)."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgecl.data.convert import write_yolo_dataset
from edgecl.data.importers import ImportItem, Skip, detect_format, iter_labelled
from edgecl.data.splits import parse_task_spec
from edgecl.errors import ConfigError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/synthetic_yolo.py
from synthetic_yolo import marked_image  # noqa: E402

W, H = 64, 48


def _image(path: Path, value: int = 80, suffix: str = ".jpg") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(suffix, marked_image(path, value, H, W))
    path.write_bytes(data.tobytes())


def _collect(path, fmt="auto"):
    out = list(iter_labelled(path, fmt))
    return [i for i in out if isinstance(i, ImportItem)], [s for s in out if isinstance(s, Skip)]


def _rows(path: Path) -> list[list[float]]:
    return [[float(v) for v in line.split()] for line in path.read_text().splitlines() if line]


def _coco(images, annotations, categories) -> str:
    return json.dumps({"licenses": [], "info": {}, "categories": categories, "images": images,
                       "annotations": annotations})


CATS = [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 2, "name": "dog", "supercategory": ""}]


def test_label_studio_yolo_export_is_yolo_not_coco(tmp_path):
    # Label Studio's YOLO export writes notes.json ({"categories", "info"}: no images) beside it
    root = tmp_path / "ls"
    _image(root / "images" / "a.jpg")
    _image(root / "images" / "b.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.25 0.5 0.25 0.5\n")
    (root / "labels" / "b.txt").write_text("1 0.5 0.5 0.5 0.5\n1 0.75 0.25 0.25 0.25\n")
    (root / "classes.txt").write_text("cat\ndog\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": 0, "name": "cat"},
                                                                {"id": 1, "name": "dog"}],
                                                 "info": {"year": 2026, "version": "1.0"}}))
    assert detect_format(root) == "yolo"
    items, skips = _collect(root)
    assert not skips and [i.names for i in items] == [["cat"], ["dog", "dog"]]
    out = write_yolo_dataset(root, tmp_path / "out")
    assert out["names"] == {0: "cat", 1: "dog"} and out["imported"] == 2


def test_label_studio_yolo_export_without_classes_txt_takes_the_names_of_notes_json(tmp_path):
    """Before: classes named class_0, class_1 where notes.json names them."""
    root = tmp_path / "ls"
    _image(root / "images" / "a.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "a.txt").write_text("0 0.25 0.5 0.25 0.5\n1 0.5 0.5 0.5 0.5\n")
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": 1, "name": "dog"},
                                                                {"id": 0, "name": "cat"}],
                                                 "info": {"year": 2026}}))
    items, skips = _collect(root)
    assert not skips and [i.names for i in items] == [["cat", "dog"]]
    (root / "notes.json").write_text(json.dumps({"categories": [{"id": "zero", "name": "cat"}]}))
    with pytest.raises(ConfigError, match=r"notes.json: its categories are not all"):
        _collect(root)


def test_cvat_coco_export_finds_images_in_the_subset_folder(tmp_path):
    # CVAT "COCO 1.0": annotations/instances_default.json, images/default/<file_name>
    root = tmp_path / "cvat"
    _image(root / "images" / "default" / "j.jpg")
    _image(root / "images" / "default" / "sub" / "k.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(_coco(
        [{"id": 1, "file_name": "j.jpg", "width": W, "height": H},
         {"id": 2, "file_name": "sub/k.jpg", "width": W, "height": H}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 12, 16, 24], "iscrowd": 0,
          "segmentation": [[8, 12, 24, 12, 24, 36]], "attributes": {"occluded": False}},
         {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 32, 48], "iscrowd": 0},
         {"id": 3, "image_id": 2, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 1}], CATS))
    out = write_yolo_dataset(root, tmp_path / "out")
    assert (out["imported"], out["skipped"], out["ignored_regions"]) == (2, 0, 1)
    assert out["names"] == {0: "cat", 1: "dog"}
    assert _rows(tmp_path / "out" / "labels" / "j.txt") == [[0, 0.25, 0.5, 0.25, 0.5]]
    # the sub-folder stays in the name (a flight's or a camera's folder); "default" lays out
    assert _rows(tmp_path / "out" / "labels" / "sub_k.txt") == [[1, 0.25, 0.5, 0.5, 1.0]]


def test_cvat_rotated_rectangles_are_learnt_as_their_enclosing_upright_box(tmp_path):
    """CVAT's COCO export writes a rotated rectangle as its unrotated bbox plus
    ``attributes.rotation`` (degrees about its centre). Before: learnt upright, a 16 x 24 box
    where the object lies 24 x 16."""
    root = tmp_path / "cvat_rot"
    _image(root / "images" / "r.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(_coco(
        [{"id": 1, "file_name": "r.jpg", "width": W, "height": H}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [24, 12, 16, 24], "iscrowd": 0,
          "attributes": {"occluded": False, "rotation": 90.0}},
         {"id": 2, "image_id": 1, "category_id": 2, "bbox": [4, 4, 8, 8], "iscrowd": 0,
          "attributes": {"rotation": "45"}},
         {"id": 3, "image_id": 1, "category_id": 2, "bbox": [40, 30, 8, 8], "iscrowd": 0,
          "attributes": {"rotation": "not a number"}}], CATS))
    items, skips = _collect(root)
    assert not skips and len(items) == 1
    # 90 degrees: centre (32, 24), 24 wide and 16 tall; 45 degrees: 8 * sqrt(2) a side about
    # (8, 8); an unreadable rotation reads as none
    side = 8 * 2 ** 0.5
    expected = [[20, 16, 44, 32], [8 - side / 2, 8 - side / 2, 8 + side / 2, 8 + side / 2],
                [40, 30, 48, 38]]
    assert np.allclose(items[0].xyxy, expected, atol=1e-4)


def test_cvat_mask_shapes_are_objects_not_crowd_regions(tmp_path):
    """CVAT writes a mask shape as an RLE with iscrowd 1 beside its bbox. Before: every such
    annotation was dropped as a crowd region, and an export of masks was stored as background
    images (imported 1, boxes none, ignored regions 2). An MS-COCO crowd region (no CVAT
    attributes) stays an ignore region."""
    root = tmp_path / "cvat_masks"
    _image(root / "images" / "m.jpg")
    rle = {"counts": [8, 16, 24], "size": [H, W]}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(_coco(
        [{"id": 1, "file_name": "m.jpg", "width": W, "height": H}],
        [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [8, 12, 16, 24], "iscrowd": 1,
          "segmentation": rle, "attributes": {"occluded": False, "rotation": 0.0}},
         {"id": 2, "image_id": 1, "category_id": 1, "bbox": [32, 0, 32, 48], "iscrowd": 1,
          "segmentation": rle, "attributes": {"occluded": True, "is_crowd": "false"}},
         {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8], "iscrowd": 1,
          "segmentation": rle}], CATS))
    items, skips = _collect(root)
    assert not skips and len(items) == 1
    assert items[0].names == ["dog", "cat"] and items[0].ignored == 1
    assert items[0].xyxy.tolist() == [[8, 12, 24, 36], [32, 0, 64, 48]]
    out = write_yolo_dataset(root, tmp_path / "out")
    assert (out["imported"], out["ignored_regions"]) == (1, 1)
    assert _rows(tmp_path / "out" / "labels" / "m.txt") == [[1, 0.25, 0.5, 0.25, 0.5],
                                                            [0, 0.75, 0.5, 0.5, 1.0]]


def test_every_coco_json_of_a_folder_is_read(tmp_path):
    # CVAT with two subsets: instances_train.json and instances_val.json, images per subset
    root = tmp_path / "cvat2"
    _image(root / "images" / "train" / "a.jpg")
    _image(root / "images" / "val" / "b.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(_coco(
        [{"id": 1, "file_name": "a.jpg"}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 12, 16, 24]}], CATS[:1]))
    (root / "annotations" / "instances_val.json").write_text(_coco(
        [{"id": 1, "file_name": "b.jpg"}],
        [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [32, 0, 32, 24]}], CATS))
    items, skips = _collect(root)
    assert not skips and [(i.source.name, i.names) for i in items] == [("a.jpg", ["cat"]),
                                                                      ("b.jpg", ["dog"])]
    out = write_yolo_dataset(root, tmp_path / "out")
    assert out["names"] == {0: "cat", 1: "dog"} and out["boxes"] == {"cat": 1, "dog": 1}
    assert _rows(tmp_path / "out" / "labels" / "b.txt") == [[1, 0.75, 0.25, 0.5, 0.5]]


def test_roboflow_coco_export_with_its_project_category(tmp_path):
    # Roboflow "COCO": <split>/_annotations.coco.json beside the images; category 0 is the
    # project, the supercategory of the real classes, and no annotation uses it
    root = tmp_path / "rf"
    cats = [{"id": 0, "name": "pets", "supercategory": "none"},
            {"id": 1, "name": "cat", "supercategory": "pets"}]
    for split, stem in (("train", "a"), ("valid", "b")):
        _image(root / split / f"{stem}_jpg.rf.1.jpg")
        (root / split / "_annotations.coco.json").write_text(_coco(
            [{"id": 0, "file_name": f"{stem}_jpg.rf.1.jpg", "width": W, "height": H}],
            [{"id": 0, "image_id": 0, "category_id": 1, "bbox": [8, 12, 16, 24], "iscrowd": 0}],
            cats))
    assert detect_format(root) == "coco"
    out = write_yolo_dataset(root, tmp_path / "out")
    assert out["names"] == {0: "cat"} and out["imported"] == 2


def _voc(name: str, objects: list[tuple[str, int, tuple[float, ...]]]) -> str:
    objs = "".join(f"<object><name>{n}</name><difficult>{d}</difficult><truncated>0</truncated>"
                   f"<occluded>0</occluded><attributes><attribute><name>a</name><value>1</value>"
                   f"</attribute></attributes><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                   f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, d, b in objects)
    return f"<annotation><filename>{name}</filename>{objs}</annotation>"


def test_cvat_voc_export_in_sub_folders_and_difficult_objects(tmp_path):
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "i.jpg")
    _image(root / "JPEGImages" / "sub" / "k.jpg")
    _image(root / "JPEGImages" / "sub" / "m.jpg")
    (root / "Annotations" / "sub").mkdir(parents=True)
    (root / "Annotations" / "i.xml").write_text(_voc("i.jpg", [("cat", 1, (1, 1, 21, 31)),
                                                              ("dog", 0, (33, 1, 65, 25))]))
    (root / "Annotations" / "sub" / "k.xml").write_text(_voc("sub/k.jpg", [("cat", 0, (1, 1, 33, 49))]))
    (root / "Annotations" / "sub" / "m.xml").write_text(_voc("m.jpg", [("cat", 0, (17.5, 1, 33.5, 25))]))
    items, skips = _collect(root)
    assert not skips
    assert [(i.source.relative_to(root).as_posix(), i.names, i.ignored, i.difficult)
            for i in items] == [
        ("JPEGImages/i.jpg", ["dog"], 0, 1), ("JPEGImages/sub/k.jpg", ["cat"], 0, 0),
        ("JPEGImages/sub/m.jpg", ["cat"], 0, 0)]
    # corners with a decimal point (CVAT, through datumaro) are 0-based: read as written
    np.testing.assert_allclose(items[2].xyxy, [[17.5, 1, 33.5, 25]])
    out = write_yolo_dataset(root, tmp_path / "out")
    # a difficult object is no ignore region: counted apart (before, both were ignored_regions)
    assert (out["ignored_regions"], out["difficult_dropped"]) == (0, 1)
    assert out["boxes"] == {"dog": 1, "cat": 2}


def test_images_sharing_a_stem_keep_their_own_label_files(tmp_path):
    root = tmp_path / "clash"
    _image(root / "x.jpg")
    _image(root / "x.png", suffix=".png")
    (root / "result.json").write_text(_coco(
        [{"id": 1, "file_name": "x.jpg"}, {"id": 2, "file_name": "x.png"}],
        [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 32, 24]},
         {"id": 2, "image_id": 2, "category_id": 2, "bbox": [32, 24, 32, 24]}], CATS))
    write_yolo_dataset(root, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["x.jpg", "x_1.png"]
    assert _rows(out / "labels" / "x.txt") == [[0, 0.25, 0.25, 0.5, 0.5]]
    assert _rows(out / "labels" / "x_1.txt") == [[1, 0.75, 0.75, 0.5, 0.5]]
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["names"] == {0: "cat", 1: "dog"}


def test_cvat_yolo_export_keeps_the_ids_of_obj_names(tmp_path):
    # CVAT "YOLO 1.1": obj.names, obj.data, labels beside the images in obj_train_data/; the
    # first image in name order shows only class 1
    root = tmp_path / "cvat_yolo"
    root.mkdir()
    (root / "obj.names").write_text("cat\ndog\n")
    (root / "obj.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    data = root / "obj_train_data"
    _image(data / "a.jpg")
    _image(data / "b.jpg")
    (data / "a.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (data / "b.txt").write_text("0 0.25 0.25 0.25 0.25\n")
    (root / "train.txt").write_text("data/obj_train_data/a.jpg\ndata/obj_train_data/b.jpg\n")
    out = write_yolo_dataset(root, tmp_path / "out")
    assert out["names"] == {0: "cat", 1: "dog"}
    assert (out["imported"], out["skipped"]) == (2, 0), "obj.names and obj.data are no images"
    assert _rows(tmp_path / "out" / "labels" / "a.txt") == [[1, 0.5, 0.5, 0.25, 0.5]]


def test_task_spec_reads_a_number_as_a_class_name_first():
    # a Roboflow dataset naming its classes "1" and "2": "1" is the class named 1 (id 0)
    assert parse_task_spec("1;2", {0: "1", 1: "2"}) == [(0,), (1,)]
    assert parse_task_spec("1;0", {0: "1", 1: "0"}) == [(0,), (1,)]
    # a number no class is named is still an id
    assert parse_task_spec("car;1", {0: "car", 1: "truck"}) == [(0,), (1,)]


def test_a_voc_xml_with_a_namespace_keeps_its_objects(tmp_path):
    """Before: <annotation xmlns="..."> put every element in the namespace; no <object> was
    found, and each image was imported as background (a human-verified "nothing here")."""
    root = tmp_path / "ns"
    _image(root / "JPEGImages" / "a.jpg")
    (root / "Annotations").mkdir(parents=True)
    xml = _voc("a.jpg", [("cat", 0, (1, 1, 21, 31)), ("dog", 0, (33, 1, 65, 25))])
    (root / "Annotations" / "a.xml").write_text(
        xml.replace("<annotation>", '<annotation xmlns="http://example.org/voc">'))
    items, skips = _collect(root)
    assert not skips and items[0].names == ["cat", "dog"]
    np.testing.assert_allclose(items[0].xyxy, [[0, 0, 20, 30], [32, 0, 64, 24]])


def test_coco_categories_that_are_one_class_are_refused(tmp_path):
    """Before: 'Car' (id 1) and 'car' (id 9) were written as two classes by dataset import,
    and labels import reported both added while storing one."""
    import pytest

    from edgecl.errors import ConfigError

    root = tmp_path / "case"
    _image(root / "a.jpg")
    for cats, why in (([{"id": 1, "name": "Car"}, {"id": 9, "name": "car"}],
                       "class names 'Car' (id 1) and 'car' (id 9) differ only in case or "
                       "separators, so an import takes them for one class; each class needs its "
                       "own name"),
                      ([{"id": 1, "name": "Car"}, {"id": "9", "name": "Car"}],
                       "class name 'Car' is given to ids 1 and 9; each class needs its own name")):
        (root / "result.json").write_text(_coco(
            [{"id": 1, "file_name": "a.jpg", "width": W, "height": H}],
            [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 8, 8]}], cats))
        with pytest.raises(ConfigError) as err:
            write_yolo_dataset(root, tmp_path / "out")
        assert str(err.value) == f"{(root / 'result.json').resolve()}: {why}"


def test_dataset_import_keeps_the_folders_that_name_a_flight(tmp_path):
    """Before: images/flight01/frame_000000.jpg and images/flight02/frame_000000.jpg came out
    as frame_000000.jpg and frame_000000_1.jpg: the flight was lost, and no --group-by could
    keep one flight in one split."""
    from edgecl.data.convert import output_stem

    root = tmp_path / "flights"
    for flight in ("flight01", "flight02"):
        _image(root / "images" / flight / "frame_000000.jpg")
        (root / "labels" / flight).mkdir(parents=True)
        (root / "labels" / flight / "frame_000000.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: cat}\n")
    write_yolo_dataset(root, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "flight01_frame_000000.jpg", "flight02_frame_000000.jpg"]
    assert output_stem(root / "train" / "images" / "x.jpg", root) == "x"  # layout folders only
    assert output_stem(root / "JPEGImages" / "day 2" / "x.jpg", root) == "day 2_x"
    assert output_stem(tmp_path / "elsewhere" / "x.jpg", root) == "x"


def test_a_group_by_for_folders_is_told_to_import_first(tmp_path):
    """A --group-by written for the flights' folders matches no file name: the refusal says
    that file names are matched and how to get the folders into them."""
    import pytest

    from edgecl.data.splits import split_tasks
    from edgecl.errors import ConfigError

    root = tmp_path / "flights"
    for flight in ("flight01", "flight02", "flight03"):
        for k in range(2):
            _image(root / "images" / flight / f"frame_{k}.jpg")
            (root / "labels" / flight).mkdir(parents=True, exist_ok=True)
            (root / "labels" / flight / f"frame_{k}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text("train: images\nval: images\nnames: {0: cat}\n")
    with pytest.raises(ConfigError, match=r"lie in 3 folders: 'edgecl dataset import' writes each "
                                          r"image's folders into its name"):
        split_tasks(root, "cat", tmp_path / "tasks.yaml", group_by=r"^(flight\d+)")
    write_yolo_dataset(root, tmp_path / "out")
    result = split_tasks(tmp_path / "out", "cat", tmp_path / "tasks.yaml", group_by=r"^(flight\d+)",
                         ratios="0.34,0.33,0.33")
    assert (result["groups"], result["ungrouped"]) == (3, 0)


def test_an_export_still_in_its_zip_is_told_to_be_unpacked(tmp_path):
    import zipfile

    import pytest

    from edgecl.errors import ConfigError

    packed = tmp_path / "task_1-coco.zip"
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("annotations/instances_default.json", "{}")
    renamed = tmp_path / "export.json"
    renamed.write_bytes(packed.read_bytes())
    for path, fmt, kind in ((packed, "auto", ".zip"), (packed, "coco", ".zip"),
                            (renamed, "auto", "zip")):
        with pytest.raises(ConfigError) as err:
            write_yolo_dataset(path, tmp_path / "out", fmt)
        assert str(err.value) == (f"{path} is an archive ({kind}): unpack it first (e.g. unzip "
                                  f"'{path}' -d FOLDER) and give the folder")
    tarred = tmp_path / "voc1.tar.gz"
    tarred.write_bytes(b"\x1f\x8b")
    with pytest.raises(ConfigError) as err:
        write_yolo_dataset(tarred, tmp_path / "out")
    assert "unpack it first (e.g. mkdir FOLDER && tar -xf" in str(err.value), "unzip reads no tar"


def test_long_folder_names_are_cut_and_kept_apart():
    """Before: folders of 200 characters (or 100 accented ones) made a file name over the 255
    bytes a name may hold, and the whole import failed ('File name too long')."""
    from edgecl.data.convert import MAX_STEM_BYTES, output_stem

    root = Path("/data")
    deep = root / "images" / ("d" * 200) / ("e" * 200) / "f.jpg"
    accented = root / "images" / ("é" * 100) / ("ü" * 100 + ".jpg")
    other = root / "images" / ("d" * 200) / ("e" * 199 + "x") / "f.jpg"
    stems = [output_stem(p, root) for p in (deep, accented, other)]
    assert all(len(s.encode()) <= MAX_STEM_BYTES for s in stems)
    assert stems[0].endswith("_f") and stems[0].startswith("ddd") and stems[0] != stems[2]
    assert stems[1].endswith("ü" * 45)


def test_a_coco_json_given_itself_keeps_the_image_folders(tmp_path):
    root = tmp_path / "coco"
    for flight in ("flight01", "flight02"):
        _image(root / "images" / flight / "frame_1.jpg")
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_default.json").write_text(_coco(
        [{"id": k, "file_name": f"flight0{k}/frame_1.jpg", "width": W, "height": H}
         for k in (1, 2)],
        [{"id": k, "image_id": k, "category_id": 1, "bbox": [0, 0, 8, 8]} for k in (1, 2)], CATS))
    write_yolo_dataset(root / "annotations" / "instances_default.json", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == [
        "flight01_frame_1.jpg", "flight02_frame_1.jpg"]


def test_label_studios_own_json_export_is_told_to_be_exported_as_coco(tmp_path):
    """Before: "not a COCO file (no 'images' list)", with no word of what to give instead."""
    native = tmp_path / "project-1-at-2026-12-01.json"
    native.write_text(json.dumps([{"id": 1, "annotations": [{"id": 1, "result": []}],
                                   "data": {"image": "/data/upload/1/ab12cd-frame.jpg"}}]))
    with pytest.raises(ConfigError) as err:
        iter_labelled(native, "coco")
    assert str(err.value) == (f"{native}: not a COCO file (no 'images' list); this is Label "
                              f"Studio's own JSON export: export the project as COCO or YOLO "
                              f"instead")

