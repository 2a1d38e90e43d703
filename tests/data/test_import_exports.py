"""Exports as CVAT, Label Studio and Roboflow write them, and the bad inputs found in them, through
``edgecl dataset import`` and ``edgecl labels import`` (expected rows computed by hand; images
64 x 48 px unless said otherwise)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgecl.cli import main
from edgecl.config import MemoryConfig
from edgecl.continual.memory import ReplayMemory
from edgecl.data.convert import write_yolo_dataset
from edgecl.data.importers import ImportItem, Skip, iter_labelled
from edgecl.errors import ConfigError
from edgecl.models.classes import ClassRegistry

W, H = 64, 48


def _image(path: Path, w: int = W, h: int = H, kind: str = "color", value: int = 0) -> None:
    """Write an image: ``color`` (8-bit BGR), ``gray`` (8-bit, one channel) or ``16`` (16-bit
    BGR PNG); ``value`` makes the pixels (and so the file's content hash) of each one its own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    if kind == "16":
        pixels = rng.integers(0, 65535, (h, w, 3), dtype=np.uint16)
    else:
        pixels = rng.integers(0, 255, (h, w) if kind == "gray" else (h, w, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), pixels)


def _collect(path, fmt="auto"):
    out = list(iter_labelled(path, fmt))
    return [i for i in out if isinstance(i, ImportItem)], [s for s in out if isinstance(s, Skip)]


def _cli_json(capsys, argv) -> dict:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return json.loads(out.strip().splitlines()[-1])


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def _memory_rows(state: Path) -> dict[str, list[list[float]]]:
    """Image file name -> its stored YOLO rows (class ids of the device's registry)."""
    with ReplayMemory(state / "memory", MemoryConfig()) as memory:
        return {Path(s.source).name: np.round(s.labels.astype(np.float64), 6).tolist()
                for s in memory.get(memory.ids())}


def _cvat_coco_image(i: int, file_name: str, w: int = W, h: int = H) -> dict:
    return {"id": i, "width": w, "height": h, "file_name": file_name, "license": 0, "flickr_url": "",
            "coco_url": "", "date_captured": 0}


def _cvat_coco_ann(i: int, image_id: int, category_id: int, bbox: list, **extra) -> dict:
    return {"id": i, "image_id": image_id, "category_id": category_id, "segmentation": [],
            "area": bbox[2] * bbox[3], "bbox": bbox, "iscrowd": 0,
            "attributes": {"occluded": False, "rotation": 0.0}, **extra}


def _write_coco(path: Path, images: list, annotations: list, categories: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"licenses": [{"name": "", "id": 0, "url": ""}], "info": {},
                                "categories": categories, "images": images, "annotations": annotations}))
    return path


CVAT_CATS = [{"id": 1, "name": "car", "supercategory": ""}, {"id": 2, "name": "person", "supercategory": ""},
             {"id": 3, "name": "unused", "supercategory": ""}]


def _voc_object(name: str, box: tuple, difficult: int = 0) -> str:
    b = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return (f"<object><name>{name}</name><pose>Unspecified</pose><truncated>1</truncated>"
            f"<difficult>{difficult}</difficult><occluded>0</occluded><bndbox>{b}</bndbox></object>")


def _voc_xml(path: Path, filename: str, size: tuple | None, objects: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sz = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    path.write_text(f"<annotation><folder></folder><filename>{filename}</filename>{sz}"
                    f"<segmented>0</segmented>{''.join(objects)}</annotation>")


# --- the exports, end to end -------------------------------------------------------------------

def test_cvat_coco_export_with_polygons_crowd_masks_and_an_unannotated_frame(tmp_path, capsys):
    src = tmp_path / "cvat"
    _image(src / "images" / "frame_000000.jpg", value=1)
    _image(src / "images" / "frame_000001.png", 80, 60, "gray", value=2)
    _image(src / "images" / "frame_000002.jpg", value=3)
    _image(src / "images" / "frame_000003.png", 40, 40, "16", value=4)
    crowd = {"counts": [610, 20, 40, 20], "size": [60, 80]}
    _write_coco(src / "annotations" / "instances_default.json",
                [_cvat_coco_image(1, "frame_000000.jpg"), _cvat_coco_image(2, "frame_000001.png", 80, 60),
                 _cvat_coco_image(3, "frame_000002.jpg"), _cvat_coco_image(4, "frame_000003.png", 40, 40)],
                [_cvat_coco_ann(1, 1, 1, [10.0, 8.0, 20.0, 16.0],
                                segmentation=[[10.0, 8.0, 30.0, 8.0, 30.0, 24.0, 10.0, 24.0]]),
                 _cvat_coco_ann(2, 1, 2, [40.5, 4.25, 10.0, 30.0]),
                 _cvat_coco_ann(3, 2, 1, [0.0, 0.0, 80.0, 60.0]),
                 # a mask shape (CVAT writes it with iscrowd 1): an object
                 _cvat_coco_ann(4, 2, 2, [10.0, 10.0, 20.0, 20.0], iscrowd=1, segmentation=crowd),
                 # a shape marked with CVAT's is_crowd attribute: a crowd region
                 _cvat_coco_ann(6, 2, 2, [40.0, 10.0, 20.0, 20.0], iscrowd=1, segmentation=crowd,
                                attributes={"occluded": False, "is_crowd": True}),
                 _cvat_coco_ann(5, 4, 3, [4.0, 4.0, 8.0, 8.0])], CVAT_CATS)
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(src), "--out", str(out), "--json"])
    assert (result["imported"], result["skipped"], result["ignored_regions"]) == (4, 0, 1)
    assert result["boxes"] == {"car": 2, "person": 2, "unused": 1}
    assert result["names"] == {"0": "car", "1": "person", "2": "unused"}  # category ids 1.. -> 0..
    # car (10+10)/64, (8+8)/48, 20/64, 16/48; person (40.5+5)/64, (4.25+15)/48, 10/64, 30/48
    assert (out / "labels" / "frame_000000.txt").read_text() == ("0 0.312500 0.333333 0.312500 0.333333\n"
                                                                 "1 0.710938 0.401042 0.156250 0.625000\n")
    assert (out / "labels" / "frame_000001.txt").read_text() == ("0 0.500000 0.500000 1.000000 1.000000\n"
                                                                 "1 0.250000 0.333333 0.250000 0.333333\n")
    assert (out / "labels" / "frame_000002.txt").read_text() == ""  # no annotations: background
    assert (out / "labels" / "frame_000003.txt").read_text() == "2 0.200000 0.200000 0.200000 0.200000\n"
    state = tmp_path / "state"
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(state), str(src), "--json"])
    assert (result["imported"], result["skipped"], result["ignored_regions"]) == (4, 0, 1)
    assert result["classes_added"] == ["car", "person", "unused"]
    assert _memory_rows(state)["frame_000003.png"] == [[2, 0.2, 0.2, 0.2, 0.2]]


