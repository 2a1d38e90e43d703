"""THE YOLO label rule (edgecl.data.labels): each example with its right value."""

import numpy as np
import pytest

from edgecl.data.labels import (COORD_TOLERANCE, check_label_array, label_path_for, labels_to_text,
                                parse_yolo_label_text, read_yolo_labels)
from edgecl.errors import LabelError


def test_bom_file_is_read(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeff0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n".encode("utf-8"))
    parsed = read_yolo_labels(path)
    assert parsed.refused == []
    np.testing.assert_allclose(parsed.labels, [[0, 0.5, 0.5, 0.2, 0.4], [1, 0.25, 0.75, 0.1, 0.1]])
    assert parsed.labels.dtype == np.float32 and parsed.labels.shape == (2, 5)


def test_bom_in_decoded_text_is_ignored():
    parsed = parse_yolo_label_text("\ufeff2 0.5 0.5 0.2 0.2\n", "x.txt")
    assert parsed.refused == [] and parsed.labels[0, 0] == 2


def test_rounding_overshoot_is_clipped_not_refused():
    parsed = parse_yolo_label_text("0 0.5 0.5 1.0000001 0.2\n0 0.9500001 0.5 0.1 0.2\n", "x.txt")
    assert parsed.refused == [] and parsed.clipped == 2
    np.testing.assert_allclose(parsed.labels[0], [0, 0.5, 0.5, 1.0, 0.2], atol=1e-7)
    np.testing.assert_allclose(parsed.labels[1], [0, 0.95, 0.5, 0.1, 0.2], atol=1e-7)  # 0.9..1.0
    box = parsed.labels[1]
    assert box[1] + box[3] / 2 <= 1.0


def test_corner_overshoot_is_clipped_like_ultralytics():
    parsed = parse_yolo_label_text("0 0.98 0.5 0.1 0.2\n", "x.txt")  # x2 = 1.03: clipped to 1
    np.testing.assert_allclose(parsed.labels[0], [0, 0.965, 0.5, 0.07, 0.2], atol=1e-6)


@pytest.mark.parametrize("row, why", [
    ("0 0.5 0.5 1.02 0.2", "exceed 1"),
    ("0 -0.02 0.5 0.1 0.2", "negative coordinate"),
    ("0 0.5 0.5 -0.001 0.2", "negative coordinate"),
    ("0 0.5 0.5 0.2", "4 values"),
    ("0 0.5 0.5 0.2 0.2 0.3", "6 values; expected 5 'cls cx cy w h' or a polygon 'cls x1 y1 x2 "
                              "y2 x3 y3 ...' (odd count, at least 7) (a sixth column: predictions "
                              "saved with their confidences, ultralytics' save_conf? drop it)"),
    ("0 0.5 0.5 0.2 0.2 0.3 0.4 0.5", "8 values; expected 5 'cls cx cy w h' or a polygon 'cls x1 "
                                      "y1 x2 y2 x3 y3 ...' (odd count, at least 7)"),
    ("a 0.5 0.5 0.2 0.2", "non-numeric"),
    ("1.5 0.5 0.5 0.2 0.2", "class id '1.5' is not an integer"),
    ("-1 0.5 0.5 0.2 0.2", "class -1 is not an integer >= 0"),
    ("0 nan 0.5 0.2 0.2", "non-finite"),
])
def test_bad_row_is_refused_with_file_line_and_why(row, why):
    parsed = parse_yolo_label_text(f"0 0.5 0.5 0.1 0.1\n\n{row}\n", "dir/x.txt")
    assert len(parsed.refused) == 1
    assert parsed.refused[0].startswith("dir/x.txt:3: ") and why in parsed.refused[0]
    if "expected 5" in why:
        assert parsed.refused[0].endswith(why)
    np.testing.assert_allclose(parsed.labels, [[0, 0.5, 0.5, 0.1, 0.1]])  # the good row stays


@pytest.mark.parametrize("row", ["0 0.5 0.5 0 0.2", "1 0.6 0.6 0 0", "0 1.005 0.5 0.004 0.2"])
def test_a_box_with_no_area_is_dropped_and_the_others_stay(row):
    """A click without a drag in CVAT or labelImg writes ``w`` or ``h`` 0 (or a box wholly
    over an edge, within the tolerance): before, refused, which made importers and ``dir://``
    drop the frame's good boxes with it; ultralytics trains the frame without that box."""
    parsed = parse_yolo_label_text(f"0 0.5 0.5 0.1 0.1\n\n{row}\n", "dir/x.txt")
    assert parsed.refused == [] and len(parsed.empty) == 1
    assert parsed.empty[0].startswith("dir/x.txt:3: box ") and "has no area" in parsed.empty[0]
    np.testing.assert_allclose(parsed.labels, [[0, 0.5, 0.5, 0.1, 0.1]])


def test_tolerance_is_ultralytics_one_percent():
    assert COORD_TOLERANCE == 0.01
    assert parse_yolo_label_text("0 0.5 0.5 1.0099 0.2\n", "x").refused == []


def test_class_beyond_nc_refused():
    parsed = parse_yolo_label_text("0 0.5 0.5 0.1 0.1\n3 0.5 0.5 0.1 0.1\n", "x.txt", nc=3)
    assert parsed.refused == ["x.txt:2: class 3 exceeds the class count 3 (valid: 0..2)"]


def test_polygon_becomes_enclosing_box():
    parsed = parse_yolo_label_text("2 0.1 0.2 0.5 0.2 0.3 0.6\n1 0.2 0.2 0.4 0.2 0.4 0.4 0.2 0.4\n", "x")
    assert parsed.refused == []
    np.testing.assert_allclose(parsed.labels, [[2, 0.3, 0.4, 0.4, 0.4], [1, 0.3, 0.3, 0.2, 0.2]], atol=1e-6)


def test_duplicate_rows_removed_first_kept():
    parsed = parse_yolo_label_text("0 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1\n0 0.5 0.5 0.1 0.1\n", "x")
    assert parsed.duplicates == 1 and parsed.refused == []
    np.testing.assert_allclose(parsed.labels[:, 0], [0, 1])


def test_empty_file_is_background_and_unreadable_raises(tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n  \n")
    parsed = read_yolo_labels(empty)
    assert parsed.labels.shape == (0, 5) and parsed.refused == []
    bad = tmp_path / "b.txt"
    bad.write_bytes(b"0 0.5 0.5 0.1 0.1\xff\n")
    with pytest.raises(LabelError, match=r"b.txt: not UTF-8"):
        read_yolo_labels(bad)
    with pytest.raises(LabelError, match="cannot read label file"):
        read_yolo_labels(tmp_path / "missing.txt")


def test_check_label_array_clips_and_names_row():
    out = check_label_array([[0, 0.5, 0.5, 1.0000001, 0.2]], "sample 3")
    assert out.dtype == np.float32 and out[0, 3] == pytest.approx(1.0)
    assert check_label_array(None, "x").shape == (0, 5)
    assert check_label_array(np.zeros((0, 5)), "x").shape == (0, 5)
    with pytest.raises(LabelError, match=r"sample 3: label row 1: class 2 exceeds"):
        check_label_array([[0, 0.5, 0.5, 0.1, 0.1], [2, 0.5, 0.5, 0.1, 0.1]], "sample 3", nc=2)
    with pytest.raises(LabelError, match=r"shape \(5,\)"):
        check_label_array([0, 0.5, 0.5, 0.1, 0.1], "x")


def test_labels_to_text_round_trips():
    labels = np.array([[1, 0.25, 0.5, 0.125, 0.2]], np.float32)
    text = labels_to_text(labels)
    assert text == "1 0.250000 0.500000 0.125000 0.200000\n"
    np.testing.assert_allclose(parse_yolo_label_text(text, "x").labels, labels)
    assert labels_to_text(np.zeros((0, 5))) == ""


def test_label_path_for_is_ultralytics_rule(tmp_path):
    from ultralytics.data.utils import img2label_paths

    for image in ("/d/images/train/a.jpg", "/d/images/x/images/b.PNG", "/d/frames/c.tif"):
        assert str(label_path_for(image)) == img2label_paths([image])[0]


@pytest.mark.parametrize("token", ["1e3", "2e0", "1.5", "nan", "inf", "1_0", "\u0663", "\uff13"])
def test_class_id_not_written_as_an_integer_is_refused(token):
    # ultralytics would read 1e3 as class 1000; a class id in exponent form is a damaged file
    parsed = parse_yolo_label_text(f"0 0.5 0.5 0.1 0.1\n{token} 0.5 0.5 0.2 0.2\n", "d/x.txt")
    assert parsed.refused == [f"d/x.txt:2: class id '{token}' is not an integer"]
    np.testing.assert_allclose(parsed.labels, [[0, 0.5, 0.5, 0.1, 0.1]])


@pytest.mark.parametrize("token", ["10000", "1000000", "99999999999999999999", "000012345.0"])
def test_a_class_id_past_the_class_limit_is_refused_as_written(token):
    """Before: a label file's 1000000 made a class 'class_1000000' on import (dataset import
    refused it), and 99999999999999999999 became class_100000002004087734272 (read through a
    float)."""
    parsed = parse_yolo_label_text(f"0 0.5 0.5 0.1 0.1\n{token} 0.5 0.5 0.2 0.2\n", "d/x.txt")
    assert parsed.refused == [f"d/x.txt:2: class id {token} is above the limit of 10000 classes"]
    np.testing.assert_allclose(parsed.labels, [[0, 0.5, 0.5, 0.1, 0.1]])
    assert parse_yolo_label_text("9999 0.5 0.5 0.2 0.2\n", "d/x.txt").refused == []


def test_integral_decimal_class_id_is_read_like_ultralytics():
    # ultralytics: rows are read as floats, cls % 1 == 0 is checked, then cast to int
    parsed = parse_yolo_label_text("2.0 0.5 0.5 0.2 0.2\n3. 0.25 0.25 0.1 0.1\n", "x.txt", nc=4)
    assert parsed.refused == []
    np.testing.assert_allclose(parsed.labels, [[2, 0.5, 0.5, 0.2, 0.2], [3, 0.25, 0.25, 0.1, 0.1]])
    assert parse_yolo_label_text("4.0 0.5 0.5 0.2 0.2\n", "x.txt", nc=4).refused == [
        "x.txt:1: class 4 exceeds the class count 4 (valid: 0..3)"]


def test_data_yaml_names_keys_must_be_integers(tmp_path):
    from edgecl.data.yolo_dataset import load_data_yaml
    from edgecl.errors import ConfigError

    (tmp_path / "images").mkdir()
    yaml_path = tmp_path / "data.yaml"
    yaml_path.write_text("train: images\nval: images\nnames: {0: car, 1.0: person, '2': bus}\n")
    assert load_data_yaml(yaml_path).names == {0: "car", 1: "person", 2: "bus"}
    yaml_path.write_text("train: images\nval: images\nnames: {0: car, 1.5: person}\n")
    with pytest.raises(ConfigError, match=r"class id 1\.5 in 'names' is not an integer >= 0"):
        load_data_yaml(yaml_path)


def test_an_overlong_class_name_is_not_quoted_whole():
    """Before: a 1.9 MB name ending in an invisible character was quoted whole in the error
    (a 1.9 MB HTTP response)."""
    import pytest

    from edgecl.data.class_names import clean_name
    from edgecl.errors import LabelError

    for name in ("a" * 1_900_000 + "\u200b", ["x"] * 100_000):
        with pytest.raises(LabelError) as err:
            clean_name(name)
        assert len(str(err.value)) < 200


def test_a_refused_polygon_row_is_quoted_as_written():
    """A 7-value row is a 3-point polygon (ultralytics' reading too): before, the refusal
    quoted only its enclosing box, numbers that are nowhere in the file."""
    parsed = parse_yolo_label_text("0 0.25 0.26 0.25 0.31 0.9 7\n", "x.txt")
    assert parsed.refused == [
        "x.txt:1: coordinates [0.575, 3.63, 0.65, 6.74] exceed 1 (not normalised, or beyond the "
        "1% tolerance): the enclosing box of the row '0 0.25 0.26 0.25 0.31 0.9 7', read as a "
        "polygon of 3 points (a row of 7 values)"]


def test_a_class_name_of_combining_marks_only_is_refused():
    """Before: a lone U+0301 became a class shown as nothing (a blank chip, a blank heatmap
    column); a mark after a letter stays part of a name."""
    import pytest

    from edgecl.data.class_names import clean_name
    from edgecl.errors import LabelError

    for name in ("\u0301", "\u0301\u0302", "\u20dd"):
        with pytest.raises(LabelError, match="holds no character of its own to show"):
            clean_name(name)
    assert clean_name("e\u0301") == "\u00e9" and clean_name("\u0915\u094d") == "\u0915\u094d"
    assert clean_name("\u0301", strict=False) == "\u0301"  # a name a registry already holds
