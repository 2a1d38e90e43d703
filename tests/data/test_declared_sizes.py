"""Annotation-declared image sizes (VOC ``<size>``, COCO ``width``/``height``), files that are
not images in a YOLO dataset, and re-encoding what ultralytics' loader cannot read."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgecl.data.convert import write_yolo_dataset
from edgecl.data.importers import ImportItem, Skip, iter_labelled
from edgecl.data.yolo_dataset import find_dataset


def _jpg(path: Path, width: int, height: int, exif_orientation: int | None = None) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (width, height), (90, 90, 90))
    exif = Image.Exif()
    if exif_orientation is not None:
        exif[0x0112] = exif_orientation
    image.save(path, "JPEG", exif=exif.tobytes())


def _coco(tmp_path: Path, width: object, height: object, bbox: list[float]) -> Path:
    info = {"id": 1, "file_name": "IMG_0002.JPG"}
    if width is not None:
        info["width"] = width
    if height is not None:
        info["height"] = height
    data = {"images": [info], "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}]}
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_boxes_scale_from_the_declared_size_to_the_decoded_one(tmp_path):
    _jpg(tmp_path / "images" / "IMG_0002.JPG", 160, 96)  # annotated at 320x192, then halved
    (item,) = iter_labelled(_coco(tmp_path, 320, 192, [200, 60, 80, 80]))
    assert isinstance(item, ImportItem)
    assert item.xyxy.tolist() == [[100.0, 30.0, 140.0, 70.0]]  # [200,60,280,140] * 0.5
    assert item.yolo_labels({"car": 0})[0].tolist() == pytest.approx([0, 120 / 160, 50 / 96, 40 / 160,
                                                                      40 / 96])


def test_voc_boxes_scale_from_the_declared_size_to_the_decoded_one(tmp_path, capsys):
    _jpg(tmp_path / "JPEGImages" / "IMG_0002.JPG", 160, 96)
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "IMG_0002.xml").write_text(
        "<annotation><filename>IMG_0002.JPG</filename><size><width>320</width><height>192</height>"
        "</size><object><name>car</name><bndbox><xmin>201</xmin><ymin>61</ymin><xmax>281</xmax>"
        "<ymax>141</ymax></bndbox></object></annotation>")
    (item,) = iter_labelled(tmp_path, "voc")
    assert item.xyxy.tolist() == [[100.0, 30.0, 140.0, 70.0]]  # 1-based, minus 1, then * 0.5
    # before: scaled without a word, so a wrong <size> (not a downscaled image) went unseen
    xml = tmp_path / "Annotations" / "IMG_0002.xml"
    assert item.rescaled == (f"{xml}: annotated for a 320x192 image, IMG_0002.JPG decodes as "
                             f"160x96")
    from edgecl.cli import main

    assert main(["dataset", "import", str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert (f"; boxes of 1 image(s) scaled from the size their annotation declares (e.g. "
            f"{item.rescaled}: right for images downscaled after labelling, a wrong <size> "
            f"otherwise)") in capsys.readouterr().out
    result = write_yolo_dataset(tmp_path, tmp_path / "out2")
    assert result["rescaled_from_declared_size"] == 1
    assert result["rescaled_example"] == item.rescaled


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_a_declared_size_that_is_the_decoded_one_rotated_skips_the_image(tmp_path, fmt):
    _jpg(tmp_path / "images" / "IMG_0002.JPG", 96, 160, exif_orientation=6)  # decodes 160x96
    if fmt == "coco":
        src = _coco(tmp_path, 96, 160, [30, 20, 40, 40])
    else:
        (tmp_path / "Annotations").mkdir()
        (tmp_path / "Annotations" / "IMG_0002.xml").write_text(
            "<annotation><filename>IMG_0002.JPG</filename><size><width>96</width><height>160"
            "</height></size><object><name>car</name><bndbox><xmin>31</xmin><ymin>21</ymin>"
            "<xmax>70</xmax><ymax>60</ymax></bndbox></object></annotation>")
        src = tmp_path
    (skip,) = iter_labelled(src, fmt)
    assert isinstance(skip, Skip) and skip.reason == "size mismatch"
    assert "annotated as 96x160" in skip.message and "IMG_0002.JPG decodes as 160x96" in skip.message
    assert skip.message.endswith("(EXIF orientation?)") and "\n" not in skip.message


@pytest.mark.parametrize("width, height", [(None, None), (0, 192), (-320, 192), ("wide", 192),
                                           (320.5, 192), (True, 192)])
def test_a_missing_or_invalid_declared_size_uses_the_decoded_one(tmp_path, width, height):
    _jpg(tmp_path / "images" / "IMG_0002.JPG", 160, 96)
    (item,) = iter_labelled(_coco(tmp_path, width, height, [20, 10, 40, 40]))
    assert item.xyxy.tolist() == [[20.0, 10.0, 60.0, 50.0]]


def test_dataset_import_counts_a_size_mismatch_as_a_skip(tmp_path):
    _jpg(tmp_path / "images" / "IMG_0001.JPG", 96, 160, exif_orientation=6)
    _jpg(tmp_path / "images" / "IMG_0002.JPG", 160, 96)
    data = {"images": [{"id": 1, "file_name": "IMG_0001.JPG", "width": 96, "height": 160},
                       {"id": 2, "file_name": "IMG_0002.JPG", "width": 320, "height": 192}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 20, 40, 40]},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [200, 60, 80, 80]}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    result = write_yolo_dataset(tmp_path / "instances.json", tmp_path / "out")
    assert (result["imported"], result["skipped"], result["reasons"]) == (1, 1, {"size mismatch": 1})
    assert (tmp_path / "out" / "labels" / "IMG_0002.txt").read_text().split() == \
        ["0", "0.750000", "0.520833", "0.250000", "0.416667"]  # [100,30,140,70] in 160x96


def _yolo_with_a_gif(tmp_path: Path) -> Path:
    root = tmp_path / "gifset"
    _jpg(root / "images" / "cam_0002.jpg", 160, 96)
    (root / "images" / "cam_0001.gif").write_bytes(
        cv2.imencode(".gif", np.zeros((96, 160, 3), np.uint8))[1].tobytes())
    (root / "labels").mkdir()
    for stem in ("cam_0001", "cam_0002"):
        (root / "labels" / f"{stem}.txt").write_text("0 0.25 0.3125 0.25 0.416667\n")
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images", "val": "images",
                                                    "names": {0: "car"}}))
    return root


def test_yolo_import_counts_a_file_that_is_not_an_image_once(tmp_path):
    root = _yolo_with_a_gif(tmp_path)
    dataset = find_dataset(root)  # train and val name the same folder: scanned twice
    assert dict(dataset.ignored) == {".gif": 1}
    assert dataset.ignored_files == [root.resolve() / "images" / "cam_0001.gif"]
    skips = [x for x in iter_labelled(root, "yolo") if isinstance(x, Skip)]
    assert [(s.source.name, s.reason) for s in skips] == [("cam_0001.gif", "not an image")]
    assert skips[0].message.endswith("cam_0001.gif: not an image ultralytics reads (.gif)")
    result = write_yolo_dataset(root, tmp_path / "out")
    assert (result["imported"], result["skipped"], result["reasons"]) == (1, 1, {"not an image": 1})


def test_dataset_import_re_encodes_an_image_ultralytics_cannot_read_as_png(tmp_path):
    from ultralytics.data.utils import IMG_FORMATS

    assert "gif" not in IMG_FORMATS  # else the original bytes would be kept
    pixels = np.zeros((96, 160, 3), np.uint8)
    pixels[10:50, 20:60] = (0, 0, 255)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "anim.gif").write_bytes(cv2.imencode(".gif", pixels)[1].tobytes())
    _jpg(tmp_path / "images" / "kept.jpg", 160, 96)
    data = {"images": [{"id": 1, "file_name": "anim.gif", "width": 160, "height": 96},
                       {"id": 2, "file_name": "kept.jpg", "width": 160, "height": 96}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 40]}]}
    (tmp_path / "instances.json").write_text(json.dumps(data))
    result = write_yolo_dataset(tmp_path / "instances.json", tmp_path / "out")
    assert result["imported"] == 2
    written = sorted(p.name for p in (tmp_path / "out" / "images").iterdir())
    assert written == ["anim.png", "kept.jpg"]
    assert (tmp_path / "out" / "images" / "kept.jpg").read_bytes() == \
        (tmp_path / "images" / "kept.jpg").read_bytes()
    png = cv2.imread(str(tmp_path / "out" / "images" / "anim.png"))
    gif = cv2.imdecode(np.fromfile(tmp_path / "images" / "anim.gif", np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(png, gif)  # lossless
    assert (tmp_path / "out" / "labels" / "anim.txt").read_text().split() == \
        ["0", "0.250000", "0.312500", "0.250000", "0.416667"]