def test_label_studio_coco_export_with_path_prefixes(tmp_path, capsys):
    src = tmp_path / "ls"
    _image(src / "images" / "abc123-frame.jpg", value=1)
    _image(src / "images" / "xyz.jpg", value=2)
    _image(src / "images" / "3f2a-gray.png", 50, 50, "gray", value=3)
    ann = [{"id": k, "image_id": k, "category_id": c, "segmentation": [], "bbox": b, "ignore": 0,
            "iscrowd": 0, "area": b[2] * b[3]}
           for k, c, b in ((0, 0, [6.4, 4.8, 12.8, 9.6]), (1, 1, [32, 24, 32, 24]), (2, 0, [25, 0, 25, 50]))]
    (src / "result.json").write_text(json.dumps({
        "images": [{"width": W, "height": H, "id": 0, "file_name": "images/abc123-frame.jpg"},
                   {"width": W, "height": H, "id": 1, "file_name": "../../data/upload/1/xyz.jpg"},
                   {"width": 50, "height": 50, "id": 2, "file_name": "\\data\\upload\\1\\3f2a-gray.png"}],
        "categories": [{"id": 0, "name": "Car"}, {"id": 1, "name": "Person"}], "annotations": ann,
        "info": {"contributor": "Label Studio"}}))
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(src), "--out", str(out), "--json"])
    assert (result["imported"], result["skipped"], result["boxes"]) == (3, 0, {"Car": 2, "Person": 1})
    assert (out / "labels" / "abc123-frame.txt").read_text() == "0 0.200000 0.200000 0.200000 0.200000\n"
    assert (out / "labels" / "xyz.txt").read_text() == "1 0.750000 0.750000 0.500000 0.500000\n"
    assert (out / "labels" / "3f2a-gray.txt").read_text() == "0 0.750000 0.500000 0.500000 1.000000\n"


def test_roboflow_yolo_export_with_polygon_rows(tmp_path, capsys):
    src = tmp_path / "rf"
    (src / "data.yaml").parent.mkdir(parents=True)
    (src / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n\n"
                                   "nc: 2\nnames:\n  0: car\n  1: person\n\nroboflow:\n  workspace: ws\n"
                                   "  project: proj\n  version: 1\n")
    rows = {("train", "s1_jpg.rf.e", "color", W, H): "0 0.1 0.1 0.4 0.1 0.4 0.5 0.1 0.5\n"
                                                     "1 0.5 0.5 0.9 0.6 0.7 0.95\n",
            ("train", "s2_png.rf.f", "16", 40, 40): "0 0.2 0.2 0.6 0.2 0.6 0.6 0.2 0.6 0.2 0.4\n"
                                                    "1 0.5 0.5 0.2 0.2\n",
            ("valid", "s3_jpg.rf.g", "color", W, H): "1 0.25 0.25 0.75 0.25 0.75 0.75\n",
            ("test", "s4_jpg.rf.h", "color", W, H): ""}
    for k, ((split, stem, kind, w, h), text) in enumerate(rows.items()):
        _image(src / split / "images" / f"{stem}{'.png' if kind == '16' else '.jpg'}", w, h, kind, value=k)
        (src / split / "labels").mkdir(parents=True, exist_ok=True)
        (src / split / "labels" / f"{stem}.txt").write_text(text)
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(src), "--out", str(out), "--json"])
    assert (result["imported"], result["skipped"], result["boxes"]) == (4, 0, {"car": 2, "person": 3})
    # polygons -> enclosing boxes (ultralytics segments2boxes): x 0.1..0.4, y 0.1..0.5 -> 0.25 0.3 0.3 0.4
    assert (out / "labels" / "s1_jpg.rf.e.txt").read_text() == ("0 0.250000 0.300000 0.300000 0.400000\n"
                                                                "1 0.700000 0.725000 0.400000 0.450000\n")
    assert (out / "labels" / "s2_png.rf.f.txt").read_text() == ("0 0.400000 0.400000 0.400000 0.400000\n"
                                                                "1 0.500000 0.500000 0.200000 0.200000\n")
    assert (out / "labels" / "s3_jpg.rf.g.txt").read_text() == "1 0.500000 0.500000 0.500000 0.500000\n"


# --- faults found in such exports --------------------------------------------------------------

def _cvat_voc(root: Path) -> Path:
    """CVAT's Pascal VOC: float corners, difficult/truncated/occluded, ``Car`` beside ``car``, a
    box partly outside, a ``<filename>`` other than the xml's stem, PNGs in JPEGImages/, no <size>."""
    _image(root / "JPEGImages" / "0001.png", value=1)
    _image(root / "JPEGImages" / "frame_0002.png", 80, 60, value=2)
    _image(root / "JPEGImages" / "0003.png", 40, 30, "gray", value=3)
    _voc_xml(root / "Annotations" / "0001.xml", "0001.png", (W, H),
             [_voc_object("car", (12.5, 10.5, 32.5, 30.5)), _voc_object("Traffic Light", (40, 5, 50, 20)),
              _voc_object("person", (1, 1, 10, 10), difficult=1)])
    _voc_xml(root / "Annotations" / "0002.xml", "frame_0002.png", (80, 60),
             [_voc_object("Car", (70, 50, 90, 70))])
    _voc_xml(root / "Annotations" / "0003.xml", "0003.png", None,
             [_voc_object("traffic_light", (1, 1, 20, 15))])
    return root


