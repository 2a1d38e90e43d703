"""Malformed datasets (wrong JSON types, null names, gapped ids, odd paths, non-finite boxes) give
a counted skip or a one-line error, never a traceback, in all three formats (YOLO, VOC, COCO)."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecl.cli import main
from edgecl.data.importers import ImportItem, Skip, iter_labelled
from edgecl.data.tasks import load_tasks
from edgecl.data.yolo_dataset import MAX_CLASSES, find_dataset
from edgecl.errors import ConfigError
from edgecl.models.classes import ClassRegistry

W, H = 64, 48


def _jpg(path: Path, value: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cv2.imencode(".jpg", np.full((H, W, 3), value, np.uint8))[1].tobytes())


def _collect(path, fmt="auto"):
    out = list(iter_labelled(path, fmt))
    return [i for i in out if isinstance(i, ImportItem)], [s for s in out if isinstance(s, Skip)]


def _coco(root: Path, images=None, categories=None, annotations=None, raw: str | None = None) -> Path:
    """a.jpg and b.jpg beside c.json; a category ``car`` (id 1) and one box on image 1 by default."""
    _jpg(root / "a.jpg", 60)
    _jpg(root / "b.jpg", 120)
    data = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}] if images is None else images,
            "categories": [{"id": 1, "name": "car"}] if categories is None else categories,
            "annotations": [_ann()] if annotations is None else annotations}
    (root / "c.json").write_text(raw if raw is not None else json.dumps(data))
    return root / "c.json"


def _ann(**kw) -> dict:
    return {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 10, 10], **kw}


def _yolo(root: Path, yaml_text: str, rows: str = "0 0.5 0.5 0.2 0.2\n") -> Path:
    _jpg(root / "images" / "a.jpg")
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "a.txt").write_text(rows)
    (root / "data.yaml").write_text(yaml_text)
    return root


def _voc(root: Path, filename: str, box: tuple, xml_name: str = "a.xml", cls: str = "zebra") -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    _jpg(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / xml_name).write_text(
        f"<annotation><filename>{filename}</filename><object><name>{cls}</name><bndbox><xmin>{box[0]}</xmin>"
        f"<ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object></annotation>")
    return root


def _cli_json(capsys, argv) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _one_line_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


# --- COCO --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, expected", [
    ("image_id list", "annotations[0] has no valid image_id [1]"),
    ("image id list", "images[0] (a.jpg) has no valid id: [1]"),
    ("category_id object", "unknown category_id {'a': 1}"),
    ("bbox beyond float", "no valid bbox"),
    ("bbox boolean", "no valid bbox"),
    ("bbox string", "no valid bbox"),
    ("file_name number", "images[0] has no file_name"),
    ("annotation not an object", "annotations[0] has no valid object"),
])
def test_coco_wrong_types_skip_with_bad_annotation(tmp_path, kind, expected):
    images = {"image id list": [{"id": [1], "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
              "file_name number": [{"id": 1, "file_name": 7}, {"id": 2, "file_name": "b.jpg"}]}.get(kind)
    ann = {"image_id list": _ann(image_id=[1]), "category_id object": _ann(category_id={"a": 1}),
           "bbox beyond float": _ann(bbox=[0, 0, 10 ** 400, 20]), "bbox boolean": _ann(bbox=[True, 0, 10, 10]),
           "bbox string": _ann(bbox="1 1 10 10"), "annotation not an object": [1]}.get(kind, _ann())
    items, skips = _collect(_coco(tmp_path, images=images, annotations=[ann]))
    # with its image's id unusable, the annotation for id 1 belongs to no image: counted too
    orphan = ["bad annotation"] if kind == "image id list" else []
    assert [s.reason for s in skips] == ["bad annotation", *orphan]
    assert any(expected in s.message for s in skips) and all("\n" not in s.message for s in skips)
    # an annotation that names no image is counted; its image cannot be known (imported as is)
    unattributed = kind in ("image_id list", "annotation not an object")
    assert [i.source.name for i in items] == (["a.jpg", "b.jpg"] if unattributed else ["b.jpg"])


@pytest.mark.parametrize("categories, expected", [
    ([{"id": [1], "name": "car"}], r"categories\[0\] has no valid id"),
    ([{"id": True, "name": "car"}], r"categories\[0\] has no valid id"),
    ([{"id": 1, "name": None}], r"categories\[0\] \(id 1\) needs a name, got None"),
    ([{"id": 1}], r"categories\[0\] \(id 1\) needs a name"),
    ([{"id": 1, "name": " "}], r"needs a name, got ' '$"),  # before: 'got ' and nothing
    ([{"id": 1, "name": ["car"]}], r"needs a name"),
    (["car"], r"categories\[0\] is not an object"),
    ([{"id": 1, "name": "car"}, {"id": 1, "name": "dog"}], r"category id 1 is used for both 'car' and 'dog'"),
])
def test_coco_bad_category_is_a_one_line_error(tmp_path, capsys, categories, expected):
    json_path = _coco(tmp_path / "ds", categories=categories)
    with pytest.raises(ConfigError, match=expected):
        iter_labelled(json_path)
    err = _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(json_path)])
    assert "c.json: categories[" in err
    err = _one_line_error(capsys, ["dataset", "import", str(json_path), "--out", str(tmp_path / "o")])
    assert "c.json: categories[" in err and not (tmp_path / "o").exists()


def test_coco_number_name_and_string_ids_still_import(tmp_path):
    json_path = _coco(tmp_path, images=[{"id": "a", "file_name": "a.jpg"}], categories=[{"id": 1.0, "name": 7}],
                      annotations=[_ann(image_id="a")])
    items, skips = _collect(json_path)
    assert skips == [] and items[0].names == ["7"]


@pytest.mark.parametrize("raw, expected", [
    ("[" * 100_000, "JSON nested too deep"),
    ('{"images": [], "x": ' + "9" * 5000 + "}", "not a COCO file"),
    (json.dumps({"images": [], "annotations": {"0": _ann()}}), "'annotations' must be a list, got dict"),
    (json.dumps({"images": [], "annotations": None}), "'annotations' must be a list, got NoneType"),
    (json.dumps({"images": [], "categories": {"1": "car"}}), "'categories' must be a list, got dict"),
    (json.dumps({"images": {"1": {"file_name": "a.jpg"}}}), r"no 'images' list, got dict"),
])
def test_coco_malformed_file_is_a_one_line_error(tmp_path, capsys, raw, expected):
    json_path = _coco(tmp_path / "ds", raw=raw)
    with pytest.raises(ConfigError, match=expected):
        iter_labelled(json_path)
    _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(json_path)])
    _one_line_error(capsys, ["dataset", "import", str(json_path), "--out", str(tmp_path / "o")])


def test_coco_duplicate_image_id_skips_every_image_with_it(tmp_path):
    images = [{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}, {"id": 2, "file_name": "b.jpg"}]
    items, skips = _collect(_coco(tmp_path, images=images, annotations=[_ann(), _ann(id=2, image_id=2)]))
    assert [s.reason for s in skips] == ["duplicate image id", "duplicate image id"]
    assert "images[1] (b.jpg): image id 1 is used by 2 images" in skips[1].message
    assert len(items) == 1 and items[0].names == ["car"]


def test_coco_cli_counts_wrong_types(tmp_path, capsys):
    json_path = _coco(tmp_path / "ds", annotations=[_ann(bbox=[0, 0, 10 ** 400, 20]), _ann(id=2, image_id=[2])])
    assert main(["labels", "import", "--state-dir", str(tmp_path / "s"), str(json_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["reasons"] == {"bad annotation": 1} and result["imported"] == 1
    assert result["skipped"] == 1 and result["annotations_skipped"] == 1  # image_id [2]: no image
    assert result["classes_added"] == ["car"]  # a new device takes the file's categories


# --- YOLO --------------------------------------------------------------------------------------

@pytest.mark.parametrize("names", ["{0: car, 1: null}", "[car, ~]", "[car, '']", "{0: car, 1: [a, b]}"])
def test_yolo_class_without_a_name_is_a_one_line_error(tmp_path, capsys, names):
    root = _yolo(tmp_path / "ds", f"train: images\nnames: {names}\n")
    with pytest.raises(ConfigError, match=r"data.yaml: class 1 in 'names' needs a name"):
        iter_labelled(root)
    _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(root)])


def test_yolo_gapped_names_skip_an_unnamed_class_and_keep_named_ones(tmp_path):
    root = _yolo(tmp_path / "gap", "train: images\nnames: {0: car, 5: dog}\n", "1 0.5 0.5 0.2 0.2\n")
    items, skips = _collect(root)
    assert items == [] and [s.reason for s in skips] == ["refused label"]
    assert "a.txt: class 1 has no name (the dataset names ids 0, 5)" in skips[0].message
    root = _yolo(tmp_path / "gap5", "train: images\nnames: {0: car, 5: dog}\n", "5 0.5 0.5 0.2 0.2\n")
    items, skips = _collect(root)
    assert skips == [] and items[0].names == ["dog"]  # id 5 is named: not "beyond the class count 2"


def test_yolo_class_count_above_the_limit_is_a_one_line_error(tmp_path, capsys):
    root = _yolo(tmp_path / "ds", "train: images\nnc: 1000000000\n")
    with pytest.raises(ConfigError, match=f"'nc' 1000000000 is above the limit of {MAX_CLASSES} classes"):
        iter_labelled(root)
    (root / "data.yaml").write_text(f"train: images\nnames: {{{MAX_CLASSES}: car}}\n")
    with pytest.raises(ConfigError, match=f"class id {MAX_CLASSES} in 'names' is above the limit"):
        iter_labelled(root)
    (root / "data.yaml").write_text("train: images\nnames: {'" + "9" * 400 + "': car}\n")
    with pytest.raises(ConfigError, match="is above the limit"):
        iter_labelled(root)
    _one_line_error(capsys, ["dataset", "import", str(root), "--out", str(tmp_path / "o")])


def test_yolo_names_file_that_is_not_utf8_is_a_one_line_error(tmp_path, capsys):
    root = tmp_path / "plain"
    _jpg(root / "a.png")
    (root / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "classes.txt").write_bytes(b"\xff\xfecar\n")
    with pytest.raises(ConfigError, match=r"classes.txt: not UTF-8"):
        iter_labelled(root)
    _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(root)])


def test_image_list_with_a_nul_byte_is_a_one_line_error_naming_file_and_line(tmp_path, capsys):
    root = _yolo(tmp_path / "ds", "train: train.txt\nnames: [car]\n")
    (root / "train.txt").write_bytes(b"images/a.jpg\nima\0ges/a.jpg\n")
    with pytest.raises(ConfigError, match=r"train.txt:2: path 'ima\\x00ges/a.jpg' contains a NUL byte"):
        find_dataset(root)
    _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(root)])
    _one_line_error(capsys, ["dataset", "import", str(root), "--out", str(tmp_path / "o")])
    (root / "data.yaml").write_text('train: "ima\\0ges"\nnames: [car]\n')
    with pytest.raises(ConfigError, match=r"data.yaml: 'train': path .* contains a NUL byte"):
        find_dataset(root)
    (root / "tasks.yaml").write_text("names: {0: car}\ntasks:\n  - {name: t1, classes: [0], train: train.txt, "
                                     "test: train.txt}\n")
    with pytest.raises(ConfigError, match=r"train.txt:2: path .* contains a NUL byte"):
        load_tasks(root / "tasks.yaml")


def test_names_the_file_system_refuses_are_missing_files_not_crashes(tmp_path):
    root = _yolo(tmp_path / "ds", "train: train.txt\nnames: [car]\n")
    (root / "train.txt").write_text("images/a.jpg\n" + "x" * 300 + ".jpg\n~nosuchuser-edgecl/b.jpg\n")
    items, skips = _collect(root)
    assert len(items) == 1 and [s.reason for s in skips] == ["missing image", "missing image"]
    (root / "tasks.yaml").write_text("names: {0: car}\ntasks:\n  - {name: t1, classes: [0], train: train.txt, "
                                     "test: train.txt}\n")
    with pytest.raises(ConfigError, match=r"train.txt:2: image not found"):
        load_tasks(root / "tasks.yaml")
    voc = _voc(tmp_path / "voc", "y" * 300 + ".jpg", (2, 2, 20, 20), xml_name="z.xml")
    items, skips = _collect(voc)
    assert items == [] and [s.reason for s in skips] == ["missing image", "no annotation file"]


@pytest.mark.parametrize("text", ["[" * 100_000, "train: images\nnc: " + "9" * 5000 + "\n"])
def test_unparsable_data_yaml_is_a_one_line_error(tmp_path, text):
    root = _yolo(tmp_path, "")
    (root / "data.yaml").write_text(text)
    with pytest.raises(ConfigError, match="cannot read dataset yaml"):
        iter_labelled(root / "data.yaml")


# --- VOC ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["../../outside.jpg", "absolute"])
def test_voc_filename_outside_the_dataset_is_never_read(tmp_path, where):
    _jpg(tmp_path / "outside.jpg", 200)
    filename = str(tmp_path / "outside.jpg") if where == "absolute" else where
    root = _voc(tmp_path / "ds" / "voc", filename, (2, 2, 20, 20), xml_name="z.xml")
    items, skips = _collect(root)
    assert items == [] and [s.reason for s in skips] == ["missing image", "no annotation file"]
    assert "looked up by its base name only" in skips[0].message
    _jpg(root / "JPEGImages" / "outside.jpg", 30)  # the base name inside the dataset is what it names
    items, skips = _collect(root)
    assert [s.reason for s in skips] == ["no annotation file"]  # a.jpg, which z.xml does not name
    assert items[0].source == root / "JPEGImages" / "outside.jpg"


@pytest.mark.parametrize("box", [("-inf", "-inf", "inf", "inf"), ("1", "1", "1e400", "20"), ("nan", "1", "10", "20")])
def test_voc_non_finite_box_skips_its_image_and_adds_no_class(tmp_path, capsys, box):
    root = _voc(tmp_path / "voc", "a.jpg", box)
    items, skips = _collect(root)
    assert items == [] and [s.reason for s in skips] == ["bad annotation"]
    assert "object 1 (zebra) has a non-finite <bndbox> value" in skips[0].message
    state = tmp_path / "state"
    assert main(["labels", "import", "--state-dir", str(state), str(root), "--json"]) == 2
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["reasons"] == {"bad annotation": 1} and result["classes_added"] == []
    assert ClassRegistry(state).names() == {}


def test_voc_xml_stem_is_not_a_glob_pattern(tmp_path):
    root = _voc(tmp_path / "voc", "", (2, 2, 20, 20), xml_name="b[1].xml")
    _jpg(root / "JPEGImages" / "b1.jpg")
    items, skips = _collect(root)
    assert items == [] and [s.reason for s in skips] == ["missing image", "no annotation file",
                                                         "no annotation file"]


def test_dataset_import_numbers_coco_categories_by_id_and_leaves_unlearnable_names_out(tmp_path,
                                                                                     capsys):
    import yaml

    cats = [{"id": 10, "name": "ten"}, {"id": 7, "name": "seven"}]
    anns = [dict(_ann(), id=1, category_id=10), dict(_ann(), id=2, category_id=7)]
    src = _coco(tmp_path / "a", categories=cats, annotations=anns)
    assert main(["dataset", "import", str(src), "--out", str(tmp_path / "o1")]) == 0
    data = yaml.safe_load((tmp_path / "o1" / "data.yaml").read_text())
    assert data["names"] == {0: "seven", 1: "ten"}  # before: "10" sorted before "7" as text
    src = _coco(tmp_path / "b", categories=[*cats, {"id": 3, "name": "bad\nname"}],
                annotations=anns)
    capsys.readouterr()  # a name no device takes is no class (its images, none here, skipped):
    assert main(["dataset", "import", str(src), "--out", str(tmp_path / "o2")]) == 0  # as
    data = yaml.safe_load((tmp_path / "o2" / "data.yaml").read_text())  # 'labels import' does
    assert data["names"] == {0: "seven", 1: "ten"}


def _voc_two(root: Path, second_xml: str) -> Path:
    """A VOC folder: a.xml boxes a.jpg; b.xml (``second_xml``) stands beside b.jpg."""
    _voc(root, "a.jpg", (2, 2, 20, 20), cls="car")
    _jpg(root / "JPEGImages" / "b.jpg", 140)
    (root / "Annotations" / "b.xml").write_bytes(second_xml.encode("latin-1"))
    return root


@pytest.mark.parametrize("declaration, said", [
    ('<?xml version="1.0" encoding="Shift_JIS"?>', "multi-byte encodings are not supported"),
    ('<?xml version="1.0" encoding="x-bogus-enc"?>', "unknown encoding: x-bogus-enc"),
])
def test_a_voc_file_in_an_encoding_xml_cannot_read_is_skipped_and_the_rest_imported(
        tmp_path, capsys, declaration, said):
    """Before: the whole import stopped with an internal error, half of it stored."""
    root = _voc_two(tmp_path / "voc", declaration + "<annotation><filename>b.jpg</filename>"
                                                    "</annotation>")
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["a.jpg"]
    assert [(s.reason, s.message) for s in skips] == [
        ("bad annotation", f"{root.resolve() / 'Annotations' / 'b.xml'}: cannot be read as XML "
                           f"({said})")]
    result = _cli_json(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"), str(root),
                                "--json"])
    assert (result["imported"], result["skipped"]) == (1, 1)


def test_an_xml_that_is_no_voc_annotation_is_skipped_not_stored_as_an_empty_frame(tmp_path):
    """Before: <foo><bar/></foo> was stored as a frame with nothing in it (its objects then
    taught as background)."""
    root = _voc_two(tmp_path / "voc", "<foo><bar/></foo>")
    items, skips = _collect(root)
    assert [i.source.name for i in items] == ["a.jpg"]
    assert skips[0].message.endswith("b.xml: not a Pascal VOC annotation (its root element is "
                                     "<foo>, not <annotation>)")


def test_two_voc_files_naming_one_image_are_both_skipped(tmp_path, capsys):
    """Before: the first file's boxes were stored for the image and the second file was
    counted as already in memory (dataset import wrote the image twice with other boxes)."""
    root = _voc_two(tmp_path / "voc", "<annotation><filename>a.jpg</filename><object><name>car"
                                      "</name><bndbox><xmin>30</xmin><ymin>5</ymin><xmax>40</xmax>"
                                      "<ymax>15</ymax></bndbox></object></annotation>")
    items, skips = _collect(root)
    assert items == [] and [s.reason for s in skips] == ["duplicate image", "duplicate image"]
    ann = root.resolve() / "Annotations"
    assert skips[0].message == (f"{ann / 'a.xml'}: its image {root.resolve() / 'JPEGImages' / 'a.jpg'}"
                                f" is also annotated by {ann / 'b.xml'}; whose boxes are they? (one "
                                f"annotation file per image: check their <filename>)")
    out = tmp_path / "out"
    main(["dataset", "import", str(root), "--out", str(out), "--json"])
    assert not (out / "labels").exists() or list((out / "labels").iterdir()) == []
    capsys.readouterr()


def test_an_empty_coco_file_in_a_folder_is_named(tmp_path, capsys):
    """Before: a 0-byte annotations.json beside the images was passed over; every image was
    then 'no label file' (YOLO), or 'no COCO json in ...' with --format coco."""
    _jpg(tmp_path / "ds" / "a.jpg")
    (tmp_path / "ds" / "annotations.json").write_bytes(b"")
    for fmt in ([], ["--format", "coco"]):
        err = _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"),
                                       str(tmp_path / "ds"), *fmt])
        assert err.endswith("annotations.json: not a COCO file (it is empty)")


def test_a_broken_coco_file_beside_a_good_one_is_skipped_and_the_good_one_imported(tmp_path, capsys):
    """Before: a truncated instances_val.json stopped the whole import; an empty one, or a
    JSON list, was passed over without a word."""
    root = tmp_path / "ds"
    _coco(root)
    (root / "c.json").rename(root / "instances_train.json")
    for broken in (b"", b"[1, 2]", b'{"images": [{"id": 1,'):
        (root / "instances_val.json").write_bytes(broken)
        result = _cli_json(capsys, ["dataset", "import", str(root), "--out",
                                    str(tmp_path / f"out{len(broken)}"), "--json"])
        assert (result["imported"], result["reasons"]) == (2, {"bad annotation file": 1})


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_a_coordinate_far_outside_the_image_is_a_bad_box_without_numpy_noise(tmp_path, fmt):
    """Before: 1e300 overflowed a float32 cast (a RuntimeWarning on the console) and the box
    was clipped to the whole image."""
    import warnings

    if fmt == "voc":
        root = _voc(tmp_path / "ds", "a.jpg", (2, 2, "1e300", 20), cls="car")
        shown = "object 1 <bndbox> xmin 2 ymin 2 xmax 1e+300 ymax 20"
    else:
        root = _coco(tmp_path / "ds", annotations=[_ann(bbox=[10, 10, 1e308, 1e308])])
        shown = "annotation 1 bbox [10, 10, 1e+308, 1e+308] (x, y, w, h)"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        items, skips = _collect(root)
    bad = [s for s in skips if s.reason == "bad box"]
    assert len(bad) == 1 and bad[0].message.endswith(f"{shown} (car) lies far outside the 64x48 image")


def test_a_declared_size_that_is_not_the_images_is_named_in_a_bad_box(tmp_path):
    """Before: a box annotated for 640x512 on an image that decodes as 64x48 was said to have
    'no area inside the 64x48 image', or lie outside it, and the declared size went unnamed."""
    root = tmp_path / "ds"
    _jpg(root / "a.jpg")
    (root / "c.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 6400, "height": 4800}],
        "categories": [{"id": 1, "name": "car"}], "annotations": [_ann(bbox=[10, 10, 50, 50])]}))
    items, skips = _collect(root)
    assert items == [] and skips[0].message.endswith(
        "annotation 1 bbox [10, 10, 50, 50] (x, y, w, h) (car) is 0.5 x 0.5 px inside the 64x48 "
        "image, under one pixel (annotated for a 6400x4800 image, scaled to the 64x48 that a.jpg "
        "decodes as)")


@pytest.mark.parametrize("fmt", ["voc", "coco"])
def test_a_box_with_swapped_corners_is_said_to_be_so(tmp_path, fmt):
    """Before: 'has no area inside the 64x48 image' for a box well inside it, drawn from its
    lower right corner (xmin > xmax) or written with a negative width."""
    if fmt == "voc":
        root = _voc(tmp_path / "ds", "a.jpg", (40, 30, 10, 5), cls="car")
        shown = "object 1 <bndbox> xmin 40 ymin 30 xmax 10 ymax 5"
    else:
        root = _coco(tmp_path / "ds", annotations=[_ann(bbox=[40, 30, -30, 20])])
        shown = "annotation 1 bbox [40, 30, -30, 20] (x, y, w, h)"
    items, skips = _collect(root)
    bad = [s for s in skips if s.reason == "bad box"]
    assert "a.jpg" not in [i.source.name for i in items] and len(bad) == 1  # COCO's b.jpg: none
    assert bad[0].message.endswith(f"{shown} (car) has its corners swapped (a right or lower "
                                   f"corner before a left or upper one; xmin < xmax and ymin < "
                                   f"ymax, or a positive width and height, make a box)")


def test_a_yolo_box_under_one_pixel_is_dropped_as_dir_streams_it(tmp_path):
    """A 0.064 px box marks no object (an operator's answer refuses boxes under 1 px): first it
    was stored; then the import refused the whole image while ``dir://`` stored the frame with
    it. Now both drop the box, count it, and keep the frame's other boxes."""
    from edgecl.runtime.sources import open_source

    root = _yolo(tmp_path / "ds", "train: images\nnames: [car]\n", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.001 0.2\n")
    (item,), skips = _collect(root)
    assert not skips and item.names == ["car"] and item.empty == 1
    source = open_source(f"dir://{root}")
    (frame,) = list(source)
    np.testing.assert_allclose(frame.labels, [[0, 0.5, 0.5, 0.2, 0.2]])
    assert source.stats.empty_boxes == 1


@pytest.mark.parametrize("odd", ["fifo", "dangling link"])
def test_a_file_in_the_images_folder_that_is_no_regular_file_is_counted(tmp_path, odd):
    """Before: a FIFO or a link to nothing named x.jpg was left out without a word, so that
    imported + skipped fell short of the files."""
    import os

    root = _yolo(tmp_path / "ds", "train: images\nnames: [car]\n")
    odd_path = root / "images" / "b.jpg"
    if odd == "fifo":
        os.mkfifo(odd_path)
    else:
        odd_path.symlink_to(tmp_path / "gone.jpg")
    # its label: before, a FIFO's made a second skip ("a label file no image takes")
    (root / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    items, skips = _collect(root)
    assert len(items) == 1
    assert [s.message for s in skips] == [
        f"{odd_path}: a named pipe (FIFO), not a regular file" if odd == "fifo"
        else f"{odd_path} is a symbolic link to {tmp_path / 'gone.jpg'}, which does not exist "
             f"(unmounted?)"]


def test_a_names_file_that_gives_one_class_two_ids_is_refused(tmp_path, capsys):
    """Before: classes.txt 'Car, Car, car' merged ids 0, 1 and 2 into one class unsaid."""
    _jpg(tmp_path / "ds" / "a.jpg")
    (tmp_path / "ds" / "a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "ds" / "classes.txt").write_text("Car\nCar\ncar\n")
    err = _one_line_error(capsys, ["labels", "import", "--state-dir", str(tmp_path / "s"),
                                   str(tmp_path / "ds")])
    assert err.endswith("classes.txt: class name 'Car' is given to ids 0 and 1; each class "
                        "needs its own name")


@pytest.mark.parametrize("names", ["[car, DontCare, person]", "{0: car, 2: person}"])
def test_a_written_dataset_numbers_its_classes_without_holes(tmp_path, capsys, names):
    """Before: an ignore class or a gap in the source's ids left a hole in the written
    data.yaml's ids ({0: car, 2: person}), which ultralytics refuses."""
    import yaml
    from ultralytics.data.utils import check_det_dataset

    root = _yolo(tmp_path / "ds", f"train: images\nval: images\nnames: {names}\n",
                 "0 0.3 0.3 0.2 0.2\n2 0.7 0.7 0.2 0.2\n")
    out = tmp_path / "out"
    result = _cli_json(capsys, ["dataset", "import", str(root), "--out", str(out), "--json"])
    assert result["imported"] == 1
    written = yaml.safe_load((out / "data.yaml").read_text())["names"]
    assert (list(written.values()) if isinstance(written, dict) else written) == ["car", "person"]
    assert sorted(float(line.split()[0]) for line in
                  (out / "labels" / "a.txt").read_text().splitlines()) == [0.0, 1.0]
    check_det_dataset(str(out / "data.yaml"))


def test_a_category_id_written_as_text_is_the_same_id_as_its_number(tmp_path):
    """Before: categories with "id": "1" and boxes with "category_id": 1 were 'unknown
    category_id 1', and every image with a box was skipped."""
    items, skips = _collect(_coco(tmp_path / "ds", categories=[{"id": "1", "name": "car"}]))
    assert skips == [] and [i.names for i in items] == [["car"], []]


def test_a_tab_in_a_data_yaml_is_said_with_its_line(tmp_path):
    """Before: "cannot read dataset yaml ...: while scanning for the next token", which names
    neither the line nor the tab."""
    root = _yolo(tmp_path, "")
    (root / "data.yaml").write_text("train: images\nnames:\n\t- car\n")
    with pytest.raises(ConfigError) as caught:
        iter_labelled(root / "data.yaml")
    assert str(caught.value) == (f"cannot read dataset yaml {root / 'data.yaml'} at line 3: found "
                                 f"character '\\t' that cannot start any token")


def test_a_listed_image_deleted_beside_its_label_is_a_missing_image(tmp_path):
    """Before: an image list's entry whose image was deleted but whose label file stayed was
    an "unreadable image" ("cannot read (No such file or directory)")."""
    root = _yolo(tmp_path / "ds", "train: train.txt\nnames: [car]\n")
    (root / "labels" / "b.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "train.txt").write_text("images/a.jpg\nimages/b.jpg\n")
    items, skips = _collect(root)
    assert len(items) == 1 and [(s.reason, s.source.name) for s in skips] == [
        ("missing image", "b.jpg")]