def test_dataset_import_makes_names_differing_only_in_case_one_class_as_labels_import_does(tmp_path, capsys):
    src = _cvat_voc(tmp_path / "voc")
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(src), "--out", str(out), "--json"])
    assert (result["imported"], result["skipped"], result["ignored_regions"],
            result["difficult_dropped"]) == (3, 0, 0, 1)
    assert result["names"] == {"0": "car", "1": "Traffic Light"}  # before: Car and traffic_light apart
    assert result["classes_matched"] == {"Car": "car", "traffic_light": "Traffic Light"}
    # counted per class as data.yaml names it (before: {"car": 1, "Car": 1, ...} apart)
    assert result["boxes"] == {"car": 2, "Traffic Light": 2}
    assert yaml.safe_load((out / "data.yaml").read_text())["names"] == {0: "car", 1: "Traffic Light"}
    # corners written with a decimal point (CVAT) are 0-based, the file's every box as written:
    # (12.5, 10.5, 32.5, 30.5) -> 22.5/64 20.5/48 20/64 20/48; (40, 5, 50, 20) -> 45/64 12.5/48
    # (before, 1 was subtracted as from the original VOC's whole 1-based pixels: 1 px off)
    assert (out / "labels" / "0001.txt").read_text() == ("0 0.351562 0.427083 0.312500 0.416667\n"
                                                         "1 0.703125 0.260417 0.156250 0.312500\n")
    # (69, 49, 89, 69) clipped to the 80x60 image: (69, 49, 80, 60)
    assert (out / "labels" / "frame_0002.txt").read_text() == "0 0.931250 0.908333 0.137500 0.183333\n"
    # no <size>: the decoded 40x30; (0, 0, 19, 14)
    assert (out / "labels" / "0003.txt").read_text() == "1 0.237500 0.233333 0.475000 0.466667\n"
    state = tmp_path / "state"
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(state), str(src), "--json"])
    assert (result["ignored_regions"], result["difficult_dropped"]) == (0, 1)
    assert result["classes_added"] == ["car", "Traffic Light"]  # the same classes both ways
    assert ClassRegistry(state).names() == {0: "car", 1: "Traffic Light"}


def test_dataset_import_keeps_names_of_other_scripts_apart(tmp_path):
    src = tmp_path / "coco"
    _image(src / "images" / "a.jpg", value=1)
    cats = [{"id": 1, "name": "汽车"}, {"id": 2, "name": "Äuto"}]
    _write_coco(src / "result.json", [_cvat_coco_image(1, "a.jpg")],
                [_cvat_coco_ann(1, 1, 1, [0, 0, 8, 8]), _cvat_coco_ann(2, 1, 2, [8, 8, 8, 8])], cats)
    result = write_yolo_dataset(src, tmp_path / "out")
    assert result["names"] == {0: "汽车", 1: "Äuto"} and result["classes_matched"] == {}


def _nasty_coco(root: Path, second_size: tuple[int, int] = (W, H)) -> Path:
    for k, name in enumerate("abcd"):
        _image(root / "images" / f"{name}.jpg", value=k)
    return _write_coco(
        root / "annotations" / "instances_default.json",
        [_cvat_coco_image(1, "a.jpg"), _cvat_coco_image(2, "a.jpg", *second_size),
         _cvat_coco_image(3, "b.jpg"), _cvat_coco_image(4, "c.jpg"), _cvat_coco_image(5, "d.jpg")],
        [_cvat_coco_ann(1, 1, 1, [1, 1, 10, 10]), _cvat_coco_ann(2, 2, 2, [20, 20, 10, 10]),
         _cvat_coco_ann(3, 3, 1, [10, 10, 0, 5]),  # zero width
         _cvat_coco_ann(4, 3, 2, [30, 10, 10, 10]),
         _cvat_coco_ann(5, 4, 1, [-5, 10, 20, 10]),  # negative x: clipped to (0, 10, 15, 20)
         _cvat_coco_ann(6, 99, 1, [1, 1, 5, 5]),  # no image 99
         _cvat_coco_ann(7, 5, 2, [16, 12, 32, 24]),
         _cvat_coco_ann(8, 1, 1, [1, 1, 10, 10])],  # the same car again under images[0]: kept as is
        CVAT_CATS)


def test_coco_annotation_of_an_image_id_no_image_has_is_counted(tmp_path, capsys):
    json_path = _nasty_coco(tmp_path / "coco")
    items, skips = _collect(json_path)
    orphan = [s for s in skips if "image_id 99" in s.message]
    assert [s.reason for s in orphan] == ["bad annotation"]  # before: dropped without a word
    assert orphan[0].message == (f"{json_path}: annotations[5] (id 6) belongs to image_id 99, which no "
                                 f"image of the file has")
    state = tmp_path / "state"
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(state), str(json_path), "--json"])
    # said, and counted apart: it is no file (before: counted as a skipped file, so that
    # imported + skipped exceeded the images the file lists); b.jpg's zero-width box is
    # dropped and counted, b.jpg kept with its other box
    assert result["reasons"] == {} and result["annotations_skipped"] == 1
    assert result["empty_boxes"] == 1 and result["imported"] == 4


def test_coco_image_file_listed_twice_gets_the_boxes_of_both_entries(tmp_path, capsys):
    root = tmp_path / "coco"
    _nasty_coco(root)
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    # b.jpg: its zero-width car (ann 3) dropped, its person (ann 4) kept (before: b.jpg refused)
    b = items.pop(1)
    assert b.names == ["person"] and b.empty == 1
    np.testing.assert_allclose(b.xyxy, [[30, 10, 40, 20]])
    # images[0] and images[1] are one file: car (1,1,11,11) twice under images[0] (kept as written)
    # and person (20,20,30,30) from images[1], as convert_coco appends both to one label file
    assert items[0].names == ["car", "car", "person"]
    np.testing.assert_allclose(items[0].xyxy, [[1, 1, 11, 11], [1, 1, 11, 11], [20, 20, 30, 30]])
    np.testing.assert_allclose(items[1].xyxy, [[0, 10, 15, 20]])
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(root), "--out", str(out), "--json"])
    assert (result["imported"], result["skipped"], result["annotations_skipped"]) == (4, 0, 1)
    assert result["reasons"] == {} and result["empty_boxes"] == 1
    assert result["boxes"] == {"car": 3, "person": 3}
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]  # no a_1.jpg
    assert (out / "labels" / "a.txt").read_text() == ("0 0.093750 0.125000 0.156250 0.208333\n"
                                                      "0 0.093750 0.125000 0.156250 0.208333\n"
                                                      "1 0.390625 0.520833 0.156250 0.208333\n")
    assert (out / "labels" / "c.txt").read_text() == "0 0.117188 0.312500 0.234375 0.208333\n"
    state = tmp_path / "state"
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(state), str(root), "--json"])
    assert result["imported"] == 4 and "already in memory" not in result["reasons"]  # before: a.jpg twice
    # a.jpg's car given twice is stored once, and counted as stored (dataset import: as written)
    assert result["boxes"] == {"car": 2, "person": 3}
    assert _memory_rows(state)["d.jpg"] == [[1, 0.5, 0.5, 0.5, 0.5]]


def test_coco_annotation_listed_under_both_entries_of_a_file_counts_once(tmp_path):
    _image(tmp_path / "a.jpg")
    json_path = _write_coco(tmp_path / "c.json", [_cvat_coco_image(1, "a.jpg"), _cvat_coco_image(2, "a.jpg")],
                            [_cvat_coco_ann(1, 1, 1, [1, 1, 10, 10]), _cvat_coco_ann(2, 2, 1, [1, 1, 10, 10]),
                             _cvat_coco_ann(3, 2, 2, [20, 20, 10, 10])], CVAT_CATS)
    (item,), skips = _collect(json_path)
    assert not skips and item.names == ["car", "person"]


def test_coco_image_file_listed_twice_with_different_sizes_is_skipped(tmp_path):
    root = tmp_path / "coco"
    _nasty_coco(root, second_size=(128, 96))
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["b.jpg", "c.jpg", "d.jpg"]
    dup = [s for s in skips if s.reason == "duplicate image"]
    assert len(dup) == 2 and "listed 2 times (images[0], images[1]) with different sizes (128x96, 64x48)" in \
        dup[0].message


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_a_box_written_with_no_width_is_dropped_and_its_image_kept(tmp_path, fmt):
    """A click without a drag (COCO ``w`` 0, VOC ``xmin == xmax``): before, the whole image was
    refused as a ``bad box``, its good boxes with it; ultralytics trains the image without it."""
    if fmt == "coco":
        _nasty_coco(tmp_path)
        kept, names, xyxy = "b.jpg", ["person"], [[30, 10, 40, 20]]
    else:
        _image(tmp_path / "JPEGImages" / "b.png")
        _voc_xml(tmp_path / "Annotations" / "b.xml", "b.png", (W, H),
                 [_voc_object("car", (30, 5, 40, 20)), _voc_object("car", (12.5, 10, 12.5, 15))])
        kept, names, xyxy = "b.png", ["car"], [[30, 5, 40, 20]]  # decimals: 0-based corners
    items, skips = _collect(tmp_path, fmt)
    assert not [s for s in skips if s.reason == "bad box"]
    (item,) = [i for i in items if i.source.name == kept]
    assert item.names == names and item.empty == 1
    np.testing.assert_allclose(item.xyxy, xyxy)


def test_a_voc_box_written_under_a_pixel_is_dropped_but_one_outside_refuses_its_image(tmp_path):
    """Half a pixel wide as drawn: a click, dropped and counted (as a YOLO row or a dir://
    stream). A 10-pixel box lying wholly outside the image: a wrong annotation, refused."""
    _image(tmp_path / "JPEGImages" / "b.png")
    _voc_xml(tmp_path / "Annotations" / "b.xml", "b.png", (W, H),
             [_voc_object("car", (30, 5, 40, 20)), _voc_object("car", (12.5, 10, 13.0, 15))])
    _image(tmp_path / "JPEGImages" / "c.png")
    _voc_xml(tmp_path / "Annotations" / "c.xml", "c.png", (W, H),
             [_voc_object("car", (30, 5, 40, 20)), _voc_object("car", (W + 5, 10, W + 15, 15))])
    items, skips = _collect(tmp_path, "voc")
    (item,) = items
    assert item.source.name == "b.png" and item.names == ["car"] and item.empty == 1
    (bad,) = skips
    assert bad.reason == "bad box" and "object 2 <bndbox>" in bad.message and "no area" in bad.message


def test_a_box_drawn_under_a_pixel_on_a_larger_declared_image_is_dropped(tmp_path):
    """Half a pixel wide on the 1600x1280 image it was drawn on (the image file is 64x48): a
    click, dropped as on an image of the declared size. Before, it refused the whole image."""
    _image(tmp_path / "JPEGImages" / "b.png")
    _voc_xml(tmp_path / "Annotations" / "b.xml", "b.png", (W * 25, H * 25),
             [_voc_object("car", (200.0, 200.0, 600.0, 600.0)),
              _voc_object("car", (800.0, 800.0, 800.5, 1000.0))])
    (item,), skips = _collect(tmp_path, "voc")
    assert not skips and item.names == ["car"] and item.empty == 1
    np.testing.assert_allclose(item.xyxy, [[8, 8, 24, 24]])


def test_an_inverted_voc_box_is_named_as_the_file_writes_it(tmp_path):
    _image(tmp_path / "JPEGImages" / "b.png")
    _voc_xml(tmp_path / "Annotations" / "b.xml", "b.png", (W, H),
             [_voc_object("car", (30, 5, 40, 20)), _voc_object("car", (14.5, 10, 12.5, 15))])
    _, skips = _collect(tmp_path, "voc")
    (bad,) = [s for s in skips if s.reason == "bad box"]
    # before: the 0-based corners, "box [13.5, 9.0, 11.5, 14.0]"
    assert "object 2 <bndbox> xmin 14.5 ymin 10 xmax 12.5 ymax 15 (car) has its corners swapped" in (
        bad.message)


@pytest.mark.parametrize("filename", ["frame_7", "frame_7.jpg"])
def test_voc_filename_without_or_with_another_suffix_finds_the_image(tmp_path, filename):
    _image(tmp_path / "JPEGImages" / "frame_7.png")
    _voc_xml(tmp_path / "Annotations" / "7.xml", filename, (W, H), [_voc_object("car", (1, 1, 33, 25))])
    (item,), skips = _collect(tmp_path)
    assert not skips and item.source.name == "frame_7.png"
    np.testing.assert_allclose(item.yolo_labels({"car": 0}), [[0, 0.25, 0.25, 0.5, 0.5]])


def test_a_wrong_format_says_which_format_the_dataset_looks_like(tmp_path, capsys):
    coco = tmp_path / "coco"
    _nasty_coco(coco)
    voc = _cvat_voc(tmp_path / "voc")
    yolo = tmp_path / "yolo"
    _image(yolo / "images" / "a.jpg")
    (yolo / "labels").mkdir()
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (yolo / "data.yaml").write_text("train: images\nval: images\nnames: [car]\n")
    err = _cli_error(capsys, ["dataset", "import", str(coco), "--out", str(tmp_path / "o1"),
                              "--format", "voc"])
    assert err.endswith(f"; {coco} looks like a COCO dataset: give --format coco (or leave --format out)")
    json_path = coco / "annotations" / "instances_default.json"
    err = _cli_error(capsys, ["dataset", "import", str(json_path), "--out", str(tmp_path / "o2"),
                              "--format", "voc"])
    assert "is a file, not a Pascal VOC dataset" in err and "looks like a COCO dataset" in err
    err = _cli_error(capsys, ["dataset", "import", str(voc), "--out", str(tmp_path / "o3"),
                              "--format", "yolo"])
    assert "no label file" in err and err.endswith("looks like a Pascal VOC dataset: give --format voc "
                                                   "(or leave --format out)")
    err = _cli_error(capsys, ["dataset", "import", str(yolo / "data.yaml"), "--out", str(tmp_path / "o4"),
                              "--format", "coco"])
    assert err.endswith("looks like an ultralytics YOLO dataset: give --format yolo (or leave --format out)")
    err = _cli_error(capsys, ["dataset", "import", str(voc / "Annotations" / "0001.xml"), "--out",
                              str(tmp_path / "o5")])
    assert err == (f"error: {voc / 'Annotations' / '0001.xml'} is a file, not a Pascal VOC dataset: give the "
                   f"folder holding Annotations/ and JPEGImages/ (e.g. {voc})")
    assert main(["labels", "import", "--state-dir", str(tmp_path / "st"), str(voc), "--format", "yolo"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "looks like a Pascal VOC dataset: give --format voc" in err


def test_coco_entries_of_other_names_found_as_one_file_are_skipped(tmp_path):
    # Label Studio: two upload folders' xyz.jpg, both looked up by base name in images/
    _image(tmp_path / "images" / "xyz.jpg")
    json_path = _write_coco(tmp_path / "result.json",
                            [_cvat_coco_image(1, "../../data/upload/1/xyz.jpg"),
                             _cvat_coco_image(2, "../../data/upload/2/xyz.jpg")],
                            [_cvat_coco_ann(1, 1, 1, [1, 1, 10, 10]),
                             _cvat_coco_ann(2, 2, 2, [20, 20, 10, 10])], CVAT_CATS)
    items, skips = _collect(json_path)
    assert not items and [s.reason for s in skips] == ["duplicate image", "duplicate image"]
    assert ("the file is listed 2 times (images[0], images[1]) under other names (../../data/upload/1/"
            "xyz.jpg, ../../data/upload/2/xyz.jpg) found as one file") in skips[0].message


def test_one_split_of_a_roboflow_export_keeps_the_class_names_of_the_yaml_beside_it(tmp_path, capsys):
    """Before: 'labels import rf/train' found no data.yaml in train/ and named the classes
    class_0, class_1 (the export's data.yaml sits one level up, beside train/)."""
    rf = tmp_path / "rf"
    for i, split in enumerate(("train", "valid")):
        _image(rf / split / "images" / "a.jpg", value=i)
        (rf / split / "labels").mkdir(parents=True)
        (rf / split / "labels" / "a.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    (rf / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\n"
                                  "names: ['car', 'person']\n")
    report = _cli_json(capsys, ["labels", "import", "--state-dir", str(tmp_path / "state"),
                                str(rf / "train"), "--json"])
    assert report["boxes"] == {"person": 1} and report["unnamed_classes"] == []
    assert ClassRegistry(tmp_path / "state").names() == {0: "car", 1: "person"}  # the ids of the yaml
    report = _cli_json(capsys, ["dataset", "import", str(rf / "valid"), "--out", str(tmp_path / "o"),
                                "--json"])
    assert report["names"] == {"0": "car", "1": "person"}
    # a folder that no split of the yaml up there lists keeps its unnamed classes
    other = tmp_path / "other"
    _image(other / "images" / "b.jpg", value=3)
    (other / "labels").mkdir()
    (other / "labels" / "b.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (tmp_path / "data.yaml").write_text("train: rf/train/images\nnames: ['boat']\n")
    report = _cli_json(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s2"), str(other),
                                "--json"])
    assert report["unnamed_classes"] == ["class_0"]


def _roboflow_with_copies(src: Path) -> Path:
    """A Roboflow YOLO export: 4 train images, and in valid/ a byte-identical copy of train's
    t0 and t2 under other names beside one image of its own."""
    (src / "data.yaml").parent.mkdir(parents=True)
    (src / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnames: [car]\n")
    for split, stem, value in (("train", "t0", 0), ("train", "t1", 1), ("train", "t2", 2),
                               ("train", "t3", 3), ("valid", "v0", 0), ("valid", "v1", 2),
                               ("valid", "v2", 9)):
        _image(src / split / "images" / f"{stem}.png", value=value)
        (src / split / "labels").mkdir(parents=True, exist_ok=True)
        (src / split / "labels" / f"{stem}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    return src


def test_dataset_import_keeps_one_copy_of_an_image_a_split_would_put_on_both_sides(tmp_path,
                                                                                     capsys):
    """Before: a train image copied into valid under another name was written twice, and
    split-tasks put the copies in train and test (a test image with its twin in training)."""
    src = _roboflow_with_copies(tmp_path / "rf")
    out = tmp_path / "out"
    assert main(["dataset", "import", str(src), "--out", str(out), "--json"]) == 0
    stdout, err = capsys.readouterr()
    result = json.loads(stdout.strip().splitlines()[-1])
    assert (result["imported"], result["skipped"]) == (5, 2)
    assert result["reasons"] == {"same image earlier in this import": 2}
    assert (f"skipped: {src / 'valid' / 'images' / 'v1.png'}: same image earlier in this import "
            f"({src / 'train' / 'images' / 't2.png'}); the first copy is kept") in err
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "t0.png", "t1.png", "t2.png", "t3.png", "v2.png"]
    assert result["merged_splits"] == ["train", "valid"]
    assert "note: the export's splits (train, valid) are one dataset now" in err


def test_dataset_import_refuses_an_output_inside_its_source(tmp_path, capsys):
    """Before: --out inside the source's images/ was written there: the next import read
    every image twice."""
    src = _roboflow_with_copies(tmp_path / "rf")
    out = src / "train" / "images" / "converted"
    message = _cli_error(capsys, ["dataset", "import", str(src), "--out", str(out)])
    assert message == (f"error: --out {out} is inside {src / 'train' / 'images'}, which holds "
                       f"the dataset's images: they would be read twice by the next import; name "
                       f"a folder elsewhere")
    assert not out.exists()
    flat = tmp_path / "flat"  # images and labels side by side: read with every image below
    for k in range(2):
        _image(flat / f"f{k}.jpg", value=40 + k)
        (flat / f"f{k}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (flat / "classes.txt").write_text("car\n")
    message = _cli_error(capsys, ["dataset", "import", str(flat), "--out", str(flat / "conv")])
    assert message.startswith(f"error: --out {flat / 'conv'} is inside {flat}, which holds")
    # images in sub-folders of images/: before, an --out in images/ itself was written there
    nested = tmp_path / "nest"
    for flight in ("flight01", "flight02"):
        _image(nested / "images" / flight / "frame_1.jpg", value=60 + len(flight))
        (nested / "labels" / flight).mkdir(parents=True)
        (nested / "labels" / flight / "frame_1.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (nested / "data.yaml").write_text("train: images\nval: images\nnames: {0: car}\n")
    inside = nested / "images" / "out"
    message = _cli_error(capsys, ["dataset", "import", str(nested), "--out", str(inside)])
    assert message.startswith(f"error: --out {inside} is inside {nested / 'images'}, which holds")
    assert not inside.exists()
    # a data.yaml elsewhere whose path: names the dataset's folder
    yaml_elsewhere = tmp_path / "yy" / "data.yaml"
    yaml_elsewhere.parent.mkdir()
    yaml_elsewhere.write_text(f"path: {nested}\ntrain: images\nval: images\nnames: {{0: car}}\n")
    message = _cli_error(capsys, ["dataset", "import", str(yaml_elsewhere), "--out", str(inside)])
    assert message.startswith(f"error: --out {inside} is inside {nested / 'images'}, which holds")
    # a path: above the source reads nothing beside the source's image folders: accepted
    up = nested / "up.yaml"
    up.write_text(f"path: {tmp_path}\ntrain: nest/images\nval: nest/images\nnames: {{0: car}}\n")
    result = _cli_json(capsys, ["dataset", "import", str(up), "--out", str(nested / "converted"),
                                "--json"])
    assert (result["imported"], result["reasons"]) == (1, {"same image earlier in this import": 1})


def test_a_decimal_part_box_does_not_shift_its_object_by_a_pixel(tmp_path):
    """Before: any decimal <bndbox> made the whole file read as 0-based sub-pixel corners, a
    <part>'s (a person's head) included: the person's whole-number, 1-based box 11..40 was
    stored as 11..40 instead of 10..39 (ultralytics' VOC conversion subtracts 1)."""
    root = tmp_path / "voc"
    _image(root / "JPEGImages" / "e.jpg", value=5)
    part = ("<part><name>head</name><bndbox><xmin>20.5</xmin><ymin>12.5</ymin><xmax>30.5</xmax>"
            "<ymax>20.5</ymax></bndbox></part>")
    person = _voc_object("person", (11, 11, 40, 40)).replace("</object>", part + "</object>")
    _voc_xml(root / "Annotations" / "e.xml", "e.jpg", (W, H), [person])
    (item,), _ = _collect(root)
    np.testing.assert_allclose(item.xyxy, [[10, 10, 39, 39]])


def test_a_voc_folder_in_lower_case_is_voc_and_an_image_without_annotation_is_counted(tmp_path,
                                                                                      capsys):
    """Before: annotations/ + images/ (Kaggle's copies of VOC sets) was read as a YOLO folder
    and every image skipped as "no label file"; and a VOC image no xml names was dropped
    unsaid, so imported + skipped did not count every file."""
    root = tmp_path / "kaggle"
    for k in range(2):
        _image(root / "images" / f"p{k}.png", value=10 + k)
        _voc_xml(root / "annotations" / f"p{k}.xml", f"p{k}.png", (W, H),
                 [_voc_object("helmet", (5, 5, 20, 20))])
    _image(root / "images" / "p9.png", value=19)
    state = tmp_path / "state"
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(state), str(root), "--json"])
    assert (result["imported"], result["skipped"]) == (2, 1)
    assert result["reasons"] == {"no annotation file": 1}


@pytest.mark.parametrize("name", ["thermal.png", "thermal.tiff"])
def test_a_16_bit_image_is_written_with_the_8_bit_pixels_edgecl_reads(tmp_path, capsys, name):
    """Before: a 16-bit PNG or TIFF was copied byte for byte, and ultralytics' loader, which
    keeps each sample's high byte, trained on counts 7000-9040 as greys 27-35 while the device
    and the evaluation read them stretched to 0-255."""
    from ultralytics.utils.patches import imread

    from edgecl.bench.cl_data import filtered_copy
    from edgecl.data.images import read_image

    src = tmp_path / "thermal"
    (src / "images").mkdir(parents=True)
    counts = np.linspace(7000, 9040, 48 * 64).reshape(48, 64).astype(np.uint16)
    assert cv2.imwrite(str(src / "images" / name), counts)
    (src / "labels").mkdir()
    (src / "labels" / f"{Path(name).stem}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (src / "data.yaml").write_text("train: images\nval: images\nnames: {0: person}\n")
    expected = read_image(src / "images" / name)
    assert expected.min() == 0 and expected.max() == 255
    out = tmp_path / "out"
    assert _cli_json(capsys, ["dataset", "import", str(src), "--out", str(out), "--json"])["imported"] == 1
    written = out / "images" / "thermal.png"
    assert [p.name for p in (out / "images").iterdir()] == ["thermal.png"]
    assert np.array_equal(imread(str(written)), expected)  # what ultralytics trains on
    assert (out / "labels" / "thermal.txt").read_text() == "0 0.500000 0.500000 0.250000 0.250000\n"
    # bench cl's work copy (it links 8-bit images) writes such an image in its own format
    dst = tmp_path / "view" / "images" / name
    filtered_copy(src / "images" / name, dst, {0: 0})
    assert np.array_equal(imread(str(dst)), expected)
    eight_bit = tmp_path / "eight.png"
    assert cv2.imwrite(str(eight_bit), expected)
    (tmp_path / "eight.txt").write_text("")
    from edgecl.data.images import deeper_than_8_bits

    assert not deeper_than_8_bits(b"") and not deeper_than_8_bits(b"II*\x00")  # no cv2.error
    filtered_copy(eight_bit, tmp_path / "view2" / "images" / "eight.png", {0: 0})
    assert (tmp_path / "view2" / "images" / "eight.png").stat().st_ino == eight_bit.stat().st_ino


def test_normalised_coco_boxes_refuse_their_images_not_store_them_as_showing_nothing(tmp_path, capsys):
    """A COCO file written with 0..1 boxes (x/width, y/height): every box is under a pixel.
    Before, each was dropped as a click and its image stored with no object (exit 0, the
    objects taught as background)."""
    for i in (1, 2):
        _image(tmp_path / "src" / "images" / f"f{i}.png", value=i)
    _write_coco(tmp_path / "src" / "ann.json",
                [_cvat_coco_image(1, "f1.png"), _cvat_coco_image(2, "f2.png")],
                [_cvat_coco_ann(1, 1, 1, [0.31, 0.2, 0.1, 0.15]),
                 _cvat_coco_ann(2, 1, 2, [0.5, 0.5, 0.2, 0.1]),
                 _cvat_coco_ann(3, 2, 1, [0.05, 0.6, 0.3, 0.3])], CVAT_CATS)
    items, skips = _collect(tmp_path / "src")
    assert not items and [s.reason for s in skips] == ["normalised box"] * 2
    assert skips[0].message.endswith(
        "every box lies within 0..1 (e.g. annotation 1 bbox [0.31, 0.2, 0.1, 0.15] (x, y, w, h), "
        "car): normalised coordinates, where this format's boxes are pixels of the 64x48 image; "
        "export pixel coordinates")
    code = main(["labels", "import", "--state-dir", str(tmp_path / "state"), str(tmp_path / "src"),
                 "--json"])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in err
    assert json.loads(out.strip().splitlines()[-1])["reasons"] == {"normalised box": 2}
    assert not (tmp_path / "state" / "memory").exists() or not _memory_rows(tmp_path / "state")


def test_a_voc_file_whose_every_box_is_a_click_is_skipped_not_stored_as_showing_nothing(tmp_path):
    """One box half a pixel wide and one normalised file: neither image is an image with no
    object (a VOC file with no object at all still is one)."""
    _image(tmp_path / "JPEGImages" / "a.png", value=1)
    _voc_xml(tmp_path / "Annotations" / "a.xml", "a.png", (W, H),
             [_voc_object("car", (12.5, 10, 13.0, 15))])
    _image(tmp_path / "JPEGImages" / "b.png", value=2)
    _voc_xml(tmp_path / "Annotations" / "b.xml", "b.png", (W, H),
             [_voc_object("car", (0.31, 0.1, 0.42, 0.26))])
    _image(tmp_path / "JPEGImages" / "c.png", value=3)
    _voc_xml(tmp_path / "Annotations" / "c.xml", "c.png", (W, H), [])
    (item,), skips = _collect(tmp_path, "voc")
    assert item.source.name == "c.png" and item.names == [] and item.empty == 0
    assert sorted((s.source.name, s.reason) for s in skips) == [("a.xml", "bad box"),
                                                                ("b.xml", "normalised box")]
    (click,) = [s for s in skips if s.reason == "bad box"]
    assert "every box has no width or height or is under a pixel" in click.message
    assert "not stored as one showing no object" in click.message


def test_a_yolo_file_whose_every_row_has_no_area_is_skipped(tmp_path):
    """The same for a YOLO label file: one row with no width, one under a pixel of 64 px."""
    for name, rows in (("a", "0 0.5 0.5 0 0.2\n0 0.5 0.5 0.01 0.2\n"), ("b", "0 0.5 0.5 0.2 0.2\n"),
                       ("c", "")):
        _image(tmp_path / "images" / f"{name}.png", value=ord(name))
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"{name}.txt").write_text(rows)
    (tmp_path / "data.yaml").write_text("names: [car]\n")
    items, skips = _collect(tmp_path, "yolo")
    assert sorted(i.source.name for i in items) == ["b.png", "c.png"]
    (skip,) = skips
    assert skip.reason == "bad box" and skip.source.name == "a.txt"
    assert "every box of" in skip.message and "in the 64x48 image" in skip.message


def test_a_pose_dataset_gives_the_box_of_each_row_not_a_polygon_through_its_keypoints(tmp_path):
    """An ultralytics pose dataset (kpt_shape [4, 2]): a row is a box and 4 keypoints.
    Before, the 13 values read as a polygon of 6 points whose 'w h' pair was a point: the
    box [64, 102, 275, 195] px of a 640x512 image instead of [288, 205, 352, 307]."""
    from edgecl.runtime.sources.files import ImageDirSource

    _image(tmp_path / "images" / "train" / "a.png", 640, 512, value=1)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text(
        "0 0.5 0.5 0.1 0.2 0.47 0.42 0.53 0.42 0.48 0.58 0.52 0.58\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/train\n"
                                        "kpt_shape: [4, 2]\nnames: {0: person}\n")
    (item,), skips = _collect(tmp_path, "yolo")
    assert not skips and item.names == ["person"]
    np.testing.assert_allclose(item.xyxy, [[288, 204.8, 352, 307.2]], atol=1e-3)
    source = ImageDirSource(f"dir://{tmp_path}", str(tmp_path))
    source.open()
    frame = source.read()
    np.testing.assert_allclose(frame.labels, [[0, 0.5, 0.5, 0.1, 0.2]], atol=1e-6)
    source.close()
    (tmp_path / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.1 0.2 0.47 0.42\n")
    _, (skip,) = _collect(tmp_path, "yolo")
    assert skip.reason == "refused label" and skip.message.endswith(
        "7 values; the dataset's kpt_shape makes a row 'cls cx cy w h' and 8 keypoint values "
        "(13 in all)")


@pytest.mark.parametrize("shape", ["[4]", "[4, 5]", "[0, 2]", "'4x2'", "[4.5, 2]"])
def test_a_malformed_kpt_shape_is_refused_in_one_line(tmp_path, shape):
    _image(tmp_path / "images" / "train" / "a.png")
    (tmp_path / "data.yaml").write_text(f"train: images/train\nkpt_shape: {shape}\nnames: [person]\n")
    with pytest.raises(ConfigError, match=r"data.yaml: 'kpt_shape' must be \[keypoints, 2 or 3\]"):
        _collect(tmp_path, "yolo")


def test_macos_resource_forks_beside_voc_files_are_left_out_not_bad_annotations(tmp_path):
    """A VOC zip made on a Mac: ._a.xml beside a.xml, and __MACOSX/ with more of them."""
    _image(tmp_path / "JPEGImages" / "a.png")
    _voc_xml(tmp_path / "Annotations" / "a.xml", "a.png", (W, H), [_voc_object("car", (3, 4, 20, 30))])
    (tmp_path / "Annotations" / "._a.xml").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    (tmp_path / "JPEGImages" / "._a.png").write_bytes(b"\x00\x05\x16\x07Mac OS X        ")
    (tmp_path / "Annotations" / "__MACOSX").mkdir()
    (tmp_path / "Annotations" / "__MACOSX" / "b.xml").write_bytes(b"\x00\x05\x16\x07")
    (item,), skips = _collect(tmp_path, "voc")
    assert item.names == ["car"] and skips == []


def test_an_image_name_spelt_otherwise_than_its_file_is_found(tmp_path):
    """A JSON written with composed Unicode (NFC) for a file macOS named decomposed (NFD), and a
    URL-encoded name: both were 'image not found'."""
    import unicodedata

    nfd = unicodedata.normalize("NFD", "Überflug Straße 1.png")
    _image(tmp_path / "src" / "images" / nfd, value=1)
    _image(tmp_path / "src" / "images" / "Überflug Straße 2.png", value=2)
    _write_coco(tmp_path / "src" / "result.json",
                [_cvat_coco_image(1, "images/Überflug Straße 1.png"),
                 _cvat_coco_image(2, "images/%C3%9Cberflug%20Stra%C3%9Fe%202.png")],
                [_cvat_coco_ann(1, 1, 1, [3, 4, 10, 10]), _cvat_coco_ann(2, 2, 1, [3, 4, 10, 10])],
                CVAT_CATS)
    items, skips = _collect(tmp_path / "src")
    assert not skips and sorted(i.source.name for i in items) == sorted(
        [nfd, "Überflug Straße 2.png"])


def test_a_normalised_box_beside_pixel_boxes_refuses_its_image(tmp_path):
    """Before: the 0..1 car box was dropped as a click (counted in empty_boxes alone) and the
    image stored with the person box only: the car taught as background."""
    _image(tmp_path / "src" / "images" / "f1.png", value=1)
    _write_coco(tmp_path / "src" / "ann.json", [_cvat_coco_image(1, "f1.png")],
                [_cvat_coco_ann(3, 1, 1, [0.1, 0.1, 0.2, 0.3]),
                 _cvat_coco_ann(4, 1, 2, [20, 16, 30, 20])], CVAT_CATS)
    items, (skip,) = _collect(tmp_path / "src")
    assert not items and skip.reason == "normalised box"
    assert skip.message.endswith("annotation 3 bbox [0.1, 0.1, 0.2, 0.3] (x, y, w, h) (car) lies "
                                 "within 0..1: normalised coordinates beside pixel ones; export "
                                 "every box in pixels")
